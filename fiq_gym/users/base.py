"""The batched user-simulator interface shared by every shopper (template, transformer, ...).

A user answers "how does the garment you want differ from the one shown?" for a whole batch
of (target, shown) pairs at once, because the vector env captions every sub-env in one call.
Alongside the text it reports *what* each caption described, so benchmarks can score caption
faithfulness and learned captioners can be trained on structured supervision.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fiq_gym.text import CaptionTokenizer, WordTokenizer

if TYPE_CHECKING:
    from fiq_gym.catalog.model import Catalog

__all__ = ["CaptionBatch", "Difference", "User", "row_uniforms"]


@dataclass(frozen=True)
class Difference:
    """One thing a caption says about the target relative to the shown item.

    Attributes:
        type: an attribute type name (``"color"``, ``"sleeve"``...), ``"category"``,
            ``"shade"`` (darker / lighter from the rendered colour), or ``"none"`` for a
            "looks the same" caption.
        kind: ``"direct"`` ("is red"), ``"comparative"`` ("is darker", "has longer
            sleeves") or ``"same"`` (nothing differs).
        target: the target's true value; for comparatives the true direction word
            (``"darker"``, ``"longer"``, ``"looser"``); ``"same"`` for a same caption.
        shown: the shown item's value (for ``"shade"`` the shown item's colour name, or
            ``""`` when it has none); ``"same"`` for a same caption.
        claimed: what the caption actually says. Equals ``target`` unless noise changed it
            (e.g. a wrong colour), which is how faithfulness is measured.
    """

    type: str
    kind: str
    target: str
    shown: str
    claimed: str

    @property
    def claim(self) -> tuple[str, str, str]:
        """``(type, kind, claimed)``: the form :func:`~fiq_gym.users.template.parse_caption`
        recovers from text, so structured and parsed claims compare directly."""
        return (self.type, self.kind, self.claimed)

    @property
    def is_faithful(self) -> bool:
        """Whether the caption's claim matches the truth (noise may make it false)."""
        return self.claimed == self.target


