"""Exact ranks over a gallery split into shards: each shard in a worker process, in a Ray
actor, or all of them in this one.

A shard answers, for every dialog of a batch, how many of its items score exactly at least as
well as the target, and which of its items not shown yet scores best
(:meth:`fiq_gym.ranking.exact.GalleryShard.scan`). The ranks are the sums of the counts, minus
the target itself; the item shown is the best of the shards' bests, compared exactly again.
Exact comparisons make the sums independent of the split and of where a shard runs: one
shard, two or three, inline, in processes or in Ray actors give the same ranks and the same
items, bit for bit (``tests/test_sharding.py``, ``tests/test_ray_sharding.py``).

Worker processes (``mode="process"``) are :class:`fiq_gym.utils.workers.WorkerPool`'s: plain
``python -c`` children that never import the caller's ``__main__`` (a script without an
``if __name__ == "__main__":`` guard works) and exit when this process closes the ranker,
drops it, or dies. Each uses one BLAS thread: a shard per core. The features reach them
through an unnamed temporary file whose descriptor they inherit and which they map, so
nothing is left on disk whatever happens.

Ray actors (``mode="ray"``, :mod:`fiq_gym.ranking.ray_shards`; needs Ray) answer the same
scan, one CPU and one BLAS thread each, spread over the nodes of the Ray cluster this process
is connected to (a local instance is started if there is none). Their rows reach them through
Ray's object store, so they may run on other machines; every step sends each actor the same
small batch as a worker process gets. Closing or dropping the ranker kills them; Ray stays up.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from fiq_gym.ranking.exact import ONE_BLAS_THREAD, SCANS, SHARD_MODES, GalleryShard, exact_best
from fiq_gym.utils.workers import WorkerPool

if TYPE_CHECKING:
    from fiq_gym.ranking.ray_shards import RayShards

__all__ = ["ONE_BLAS_THREAD", "RAY_INSTALL", "ExactRanker", "shard_bounds"]

#: What installs Ray, for ``mode="ray"`` (the ``rllib`` extra brings it, in the tested version).
RAY_INSTALL = 'pip install -e ".[rllib]" -c constraints-rllib.txt'


def shard_bounds(num_items: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` consecutive row ranges of sizes differing by at most one."""
    edges = [num_items * s // shards for s in range(shards + 1)]
    return list(itertools.pairwise(edges))


class ExactRanker:
    """Exact ranks (see :mod:`fiq_gym.ranking.exact`) over ``shards`` shards of ``features``.

    Args:
        features: (N, D) float32 features of the items in play.
        scan: ``"float32"`` or ``"float16"``: how shards store the copy they scan.
        shards: number of consecutive row ranges.
        mode: where the shards run (:data:`fiq_gym.ranking.SHARD_MODES`): ``"inline"`` one
            after another here, ``"process"`` each in its own worker process, ``"ray"`` each in
            a Ray actor. Call :meth:`close` when done; dropping the ranker ends processes and
            actors as well.
    """

    def __init__(
        self, features: np.ndarray, *, scan: str = "float32", shards: int = 1, mode: str = "inline"
    ) -> None:
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {list(SCANS)}, got {scan!r}")
        if mode not in SHARD_MODES:
            raise ValueError(f"mode must be one of {list(SHARD_MODES)}, got {mode!r}")
        if not 1 <= shards <= len(features):
            raise ValueError(f"shards must lie in [1, {len(features)}] (the items in play), got {shards}")
        self.features = features
        self.bounds = shard_bounds(len(features), shards)
        self.mode = mode
        self._shards: list[GalleryShard] = []
        self._pool: WorkerPool | None = None
        self._actors: RayShards | None = None
        self._started_ray = False
        self._token = uuid.uuid4().hex
        self._finalizer = weakref.finalize(self, lambda: None)
        if mode == "inline":
            self._shards = [GalleryShard(features[lo:hi], lo, scan) for lo, hi in self.bounds]
            return
        if mode == "ray":
            actors = _ray_shards()(features, self.bounds, scan)
            self._actors, self._started_ray = actors, actors.started_ray
            self._finalizer = weakref.finalize(self, actors.close)
            # At exit, Ray's own shutdown (or the driver's exit) ends the actors: killing them
            # from an exit hook could run after Ray has disconnected.
            self._finalizer.atexit = False
            return
        try:
            with _shared_file(features) as (path, fds):
                pool = WorkerPool(shards, env=ONE_BLAS_THREAD, pass_fds=fds)
                self._pool = pool
                self._finalizer = weakref.finalize(self, pool.close)
                pool.scatter(_open_shard, [(self._token, path, lo, hi, scan) for lo, hi in self.bounds])
        except BaseException:
            self.close()
            raise

    @property
    def num_shards(self) -> int:
        return len(self.bounds)

    @property
    def worker_pids(self) -> list[int]:
        """The shard processes' ids (empty for inline shards or once closed); for Ray actors,
        their processes' ids on their own nodes."""
        if self._actors is not None:
            return list(self._actors.pids)
        return [] if self._pool is None else self._pool.pids

    @property
    def started_ray(self) -> bool:
        """Whether making this ranker connected the process to Ray (``mode="ray"`` only):
        then it started a local instance (or joined ``RAY_ADDRESS``), which :meth:`close`
        leaves running for the next ranker and Ray ends when the process exits."""
        return self._started_ray

    def similar_ranks(self, shown: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Ranks by exact similarity to each dialog's shown item."""
        ranks, _ = self._run(self.features[np.asarray(shown)], np.asarray(targets), None)
        return ranks

    def query_ranks(
        self, queries: np.ndarray, targets: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best item not in ``history`` under exact scores (ties: the lowest index), and
        the target's rank under them."""
        ranks, best = self._run(np.asarray(queries, dtype=np.float32), np.asarray(targets), history)
        assert best is not None
        return best, ranks

    def _run(
        self, queries: np.ndarray, targets: np.ndarray, history: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        target_rows = np.asarray(self.features[targets], dtype=np.float32)
        if history is not None:
            history = np.asarray(history, dtype=np.int64)
        if self._pool is not None:
            job = (self._token, queries, target_rows, history, targets)
            results = self._pool.scatter(_scan_shard, [job] * self.num_shards)
        elif self._actors is not None:
            results = self._actors.scan(queries, target_rows, history, targets)
        elif self._shards:
            results = [shard.scan(queries, target_rows, history, targets) for shard in self._shards]
        else:
            what = "actors" if self.mode == "ray" else "processes"
            raise RuntimeError(
                f"the shard {what} of this ranker were closed (env.close()); make a new env to step again"
            )
        # The target scores at least as well as itself: one count too many.
        ranks = np.sum([counts for counts, _ in results], axis=0) - 1
        if history is None:
            return ranks, None
        bests = np.stack([best for _, best in results], axis=1)  # ascending along shards
        shown = np.empty(len(queries), dtype=np.int64)
        for i, row in enumerate(bests):
            found = row[row >= 0]
            # Every item shown (never in an env: it needs more items than turns): item 0, as
            # numpy's argmax over scores that are all -inf.
            shown[i] = exact_best(queries[i], np.asarray(self.features[found]), found) if len(found) else 0
        return ranks, shown

    def close(self) -> None:
        """End the shard processes or kill the shard actors (a no-op for inline shards, and
        when called again)."""
        self._finalizer()
        self._pool = None
        self._actors = None


def _ray_shards() -> type[RayShards]:
    """:class:`fiq_gym.ranking.ray_shards.RayShards`, or an ImportError naming the install."""
    try:
        from fiq_gym.ranking.ray_shards import RayShards
    except ImportError as error:
        if (error.name or "").partition(".")[0] != "ray":
            raise
        raise ImportError(
            f"shard_mode='ray' runs shards in Ray actors, and Ray is not installed: {RAY_INSTALL} "
            "(or use shard_mode='process')"
        ) from error
    return RayShards


@contextlib.contextmanager
def _shared_file(features: np.ndarray) -> Iterator[tuple[str, tuple[int, ...]]]:
    """``features`` as a ``.npy`` file for workers started inside the block: the path they
    map it from, and the descriptors they must inherit for that path to work.

    On Linux the file has no name at all: workers inherit its descriptor and open
    ``/proc/self/fd/N``, so a killed process leaves nothing behind. Elsewhere it is a named
    temporary file, removed when the block ends (the workers have mapped it by then).
    """
    handle: IO[bytes]
    if Path("/proc/self/fd").is_dir():
        with tempfile.TemporaryFile(prefix="fiq-gym-shards-") as handle:
            np.save(handle, np.asarray(features, dtype=np.float32))
            handle.flush()
            yield f"/proc/self/fd/{handle.fileno()}", (handle.fileno(),)
        return
    with tempfile.NamedTemporaryFile(prefix="fiq-gym-shards-", suffix=".npy", delete=False) as handle:
        np.save(handle, np.asarray(features, dtype=np.float32))
    try:
        yield handle.name, ()
    finally:
        Path(handle.name).unlink(missing_ok=True)


# --- the worker side: one shard per worker process, kept between calls --------------------

_OPEN: dict[str, GalleryShard] = {}


def _open_shard(job: tuple[str, str, int, int, str]) -> int:
    """Map rows ``lo:hi`` of the shared features and keep them as this worker's shard."""
    token, path, lo, hi, scan = job
    rows = np.load(path, mmap_mode="r")[lo:hi]
    if scan == "float32":
        rows = np.array(rows)  # scanned every step: private memory, no page faults
    shard = GalleryShard(rows, lo, scan)
    if scan != "float32" and isinstance(rows, np.memmap):
        # The float32 rows are read again only for rechecks: let the kernel drop the pages
        # the set-up pass touched, so the worker holds the float16 copy alone.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            rows._mmap.madvise(mmap.MADV_DONTNEED)  # type: ignore[attr-defined]  # private: not in numpy's stubs
    _OPEN.clear()
    _OPEN[token] = shard
    return os.getpid()


def _scan_shard(
    job: tuple[str, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    token, queries, targets, history, target_index = job
    shard = _OPEN.get(token)
    if shard is None:
        raise RuntimeError(f"this worker holds no shard {token}; was it restarted?")
    return shard.scan(queries, targets, history, target_index)
