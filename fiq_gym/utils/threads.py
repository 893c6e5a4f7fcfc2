"""Running a block of torch code, or of numpy's BLAS products, with a chosen number of CPU
threads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["TRAINING_THREADS", "blas_threads", "configure_threads", "torch_threads"]

#: torch intra-op threads of every ``fiq-gym train`` command (their ``--threads`` default)
TRAINING_THREADS = 1


def configure_threads(threads: int = TRAINING_THREADS) -> int:
    """Give torch ``threads`` intra-op threads for the rest of the program, as ``fiq-gym
    train`` does, and return the previous count. Call it once at the top of a training script.

    The agents' networks are small: a product of a few hundred rows gains nothing from a
    second thread, while torch's worker threads spin and take the cores the env's ranking and
    the shopper need. With torch's default (one thread per core) docs/agents.md's SB3 PPO
    recipe took 63.5 s for 2,048 steps where it took 45.2 s with one thread and the CLI 46.7 s,
    on a 2-core machine (``benchmarks/results/recipes.md``). ``threads=0`` restores torch's default.
    """
    if threads < 0:
        raise ValueError(f"threads must be 0 (torch's default: one per core) or more, got {threads}")
    import torch  # here, not at the top: the envs' core imports this module and needs no torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return before


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the caller's
    setting (building the default catalog inside someone's program must not change how many
    cores their own torch code uses).

    Args:
        threads: a count; 0 for all cores; None to leave the setting as it is.
    """
    import torch

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


_CONTROLLER = None


def _blas_controller() -> Any:  # the loaded BLAS libraries, found once (numpy's is loaded by then)
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextlib.contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """Run the block with the BLAS libraries numpy uses (OpenBLAS, MKL...) limited to
    ``threads`` threads, then restore their settings; None leaves them as they are.

    The environments use it while a step with a torch shopper computes (see
    :attr:`fiq_gym.users.User.blas_threads`): OpenBLAS's worker threads keep spinning for a
    while after each product, taking a core from the shopper's decoding on a small machine.
    On the AVX-512 AMD EPYC that published the tables, products gave the same bits with any
    thread count (``benchmarks/README.md``); on an AVX2 AMD EPYC (OpenBLAS's Haswell kernels)
    products of 64 rows and more differ in the last bits between one and two threads. Either
    way they stay within float32's proven error, so only near-ties can rank differently (a
    test checks both); ``scoring="exact"`` ranks the same with any thread count and CPU.

    The enter and exit cost about 15 microseconds (``threadpoolctl``'s limit on a controller
    built once).
    """
    if threads is None:
        yield
        return
    with _blas_controller().limit(limits=threads, user_api="blas"):
        yield