@dataclass(frozen=True)
class CaptionBatch:
    """Captions for a batch of pairs, plus what each one described.

    ``texts[i]`` and ``differences[i]`` belong to the i-th (target, shown) pair; the
    differences are listed in the order the caption mentions them.

    A shopper that writes its captions as token ids may also hand over ``word_ids`` (B, L)
    and ``word_lengths`` (B,): the ids ``tokenizer.encode_batch(texts, L)`` would give, padded
    with 0. Environments whose tokenizer is that ``tokenizer`` then take them instead of
    tokenizing the texts again (:meth:`encode`).
    """

    texts: list[str]
    differences: list[tuple[Difference, ...]]
    word_ids: np.ndarray | None = field(default=None, repr=False, compare=False)
    word_lengths: np.ndarray | None = field(default=None, repr=False, compare=False)
    tokenizer: CaptionTokenizer | None = field(default=None, repr=False, compare=False)
    #: (B,) bool: which captions are recorded human text (a shopper that replays a dataset
    #: says so; None for shoppers that write every caption themselves)
    human: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def deferred(
        cls,
        texts: list[str],
        differences: Callable[[], list[tuple[Difference, ...]]],
        word_ids: np.ndarray | None = None,
        word_lengths: np.ndarray | None = None,
        tokenizer: CaptionTokenizer | None = None,
    ) -> CaptionBatch:
        """A batch whose :attr:`differences` are worked out by ``differences()`` when first
        read: an environment reads the texts and token ids of every step and the records
        never, so a shopper need not build them each step."""
        batch = cls(texts, [], word_ids, word_lengths, tokenizer)
        object.__delattr__(batch, "differences")  # read through __getattr__ until made
        batch.__dict__["_make_differences"] = differences
        return batch

    if not TYPE_CHECKING:  # (mypy would read any attribute as valid)

        def __getattr__(self, name: str) -> Any:
            make = self.__dict__.get("_make_differences")
            if name != "differences" or make is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            differences = make()
            object.__setattr__(self, "differences", differences)
            del self.__dict__["_make_differences"]
            return differences

    def __getstate__(self) -> dict[str, Any]:
        # a deferred batch pickles with its differences made (the maker is a closure)
        self.differences  # noqa: B018
        return dict(self.__dict__)

    def __len__(self) -> int:
        return len(self.texts)

    def encode(self, tokenizer: CaptionTokenizer, max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """``tokenizer.encode_batch(self.texts, max_length)``: (B, max_length) ids padded with 0
        and (B,) lengths, from :attr:`word_ids` when they are ``tokenizer``'s."""
        if (
            self.word_ids is None
            or self.word_lengths is None
            or tokenizer is not self.tokenizer
            or max_length < 1
        ):
            return tokenizer.encode_batch(self.texts, max_length)
        ids = np.zeros((len(self.word_ids), max_length), dtype=np.int64)
        width = min(max_length, self.word_ids.shape[1])
        ids[:, :width] = self.word_ids[:, :width]
        return ids, np.minimum(self.word_lengths, max_length).astype(np.int64)


def row_uniforms(
    rng: np.random.Generator | Sequence[np.random.Generator], rows: int, width: int
) -> np.ndarray:
    """(rows, width) uniforms in [0, 1): from one generator in a single call, or row ``i``
    from ``rng[i]`` alone.

    Users draw every random decision of a pair from its row, so per-pair generators make each
    caption depend only on its own generator, and a single generator costs one numpy call.
    """
    if isinstance(rng, np.random.Generator):
        return rng.random((rows, width))
    out = np.empty((rows, width))
    for generator, row in zip(rng, out, strict=True):
        generator.random(out=row)  # the draws of random(width); without a size, twice as fast
    return out


def _as_index_array(name: str, values: object, num_items: int) -> np.ndarray:
    """Check one index argument and return it as int64, with an error that names the fix."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of catalog indices, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer catalog indices, got dtype {arr.dtype}; "
            f"convert with np.asarray({name}, dtype=np.int64) if the values are whole numbers"
        )
    if arr.size:
        bad = (arr < 0) | (arr >= num_items)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name}[{first}] = {int(arr[first])} is out of range; valid catalog indices "
                f"are 0..{num_items - 1} (the catalog has {num_items} items)"
            )
    return arr.astype(np.int64, copy=False)


class User(abc.ABC):
    """A simulated (or real) shopper that writes relative captions for (target, shown) pairs.

    Subclasses implement :meth:`_describe`, which receives already validated int64 index
    arrays; :meth:`describe` does the checking once here so every user reports bad input the
    same way.
    """

    #: numpy BLAS threads while an environment computes a step with this shopper (its
    #: ranking, captions and observation); None leaves numpy's setting. Shoppers that decode
    #: with torch on one thread set it to one, so BLAS worker threads spinning after the
    #: ranking's product do not take the core the decoding runs on.
    blas_threads: int | None = None
    #: Whether the caption of a pair depends on that pair's generator alone, bit for bit, when
    #: :meth:`describe` is given one per pair (whatever else the batch holds). The vector env
    #: then captions the sub-envs it restarts and those it steps in one call.
    rows_independent: bool = False

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # --- what an environment needs from a shopper ---------------------------------------------
    @property
    def tokenizer(self) -> CaptionTokenizer:
        """How environments turn this shopper's captions into the token ids of observations.

        By default a word tokenizer over :meth:`caption_words` (built once), so the shopper's
        own captions never hit ``<unk>``; shoppers with a tokenizer of their own (the learned
        shopper's) set or override it. Agents trained with one shopper keep its tokenizer
        when evaluated with another (pass ``tokenizer=`` to the env).
        """
        tokenizer = self.__dict__.get("_tokenizer")
        if tokenizer is None:
            tokenizer = self.__dict__["_tokenizer"] = WordTokenizer(self.caption_words())
        return tokenizer

    @tokenizer.setter
    def tokenizer(self, value: CaptionTokenizer) -> None:
        self.__dict__["_tokenizer"] = value

    def caption_words(self) -> tuple[str, ...]:
        """Every word this shopper's captions can contain (for the default :attr:`tokenizer`)."""
        raise NotImplementedError(
            f"{type(self).__name__} lists no caption words; give it a tokenizer (user.tokenizer = ...) "
            "or pass tokenizer=... to the environment"
        )

    @property
    def num_items(self) -> int:
        """Number of catalog items; valid indices are ``0 .. num_items - 1``."""
        return len(self.catalog)

    def describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        """One relative caption per pair: how ``targets[i]`` differs from ``shown[i]``.

        Args:
            targets: 1-D integer array of target catalog indices.
            shown: 1-D integer array of shown catalog indices, same length as ``targets``.
            rng: the source of all randomness, so seeded generators reproduce captions. Either
                one generator for the whole batch, or one generator per pair; with one per
                pair, caption ``i`` depends only on ``rng[i]`` (a vector env's sub-env stays
                reproducible whatever the other sub-envs do).

        Raises:
            ValueError: if an array is not 1-D, not integer, out of range, the lengths differ,
                or a per-pair generator list has the wrong length.
            TypeError: if ``rng`` is neither a generator nor a sequence of generators.
        """
        t = _as_index_array("targets", targets, self.num_items)
        s = _as_index_array("shown", shown, self.num_items)
        if t.shape != s.shape:
            raise ValueError(
                f"targets and shown must have the same length, got {t.size} targets "
                f"and {s.size} shown indices"
            )
        if not isinstance(rng, np.random.Generator):
            if not isinstance(rng, Sequence) or not all(isinstance(g, np.random.Generator) for g in rng):
                raise TypeError(
                    "rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)) or a "
                    f"sequence of them, one per pair; got {type(rng).__name__}"
                )
            if len(rng) != t.size:
                raise ValueError(
                    f"got {len(rng)} generators for {t.size} pairs; pass one generator per "
                    "pair, or a single generator for the whole batch"
                )
        return self._describe(t, s, rng)

    def describe_one(self, target: int, shown: int, rng: np.random.Generator) -> str:
        """The caption for a single pair; a convenience for notebooks and debugging."""
        for name, value in (("target", target), ("shown", shown)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(
                    f"{name} must be an integer catalog index in 0..{self.num_items - 1}, got {value!r}"
                )
        return self.describe(np.array([target]), np.array([shown]), rng).texts[0]

    @abc.abstractmethod
    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        """Caption validated pairs: ``targets`` and ``shown`` are equal-length int64 arrays
        of in-range indices; ``rng`` is one generator or exactly one per pair (see
        :func:`row_uniforms`)."""
