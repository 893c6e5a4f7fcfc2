"""The default catalog, built on first use into the cache and reused afterwards, and
:func:`resolve_catalog`, which turns what a user passes as ``catalog=`` into a catalog.

Besides a directory, ``catalog=`` takes a **synthetic catalog spec**, ``"synthetic:SIZE"`` or
``"synthetic:SIZE:SEED"`` (e.g. ``"synthetic:100000"``): the synthetic catalog of that size
and seed with the shipped network's features, built into the cache on first use like the
default one (which is ``"synthetic:10000:0"``). A spec builds the same catalog on any machine,
so it is how registered configurations and cluster runs name a catalog without a shared path.

The cache lives in ``$FIQ_GYM_CACHE`` if set, else ``$XDG_CACHE_HOME/fiq-gym``, else
``~/.cache/fiq-gym``. A default catalog comes with image features and predicted attributes
from the attribute network shipped with fiq-gym (:mod:`fiq_gym.features.default_network`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import MANIFEST, open_catalog
from fiq_gym.catalog.synthetic import GENERATOR_VERSION, write_synthetic_catalog
from fiq_gym.features.default_network import attach_default_features, shipped_weights_tag
from fiq_gym.utils.atomic import atomic_directory
from fiq_gym.utils.cache import cache_dir

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "cache_dir",
    "default_catalog_path",
    "load_default_catalog",
    "parse_synthetic_spec",
    "resolve_catalog",
]

SYNTHETIC_PREFIX = "synthetic:"

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
# (and so one gallery), which keeps a vector of 64 environments cheap.
_opened: dict[tuple[str, int], Catalog] = {}
_lock = threading.Lock()


def parse_synthetic_spec(spec: str) -> tuple[int, int] | None:
    """``(size, seed)`` of a ``"synthetic:SIZE[:SEED]"`` spec, or None if ``spec`` is not one.

    Raises ``ValueError`` naming the expected form when the spec starts with ``synthetic:``
    but does not parse (so a typo is not taken for a directory name)."""
    if not spec.startswith(SYNTHETIC_PREFIX):
        return None
    parts = spec[len(SYNTHETIC_PREFIX) :].replace("_", "").split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        size, seed = int(parts[0]), int(parts[1]) if len(parts) == 2 else DEFAULT_SEED
    except ValueError:
        raise ValueError(
            f"catalog spec {spec!r} does not parse: write synthetic:SIZE or synthetic:SIZE:SEED, "
            "e.g. synthetic:100000 or synthetic:100000:0"
        ) from None
    if size < 2 or seed < 0:
        raise ValueError(
            f"catalog spec {spec!r}: in synthetic:SIZE:SEED, SIZE must be at least 2 and SEED at least 0"
        )
    return size, seed


def resolve_catalog(catalog: Catalog | str | os.PathLike | None) -> Catalog:
    """``None``: the default synthetic catalog (built on first use); ``"synthetic:SIZE[:SEED]"``:
    that synthetic catalog (built into the cache on first use); a path: that catalog
    directory; a :class:`Catalog`: itself."""
    if isinstance(catalog, Catalog):
        return catalog
    if catalog is not None and not isinstance(catalog, str | os.PathLike):
        raise TypeError(f"catalog must be a Catalog, a directory path or None, got {type(catalog).__name__}")
    spec = parse_synthetic_spec(catalog) if isinstance(catalog, str) else None
    with _lock:
        if catalog is None or spec is not None:
            opened = load_default_catalog(*(spec or ()))
            path = Path(opened.provenance["path"]).resolve()
        else:
            path = Path(catalog).expanduser().resolve()
            opened = None
        manifest = path / MANIFEST
        key = (str(path), manifest.stat().st_mtime_ns if manifest.exists() else -1)
        if key not in _opened:
            _opened[key] = opened if opened is not None else open_catalog(path)
        return _opened[key]
