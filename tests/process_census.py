"""Finding the processes a test started, by a marker in their environment (tests/ helpers)."""

from __future__ import annotations

import os
from pathlib import Path


def marked_processes(marker: str) -> list[int]:
    """Processes other than this one whose environment carries ``marker``: a test sets a
    unique variable before it starts anything, and every child inherits it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
