"""The default catalog: built on first use into a cache folder and reused afterwards.

The cache lives in ``$FIQ_GYM_CACHE`` if set, else ``$XDG_CACHE_HOME/fiq-gym``, else
``~/.cache/fiq-gym``. A default catalog comes with image features and predicted attributes
from the attribute network shipped with fiq-gym (:mod:`fiq_gym.features.default_network`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import MANIFEST, open_catalog
from fiq_gym.catalog.synthetic import GENERATOR_VERSION, build_synthetic_catalog

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "cache_dir",
    "default_catalog_path",
    "load_default_catalog",
]

DEFAULT_SIZE = 10_000
DEFAULT_SEED = 0
DEFAULT_IMAGE_SIZE = 64


def cache_dir() -> Path:
    """Where fiq-gym keeps built catalogs (override with the FIQ_GYM_CACHE variable)."""
    if os.environ.get("FIQ_GYM_CACHE"):
        return Path(os.environ["FIQ_GYM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fiq-gym"


def default_catalog_path(
    size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, image_size: int = DEFAULT_IMAGE_SIZE
) -> Path:
    name = f"synthetic-g{GENERATOR_VERSION}-n{size}-s{seed}-{image_size}px"
    return cache_dir() / "catalogs" / name


def load_default_catalog(
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    image_size: int = DEFAULT_IMAGE_SIZE,
    *,
    progress: bool = True,
) -> Catalog:
    """Open the cached synthetic catalog, building it first if it is not there yet.

    A new catalog gets its features from the shipped network before it appears in the cache,
    so every process sees the same features; one cached without them (by an older fiq-gym, or
    by ``fiq-gym catalog build``) or with an older shipped network's gets them in place.
    Safe when several processes ask at once: each builds into its own temporary folder and
    the first rename wins; the others open the winner's catalog.
    """
    from fiq_gym.features.default_network import attach_default_features

    path = default_catalog_path(size, seed, image_size)
    if (path / MANIFEST).exists():
        attach_default_features(path, progress=progress)
        return open_catalog(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        build_synthetic_catalog(tmp, size=size, seed=seed, image_size=image_size, progress=progress)
        attach_default_features(tmp, progress=progress)
        os.rename(tmp, path)
    except (FileExistsError, OSError):
        if not (path / MANIFEST).exists():
            raise
        # another process finished first: use its catalog
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_catalog(path)
