"""Where fiq-gym keeps what it builds on first use (the default catalog, imports)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Where fiq-gym keeps built catalogs (override with the FIQ_GYM_CACHE variable)."""
    if os.environ.get("FIQ_GYM_CACHE"):
        return Path(os.environ["FIQ_GYM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fiq-gym"
