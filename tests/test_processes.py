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


def test_unguarded_script_builds_a_catalog_with_workers(tmp_path):
    # Three chunks on two workers: the parallel path whose spawned workers used to re-run the
    # script (and die with BrokenProcessPool). The README snippet itself is the slow test below.
    result, runs = _run_script(
        tmp_path,
        f"""
        import gymnasium as gym
        import fiq_gym
        from fiq_gym.catalog.synthetic import build_synthetic_catalog
        catalog = build_synthetic_catalog({str(tmp_path / "cat")!r}, size=2100, workers=2, progress=False)
        print("items", len(catalog))
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

        env = gym.make("fiq_gym/FashionIQ-v3")
        obs, info = env.reset(seed=0)
        print("caption:", info["caption_text"])
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


# --- crash-safe replacement ------------------------------------------------------------------

_REPLACE = """
import os, sys
from pathlib import Path
import fiq_gym.utils.atomic as atomic

target = Path(sys.argv[1])
mode = sys.argv[2]
if mode == "no-exchange":  # a file system without RENAME_EXCHANGE: the two-rename path
    atomic._exchange = lambda a, b: False
real_rename, real_rmtree = os.rename, atomic.shutil.rmtree

def rename(src, dst):
    real_rename(src, dst)
    if ".old-" in str(dst):
        os._exit(9)  # die between moving the old directory aside and moving the new one in

def rmtree(path, *args, **kwargs):
    os._exit(9)  # die after the new directory is in place, before the old one is deleted

atomic.os.rename = rename
atomic.shutil.rmtree = rmtree
with atomic.atomic_directory(target, overwrite=True) as tmp:
    (tmp / "version").write_text("new")
"""


def _write_version(path: Path, text: str) -> None:
    from fiq_gym.utils.atomic import atomic_directory

    with atomic_directory(path, overwrite=True) as tmp:
        (tmp / "version").write_text(text)


@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_a_crash_while_replacing_a_directory_never_loses_it(tmp_path, mode):
    from fiq_gym.utils.atomic import _exchange, recover_directory

    target = tmp_path / "checkpoint"
    _write_version(target, "old")
    crashed = subprocess.run([sys.executable, "-c", _REPLACE, str(target), mode], env=_env(tmp_path))
    assert crashed.returncode == 9
    leftovers = sorted(p.name.split("-")[0] for p in tmp_path.iterdir() if p.name.startswith("."))
    if mode == "exchange" and _exchange(tmp_path, tmp_path):  # supported here: one atomic swap
        assert (target / "version").read_text() == "new"
        assert leftovers == [".checkpoint.tmp", ".checkpoint.tmp"]  # old copy + its dead writer's lock
    else:
        assert not target.exists() and ".checkpoint.old" in leftovers
    # The next reader (or writer) of the path puts the old directory back if the new one
    # never arrived, and clears the dead writer's leftovers either way.
    recover_directory(target)
    assert (target / "version").read_text() in ("new", "old")
    if mode == "no-exchange":
        assert (target / "version").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_opening_a_catalog_whose_replacement_crashed_restores_it(tmp_path, small_catalog):
    from fiq_gym.catalog.storage import open_catalog, save_catalog

    target = tmp_path / "catalog"
    save_catalog(small_catalog, target)
    script = _REPLACE.replace('(tmp / "version").write_text("new")', "pass")
    crashed = subprocess.run([sys.executable, "-c", script, str(target), "no-exchange"], env=_env(tmp_path))
    assert crashed.returncode == 9 and not target.exists()
    assert len(open_catalog(target)) == len(small_catalog)


def test_a_live_writers_temporary_directory_is_left_alone(tmp_path):
    """Another process still writing the same target keeps its work; only dead writers' go."""
    target = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from fiq_gym.utils.atomic import atomic_directory\n"
            f"with atomic_directory({str(target)!r}) as tmp:\n"
            "    print(tmp, flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        live = Path(holder.stdout.readline().strip())
        assert live.is_dir()
        _write_version(target, "mine")  # recovers the target first: must not touch `live`
        assert live.is_dir()
    finally:
        holder.kill()
        holder.wait()
    _write_version(target, "again")  # now the writer is dead: its directory goes
    assert not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_resume_after_a_crash_while_saving_the_training_state_continues(tmp_path):
    """--resume finds the previous training state a crashed save had moved aside."""
    from fiq_gym.checkpoint import STATE_JSON, prepare_run

    out = tmp_path / "run"
    state = out / "train_state"
    _write_version(state, "round 7")
    (state / STATE_JSON).write_text("{}")
    crashed = subprocess.run([sys.executable, "-c", _REPLACE, str(state), "no-exchange"], env=_env(tmp_path))
    assert crashed.returncode == 9 and not state.exists()
    assert prepare_run(out, resume=True, overwrite=False, state=state) is True
    assert (state / "version").read_text() == "round 7"


def test_lockless_leftovers_of_older_versions_are_reported_then_removed_after_a_day(tmp_path, caplog):
    """Temporaries written before the lock files existed: their writer may be alive (report
    it) unless nothing touched them for over a day (remove them)."""
    from fiq_gym.utils.atomic import recover_directory

    target = tmp_path / "cat"
    fresh, stale = tmp_path / ".cat.tmp-1a2b3c4d", tmp_path / ".cat.tmp-5e6f7a8b"
    for leftover in (fresh, stale):
        leftover.mkdir()
        (leftover / "images.npy").write_bytes(b"x" * 100)
    day_and_a_bit = time.time() - 25 * 3600
    os.utime(stale, (day_and_a_bit, day_and_a_bit))
    with caplog.at_level("WARNING", logger="fiq_gym"):
        recover_directory(target)
    assert fresh.exists() and not stale.exists()
    assert any(
        "delete it if no process is writing" in r.message and str(fresh) in r.message for r in caplog.records
    )
