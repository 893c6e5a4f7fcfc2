"""Shards of exact ranking in Ray actors: ``shard_mode="ray"`` (needs Ray, the ``rllib`` extra).

Each shard is a :class:`ShardActor` holding one :class:`~fiq_gym.ranking.exact.GalleryShard`
and answering the same scan as the process shards. The class lives here, in an installed
module, so Ray imports it by name on every node and never needs the caller's ``__main__``
(every node needs fiq-gym installed, as any Ray code does).

What crosses, and when:

* once, at set-up: each shard's feature rows, through Ray's object store (``ray.put`` of the
  rows, fetched by the actor's node), never a file: actors may run on other machines;
* every step, to each actor: the queries and the targets' feature rows (``4 B D`` bytes each
  for B dialogs), the targets' indices and, in ``query`` mode, the items shown so far; back:
  one count and one item index per dialog.

Ray itself: if this process is not connected to Ray yet, :func:`ensure_ray` joins the cluster
``RAY_ADDRESS`` names, or else starts a local instance, and the ranker remembers that it did
(``started_ray``). Closing the ranker kills its actors but leaves Ray running, for the next env
to reuse; Ray's own exit hook ends a local instance with this process. A Ray the caller
started or joined is never shut down here.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import ray

from fiq_gym.ranking.exact import ONE_BLAS_THREAD, GalleryShard

__all__ = ["RayShards", "ShardActor", "ensure_ray"]

# How long set-up waits for every actor to run before it says why it may be waiting.
_PLACEMENT_WARNING_S = 60.0


class ShardActor:
    """One shard in a Ray actor: rows ``offset ..`` of the gallery (see :class:`RayShards`).

    ``rows`` comes as ``[ObjectRef]`` (a list, so Ray hands over the reference rather than the
    value): with ``scan="float16"`` the actor keeps the reference, so the object store keeps
    the float32 rows its rechecks read while the actor holds the float16 copy it scans.
    """

    def __init__(self, rows: list[ray.ObjectRef], offset: int, scan: str) -> None:
        (ref,) = rows
        values = ray.get(ref)
        if scan == "float32":
            # Scanned every step: a private copy, and the object store can free its own.
            values = np.array(values, dtype=np.float32)
            self._rows_ref = None
        else:
            self._rows_ref = ref
        self._shard = GalleryShard(values, offset, scan)

    def pid(self) -> int:
        """This actor's process id (on its own node); answering it also means set-up is done."""
        return os.getpid()

    def scan(
        self,
        queries: np.ndarray,
        targets: np.ndarray,
        history: np.ndarray | None,
        target_index: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fiq_gym.ranking.exact.GalleryShard.scan` of this actor's shard."""
        return self._shard.scan(queries, targets, history, target_index)


# Made once: each ray.remote(ShardActor) would export the class to the cluster again.
_REMOTE_SHARD = ray.remote(ShardActor)


def ensure_ray(cpus: int) -> bool:
    """Connect this process to Ray if it is not yet; returns whether it connected here.

    With ``RAY_ADDRESS`` set, joins that cluster (Ray reads the variable itself); otherwise
    starts a local instance with ``max(cores, cpus)`` logical CPUs, so ``cpus`` one-CPU actors
    fit even on a smaller machine (as ``cpus`` worker processes would), without the dashboard
    and without usage reports. To use a cluster without ``RAY_ADDRESS``, call
    ``ray.init(address=...)`` before making the env.
    """
    if ray.is_initialized():
        return False
    # No usage reports: the library never phones home (and most of its machines cannot).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, int(cpus)),
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    return True


class RayShards:
    """One :class:`ShardActor` per row range of ``features``; the driver's side of them.

    Args:
        features: (N, D) float32 features of the items in play.
        bounds: the shards' ``(lo, hi)`` row ranges.
        scan: ``"float32"`` or ``"float16"`` (see :class:`~fiq_gym.ranking.exact.GalleryShard`).
    """

    def __init__(self, features: np.ndarray, bounds: Sequence[tuple[int, int]], scan: str) -> None:
        self.started_ray = ensure_ray(len(bounds))
        self._actors: list[ray.actor.ActorHandle] = []
        self.pids: list[int] = []
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if cpus < len(bounds):
            raise ValueError(
                f"shard_mode='ray' puts each of the {len(bounds)} shards in an actor of 1 CPU, but the Ray cluster "
                f"this process is connected to has {cpus:g} CPUs: pass at most shards={int(cpus)}, or start Ray "
                f"with more (ray.init(num_cpus={len(bounds)}) before making the env; logical CPUs may exceed cores)"
            )
        remote = _REMOTE_SHARD.options(
            num_cpus=1,
            # In the actor's environment, so numpy reads them when the actor's worker imports it.
            runtime_env={"env_vars": ONE_BLAS_THREAD},
            # Spread over the cluster's nodes: a gallery beyond one machine is the point.
            scheduling_strategy="SPREAD",
        )
        try:
            for lo, hi in bounds:
                rows = ray.put(np.ascontiguousarray(features[lo:hi], dtype=np.float32))
                self._actors.append(remote.remote([rows], lo, scan))
            self.pids = _wait_for(self._actors)
        except BaseException:
            self.close()
            raise

    def scan(
        self,
        queries: np.ndarray,
        targets: np.ndarray,
        history: np.ndarray | None,
        target_index: np.ndarray,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every actor's ``scan`` of the same batch, in shard order."""
        if not self._actors:
            raise RuntimeError("the shard actors of this ranker were killed (env.close())")
        calls = [actor.scan.remote(queries, targets, history, target_index) for actor in self._actors]
        return ray.get(calls)

    def close(self) -> None:
        """Kill the actors (at once: they hold nothing worth saving); Ray itself stays up."""
        actors, self._actors, self.pids = self._actors, [], []
        # After Ray's own shutdown (at exit, or by the caller) the actors are gone already.
        if not actors or not ray.is_initialized():
            return
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as error:  # an actor that died by itself: nothing left to end
                logging.getLogger(__name__).debug("could not kill a shard actor: %s", error)


def _wait_for(actors: Sequence[ray.actor.ActorHandle]) -> list[int]:
    """The actors' process ids once every one has set its shard up (raising what set-up raised).

    Actors wait for free CPUs; if they are still not running after a minute, say so (every CPU
    may be taken, e.g. by RLlib runners) and keep waiting.
    """
    calls = [actor.pid.remote() for actor in actors]
    _, waiting = ray.wait(calls, num_returns=len(calls), timeout=_PLACEMENT_WARNING_S)
    if waiting:
        free = ray.available_resources().get("CPU", 0.0)
        warnings.warn(
            f"{len(waiting)} of {len(calls)} shard actors are not running after {_PLACEMENT_WARNING_S:.0f} s; "
            f"each needs 1 free CPU and the Ray cluster has {free:g} free: still waiting",
            RuntimeWarning,
            stacklevel=3,
        )
    return [int(pid) for pid in ray.get(calls)]
