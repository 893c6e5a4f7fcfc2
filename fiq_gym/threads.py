"""Running a block of torch code with a chosen number of CPU threads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the caller's
    setting (building the default catalog inside someone's program must not change how many
    cores their own torch code uses).

    Args:
        threads: a count; 0 for all cores; None to leave the setting as it is.
    """
    before = torch.get_num_threads()
    wanted = before if threads is None else (threads or os.cpu_count() or 1)
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
