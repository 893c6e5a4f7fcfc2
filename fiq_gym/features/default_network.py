"""The attribute network shipped with fiq-gym, and the features it gives the default catalogs.

The files in ``fiq_gym/features/default/`` were made by these commands, run from the
repository root (about 9 minutes on one CPU core for the training):

    fiq-gym catalog build --size 20000 --seed 1 --out /tmp/fiq-gym-s1 --overwrite --no-features && fiq-gym features train /tmp/fiq-gym-s1 --out runs/features-default --overwrite --epochs 30 --seed 0 --threads 1 --export runs/features-default-128
    fiq-gym catalog build --size 10000 --seed 0 --out /tmp/fiq-gym-s0 --overwrite --no-features && fiq-gym features prune --checkpoint runs/features-default-128 --catalog /tmp/fiq-gym-s1 --catalog /tmp/fiq-gym-s0 --out fiq_gym/features/default

The first trains a 128-unit feature layer, the attribute heads and a category head on a
synthetic catalog of seed 1, so the default catalog (seed 0) is held out from it;
``benchmarks/results/features.md`` reports its accuracy there (``python -m
fiq_gym.benchmarks.features``). The category head makes the features carry each item's
category, which the learned shopper needs to name it. The second drops the units that fire
on at most 0.1% of the images of both catalogs (82 were zero on every image of both; one
fired on 7 of the 20,000 training images and 5 of the 10,000 default ones), leaving D = 45;
see :mod:`fiq_gym.features.prune`.

:func:`attach_default_features` runs it over a synthetic catalog when the catalog is first
built, so a new user gets learned features after a few seconds instead of training a network.
A catalog whose features came from other weights (an older shipped network) is refreshed;
features a user extracted with their own checkpoint or model are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import open_catalog

__all__ = [
    "attach_default_features",
    "default_network_fits",
    "needs_default_features",
    "shipped_weights_tag",
]


# fiq_gym.features.model's DEFAULT_CHECKPOINT / CONFIG_FILE, spelled out so that opening the
# default catalog does not import torch (a test checks they agree).
SHIPPED_CONFIG = Path(__file__).resolve().parent / "default" / "config.json"


def _shipped_record() -> dict[str, Any] | None:
    import json

    try:
        return json.loads(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def shipped_weights_tag() -> str:
    """The first 12 hex digits of the shipped network's weights sha256 ("none" if missing):
    part of the default catalog's cache folder name, so features from another network are
    never served from the cache."""
    record = _shipped_record()
    sha = record.get("weights_sha256") if record else None
    return str(sha)[:12] if sha else "none"


def _fits(catalog: Catalog, record: dict[str, Any]) -> bool:
    return (
        catalog.images is not None
        and list(catalog.image_size or ()) == record.get("image_size")
        and catalog.vocabulary.to_json() == record.get("vocabulary")
    )


def default_network_fits(catalog_path: str | os.PathLike) -> bool:
    """Whether the shipped network was made for catalogs like this one (vocabulary, image size)."""
    record = _shipped_record()
    return record is not None and _fits(open_catalog(catalog_path), record)


def needs_default_features(catalog_path: str | os.PathLike) -> bool:
    """True if the catalog has no features, or features from another version of the shipped
    network, and the shipped network fits it. Reads only manifests and the shipped config."""
    record = _shipped_record()
    if record is None:
        return False
    catalog = open_catalog(catalog_path)
    if not _fits(catalog, record):
        return False
    made_by = catalog.provenance.get("features")
    if catalog.features is None or not isinstance(made_by, dict):
        return True
    return bool(made_by.get("shipped")) and made_by.get("weights_sha256") != record.get("weights_sha256")


def attach_default_features(catalog_path: str | os.PathLike, *, progress: bool = True) -> bool:
    """Extract features and attribute scores with the shipped network into ``catalog_path`` if
    :func:`needs_default_features`; return whether it did."""
    if not needs_default_features(catalog_path):
        return False
    from fiq_gym.features.extract import extract_features

    extract_features(catalog_path, progress=progress)
    return True
