"""kill -9 of every writer at several points (issue 35): what it leaves is whole or absent, the
next run succeeds, and after it nothing of the killed runs is left.

Each writer runs as a real ``python -m fiq_gym`` process and gets SIGKILL at points chosen by
watching its progress on disk (its temporary directory, staging file or a file inside them
appears, time has passed, a new checkpoint is in place) or, for windows too short to hit from
outside, from the writer itself just before it renames a result into place or deletes a file
(``_KILL_HOOK``). A run that finishes before its kill point still counts: the state it leaves
is checked the same way. After each kill:

1. the destination is absent or a complete, openable result; with ``--overwrite`` over an
   old complete result it is the old one or the new one, never missing;
2. the same command (with ``--overwrite`` where the killed run left a result) succeeds;
3. afterwards the parent directory and the destination hold exactly what a clean run leaves:
   no ``.*.tmp-*`` directory or file, lock, staging file or unfinished update.

Kills of one destination run one after another (each next run must clean up after the
previous one); independent sequences run side by side to use both cores. The old results
that --overwrite replaces and the clean runs whose listings are the reference run in this
process (``_clean_run``), which saves an interpreter start and the imports of each.

``train --overwrite`` keeps the old checkpoint until the new run's first save replaces it,
and marks the directory as a run before it clears the old one, so a kill at any point leaves a
checkpoint (old or new) and a directory the next ``--overwrite`` takes back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]

POLL = 0.003  # seconds between looks at a writer's progress


# --- running and killing writers --------------------------------------------------------------

# Runs ``python -m fiq_gym ARGS`` with one change: the process SIGKILLs itself just before it
# renames anything onto a path matching the glob FIQ_TEST_KILL_BEFORE_RENAMING (os.rename,
# os.replace or the atomic exchange of fiq_gym.utils.atomic) or deletes a file matching
# FIQ_TEST_KILL_BEFORE_REMOVING (os.unlink), so windows of microseconds are hit every time.
# "{pid}" in a glob stands for the writer's process id.
_KILL_HOOK = """
import fnmatch, os, signal
def _check(path, variable):
    pattern = os.environ.get(variable, "").replace("{pid}", str(os.getpid()))
    if pattern and fnmatch.fnmatchcase(os.path.abspath(os.fsdecode(path)), pattern):
        os.kill(os.getpid(), signal.SIGKILL)
def _renaming(original):
    def rename(src, dst, *args, **kwargs):
        _check(dst, "FIQ_TEST_KILL_BEFORE_RENAMING")
        return original(src, dst, *args, **kwargs)
    return rename
def _removing(original):
    def unlink(path, *args, dir_fd=None, **kwargs):
        if dir_fd is None:
            _check(path, "FIQ_TEST_KILL_BEFORE_REMOVING")
        return original(path, *args, dir_fd=dir_fd, **kwargs)
    return unlink
os.rename, os.replace = _renaming(os.rename), _renaming(os.replace)
os.unlink = os.remove = _removing(os.unlink)
import fiq_gym.utils.atomic as _atomic
_exchange = _atomic._exchange
def _exchanging(a, b):
    _check(b, "FIQ_TEST_KILL_BEFORE_RENAMING")
    return _exchange(a, b)
