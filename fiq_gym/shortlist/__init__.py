"""First stages: what proposes the K candidates of the environment's ``shortlist`` action mode.

A first stage reads the dialog so far (the items shown and the captions the shopper gave)
and scores every item in play; the environment proposes the K best-scoring items not shown
yet. It never sees the target: a :class:`DialogView` has no field that holds it, and
``tests/test_shortlist.py`` checks that two dialogs with the same history and different
targets get the same candidates.

First stages, chosen by the environment's ``shortlist=`` argument:

* ``"retriever"`` (default): :data:`DEFAULT_FIRST_STAGE`, the supervised dialog retriever
  shipped in ``fiq_gym/shortlist/default/`` (first stage version :data:`FIRST_STAGE_VERSION`);
* ``"retriever:DIR"``: any retriever checkpoint written by ``fiq-gym train supervised`` (or
  policy-gradient, policy-improvement, single-shot);
* ``"random"``: uniform random scores (RecSim-style random candidate documents);
* a callable ``f(view: DialogView) -> (B, N) scores``: anything else. Items scored ``-inf``
  are never proposed (slots left empty are masked out).

Every first stage scores each dialog on its own (a batch of one), so a dialog's candidates
never depend on which other dialogs share its batch: sub-env k of the vector env sees the
same candidates as a single env seeded alike, bit for bit.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiq_gym.action_modes import DialogView, FirstStage
from fiq_gym.catalog.model import Catalog
from fiq_gym.gallery import Gallery
from fiq_gym.retriever import RetrieverNet, gallery_tensors, load_checkpoint
from fiq_gym.text import CaptionTokenizer, WordTokenizer
from fiq_gym.users.registry import tokenizer_for
from fiq_gym.utils.threads import torch_threads

__all__ = [
    "DEFAULT_FIRST_STAGE",
    "FIRST_STAGE_VERSION",
    "DialogView",
    "FirstStage",
    "RandomFirstStage",
    "RetrieverFirstStage",
    "make_first_stage",
]

#: The shipped first stage: the play default agent's supervised retriever (trained on the
#: default catalog with the v2 env, template shopper; see ``default/README.md``).
DEFAULT_FIRST_STAGE = Path(__file__).resolve().parent / "default"
#: Bumped (together with the environment ids) whenever the shipped first stage changes.
FIRST_STAGE_VERSION = 2


class RandomFirstStage:
    """Uniform random scores in [0, 1): K random unseen items, as RecSim's candidate set."""

    def __call__(self, view: DialogView) -> np.ndarray:
        n = view.gallery.num_items
        return np.stack([rng.random(n) for rng in view.rngs]) if view.rngs else np.zeros((0, n))

    def __repr__(self) -> str:
        return "RandomFirstStage()"


