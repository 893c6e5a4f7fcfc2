"""``DatasetUser``: a shopper that replays human captions for annotated pairs.

Fashion IQ and Shoes annotate a fixed set of (target, candidate) pairs. In a dialog the agent
may show any item, so most pairs it meets were never annotated; what happens then is the
``fallback``'s job:

* ``fallback=None`` (the default) raises :class:`UnannotatedPairError`, naming the pair and
  both fixes. Use this for single-shot evaluation, where every query is an annotated pair
  (start episodes with ``reset(options={"target": t, "shown": c})``, the pair's catalog rows
  converted to indices in play with ``env.unwrapped.index_of_row``, and run one turn).
* ``fallback=user`` (e.g. a :class:`~fiq_gym.users.TemplateUser` or the transformer shopper
  trained on the human captions) answers every unannotated pair; the human share is
  :attr:`DatasetUser.replayed` / :attr:`DatasetUser.answered` (``replayed`` counts recorded
  human captions only: neither the fallback's answers nor :data:`SAME_CAPTION`).

A shown item equal to the target is answered with :data:`SAME_CAPTION` without a lookup:
datasets never annotate that case and the episode ends there anyway.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fiq_gym.errors import FiqGymError
from fiq_gym.text import split_words
from fiq_gym.users.base import CaptionBatch, Difference, User, row_uniforms

if TYPE_CHECKING:
    from fiq_gym.catalog.captions import HumanCaptions
    from fiq_gym.catalog.model import Catalog

__all__ = ["MODES", "SAME_CAPTION", "DatasetUser", "UnannotatedPairError", "join_captions"]

MODES = ("random", "joined")
SAME_CAPTION = "is the same"


class UnannotatedPairError(FiqGymError, LookupError):
    """A :class:`DatasetUser` without a fallback was asked about a pair nobody annotated."""


def join_captions(captions: Sequence[str]) -> str:
    """Several captions of one pair as one query, the Fashion IQ challenge's way: joined with
    " and " after trimming each one's trailing full stop."""
    return " and ".join(c.strip().rstrip(".").strip() for c in captions if c.strip())


