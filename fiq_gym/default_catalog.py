"""The default catalog, built on first use into the cache and reused afterwards, and
:func:`resolve_catalog`, which turns what a user passes as ``catalog=`` into a catalog.

The cache lives in ``$FIQ_GYM_CACHE`` if set, else ``$XDG_CACHE_HOME/fiq-gym``, else
``~/.cache/fiq-gym``. A default catalog comes with image features and predicted attributes
from the attribute network shipped with fiq-gym (:mod:`fiq_gym.features.default_network`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fiq_gym.atomic import atomic_directory
from fiq_gym.cache import cache_dir
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import MANIFEST, open_catalog
from fiq_gym.catalog.synthetic import GENERATOR_VERSION, write_synthetic_catalog
from fiq_gym.features.default_network import attach_default_features, shipped_weights_tag

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "cache_dir",
    "default_catalog_path",
    "load_default_catalog",
    "resolve_catalog",
]

DEFAULT_SIZE = 10_000
DEFAULT_SEED = 0
DEFAULT_IMAGE_SIZE = 64


def default_catalog_path(
    size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, image_size: int = DEFAULT_IMAGE_SIZE
) -> Path:
    # The shipped network's weights are part of the key: a new network gets a new folder,
    # so a cache built with older features is never served (nor rewritten under a reader).
    name = f"synthetic-g{GENERATOR_VERSION}-n{size}-s{seed}-{image_size}px-f{shipped_weights_tag()}"
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
    path = default_catalog_path(size, seed, image_size)
    if (path / MANIFEST).exists():
        attach_default_features(path, progress=progress)
        return open_catalog(path)
    try:
        # One atomic directory for both steps, so a killed build leaves only a temporary
        # directory that the next attempt recognises as a dead writer's and removes.
        with atomic_directory(path) as tmp:
            write_synthetic_catalog(tmp, size=size, seed=seed, image_size=image_size, progress=progress)
            attach_default_features(tmp, progress=progress)
    except FileExistsError:
        if not (path / MANIFEST).exists():
            raise
        # another process finished first: use its catalog
    return open_catalog(path)


# --- catalog= arguments --------------------------------------------------------------------------

# Environments created in one process with the same catalog path share one opened catalog
# (and so one set of retrieval tables), which keeps a vector of 64 environments cheap.
_opened: dict[tuple[str, int], Catalog] = {}
_lock = threading.Lock()


def resolve_catalog(catalog: Catalog | str | os.PathLike | None) -> Catalog:
    """``None``: the default synthetic catalog (built on first use); a path: that catalog
    directory; a :class:`Catalog`: itself."""
    if isinstance(catalog, Catalog):
        return catalog
    if catalog is not None and not isinstance(catalog, str | os.PathLike):
        raise TypeError(f"catalog must be a Catalog, a directory path or None, got {type(catalog).__name__}")
    with _lock:
        if catalog is None:
            opened = load_default_catalog()
            path = Path(opened.provenance["path"]).resolve()
        else:
            path = Path(catalog).expanduser().resolve()
            opened = None
        manifest = path / MANIFEST
        key = (str(path), manifest.stat().st_mtime_ns if manifest.exists() else -1)
        if key not in _opened:
            _opened[key] = opened if opened is not None else open_catalog(path)
        return _opened[key]
