"""``TransformerUser``: the learned shopper, a relative captioner behind the batched
:class:`~fiq_gym.users.User` interface.

The shipped default checkpoint (``fiq_gym/users/transformer/default/``) is trained from the
default catalog by one command, run from the repository root::

    fiq-gym user train --out fiq_gym/users/transformer/default --work-dir runs/transformer-user-default --overwrite

(It was run with ``--threads 1`` on a shared 2-core machine: 13 minutes, early stop after 10
epochs, best epoch 7; the thread count changes only floating-point rounding.) On held-out
pairs it reaches BLEU-4 0.54 and CIDEr 1.58 with greedy decoding, faithfulness precision 0.99
and recall 0.37 (the template shopper's own: 1.0 and 0.39), and 99% of its category claims
are right; see ``benchmarks/results/captioning.md``. It needs the default catalog's
features from the shipped attribute network (``fiq_gym.features``); retrain it whenever that
network changes.

It reads the same inputs the environment's agents see: the retrieval features and the
attribute scores of :func:`fiq_gym.gallery.gallery_of`. A checkpoint trained on a
catalog with another feature size, attribute vocabulary, categories or caption words does not
load on it (:class:`CheckpointMismatchError` says which, and how to retrain). Features come
from the whole catalog's tables, since a shopper may describe any item; in a one-category
environment the agents' features are centred on that category instead.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiq_gym.catalog.captions import CAPTIONS_FILE
from fiq_gym.catalog.model import Catalog
from fiq_gym.checkpoint import config_fields
from fiq_gym.errors import CheckpointError, FiqGymError
from fiq_gym.gallery import Gallery, gallery_of
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import CaptionBatch, User, row_uniforms
from fiq_gym.users.caption_metrics import DifferenceOracle
from fiq_gym.users.decoding import decoding_from
from fiq_gym.users.transformer.configuration_relative_captioner import RelativeCaptionerConfig
from fiq_gym.users.transformer.modeling_relative_captioner import (
    DECODING_STRATEGIES,
    CaptionerInputs,
    RelativeCaptionerModel,
)
from fiq_gym.users.transformer.tokenization import CaptionerTokenizer
from fiq_gym.users.words import template_words
from fiq_gym.utils.jsonfile import read_json
from fiq_gym.utils.threads import torch_threads

__all__ = [
    "DEFAULT_CHECKPOINT",
    "TRAIN_DEFAULT_COMMAND",
    "CheckpointMismatchError",
    "Decoding",
    "TransformerUser",
    "check_checkpoint_fits",
    "feature_weights",
    "load_captioner",
    "load_captioner_tokenizer",
]

#: Where the shipped checkpoint lives (package data).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default"
#: The one command that trains the shipped checkpoint (from the repository root).
TRAIN_DEFAULT_COMMAND = "fiq-gym user train --out fiq_gym/users/transformer/default --work-dir runs/transformer-user-default --overwrite"


class CheckpointMismatchError(FiqGymError, ValueError):
    """A captioner checkpoint does not fit the catalog it is asked to describe."""


@dataclass(frozen=True)
class Decoding:
    """How the shopper turns the model's word probabilities into a caption.

    The default samples from the learned distribution (nucleus 0.95), so, like the template
    shopper, the same pair gets varied captions; ``strategy="greedy"`` gives one fixed caption
    per pair and ``"beam"`` the most likely one. Sampling draws ``max_new_tokens`` uniforms
    per caption from the caller's generator, whatever the caption's length; greedy and beam
    draw nothing.

    Attributes:
        strategy: ``"sample"``, ``"greedy"`` or ``"beam"``.
        temperature, top_k, top_p: sampling settings (see
            :meth:`RelativeCaptionerModel.generate`).
        num_beams, length_penalty: beam search settings.
        max_new_tokens: caption length limit in tokens, ``<eos>`` included (None: the
            model's ``max_caption_length``).
    """

    strategy: str = "sample"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    num_beams: int = 4
    length_penalty: float = 1.0
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in DECODING_STRATEGIES:
            raise ValueError(
                f"decoding strategy must be one of {list(DECODING_STRATEGIES)}, got {self.strategy!r}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if self.top_k < 0 or self.num_beams < 1:
            raise ValueError(f"top_k must be >= 0 and num_beams >= 1, got {self.top_k!r}, {self.num_beams!r}")

    @classmethod
    def of(cls, value: Decoding | Mapping[str, Any] | str | None) -> Decoding:
        """A :class:`Decoding` from itself, a dict of its fields, a strategy name, or None
        (the default)."""
        return decoding_from(cls, value, "a strategy name")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' weight-loading progress bars (an env loads its user silently)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def feature_weights(catalog: Catalog) -> str | None:
    """The sha256 of the network that extracted ``catalog``'s features, if it records one."""
    record = catalog.provenance.get("features") if catalog.features is not None else None
    return record.get("weights_sha256") if isinstance(record, Mapping) else None


def mismatch_fix(catalog: Catalog) -> str:
    """How to get a transformer shopper that fits ``catalog``, for mismatch errors: trained on
    its own human captions if it is an import, and named the way every shopper argument takes
    (``user=``, the dataset shopper's ``fallback=``, a trainer's ``--user``)."""
    where = catalog.provenance.get("path")
    path = str(where) if where else "CATALOG"
    imported = bool(where) and (Path(str(where)) / CAPTIONS_FILE).is_file()
    captions = " --captions catalog" if imported else ""
    whose = "on this catalog's own human captions" if imported else "on this catalog"
    return (
        f"train a shopper {whose}: fiq-gym user train --catalog {path}{captions} --out DIR, then name it "
        "'transformer:DIR' (user=, the dataset shopper's fallback=, or a trainer's --user)"
    )


def check_checkpoint_fits(
    config: RelativeCaptionerConfig,
    tokenizer: CaptionerTokenizer,
    catalog: Catalog,
    tables: Gallery,
    checkpoint: str | os.PathLike = "the checkpoint",
) -> None:
    """Raise :class:`CheckpointMismatchError` unless the checkpoint can describe ``catalog``.

    Checked: the tokenizer matches the model; the feature size (and, with a warning, the
    network that extracted the features, when both sides record it); for a model that reads
    attributes, the attribute vocabulary (every ``type:value`` column, in order, so score
    ``j`` means the same thing); and, for a model trained on template captions, that its
    vocabulary has every word the catalog's template captions use (attribute values or
    categories it never saw would be unsayable).
    """
    fix = mismatch_fix(catalog)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointMismatchError(
            f"{checkpoint}: the tokenizer has {tokenizer.vocab_size} words but the model was built for "
            f"{config.vocab_size}; the directory mixes files of two trainings, retrain it"
        )
    if tables.feature_dim != config.feature_dim:
        raise CheckpointMismatchError(
            f"{checkpoint}: feature size mismatch: the captioner reads {config.feature_dim}-dim features "
            f"(trained on {config.feature_source} features) but this catalog's are {tables.feature_dim}-dim "
            f"({tables.feature_source}); {fix} (or give the catalog the features the checkpoint was trained on)"
        )
    weights = feature_weights(catalog)
    if config.feature_weights and weights and weights != config.feature_weights:
        warnings.warn(
            f"{checkpoint}: this catalog's features come from another network (weights "
            f"{weights[:12]}) than the captioner was trained on ({config.feature_weights[:12]}); they have "
            f"the same size but mean different things, so captions will be poor; {fix}",
            stacklevel=3,
        )
    names = list(catalog.vocabulary.column_names)
    if config.use_attributes and config.attribute_names != names:
        detail = f"{len(config.attribute_names)} attribute columns vs the catalog's {len(names)}"
        if len(config.attribute_names) == len(names):
            first = next(
                i for i, (a, b) in enumerate(zip(config.attribute_names, names, strict=True)) if a != b
            )
            detail = f"column {first} is {config.attribute_names[first]!r} in the checkpoint but {names[first]!r} in the catalog"
        raise CheckpointMismatchError(f"{checkpoint}: attribute vocabulary mismatch ({detail}); {fix}")
    if config.caption_source == "template":
        known = set(tokenizer.words)
        missing = sorted(w for w in template_words(catalog) if w not in known)
        if missing:
            raise CheckpointMismatchError(
                f"{checkpoint}: word vocabulary mismatch: the captioner has no token for {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''} which this catalog's captions need; {fix}"
            )


@dataclass(frozen=True)
class _StoredCaptionerConfig:
    """The fields of a captioner's ``config.json`` that size the model, typed and ranged (the
    others are transformers' own); read by :func:`load_captioner` before it builds anything."""

    vocab_size: int
    feature_dim: int
    d_model: int
    num_heads: int
    ffn_dim: int
    num_encoder_layers: int
    num_decoder_layers: int
    max_caption_length: int
    dropout: float = 0.0
    use_attributes: bool = True
    attribute_type_names: list[str] = field(default_factory=list)
    attribute_group_sizes: list[int] = field(default_factory=list)
    attribute_names: list[str] = field(default_factory=list)
    category_names: list[str] = field(default_factory=list)
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    unk_token_id: int = 3

    def __post_init__(self) -> None:
        for name in ("vocab_size", "feature_dim", "d_model", "num_heads", "ffn_dim", "max_caption_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("num_encoder_layers", "num_decoder_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if any(size < 1 for size in self.attribute_group_sizes):
            raise ValueError(
                f"attribute_group_sizes must be at least 1 each, got {self.attribute_group_sizes}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(
                    f"{name} must be a word id below vocab_size {self.vocab_size}, got {getattr(self, name)}"
                )


def load_captioner(
    checkpoint: str | os.PathLike | None = None,
) -> tuple[RelativeCaptionerModel, CaptionerTokenizer]:
    """Model (in eval mode) and tokenizer from a checkpoint directory (None: the shipped one).

    Only local directories are read; nothing is downloaded.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(checkpoint if checkpoint is not None else DEFAULT_CHECKPOINT).expanduser()
    if not (path / "config.json").is_file():
        hint = (
            f"the shipped checkpoint is missing from the installation; train it with: {TRAIN_DEFAULT_COMMAND}"
            if checkpoint is None
            else "pass a directory written by `fiq-gym user train --out DIR` (config.json, model.safetensors, tokenizer.json)"
        )
        raise FileNotFoundError(f"no captioner checkpoint at {path}: {hint}")
    fix = "pass a directory written by `fiq-gym user train --out DIR`"
    config = read_json(path / "config.json", CheckpointError, f"the checkpoint is damaged; {fix}")
    if not isinstance(config, dict) or config.get("model_type") != RelativeCaptionerConfig.model_type:
        found = config.get("format") or config.get("model_type") if isinstance(config, dict) else None
        raise CheckpointError(
            f"{path} is not a relative-captioner checkpoint"
            + (f" (it is a {found!r} checkpoint)" if found else "")
            + f"; {fix}"
        )
    # Checked before transformers builds anything: a hand-edited "x" or -2 would otherwise fail
    # deep inside torch, or worse, load (num_heads=-2 built a model without layers).
    config_fields(
        _StoredCaptionerConfig, config, path / "config.json", what="captioner config", known_only=False
    )
    # fork_rng: loading must not advance the caller's seeded torch generator (see
    # fiq_gym.features.model.load_checkpoint).
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        try:
            model = RelativeCaptionerModel.from_pretrained(str(path), local_files_only=True)
            hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
            raise CheckpointError(
                f"cannot load the captioner in {path} ({str(e).splitlines()[0][:160]}): a file is missing, "
                f"truncated or from another model; {fix}"
            ) from None
    model.eval()
    return model, CaptionerTokenizer(hf_tokenizer)


def load_captioner_tokenizer(checkpoint: str | os.PathLike | None = None) -> CaptionerTokenizer:
    """The tokenizer of :func:`load_captioner` alone (the model's weights are not read): what
    :func:`fiq_gym.users.registry.tokenizer_for` gives for a transformer shopper."""
    from transformers import PreTrainedTokenizerFast

    path = Path(checkpoint if checkpoint is not None else DEFAULT_CHECKPOINT).expanduser()
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no captioner tokenizer at {path}: pass a directory written by `fiq-gym user train --out DIR` "
            "(config.json, model.safetensors, tokenizer.json)"
        )
    with quiet_transformers():
        hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    return CaptionerTokenizer(hf_tokenizer)


class TransformerUser(User):
    """A shopper whose relative captions come from a trained relative captioner.

    All pairs of a :meth:`describe` call are captioned in one batched decoding. With
    sampling, pair ``i``'s caption depends only on its own random numbers (one row of
    :func:`~fiq_gym.users.base.row_uniforms`), so a vector env's sub-env behaves like a single
    env seeded alike.

    The structured differences of each caption are read back with the template grammar and
    judged against the catalog's attributes
    (:meth:`~fiq_gym.users.caption_metrics.DifferenceOracle.differences`), so ``is_faithful``
    says whether the model told the truth. Captions the grammar cannot read have no records.

    Args:
        catalog: the catalog whose items are described.
        checkpoint: a directory from ``fiq-gym user train`` (None: the shipped default).
        decoding: a :class:`Decoding`, a dict of its fields, or a strategy name.
        device: torch device for the model (``"cpu"``).
        threads: torch intra-op threads while captioning (None: leave torch's setting). One
            by default: decoding is a chain of small operations, where a second thread costs
            more in hand-offs than it saves, and in an environment it also competes with
            numpy's BLAS threads doing the ranking (a single env stepped 4x slower with two,
            the 64-env vector env 1.8x slower). An environment also runs its steps with
            numpy's BLAS on this many threads (:attr:`~fiq_gym.users.User.blas_threads`):
            OpenBLAS's idle workers spin for a while after each product, and on a busy
            2-core machine that took the decoding's core (an env step of 64 cost about
            twice its captioning and ranking).

    Raises:
        CheckpointMismatchError: if the checkpoint does not fit the catalog.
        FileNotFoundError: if the directory holds no checkpoint.
    """

    def __init__(
        self,
        catalog: Catalog,
        checkpoint: str | os.PathLike | None = None,
        decoding: Decoding | Mapping[str, Any] | str | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
    ) -> None:
        super().__init__(catalog)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        self.decoding = Decoding.of(decoding)
        model, tokenizer = load_captioner(checkpoint)
        self.tables = gallery_of(catalog)
        check_checkpoint_fits(model.config, tokenizer, catalog, self.tables, self.checkpoint)
        limit = model.config.max_caption_length
        if self.decoding.max_new_tokens is not None and not 1 <= self.decoding.max_new_tokens <= limit:
            raise ValueError(f"max_new_tokens must lie in [1, {limit}] for this checkpoint")
        self.device = torch.device(device)
        # transformers wraps PreTrainedModel.to with functools.wraps, which types it unbound.
        self.model: RelativeCaptionerModel = model.to(self.device)  # type: ignore[arg-type]
        self._tokenizer = tokenizer
        self._oracle: DifferenceOracle | None = None

    @property
    def tokenizer(self) -> CaptionerTokenizer:
        """The caption tokenizer environments use for observations (a
        :class:`~fiq_gym.text.CaptionTokenizer`)."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: CaptionTokenizer) -> None:
        raise AttributeError("a TransformerUser's tokenizer is its checkpoint's and cannot be replaced")

    @property
    def config(self) -> RelativeCaptionerConfig:
        return self.model.config

    @property
    def blas_threads(self) -> int | None:  # type: ignore[override]
        """numpy BLAS threads during an env step with this shopper: :attr:`threads`."""
        return self.threads

    @property
    def max_new_tokens(self) -> int:
        return self.decoding.max_new_tokens or self.config.max_caption_length

    def with_decoding(self, decoding: Decoding | Mapping[str, Any] | str) -> TransformerUser:
        """A user sharing this one's model and tables with other decoding settings."""
        other = object.__new__(TransformerUser)
        other.__dict__.update(self.__dict__)
        other.decoding = Decoding.of(decoding)
        return other

    def model_inputs(self, targets: np.ndarray, shown: np.ndarray) -> CaptionerInputs:
        """The model's inputs for catalog rows ``targets`` and ``shown``: their retrieval
        features and (if the model uses them) attribute scores."""
        t = self.tables
        inputs: CaptionerInputs = {
            "target_features": torch.from_numpy(t.features[targets]).to(self.device),
            "shown_features": torch.from_numpy(t.features[shown]).to(self.device),
        }
        if self.config.use_attributes:
            inputs["target_attributes"] = torch.from_numpy(t.side_info[targets]).to(self.device)
            inputs["shown_attributes"] = torch.from_numpy(t.side_info[shown]).to(self.device)
        return inputs

    def generate_ids(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator] | None = None,
    ) -> torch.Tensor:
        """Caption token ids (B, max_new_tokens) for validated catalog rows; ``rng`` is needed
        for sampling only."""
        d = self.decoding
        length = self.max_new_tokens
        uniforms = None
        if d.strategy == "sample":
            if rng is None:
                raise ValueError("sampling needs rng: a numpy Generator or one per pair")
            uniforms = torch.from_numpy(row_uniforms(rng, len(targets), length)).to(self.device)
        with torch_threads(self.threads):
            return self._generate(targets, shown, uniforms, length)

    def _generate(
        self, targets: np.ndarray, shown: np.ndarray, uniforms: torch.Tensor | None, length: int
    ) -> torch.Tensor:
        return self.generate_from_inputs(self.model_inputs(targets, shown), uniforms, length)

    def generate_from_inputs(
        self, inputs: CaptionerInputs, uniforms: torch.Tensor | None, length: int
    ) -> torch.Tensor:
        """Token ids for prepared :meth:`model_inputs` under this shopper's decoding settings
        (the model's part of :meth:`describe`; the throughput benchmark times it alone)."""
        d = self.decoding
        return self.model.generate(
            **inputs,
            strategy=d.strategy,
            max_new_tokens=length,
            uniforms=uniforms,
            temperature=d.temperature,
            top_k=d.top_k,
            top_p=d.top_p,
            num_beams=d.num_beams,
            length_penalty=d.length_penalty,
        )

    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        if targets.size == 0:
            return CaptionBatch([], [])
        ids = self.generate_ids(targets, shown, rng).cpu().numpy()
        tokenizer = self._tokenizer
        texts = tokenizer.decode_batch(ids.tolist())
        if self._oracle is None:
            self._oracle = DifferenceOracle(self.catalog)
        oracle = self._oracle
        records = [
            oracle.differences(text, t, s)
            for text, t, s in zip(texts, targets.tolist(), shown.tolist(), strict=True)
        ]
        if not tokenizer.words_round_trip:
            return CaptionBatch(texts, records)
        # The observation's ids straight from the generated ids (no text round trip).
        word_ids, lengths = tokenizer.word_ids(ids)
        return CaptionBatch(texts, records, word_ids, lengths, tokenizer)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"TransformerUser({self.checkpoint}, {c.num_decoder_layers}x{c.d_model}, "
            f"attributes={'on' if c.use_attributes else 'off'}, decoding={self.decoding.strategy})"
        )
