"""Sharded exact ranking in the native vector env: whole episodes with S = 1, 2, 3 shards
(inline and in worker processes) equal the unsharded env with the same scoring, bit for bit;
shard processes end with close(), with garbage collection and with an unguarded script."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fiq_gym.envs import FashionIQVectorEnv

NUM_ITEMS = 301  # divisible by neither 2 nor 3
MODES = ("index", "query", "scores", "shortlist")


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory):
    """301 garments at 64x64 with the shipped network's features (D = 45), as users rank."""
    from fiq_gym.catalog.synthetic import build_synthetic_catalog
    from fiq_gym.features.default_network import attach_default_features

    path = tmp_path_factory.mktemp("catalogs") / "odd"
    build_synthetic_catalog(path, size=NUM_ITEMS, seed=5, image_size=64, progress=False)
    attach_default_features(path, progress=False)
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _episodes(catalog: Path, mode: str, steps: int = 24, **kwargs) -> list:
    """Every observation, reward, end flag and info of ``steps`` steps of 6 dialogs (max 3 turns,
    so several autoresets) under seeded random actions."""
    shortlist = {"shortlist": "random", "shortlist_size": 8} if mode == "shortlist" else {}
    env = FashionIQVectorEnv(6, catalog=catalog, action_mode=mode, max_turns=3, **shortlist, **kwargs)
    rng = np.random.default_rng(4)
    out = [env.reset(seed=9)]
    space = env.single_action_space
    for _ in range(steps):
        if mode == "index":
            actions = rng.integers(env.num_items, size=6)
        elif mode == "shortlist":
            actions = rng.integers(space.n, size=6)
        elif mode == "query":
            actions = rng.uniform(-1, 1, (6, space.shape[0])).astype(np.float32)
        else:  # scores on a coarse grid: ties between items
            actions = (np.round(rng.uniform(-1, 1, (6, space.shape[0])) * 4) / 4).astype(np.float32)
        out.append(env.step(actions))
    env.close()
    return out


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        for part, (u, v) in enumerate(zip(x, y, strict=True)):
            if isinstance(u, dict):
                assert sorted(u) == sorted(v), (t, part)
                for key in u:
                    np.testing.assert_array_equal(u[key], v[key], err_msg=f"step {t}, {key}")
            else:
                np.testing.assert_array_equal(u, v, err_msg=f"step {t}, part {part}")


@pytest.mark.parametrize("mode", MODES)
def test_sharded_episodes_equal_the_unsharded_env(catalog_path, mode):
    unsharded = _episodes(catalog_path, mode, scoring="exact")
    ranks = np.concatenate([info["rank"] for *_, info in unsharded[1:]])
    assert len(set(ranks.tolist())) > 10, "the episodes should rank the target all over the gallery"
    for shards in (1, 2, 3):
        _assert_same(
            _episodes(catalog_path, mode, scoring="exact", shards=shards, shard_mode="inline"), unsharded
        )
    for shards in (2, 3):
        _assert_same(_episodes(catalog_path, mode, scoring="exact", shards=shards), unsharded)
    _assert_same(_episodes(catalog_path, mode, scoring="float16", shards=2), unsharded)


def test_sharding_needs_an_exact_scoring(catalog_path):
    with pytest.raises(ValueError, match="pass scoring='exact'"):
        FashionIQVectorEnv(2, catalog=catalog_path, shards=2)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_shard_processes_end_on_close_and_on_garbage_collection(catalog_path):
    env = FashionIQVectorEnv(3, catalog=catalog_path, scoring="exact", shards=2)
    env.reset(seed=0)
    pids = env.ranker.worker_pids
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    env.close()
    assert not any(_alive(p) for p in pids), "close() left shard processes running"

    env = FashionIQVectorEnv(3, catalog=catalog_path, scoring="exact", shards=3)
    env.reset(seed=0)
    env.step(np.array([0, 1, 2]))
    pids = env.ranker.worker_pids
    assert len(pids) == 3 and all(_alive(p) for p in pids)
    del env
    gc.collect()
    assert not any(_alive(p) for p in pids), "a dropped env left shard processes running"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_an_unguarded_script_runs_shards_once_and_leaves_no_process(tmp_path, catalog_path):
    runs = tmp_path / "runs.txt"
    script = tmp_path / "quick.py"
    script.write_text(
        f"with open({str(runs)!r}, 'a') as _f:\n    _f.write('ran\\n')\n"
        + textwrap.dedent(
            f"""
            import numpy as np
            from fiq_gym.envs import FashionIQVectorEnv
            env = FashionIQVectorEnv(3, catalog={str(catalog_path)!r}, scoring="exact", shards=2)
            env.reset(seed=0)
            _, _, _, _, info = env.step(np.array([0, 1, 2]))
            print("pids", *env.ranker.worker_pids)
            print("ranks", *info["rank"])
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "FIQ_GYM_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert runs.read_text().count("ran") == 1, "a shard worker re-ran the user's main module"
    pids = [int(p) for p in result.stdout.split("pids")[1].splitlines()[0].split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "shard processes outlived the script"
