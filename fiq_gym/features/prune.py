"""Dropping the dead units of an attribute network's feature layer.

The feature layer ends in a ReLU, and training leaves many of its units at zero for every
image (68 of 128 in the network first shipped). Such a unit is a dimension every item shares,
so it ties every query in it and wastes half of a `query` action. :func:`prune_checkpoint`
measures which units fire on the images of one or more catalogs and writes a checkpoint whose
feature layer keeps only the live ones: the rows of the feature layer and the columns of the
attribute and category heads of the dropped units are removed. On every image where the
dropped units are zero, features lose only zero dimensions and the attribute predictions are unchanged, so
models that read the features (the learned shopper, retrievers) stay valid after dropping the
same input columns (:func:`fiq_gym.users.transformer.narrow.narrow_captioner`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fiq_gym.catalog.lazy_images import LazyImages
from fiq_gym.catalog.storage import open_catalog
from fiq_gym.features.model import AttributeNet, NetworkConfig, check_fits, load_checkpoint, save_checkpoint

__all__ = ["PruneResult", "live_units", "prune_checkpoint", "pruned_network"]


@dataclass(frozen=True)
class PruneResult:
    """Where the pruned checkpoint went and which units of the original it kept."""

    path: Path
    kept: tuple[int, ...]
    feature_dim_before: int
    activity: tuple[float, ...]


def unit_activity(network: AttributeNet, images: np.ndarray | LazyImages, batch: int = 1024) -> np.ndarray:
    """(feature_dim,) the fraction of ``images`` on which each feature unit is non-zero."""
    counts = np.zeros(network.config.feature_dim, dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            block = torch.from_numpy(np.array(images[start : start + batch]))
            counts += (network.features(block) != 0).sum(dim=0).numpy()
    return counts / max(len(images), 1)


def live_units(activity: np.ndarray, min_active: float) -> np.ndarray:
    """Indices of the units active on more than ``min_active`` of the images (sorted)."""
    return np.flatnonzero(activity > min_active)


def pruned_network(network: AttributeNet, keep: Sequence[int] | np.ndarray) -> AttributeNet:
    """A copy of ``network`` whose feature layer has only units ``keep`` (in that order)."""
    keep_t = torch.as_tensor(list(keep), dtype=torch.long)
    config = NetworkConfig.from_json({**network.config.to_json(), "feature_dim": len(keep_t)})
    with torch.random.fork_rng(devices=[]):
        out = AttributeNet(config)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    state["embed.weight"] = state["embed.weight"][keep_t]
    state["embed.bias"] = state["embed.bias"][keep_t]
    state["heads.weight"] = state["heads.weight"][:, keep_t]
    if "category_head.weight" in state:
        state["category_head.weight"] = state["category_head.weight"][:, keep_t]
    out.load_state_dict(state, strict=True)
    return out.eval()


def prune_checkpoint(
    checkpoint: str | os.PathLike | None,
    catalogs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    min_active: float = 1e-3,
) -> PruneResult:
    """Write to ``out`` the attribute network ``checkpoint`` (default: the shipped one)
    without the feature units active on at most ``min_active`` of the images of ``catalogs``.

    The new checkpoint's ``training`` record keeps the original's and adds ``pruned``: the
    original weights' sha256, the catalogs, the threshold and the kept unit indices.
    """
    if not catalogs:
        raise ValueError("give at least one catalog whose images decide which units are live")
    if not 0.0 <= min_active < 1.0:
        raise ValueError(f"min_active must lie in [0, 1), got {min_active}")
    source = load_checkpoint(checkpoint)
    counts = np.zeros(source.network.config.feature_dim)
    total = 0
    for path in catalogs:
        catalog = open_catalog(path)
        check_fits(source, catalog)
        assert catalog.images is not None, "check_fits refuses a catalog without images"
        counts += unit_activity(source.network, catalog.images) * len(catalog)
        total += len(catalog)
    activity = counts / total
    keep = live_units(activity, min_active)
    if len(keep) == 0:
        raise ValueError(
            f"no feature unit is active on more than {min_active:.2%} of the images; lower --min-active"
        )
    training = dict(source.record.get("training") or {})
    training["pruned"] = {
        "from_weights_sha256": source.record.get("weights_sha256"),
        "catalogs": [str(Path(c)) for c in catalogs],
        "min_active": min_active,
        "kept_units": keep.tolist(),
        "feature_dim_before": source.network.config.feature_dim,
    }
    path = save_checkpoint(out, pruned_network(source.network, keep), source.vocabulary, training=training)
    return PruneResult(
        Path(path), tuple(int(i) for i in keep), source.network.config.feature_dim, tuple(activity.tolist())
    )
