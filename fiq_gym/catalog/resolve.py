"""Turn what a user passes as ``catalog=`` into a :class:`Catalog`, sharing opened catalogs.

Environments created in one process with the same catalog path share one opened catalog
(and so one set of retrieval tables), which keeps a vector of 64 environments cheap.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fiq_gym.catalog.default import load_default_catalog
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import MANIFEST, open_catalog

__all__ = ["resolve_catalog"]

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