class DatasetUser(User):
    """Replays human relative captions.

    Args:
        catalog: the catalog the pairs' rows index.
        pairs: ``(target_row, shown_row, caption)`` triples; a pair may appear several times
            (Fashion IQ has two captions per pair). :meth:`HumanCaptions.triples
            <fiq_gym.catalog.captions.HumanCaptions.triples>` produces them.
        mode: ``"random"`` answers one of the pair's captions, drawn from the pair's generator;
            ``"joined"`` answers all of them joined (:func:`join_captions`), the challenge's
            single-shot query.
        fallback: the user that answers pairs nobody annotated; None raises
            :class:`UnannotatedPairError` instead.
        vocabulary: the texts whose words make the caption vocabulary (the observation's
            token ids); None: the replayed captions. :meth:`from_captions` passes the
            import's training captions, so the envs of every split share token ids and the
            evaluation split's words never shape the observation space (they read as
            ``<unk>`` where training never saw them).

    Human captions carry no structured differences, so the ``differences`` of replayed
    captions are empty tuples (a fallback's are passed through).
    """

    def __init__(
        self,
        catalog: Catalog,
        pairs: Iterable[tuple[int, int, str]],
        *,
        mode: str = "random",
        fallback: User | None = None,
        vocabulary: Iterable[str] | None = None,
    ) -> None:
        super().__init__(catalog)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if fallback is not None and len(fallback.catalog) != len(catalog):
            raise ValueError(
                f"the fallback user describes a catalog of {len(fallback.catalog)} items, this one has "
                f"{len(catalog)}; build it on the same catalog"
            )
        self.mode = mode
        self.fallback = fallback
        captions: dict[tuple[int, int], list[str]] = {}
        n = len(catalog)
        for k, (target, shown, caption) in enumerate(pairs):
            if not (0 <= int(target) < n and 0 <= int(shown) < n):
                raise ValueError(f"pair {k} ({target}, {shown}) is out of range for a catalog of {n} items")
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(
                    f"pair {k} ({target}, {shown}) has an empty or non-string caption {caption!r}"
                )
            captions.setdefault((int(target), int(shown)), []).append(caption)
        if not captions:
            raise ValueError("DatasetUser needs at least one annotated pair")
        self._captions = {key: tuple(texts) for key, texts in captions.items()}
        self._vocabulary = None if vocabulary is None else tuple(vocabulary)
        self.replayed = 0
        self.answered = 0

    @classmethod
    def from_captions(
        cls,
        catalog: Catalog,
        captions: HumanCaptions | None = None,
        *,
        split: str | Sequence[str] | None = None,
        mode: str = "random",
        fallback: User | None = None,
    ) -> DatasetUser:
        """Replay the human captions of an imported catalog (default: the ones stored in its
        directory), optionally of some splits only.

        The caption vocabulary comes from the ``train`` split's captions whichever split is
        replayed (from the replayed captions if the import has no ``train`` split), so an
        agent trained on one split reads the same token ids on another."""
        if captions is None:
            from fiq_gym.catalog.captions import load_human_captions

            captions = load_human_captions(catalog)
        training = captions.select("train").entries
        vocabulary = [c for e in training for c in e.captions] if training else None
        if split is not None:
            captions = captions.select(split)
        return cls(catalog, captions.triples(catalog), mode=mode, fallback=fallback, vocabulary=vocabulary)

    def with_own_counters(self) -> DatasetUser:
        """The same shopper (its captions, fallback and tokenizer shared, not copied) with
        ``replayed`` and ``answered`` of its own, at 0: what each env gets, so the human share
        it reports is its own."""
        _ = self.tokenizer  # built once here, so every twin shares it
        twin = copy.copy(self)
        twin.replayed = twin.answered = 0
        return twin

    # --- what the dataset covers -------------------------------------------------------
    @property
    def num_pairs(self) -> int:
        """Distinct annotated (target, shown) pairs."""
        return len(self._captions)

    def annotated_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets, shown) catalog rows of every annotated pair, int64, in first-seen order.

        Catalog rows, not the indices in play that an env's reset options take: in a category
        env convert with ``env.unwrapped.index_of_row(row)`` (keep the pairs in play with
        ``env.unwrapped.gallery.in_play(rows)``)."""
        keys = list(self._captions)
        return (
            np.array([k[0] for k in keys], dtype=np.int64),
            np.array([k[1] for k in keys], dtype=np.int64),
        )

    def captions_of(self, target: int, shown: int) -> tuple[str, ...]:
        """The recorded captions of one pair (empty if it was never annotated)."""
        return self._captions.get((int(target), int(shown)), ())

    def caption_words(self) -> tuple[str, ...]:
        """Every word of the vocabulary's texts (by default the recorded captions; see
        ``vocabulary``) and the fallback's words, sorted."""
        words: set[str] = set(split_words(SAME_CAPTION))
        texts = self._vocabulary
        if texts is None:
            texts = tuple(text for recorded in self._captions.values() for text in recorded)
        for text in texts:
            words.update(split_words(text))
        if self.mode == "joined":
            words.add("and")
        if self.fallback is not None:
            # a fallback with a tokenizer of its own (the learned shopper) lists no words
            with contextlib.suppress(NotImplementedError):
                words.update(self.fallback.caption_words())
        return tuple(sorted(words))

    # --- captions ------------------------------------------------------------------------
    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        uniforms = row_uniforms(rng, len(targets), 1)[:, 0]
        human = np.zeros(len(targets), dtype=bool)
        texts: list[str | None] = [None] * len(targets)
        differences: list[tuple[Difference, ...]] = [()] * len(targets)
        missing: list[int] = []
        same = 0
        for i, (t, s) in enumerate(zip(targets.tolist(), shown.tolist(), strict=True)):
            if t == s:
                same += 1
                texts[i] = SAME_CAPTION
                differences[i] = (Difference("none", "same", "same", "same", "same"),)
                continue
            recorded = self._captions.get((t, s))
            if recorded is None:
                missing.append(i)
                continue
            human[i] = True
            if self.mode == "joined":
                texts[i] = join_captions(recorded)
            else:
                texts[i] = recorded[min(int(uniforms[i] * len(recorded)), len(recorded) - 1)]
        self.answered += len(targets)
        self.replayed += len(targets) - len(missing) - same  # human text only
        if missing:
            if self.fallback is None:
                i = missing[0]
                ids = self.catalog.ids
                raise UnannotatedPairError(
                    f"no human caption for target {ids[targets[i]]!s} (row {targets[i]}) shown "
                    f"{ids[shown[i]]!s} (row {shown[i]}), and this DatasetUser has no fallback "
                    f"({len(missing)} of {len(targets)} pairs in this batch are unannotated); pass "
                    "fallback=TemplateUser(catalog) (or another user) to answer them, or start "
                    "single-shot episodes on annotated pairs with reset(options={'target': t, 'shown': s}) "
                    "(indices in play: env.unwrapped.index_of_row(row))"
                )
            sub_rng = rng if isinstance(rng, np.random.Generator) else [rng[i] for i in missing]
            answer = self.fallback.describe(targets[missing], shown[missing], sub_rng)
            for j, i in enumerate(missing):
                texts[i] = answer.texts[j]
                differences[i] = answer.differences[j]
        return CaptionBatch([str(t) for t in texts], differences, human=human)
