"""The dialog retriever network and its checkpoint format (core: the environment's first
stage runs it, and every retriever agent trains it).

Architecture (after Guo et al., NeurIPS 2018, at CPU scale):

* response encoder: token embeddings + a small transformer encoder over the caption,
  mean-pooled over real tokens;
* image encoder: an MLP over an item's features and attribute scores (side information),
  used both for the shown item and for every gallery item;
* state tracker: a GRU cell over turns whose input is (response, shown image); its state
  is projected to the query embedding.

Items are scored by the cosine similarity between the query and their image embedding, so
scores lie in [-1, 1], exactly the ``scores`` action space of the environment. The agent
wrappers and trainers live in :mod:`fiq_gym.agents.retriever`, which re-exports these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fiq_gym.catalog.model import Catalog
from fiq_gym.checkpoint import (
    CHECKPOINT_VERSION,
    config_fields,
    load_tensors,
    portable_args,
    read_config,
    save_tensors,
    versions,
    write_training_state,
)
from fiq_gym.checkpoint_formats import RETRIEVER_FORMAT
from fiq_gym.errors import CheckpointError
from fiq_gym.gallery import Gallery
from fiq_gym.utils.atomic import atomic_directory

__all__ = [
    "RETRIEVER_FORMAT",
    "RetrieverConfig",
    "RetrieverNet",
    "check_catalog",
    "check_fits",
    "gallery_tensors",
    "load_checkpoint",
    "save_checkpoint",
]


@dataclass(frozen=True)
class RetrieverConfig:
    """Shapes the network was built for; a checkpoint only loads where they fit."""

    vocab_size: int
    feature_dim: int
    attribute_dim: int
    num_items: int
    embed_dim: int = 128
    text_layers: int = 1
    text_heads: int = 4
    max_caption_length: int = 32

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "feature_dim",
            "num_items",
            "embed_dim",
            "text_layers",
            "text_heads",
            "max_caption_length",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.attribute_dim < 0:
            raise ValueError(f"attribute_dim must be at least 0, got {self.attribute_dim}")
        if self.embed_dim % self.text_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be a multiple of text_heads ({self.text_heads})"
            )

    @classmethod
    def for_env(cls, env: Any, **sizes: int) -> RetrieverConfig:
        """The shapes that fit ``env`` (a single or vector fiq-gym env, or a wrapper of one):
        its caption vocabulary and length, feature and attribute sizes and item count;
        ``sizes`` sets the rest (``embed_dim``, ``text_layers``, ``text_heads``)."""
        inner = env.unwrapped
        return cls(
            vocab_size=inner.tokenizer.vocab_size,
            feature_dim=inner.gallery.feature_dim,
            attribute_dim=inner.gallery.side_info.shape[1],
            num_items=inner.gallery.num_items,
            max_caption_length=inner.config.caption_length,
            **sizes,
        )


class RetrieverNet(nn.Module):
    def __init__(self, config: RetrieverConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        d = c.embed_dim
        self.token_embedding = nn.Embedding(c.vocab_size, d, padding_idx=0)
        self.position_embedding = nn.Embedding(c.max_caption_length, d)
        layer = nn.TransformerEncoderLayer(
            d, c.text_heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True
        )
        self.text_encoder = nn.TransformerEncoder(layer, c.text_layers, enable_nested_tensor=False)
        self.image_encoder = nn.Sequential(
            nn.Linear(c.feature_dim + c.attribute_dim, 2 * d), nn.ReLU(), nn.Linear(2 * d, d)
        )
        self.state_tracker = nn.GRUCell(2 * d, d)
        self.query_head = nn.Linear(d, d)

    # --- parts -----------------------------------------------------------------------------
    def encode_items(self, features: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """(N, D), (N, A) -> (N, d) unit-norm item embeddings."""
        return F.normalize(self.image_encoder(torch.cat([features, attributes], dim=-1)), dim=-1)

    def encode_caption(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 ids, 0 = padding -> (B, d)."""
        tokens = tokens[:, : self.config.max_caption_length]
        pad = tokens == 0
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
        # An all-padding caption (after word dropping) would give NaN attention: unmask one slot.
        pad = pad.clone()
        pad[pad.all(dim=1), 0] = False
        x = self.text_encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)

    def step(
        self,
        state: torch.Tensor,
        tokens: torch.Tensor,
        shown_features: torch.Tensor,
        shown_attributes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One turn: update the dialog state, return (new state, unit-norm query)."""
        response = self.encode_caption(tokens)
        image = self.image_encoder(torch.cat([shown_features, shown_attributes], dim=-1))
        state = self.state_tracker(torch.cat([response, image], dim=-1), state)
        return state, F.normalize(self.query_head(state), dim=-1)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.config.embed_dim)


def gallery_tensors(gallery: Gallery) -> tuple[torch.Tensor, torch.Tensor]:
    """The gallery as tensors (copies: the env's arrays are read-only and shared)."""
    return torch.tensor(np.asarray(gallery.features)), torch.tensor(np.asarray(gallery.side_info))


# --- checkpoints ---------------------------------------------------------------------------------


def check_fits(config: RetrieverConfig, gallery: Gallery, vocab_size: int | None) -> None:
    """Raise ``ValueError`` naming every shape in which a network does not fit an env."""
    problems = []
    if config.feature_dim != gallery.feature_dim:
        problems.append(f"feature size {config.feature_dim} != the env's {gallery.feature_dim}")
    if config.attribute_dim != gallery.side_info.shape[1]:
        problems.append(f"attribute count {config.attribute_dim} != the env's {gallery.side_info.shape[1]}")
    if config.num_items != gallery.num_items:
        problems.append(f"catalog size {config.num_items} != the env's {gallery.num_items}")
    if vocab_size is not None and config.vocab_size != vocab_size:
        problems.append(f"caption vocabulary {config.vocab_size} != the env's {vocab_size}")
    if problems:
        raise ValueError(
            "this retriever checkpoint does not fit the environment: "
            + "; ".join(problems)
            + ". Evaluate it on the catalog, category and user it was trained with, or retrain it for this env."
        )


def check_catalog(
    meta: dict[str, Any], catalog: Catalog, where: str | os.PathLike = "this checkpoint"
) -> None:
    """Raise ``ValueError`` if a checkpoint was trained on another catalog than ``catalog``
    (checkpoints from before fingerprints were recorded pass)."""
    trained = meta.get("catalog")
    if not trained:
        return
    differs = catalog.differences(trained)
    if differs:
        raise ValueError(
            f"{where} was trained on another catalog than {catalog.provenance.get('path', 'this one')}: "
            + "; ".join(differs)
            + ". Evaluate it on the catalog it was trained on (its args name it), or retrain it on this one."
        )


_RETRAIN = "train one with `fiq-gym train supervised --out RUN` and pass RUN/checkpoint"


def save_checkpoint(
    directory: str | os.PathLike,
    net: RetrieverNet,
    *,
    args: dict[str, Any],
    agent: str = "retriever",
    optimizer: torch.optim.Optimizer | None = None,
    state: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
    catalog: Catalog | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ text ``files`` such as a tokenizer)
    atomically; with ``optimizer``, also the training state to resume from (``state``: the
    counters, see :func:`fiq_gym.checkpoint.write_training_state`)."""
    with atomic_directory(directory, overwrite=True) as tmp:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        save_tensors(tmp / "model.safetensors", net.state_dict())
        if optimizer is not None or state:
            # Retriever trainers seed every round themselves, so no RNG state is needed.
            write_training_state(tmp, record=state or {}, optimizer=optimizer, rng=False)
        meta = {
            "format": RETRIEVER_FORMAT,
            "version": CHECKPOINT_VERSION,
            "agent": agent,
            "config": asdict(net.config),
            "args": portable_args(args),
            "catalog": None if catalog is None else catalog.fingerprint(),
            "versions": versions(),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return Path(directory)


def load_checkpoint(directory: str | os.PathLike) -> tuple[RetrieverNet, dict[str, Any]]:
    """(network, metadata) from a checkpoint directory written by :func:`save_checkpoint`."""
    directory = Path(directory)
    meta = read_config(directory, formats={RETRIEVER_FORMAT}, what="a retriever checkpoint", fix=_RETRAIN)
    config = config_fields(RetrieverConfig, meta.get("config"), directory / "config.json")
    net = RetrieverNet(config)
    weights = load_tensors(directory / "model.safetensors", fix=_RETRAIN)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{directory / 'model.safetensors'} does not hold the weights its config.json describes "
            f"({str(e).splitlines()[0][:160]}); the checkpoint is damaged; {_RETRAIN}"
        ) from None
    return net, meta
