"""Sharded exact ranking in Ray actors (``shard_mode="ray"``): whole episodes with S = 1, 2, 3
actors equal the unsharded env with the same scoring, bit for bit; close() and dropping the
env kill the actors; a script that makes such an env starts Ray itself, reuses it, and leaves
no process behind; without Ray the error names the install.

The tests that need Ray are skipped, with the install command as the reason, when it is
absent. They share one local Ray instance per test process, started and shut down here (never
``ray stop``, which would stop every Ray instance on the machine)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from process_census import marked_processes

# The gallery, the episodes and their comparison are those of the process and inline shards.
from test_sharding import MODES, _alive, _assert_same, _episodes
from test_sharding import catalog_path as catalog_path

from fiq_gym.envs import FashionIQVectorEnv
from fiq_gym.ranking.sharded import RAY_INSTALL

# Ray actors as shards: CI runs these with the rllib extra (`pytest -m "rllib or env_contract"`).
pytestmark = pytest.mark.rllib

try:
    import ray

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(not HAVE_RAY, reason=f"Ray is not installed (the rllib extra: {RAY_INSTALL})")
needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 3 logical CPUs (one per actor of the largest test), shut down
    at the end of the module if this fixture started it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=3,
            include_dashboard=False,
            object_store_memory=128 * 1024**2,
            logging_level=logging.WARNING,
        )
    yield
    if started:
        ray.shutdown()


def _gone(pids: list[int], seconds: float = 30.0) -> bool:
    """Whether every process of ``pids`` has exited within ``seconds`` (ray.kill returns at once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


@needs_ray
@pytest.mark.parametrize("mode", MODES)
def test_ray_shards_play_the_episodes_of_the_unsharded_env(catalog_path, local_ray, mode):
    unsharded = _episodes(catalog_path, mode, scoring="exact")
    for shards in (1, 2, 3):
        _assert_same(
            _episodes(catalog_path, mode, scoring="exact", shards=shards, shard_mode="ray"), unsharded
        )
    if mode == "query":  # the float16 scan in actors (which keep the float32 rows in the object store)
        _assert_same(_episodes(catalog_path, mode, scoring="float16", shards=2, shard_mode="ray"), unsharded)


@needs_ray
@needs_proc
def test_close_and_dropping_the_env_kill_the_actors(catalog_path, local_ray):
    env = FashionIQVectorEnv(3, catalog=catalog_path, scoring="exact", shards=2, shard_mode="ray")
    env.reset(seed=0)
    ranker = env.ranker
    pids = ranker.worker_pids
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    assert not ranker.started_ray  # this module's Ray: never the env's to shut down
    env.close()
    assert _gone(pids), "close() left shard actors running"
    assert ray.is_initialized(), "close() shut down a Ray instance it did not start"
    with pytest.raises(RuntimeError, match="shard actors of this ranker were closed"):
        env.step(np.array([0, 1, 2]))
    env.close()  # again: nothing to do

    env = FashionIQVectorEnv(3, catalog=catalog_path, scoring="exact", shards=3, shard_mode="ray")
    env.reset(seed=0)
    env.step(np.array([0, 1, 2]))
    pids = env.ranker.worker_pids
    assert len(pids) == 3 and all(_alive(p) for p in pids)
    del env, ranker
    gc.collect()
    assert _gone(pids), "a dropped env left shard actors running"


@needs_ray
def test_more_shards_than_the_clusters_cpus_is_refused(catalog_path, local_ray):
    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(ValueError, match=rf"has {cpus} CPUs: pass at most shards={cpus}, or start Ray"):
        FashionIQVectorEnv(2, catalog=catalog_path, scoring="exact", shards=cpus + 1, shard_mode="ray")


@needs_ray
@needs_proc
def test_an_unguarded_script_starts_ray_reuses_it_and_leaves_no_process(tmp_path, catalog_path):
    """Without Ray running, the env starts a local instance (its actors never re-run the
    script); a second env reuses it; after the script no process it started is left."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "quick.py"
    script.write_text(
        f"with open({str(runs)!r}, 'a') as _f:\n    _f.write('ran\\n')\n"
        + textwrap.dedent(
            f"""
            import numpy as np
            import ray
            from fiq_gym.envs import FashionIQVectorEnv
            assert not ray.is_initialized()
            for _ in range(2):
                env = FashionIQVectorEnv(3, catalog={str(catalog_path)!r}, scoring="exact", shards=2, shard_mode="ray")
                env.reset(seed=0)
                _, _, _, _, info = env.step(np.array([0, 1, 2]))
                print("ranks", *info["rank"])
                env.close()
                print("started", env.ranker.started_ray)
            """
        )
    )
    marker = f"FIQ_GYM_RAY_SHARDS_TEST_{uuid.uuid4().hex}"
    env = {
        **os.environ,
        marker: "1",
        "FIQ_GYM_CACHE": str(tmp_path / "cache"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    try:
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert runs.read_text().count("ran") == 1, "a shard actor re-ran the user's main module"
        lines = result.stdout.splitlines()
        assert [line for line in lines if line.startswith("started")] == ["started True", "started False"]
        ranks = [line for line in lines if line.startswith("ranks")]
        expected = FashionIQVectorEnv(3, catalog=catalog_path, scoring="exact")
        expected.reset(seed=0)
        *_, info = expected.step(np.array([0, 1, 2]))
        expected.close()
        assert ranks == [" ".join(["ranks", *map(str, info["rank"])])] * 2
        left: list[int] = []
        for _ in range(120):
            left = marked_processes(marker)
            if not left:
                break
            time.sleep(0.5)
        assert not left, f"processes left after the script: {left}"
    finally:
        for pid in marked_processes(marker):  # only what the script started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_without_ray_the_error_names_the_install(catalog_path, monkeypatch):
    for name in list(sys.modules):
        if name == "ray" or name.startswith("ray.") or name == "fiq_gym.ranking.ray_shards":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[rllib\]" -c constraints-rllib\.txt'):
        FashionIQVectorEnv(2, catalog=catalog_path, scoring="exact", shards=2, shard_mode="ray")