_atomic._exchange = _exchanging
import runpy
runpy.run_module("fiq_gym", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Kill:
    """A kill point: SIGKILL when ``when()`` holds (then ``delay`` seconds later), or ``delay``
    seconds after the start; or the writer kills itself just before it renames something onto
    a path matching ``before_renaming`` or deletes one matching ``before_removing`` (globs of
    absolute paths)."""

    name: str
    when: Callable[[], bool] | None = None
    delay: float = 0.0
    before_renaming: str | None = None
    before_removing: str | None = None

    @property
    def hooked(self) -> bool:
        return bool(self.before_renaming or self.before_removing)


def _appears(directory: Path, pattern: str) -> Callable[[], bool]:
    """True once a path matching ``pattern`` under ``directory`` appears that was not there
    at the first look (the writer's start): what earlier killed runs left does not count."""
    before: set[tuple[str, int]] | None = None

    def check() -> bool:
        nonlocal before
        found = set()
        try:
            for path in directory.glob(pattern):
                found.add((str(path), path.lstat().st_ino))
        except OSError:  # a directory vanished under the glob: look again
            return False
        if before is None:
            before = found
        return bool(found - before)

    return check


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


@dataclass
class Writers:
    """Runs ``fiq-gym`` commands with an isolated cache; logs go to ``logs``."""

    env: dict[str, str]
    logs: Path

    def run(self, args: Sequence[str], kill: Kill | None = None, timeout: float = 240) -> str:
        """Run ``fiq-gym args`` to its end or to ``kill``; "killed" or "finished" (exit 0,
        else the test fails with the end of its stderr)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{time.monotonic_ns()}-{threading.get_ident()}.log"
        env = dict(self.env)
        if kill is not None and kill.hooked:
            cmd = [sys.executable, "-c", _KILL_HOOK, *args]
            env["FIQ_TEST_KILL_BEFORE_RENAMING"] = kill.before_renaming or ""
            env["FIQ_TEST_KILL_BEFORE_REMOVING"] = kill.before_removing or ""
        else:
            cmd = [sys.executable, "-m", "fiq_gym", *args]
        with open(log, "w") as out:
            # A session of its own: the writer and its workers, to check none outlives it.
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
        started = time.monotonic()
        try:
            seen_at = None
            while proc.poll() is None:
                now = time.monotonic()
                if now - started > timeout:
                    raise AssertionError(f"fiq-gym {' '.join(args)} ran for over {timeout} s")
                if kill is not None and not kill.hooked:
                    if seen_at is None and (kill.when is None or kill.when()):
                        seen_at = now
                    if seen_at is not None and now - seen_at >= kill.delay:
                        os.kill(proc.pid, signal.SIGKILL)  # the writer only, as `kill -9 PID` does
                        proc.wait()
                        break
                time.sleep(POLL)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._reap(proc.pid, args)
        if kill is not None and proc.returncode == -signal.SIGKILL:
            return "killed"
        if proc.returncode != 0:
            raise AssertionError(
                f"fiq-gym {' '.join(args)} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        return "finished"

    def _reap(self, pgid: int, args: Sequence[str]) -> None:
        """Wait for the writer's worker processes to die with it (they must not write on)."""
        deadline = time.monotonic() + 20
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = _group_alive(pgid)
        if survivors:
            os.killpg(pgid, signal.SIGKILL)
            raise AssertionError(f"processes {survivors} of killed `fiq-gym {' '.join(args)}` outlived it")


def _together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run independent sequences side by side (the machine has two cores); re-raise failures."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


# --- what a clean run leaves ----------------------------------------------------------------------

_RANDOM_PARTS = [
    (re.compile(r"-[0-9a-f]{8}\.npy$"), "-TOKEN.npy"),  # catalog updates' array files
    (re.compile(r"^events\.out\.tfevents\..*"), "events.out.tfevents.*"),  # TensorBoard
]


def _listing(root: Path) -> list[str]:
    """Every path under ``root``, relative, with the parts that differ between identical runs
    (random tokens, timestamps) masked."""
    out = []
    for path in root.rglob("*"):
        parts = list(path.relative_to(root).parts)
        for pattern, mask in _RANDOM_PARTS:
            parts[-1] = pattern.sub(mask, parts[-1])
        out.append("/".join(parts) + ("/" if path.is_dir() else ""))
    return sorted(out)


def _clean_run(args: Sequence[str]) -> None:
    """Run ``fiq-gym args`` in this process, untouched: the old result an --overwrite run
    replaces, or what a clean run leaves (without a second interpreter start)."""
    import torch

    from fiq_gym.cli import main

    threads = torch.get_num_threads()
    try:
        assert main(list(args)) == 0
    finally:
        torch.set_num_threads(threads)  # trainers set it for the process


def _assert_clean(root: Path, reference: list[str], what: str) -> None:
    found = _listing(root)
    extra = sorted(set(found) - set(reference))
    missing = sorted(set(reference) - set(found))
    assert not extra and not missing, (
        f"{what}: after the re-run, {root} holds {extra} that a clean run does not leave"
        + (f" and lacks {missing}" if missing else "")
    )


Observed = list[tuple[str, str, Any]]  # (kill point, "killed" or "finished", state it left)


def _kill_sequence(
    writers: Writers, command: Callable[[], list[str]], points: Sequence[Kill], state: Callable[[], Any]
) -> Observed:
    """Run ``command()`` once per kill point, one after another on the same destination, then
    once more to its end; return what each kill left (``state()``)."""
    observed = []
    for point in points:
        outcome = writers.run(command(), point)
        observed.append((point.name, outcome, state()))
    print(command(), observed)
    assert writers.run(command()) == "finished"
    return observed


def _unexpected(observed: Observed, allowed: list[Any]) -> Observed:
    return [(point, outcome, state) for point, outcome, state in observed if state not in allowed]


def _states(observed: Observed, allowed: list[Any], what: str) -> None:
    bad = _unexpected(observed, allowed)
    assert not bad, f"{what}: a kill left {bad}; allowed states: {allowed}"


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def writers(tmp_path_factory) -> Writers:
    base = tmp_path_factory.mktemp("kill-writers")
    env = {
        **os.environ,
        "FIQ_GYM_CACHE": str(base / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "SB3_LOGDIR": str(base / "sb3"),
        # One thread per writer: two run side by side on a small machine.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return Writers(env, base / "logs")


def _overwrite_if(path: Path) -> list[str]:
    """--overwrite where the previous run left a result (the re-run of invariant 2)."""
    return ["--overwrite"] if path.exists() else []


# --- catalog build --------------------------------------------------------------------------------


def _catalog_state(path: Path) -> dict | None:
    """None when ``path`` is absent, else what identifies the catalog there (opening it
    checks that it is complete)."""
    from fiq_gym.catalog.storage import open_catalog

    if not os.path.lexists(path):  # checked first: opening a missing catalog would repair it
        return None
    catalog = open_catalog(path)
    np.asarray(catalog.images[len(catalog) - 1])  # the last row is there
    return {
        **catalog.fingerprint(),
        "images": list(np.shape(catalog.images)),
        "features": None if catalog.features is None else float(np.asarray(catalog.features).sum()),
    }


def test_kill_catalog_build(writers, tmp_path):
    """A build into a new --out, and one over an old catalog (--overwrite)."""
    fresh, over, ref = tmp_path / "fresh" / "cat", tmp_path / "over" / "cat", tmp_path / "ref" / "cat"

    def build(out: Path, size: int = 300, seed: int = 1) -> list[str]:
        return ["catalog", "build", "--size", str(size), "--seed", str(seed), "--image-size", "32",
                "--out", str(out), *_overwrite_if(out)]  # fmt: skip

    _clean_run(build(ref))  # what a clean build leaves
    _clean_run(build(over))  # the old catalog
    old = _catalog_state(over)
    fresh_observed, over_observed = _together(
        lambda: _kill_sequence(
            writers,
            lambda: build(fresh),
            [
                Kill("its temporary directory appears", _appears(fresh.parent, ".cat.tmp-*")),
                Kill(
                    "rendering (its images file appears)", _appears(fresh.parent, "*/images.npy"), delay=0.05
                ),
                Kill("just before the rename into place", before_renaming=str(fresh)),
            ],
            lambda: _catalog_state(fresh),
        ),
        lambda: _kill_sequence(
            writers,
            lambda: build(over, size=200, seed=2),
            [
                Kill("its temporary directory appears", _appears(over.parent, ".cat.tmp-*")),
                Kill("just before the exchange with the old one", before_renaming=str(over)),
                Kill("0.3 s after the start", delay=0.3),
            ],
            lambda: _catalog_state(over),
        ),
    )
    new = _catalog_state(over)
    assert new != old and new["items"] == 200
    _states(fresh_observed, [None, old], "catalog build")  # a finished fresh build is `old`'s twin
    _states(over_observed, [old, new], "catalog build --overwrite")
    reference = _listing(ref.parent)
    _assert_clean(fresh.parent, reference, "catalog build")
    _assert_clean(over.parent, reference, "catalog build --overwrite")


# --- catalog import -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def releases(small_catalog, tmp_path_factory) -> dict[str, Path]:
    """Small Fashion IQ and Shoes releases in their exact formats (as tests/test_real_data.py
    writes them), of 120 garments."""
    from fiq_gym.users.release_export import export_fashioniq_release, export_shoes_release

    root = tmp_path_factory.mktemp("releases")
    garments = small_catalog.subset(slice(0, 120))
    export_fashioniq_release(garments, root / "fashioniq", pairs_per_split=30, seed=1, progress=False)
    export_shoes_release(garments, root / "shoes", pairs=60, seed=2, progress=False)
    return {"fashioniq": root / "fashioniq", "shoes": root / "shoes"}


def test_kill_catalog_import(writers, releases, tmp_path):
    """A Fashion IQ import into a new --out; a Shoes import (with features) over an old one."""
    fresh, over, ref = tmp_path / "fresh" / "cat", tmp_path / "over" / "cat", tmp_path / "ref" / "cat"

    def fashioniq(out: Path) -> list[str]:
        return ["catalog", "import", "fashioniq", str(releases["fashioniq"]), "--split", "train", "val",
                "test", "--encoder", "none", "--image-size", "32", "--no-progress", "--out", str(out),
                *_overwrite_if(out)]  # fmt: skip

    def shoes(out: Path, size: int = 32) -> list[str]:
        return ["catalog", "import", "shoes", str(releases["shoes"]), "--image-size", str(size),
                "--no-progress", "--out", str(out), *_overwrite_if(out)]  # fmt: skip

    _clean_run(fashioniq(ref))  # what a clean import leaves
    _clean_run(shoes(over))  # the old catalog, and what a clean import with features leaves
    done, old = _catalog_state(ref), _catalog_state(over)
    fiq_reference, shoes_reference = _listing(ref.parent), _listing(over.parent)
    fresh_observed, over_observed = _together(
        lambda: _kill_sequence(
            writers,
            lambda: fashioniq(fresh),
            [
                Kill("decoding into its staging file", _appears(fresh.parent, ".cat.images-*.npy")),
                Kill("writing the catalog (its images file appears)", _appears(fresh.parent, "*/images.npy")),
                Kill("just before the rename into place", before_renaming=str(fresh)),
            ],
            lambda: _catalog_state(fresh),
        ),
        lambda: _kill_sequence(
            writers,
            lambda: shoes(over, size=40),
            [
                Kill(
                    "extracting features in its temporary directory",
                    _appears(over.parent, "*/.update.lock"),
                ),
                Kill("just before the exchange with the old one", before_renaming=str(over)),
                Kill(
                    "as it ends, between removing its staging file and its lock",
                    before_removing=str(over.parent / ".cat.images-{pid}.npy.lock"),
                ),
            ],
            lambda: _catalog_state(over),
        ),
    )
    new = _catalog_state(over)
    assert old["features"] is not None and new["images"] == [old["items"], 40, 40, 3]
    _states(fresh_observed, [None, done], "catalog import fashioniq")
    _states(over_observed, [old, new], "catalog import shoes --overwrite")
    _assert_clean(fresh.parent, fiq_reference, "catalog import fashioniq")
    _assert_clean(over.parent, shoes_reference, "catalog import shoes --overwrite")


# --- features extract -----------------------------------------------------------------------------


def test_kill_features_extract(writers, featured_catalog_path, tmp_path):
    """The update is in place: the catalog is always there, with its old arrays or the new
    ones (the same numbers: the same network on the same images)."""
    a, b = tmp_path / "a" / "cat", tmp_path / "b" / "cat"
    for catalog in (a, b):
        shutil.copytree(featured_catalog_path, catalog)
    old = _catalog_state(a)
    reference = _listing(a.parent)  # a catalog built with features holds what an extraction leaves

    def extract(catalog: Path) -> list[str]:
        return ["features", "extract", str(catalog), "--batch-size", "16", "--no-progress"]

    observed = _together(
        lambda: _kill_sequence(
            writers,
            lambda: extract(a),
            [
                Kill("its temporary array files appear", _appears(a, ".features-*.npy.tmp-update")),
                Kill(
                    "with both arrays in place, just before the manifest",
                    before_renaming=str(a / "manifest.json"),
                ),
            ],
            lambda: _catalog_state(a),
        ),
        lambda: _kill_sequence(
            writers,
            lambda: extract(b),
            [
                Kill(
                    "with the features in place, before the scores",
                    before_renaming=str(b / "attribute_scores-*.npy"),
                )
            ],
            lambda: _catalog_state(b),
        ),
    )
    _states(observed[0] + observed[1], [old], "features extract")
    assert _catalog_state(a) == _catalog_state(b) == old
    _assert_clean(a.parent, reference, "features extract")
    _assert_clean(b.parent, reference, "features extract")


# --- record -------------------------------------------------------------------------------------


def _dataset_state(path: Path) -> tuple[int, int] | None:
    """None when ``path`` is absent, else the dataset's (episodes, seed) (loading checks it)."""
    import minari

    if not os.path.lexists(path):
        return None
    dataset = minari.MinariDataset(path / "data")
    episodes = list(dataset.iterate_episodes())
    assert len(episodes) == dataset.total_episodes
    return len(episodes), int(dataset.storage.metadata["fiq_gym"]["seed"])


def test_kill_record(writers, featured_catalog_path, tmp_path):
    """A new dataset, and one replacing an old one (--overwrite)."""
    pytest.importorskip("minari", reason='the offline extra: pip install -e ".[offline]"')
    fresh, over = tmp_path / "fresh", tmp_path / "over"  # Minari roots

    def record(root: Path, seed: int) -> list[str]:
        return ["record", "--agent", "random", "--action-mode", "index", "--catalog", str(featured_catalog_path),
                "--episodes", "12", "--max-turns", "3", "--seed", str(seed), "--dataset-id", "kill/rec-v0",
                "--no-progress", "--out", str(root), *_overwrite_if(root / "kill" / "rec-v0")]  # fmt: skip

    _clean_run(record(over, 1))  # the old dataset, and what a clean recording leaves
    old, reference = _dataset_state(over / "kill" / "rec-v0"), _listing(over)
    fresh_observed, over_observed = _together(
        lambda: _kill_sequence(
            writers,
            lambda: record(fresh, 1),
            [
                Kill("halfway through the episodes", _appears(fresh / "kill", "*/data/6")),
                Kill(
                    "with the dataset in place, writing the namespace's metadata",
                    before_renaming=str(fresh / "kill" / "namespace_metadata.json"),
                ),
            ],
            lambda: _dataset_state(fresh / "kill" / "rec-v0"),
        ),
        lambda: _kill_sequence(
            writers,
            lambda: record(over, 2),
            [
                Kill(
                    "just before the exchange with the old one", before_renaming=str(over / "kill" / "rec-v0")
                )
            ],
            lambda: _dataset_state(over / "kill" / "rec-v0"),
        ),
    )
    assert old == (12, 1)
    _states(fresh_observed, [None, old], "record")
    _states(over_observed, [old, (12, 2)], "record --overwrite")
    assert _dataset_state(over / "kill" / "rec-v0") == (12, 2)
    _assert_clean(fresh, reference, "record")
    _assert_clean(over, reference, "record --overwrite")


# --- train ------------------------------------------------------------------------------------------


def _checkpoint_state(path: Path) -> int | None:
    """None when ``path`` is absent, else the seed of the run that wrote the checkpoint there
    (loading it checks that it is complete)."""
    from fiq_gym.agents.loading import load_agent

    if not os.path.lexists(path):  # checked first: loading a missing checkpoint would repair it
        return None
    load_agent(path)
    return int(json.loads((path / "config.json").read_text())["args"]["seed"])


def _wrote_seed(checkpoint: Path, seed: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return json.loads((checkpoint / "config.json").read_text())["args"]["seed"] == seed
        except (OSError, ValueError, KeyError):
            return False

    return check


def _supervised(catalog: Path, run: Path, seed: int) -> list[str]:
    return ["train", "supervised", "--catalog", str(catalog), "--num-envs", "8", "--rounds", "2", "--eval-every",
            "2", "--eval-episodes", "8", "--embed-dim", "16", "--negatives", "8", "--max-turns", "3", "--seed",
            str(seed), "--out", str(run), *_overwrite_if(run)]  # fmt: skip


def test_kill_train(writers, featured_catalog_path, tmp_path):
    """``fiq-gym train supervised`` and ``fiq-gym train ppo``, --overwrite over a finished run."""
    supervised_run, ppo_run = tmp_path / "supervised" / "run", tmp_path / "ppo" / "run"

    def supervised(seed: int) -> list[str]:
        return _supervised(featured_catalog_path, supervised_run, seed)

    def ppo(seed: int) -> list[str]:
        return ["train", "ppo", "--catalog", str(featured_catalog_path), "--timesteps", "64", "--num-envs", "4",
                "--n-steps", "16", "--batch-size", "16", "--n-epochs", "1", "--eval-episodes", "8",
                "--max-turns", "3", "--seed", str(seed), "--out", str(ppo_run), *_overwrite_if(ppo_run)]  # fmt: skip

    # The old runs, and what a clean run leaves.
    _clean_run(supervised(1))
    _clean_run(ppo(1))
    references = {"supervised": _listing(supervised_run.parent), "ppo": _listing(ppo_run.parent)}
    assert _checkpoint_state(supervised_run / "checkpoint") == _checkpoint_state(ppo_run / "checkpoint") == 1
    supervised_points = [
        Kill("training (its TensorBoard events appear)", _appears(supervised_run / "tb", "events.*")),
        Kill(
            "just before its checkpoint is renamed into place",
            before_renaming=str(supervised_run / "checkpoint"),
        ),
    ]
    ppo_points = [
        Kill("training (its TensorBoard events appear)", _appears(ppo_run / "tb", "ppo_1/events.*")),
        Kill("evaluating the new checkpoint", _wrote_seed(ppo_run / "checkpoint", 2)),
    ]
    supervised_observed, ppo_observed = _together(
        lambda: _kill_sequence(
            writers,
            lambda: supervised(2),
            supervised_points,
            lambda: _checkpoint_state(supervised_run / "checkpoint"),
        ),
        lambda: _kill_sequence(
            writers, lambda: ppo(2), ppo_points, lambda: _checkpoint_state(ppo_run / "checkpoint")
        ),
    )
    observed = {"supervised": supervised_observed, "ppo": ppo_observed}
    missing: list[tuple[str, str]] = []
    for name, run in (("supervised", supervised_run), ("ppo", ppo_run)):
        assert _checkpoint_state(run / "checkpoint") == 2
        _assert_clean(run.parent, references[name], f"train {name} --overwrite")
        bad = _unexpected(observed[name], [1, 2])
        assert all(state is None for _, _, state in bad), f"train {name} --overwrite: a kill left {bad}"
        missing += [(name, point) for point, _, _ in bad]
    assert not missing, f"train --overwrite: no checkpoint, neither old nor new, after kills {missing}"


def test_kill_train_while_it_replaces_the_old_run(writers, featured_catalog_path, tmp_path):
    """kill -9 while --overwrite swaps the old run for the new one: the same command again
    must take the directory back (it is still a run of the same trainer)."""
    run = tmp_path / "supervised" / "run"
    _clean_run(_supervised(featured_catalog_path, run, 1))  # the old run, and what a clean run leaves
    reference = _listing(run.parent)
    point = Kill(
        "just before its new marker is renamed into place", before_renaming=str(run / ".fiq-gym-run")
    )
    assert writers.run(_supervised(featured_catalog_path, run, 2), point) == "killed"
    assert _checkpoint_state(run / "checkpoint") in (None, 1)
    assert writers.run(_supervised(featured_catalog_path, run, 2)) == "finished"
    assert _checkpoint_state(run / "checkpoint") == 2
    _assert_clean(run.parent, reference, "train supervised --overwrite")
