"""The default catalog: built on first use into a cache folder and reused afterwards.

The cache lives in ``$FIQ_GYM_CACHE`` if set, else ``$XDG_CACHE_HOME/fiq-gym``, else
``~/.cache/fiq-gym``.
"""

from __future__ import annotations

import os
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

    Safe when several processes ask at once: each builds into its own temporary folder and
    the first rename wins; the others open the winner's catalog.
    """
    path = default_catalog_path(size, seed, image_size)
    if (path / MANIFEST).exists():
        return open_catalog(path)
    try:
        return build_synthetic_catalog(path, size=size, seed=seed, image_size=image_size, progress=progress)
    except (FileExistsError, OSError):
        if (path / MANIFEST).exists():  # another process finished first
            return open_catalog(path)
        raise
