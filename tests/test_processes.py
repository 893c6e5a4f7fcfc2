"""Real processes: scripts without a main guard, kill -9 during a build, crashes mid-replace.

These run fiq-gym in subprocesses, because what they check (which modules a worker imports,
what survives the death of a process) cannot be seen from inside the test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "FIQ_GYM_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run_script(tmp_path: Path, body: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``body`` as an unguarded script ``quick.py``; returns the result and how many
    times the script's top level ran (each run appends a line to ``runs.txt``)."""
    script = tmp_path / "quick.py"
    runs = tmp_path / "runs.txt"
    script.write_text(
        f"with open({str(runs)!r}, 'a') as _f:\n    _f.write('ran\\n')\n" + textwrap.dedent(body)
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, runs.read_text().count("ran")


def test_unguarded_script_builds_the_default_catalog_with_workers(tmp_path):
    # Two chunks and two workers: the parallel path that used to re-run the script in
    # spawned workers (which then died with BrokenProcessPool). cpu_count is pinned so the
    # test takes that path on a one-core machine too.
    result, runs = _run_script(
        tmp_path,
        """
        import os
        os.cpu_count = lambda: 2
        import gymnasium as gym
        import fiq_gym
        from fiq_gym.catalog.default import load_default_catalog
        print("items", len(load_default_catalog(size=2100, progress=False)))
        """,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "items 2100" in result.stdout
    assert runs == 1, "the library re-ran the user's main module"


@pytest.mark.slow
def test_readme_snippet_as_unguarded_script_on_a_fresh_cache(tmp_path):
    result, runs = _run_script(
        tmp_path,
        """
        import gymnasium as gym
        import fiq_gym  # registers the environment ids

        env = gym.make("fiq_gym/FashionIQ-v0")
        obs, info = env.reset(seed=0)
        print("caption:", info["caption"])
        """,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "caption: " in result.stdout
    assert runs == 1
    cached = list((tmp_path / "cache" / "catalogs").iterdir())
    assert [p.name for p in cached if not p.name.startswith(".")], "the default catalog was cached"
    assert not [p.name for p in cached if p.name.startswith(".")], "no temporary directory left behind"


# --- kill -9 -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_of_a_catalog_build_leaves_no_process_and_the_next_build_cleans_up(tmp_path):
    out = tmp_path / "catalogs" / "big"
    cmd = [sys.executable, "-m", "fiq_gym", "catalog", "build", "--size", "20000", "--out", str(out)]
    build = subprocess.Popen(
        cmd, env=_env(tmp_path / "cache"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and not (workers and any(out.parent.glob(".big.tmp-*"))):
            time.sleep(0.2)
            workers = _children(build.pid)
        assert workers, "the build started no worker processes"
        time.sleep(1.0)  # let the workers get into the middle of rendering
        os.kill(build.pid, signal.SIGKILL)
        build.wait()
    finally:
        if build.poll() is None:
            build.kill()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert not survivors, "worker processes outlived their killed parent"
    stale = list(out.parent.glob(".big.tmp-*"))
    assert stale, "the killed build should have left its temporary directory"

    rebuild = subprocess.run(
        [*cmd[:-4], "--size", "300", "--out", str(out)],
        env=_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    assert (out / "manifest.json").exists()
    assert not [p for p in stale if p.exists()], (
        "the next build of the target removed the dead writer's leftovers"
    )
    assert "removed" in rebuild.stderr and ".big.tmp-" in rebuild.stderr, rebuild.stderr