class RetrieverFirstStage:
    """A dialog retriever network as a first stage: it replays each dialog's captions and
    shown items through its state tracker and scores items by cosine similarity to the
    resulting query (scores in [-1, 1]).

    Args:
        net: the retriever network.
        tokenizer: the tokenizer it was trained with (captions are re-tokenized with it, so
            the env's own tokenizer does not matter).
        gallery: the items in play.
        source: where the network came from (for messages and ``repr``).
    """

    #: dialog prefixes whose state is kept (a few per dialog in flight is plenty)
    cache_size = 16_384

    def __init__(self, net: RetrieverNet, tokenizer: CaptionTokenizer, gallery: Gallery, source: str) -> None:
        problems = []
        if net.config.feature_dim != gallery.feature_dim:
            problems.append(f"feature size {net.config.feature_dim} != the env's {gallery.feature_dim}")
        if net.config.attribute_dim != gallery.side_info.shape[1]:
            problems.append(
                f"attribute count {net.config.attribute_dim} != the env's {gallery.side_info.shape[1]}"
            )
        if net.config.vocab_size != tokenizer.vocab_size:
            problems.append(
                f"caption vocabulary {net.config.vocab_size} != its shopper's {tokenizer.vocab_size}"
            )
        if problems:
            raise ValueError(
                f"the first stage {source} does not fit this catalog ({'; '.join(problems)}); pass "
                "shortlist='random' or shortlist='retriever:DIR' with a retriever trained on this catalog"
            )
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.source = source
        # (shown items, captions) of a dialog prefix -> (state, query) after it, least recently
        # used first: dialogs in flight need only their last prefix.
        self._states: OrderedDict[
            tuple[tuple[int, ...], tuple[str, ...]], tuple[torch.Tensor, torch.Tensor]
        ] = OrderedDict()
        self._features = torch.tensor(np.asarray(gallery.features))
        self._attributes = torch.tensor(np.asarray(gallery.side_info))
        with torch.no_grad(), torch_threads(1):
            self._items = net.encode_items(*gallery_tensors(gallery))
        self._items_by_dim = np.ascontiguousarray(self._items.T.numpy())  # (d, N) for one query row

    def __repr__(self) -> str:
        return f"RetrieverFirstStage({self.source})"

    @torch.no_grad()
    def __call__(self, view: DialogView) -> np.ndarray:
        out = np.empty((len(view.captions), self._items.shape[0]), dtype=np.float64)
        # One dialog at a time with one thread: the same arithmetic whatever the batch.
        with torch_threads(1):
            for i, texts in enumerate(view.captions):
                query = self._query(tuple(view.history[i, : len(texts)].tolist()), tuple(texts))
                out[i] = np.clip(query.numpy()[0] @ self._items_by_dim, -1.0, 1.0)
        return out

    def _query(self, shown: tuple[int, ...], texts: tuple[str, ...]) -> torch.Tensor:
        """The query after replaying ``(shown, texts)``. Each turn extends the previous turn's
        dialog by one caption, so the state after the prefix is cached and only the new turn
        is computed: the same operations, in the same order, as a full replay (a dialog's
        scores do not depend on what else is in the cache), at one step per turn instead of t."""
        start = len(texts)
        state, query = self.net.initial_state(1), None
        while start > 0:
            hit = self._states.get((shown[:start], texts[:start]))
            if hit is not None:
                self._states.move_to_end((shown[:start], texts[:start]))
                state, query = hit
                break
            start -= 1
        if start < len(texts):
            ids, _ = self.tokenizer.encode_batch(list(texts[start:]), self.net.config.max_caption_length)
            tokens = torch.as_tensor(ids)
            for t in range(start, len(texts)):
                item = torch.as_tensor(shown[t : t + 1])
                state, query = self.net.step(
                    state, tokens[t - start : t - start + 1], self._features[item], self._attributes[item]
                )
                self._states[(shown[: t + 1], texts[: t + 1])] = (state, query)
            while len(self._states) > self.cache_size:
                self._states.popitem(last=False)
        assert query is not None, "a dialog's view holds at least the reset's caption"
        return query


def _retriever_tokenizer(directory: Path, meta: dict[str, Any], catalog: Catalog) -> CaptionTokenizer:
    own = directory / "tokenizer.json"
    if own.is_file():
        return WordTokenizer.from_json(own.read_text(encoding="utf-8"))
    args = meta.get("args")
    if not isinstance(args, dict):
        args = {}
    return tokenizer_for(str(args.get("user") or "template"), catalog)


def make_first_stage(spec: str | FirstStage, catalog: Catalog, gallery: Gallery) -> FirstStage:
    """The first stage ``spec`` names (see the module docstring) for ``gallery``."""
    if callable(spec) and not isinstance(spec, str):
        return spec
    if spec == "random":
        return RandomFirstStage()
    if isinstance(spec, str) and (spec == "retriever" or spec.startswith("retriever:")):
        directory = (
            DEFAULT_FIRST_STAGE if spec == "retriever" else Path(spec[len("retriever:") :]).expanduser()
        )
        source = "shipped in fiq_gym/shortlist/default" if spec == "retriever" else str(directory)
        net, meta = load_checkpoint(directory)
        return RetrieverFirstStage(net, _retriever_tokenizer(directory, meta, catalog), gallery, source)
    raise ValueError(
        f"shortlist must be 'retriever', 'retriever:DIR', 'random' or a callable(DialogView) -> scores, got {spec!r}"
    )
