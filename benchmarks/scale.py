"""Scale: what a catalog of N items costs to build, store, open and step, up to a million.

    python -m fiq_gym.benchmarks.scale                                 # 10k, 100k, 1M; writes results/scale.md
    python -m fiq_gym.benchmarks.scale --sizes 2000 --shards 1 2 --out /tmp/scale
    python -m fiq_gym.benchmarks.scale --sizes 2000 --shards 2 --shard-mode process ray --out /tmp/scale

For each size, a synthetic catalog (64x64, seed 0, images ``--images``: lazy by default, as a
million stored images take 12 GB) is built with the shipped network's features, then:

* **build s**: building it and extracting its features, in a fresh process (the same work as
  ``fiq-gym catalog build --size N --images lazy``), with that process's peak RSS and its
  workers' largest peak RSS;
* **on disk MB**: the catalog directory's files;
* **open ms / RSS after open**: ``open_catalog`` in a fresh process (best of 3) and that
  process's resident memory right after it (arrays are memory maps: they cost nothing yet);
* **env ready s / RSS**: making the native vector env of ``--dialogs`` dialogs (index mode, the
  template shopper) in a fresh process, which builds the ranking tables (centred, unit-norm
  features held in memory), and the process's RSS after stepping it (plus its shard
  processes' RSS, when sharded);
* **step ms**: the mean wall time of one vector-env step of all dialogs with random items
  (random ends and resets included), for each scoring and shard count, with the shards in
  worker processes and, with ``--shard-mode ... ray``, in Ray actors as well (the ``rllib``
  extra; a local Ray instance, whose start counts in env ready s);
* **floor ms**: the bare ranking of the same step measured in the same process: the
  (dialogs x N x D) product of the shown items' features with every item's, and the counts of
  items scoring at least the target's. **floor / step** is the fraction of a step that this
  floor takes (the issue's goal at a million items: at least 0.5).

Every figure of a table comes from one run on one machine, so the ratios compare even when
the machine is busy (the load average is recorded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.ranking.sharded import RAY_INSTALL
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["BuildRow", "StepRow", "main", "run", "to_markdown"]

RESULTS = default_results_dir()

_RSS = """
def rss_mb(pid="self"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
"""

_BUILD = """
import json, resource, sys, time
from fiq_gym.catalog.synthetic import build_synthetic_catalog
from fiq_gym.features.default_network import attach_default_features
path, size, images = sys.argv[1], int(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
build_synthetic_catalog(path, size=size, seed=0, progress=False, images=images)
built = time.perf_counter() - start
attach_default_features(path, progress=False)
print(json.dumps({
    "catalog_s": built,
    "total_s": time.perf_counter() - start,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""

_OPEN = (
    _RSS
    + """
import json, sys, time
from fiq_gym.catalog.storage import open_catalog
start = time.perf_counter()
catalog = open_catalog(sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": rss_mb(), "items": len(catalog)}))
"""
)

_STEP = (
    _RSS
    + """
import json, sys, time
import numpy as np
from fiq_gym.envs.vector import FashionIQVectorEnv
path, dialogs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
setting = json.loads(sys.argv[4])
start = time.perf_counter()
env = FashionIQVectorEnv(dialogs, catalog=path, user="template", action_mode="index", **setting)
env.reset(seed=0)
ready = time.perf_counter() - start
rng = np.random.default_rng(0)
n = env.num_items

def timed(fn):
    for _ in range(2):  # warm up
        fn()
    calls, begin = 0, time.perf_counter()
    while calls < 5 or time.perf_counter() - begin < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - begin) / calls

step = timed(lambda: env.step(rng.integers(n, size=dialogs)))
features = env.gallery.features

def floor():
    shown, targets = rng.integers(n, size=dialogs), rng.integers(n, size=dialogs)
    scores = features[shown] @ features.T
    np.count_nonzero(scores >= scores[np.arange(dialogs), targets][:, None], axis=1)

bare = timed(floor)
pids = getattr(env.ranker, "worker_pids", [])
memory = rss_mb() + sum(rss_mb(p) for p in pids)
env.close()
print(json.dumps({"ready_s": ready, "step_s": step, "floor_s": bare, "rss_mb": memory, "items": n}))
"""
)


@dataclass(frozen=True)
class BuildRow:
    items: int
    images: str
    catalog_s: float
    total_s: float
    peak_mb: float
    worker_peak_mb: float
    disk_mb: float
    open_ms: float
    open_rss_mb: float


@dataclass(frozen=True)
class StepRow:
    items: int
    scoring: str
    shards: int | None
    ready_s: float
    step_ms: float
    floor_ms: float
    rss_mb: float
    shard_mode: str = "process"


#: Where the sharded rows' shards run (``--shard-mode``); ``process`` alone by default.
SHARD_MODES = ("process", "ray")


def _python(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"a measuring process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _settings(shards: Sequence[int], float16: bool, shard_modes: Sequence[str] = ("process",)) -> list[dict]:
    settings: list[dict] = [{"scoring": "float32"}, {"scoring": "exact"}]
    if float16:
        settings.append({"scoring": "float16"})
    for mode in shard_modes:
        # The process rows pass no shard_mode: the env's default, as before there was a choice.
        extra = {} if mode == "process" else {"shard_mode": mode}
        settings += [{"scoring": "exact", "shards": s, **extra} for s in shards]
    return settings


def measure_size(
    size: int,
    workdir: Path,
    *,
    images: str,
    dialogs: int,
    seconds: float,
    shards: Sequence[int],
    float16: bool,
    shard_modes: Sequence[str] = ("process",),
) -> tuple[BuildRow, list[StepRow]]:
    """Build one catalog of ``size`` items in ``workdir`` and measure it (see the docstring)."""
    path = workdir / f"scale-{size}-{images}"
    build = _python(_BUILD, str(path), str(size), images)
    opened = min((_python(_OPEN, str(path)) for _ in range(3)), key=lambda r: r["seconds"])
    row = BuildRow(
        items=size,
        images=images,
        catalog_s=build["catalog_s"],
        total_s=build["total_s"],
        peak_mb=build["peak_mb"],
        worker_peak_mb=build["worker_peak_mb"],
        disk_mb=_disk_mb(path),
        open_ms=opened["seconds"] * 1000,
        open_rss_mb=opened["rss_mb"],
    )
    print(row, file=sys.stderr, flush=True)
    steps = []
    for setting in _settings(shards, float16, shard_modes):
        got = _python(_STEP, str(path), str(dialogs), str(seconds), json.dumps(setting))
        steps.append(
            StepRow(
                items=size,
                scoring=setting["scoring"],
                shards=setting.get("shards"),
                ready_s=got["ready_s"],
                step_ms=got["step_s"] * 1000,
                floor_ms=got["floor_s"] * 1000,
                rss_mb=got["rss_mb"],
                shard_mode=setting.get("shard_mode", "process"),
            )
        )
        print(steps[-1], file=sys.stderr, flush=True)
    return row, steps


def to_markdown(
    builds: Sequence[BuildRow], steps: Sequence[StepRow], *, dialogs: int, command: str, load: str
) -> str:
    lines = [
        "# Scale: catalog size, build, memory and step time",
        "",
        "Synthetic catalogs (64x64, seed 0) with the shipped network's features; columns as in "
        "`python -m fiq_gym.benchmarks.scale --help` and the module docstring.",
        "",
        "| items | images | build s (catalog + features) | catalog alone s | build peak RSS MB | "
        "worker peak RSS MB | on disk MB | open ms (fresh process) | RSS after open MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in builds:
        lines.append(
            f"| {b.items:,} | {b.images} | {b.total_s:.1f} | {b.catalog_s:.1f} | {b.peak_mb:,.0f} | "
            f"{b.worker_peak_mb:,.0f} | {b.disk_mb:,.1f} | {b.open_ms:.1f} | {b.open_rss_mb:,.0f} |"
        )
    lines += [
        "",
        f"## Steps of {dialogs} dialogs (native vector env, index mode, template shopper)",
        "",
        'Sharded rows use `scoring="exact"` with one worker process per shard (one BLAS thread each).',
        "",
        *_ray_note(steps),
        "| items | scoring | shards | env ready s | step ms | env steps/s | ranking floor ms | floor / step | "
        "RSS MB (env + shards) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s.items:,} | {s.scoring} | {_shards_cell(s)} | {s.ready_s:.1f} | {s.step_ms:.2f} | "
            f"{dialogs / (s.step_ms / 1000):,.0f} | {s.floor_ms:.2f} | {s.floor_ms / s.step_ms:.2f} | "
            f"{s.rss_mb:,.0f} |"
        )
    lines += provenance_lines(command, load=load)
    return "\n".join(lines)


def _ray_note(steps: Sequence[StepRow]) -> list[str]:
    """The sentence on Ray rows, when there are any (the default table has none)."""
    if not any(s.shard_mode == "ray" for s in steps):
        return []
    return [
        "Rows with *ray* after the shard count hold each shard in a Ray actor of one CPU (one BLAS thread) in a local Ray "
        "instance that the measuring process starts (env ready s includes that start); their RSS "
        "counts the actors' processes, not Ray's own.",
        "",
    ]


def _shards_cell(row: StepRow) -> str:
    if row.shards is None:
        return "-"
    return str(row.shards) if row.shard_mode == "process" else f"{row.shards} {row.shard_mode}"


def run(
    sizes: Sequence[int],
    out: Path,
    command: str,
    *,
    images: str = "lazy",
    dialogs: int = 64,
    seconds: float = 3.0,
    shards: Sequence[int] = (1, 2, 4),
    float16: bool = True,
    workdir: Path | None = None,
    shard_modes: Sequence[str] = ("process",),
) -> str:
    """Measure every size and write ``out/scale.md`` (atomically); return its text."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    builds, steps = [], []
    with tempfile.TemporaryDirectory(prefix="fiq-gym-scale-", dir=workdir) as tmp:
        for size in sizes:
            row, rows = measure_size(
                size,
                Path(tmp),
                images=images,
                dialogs=dialogs,
                seconds=seconds,
                shards=shards,
                float16=float16,
                shard_modes=shard_modes,
            )
            builds.append(row)
            steps += rows
    text = to_markdown(builds, steps, dialogs=dialogs, command=command, load=load)
    atomic_write_text(out / "scale.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--images", choices=("lazy", "stored"), default="lazy", help="how catalogs keep images"
    )
    parser.add_argument("--dialogs", type=int, default=64, help="dialogs per vector-env step (default 64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per step timing")
    parser.add_argument("--shards", type=int, nargs="*", default=[1, 2, 4], help="shard counts to time")
    parser.add_argument(
        "--shard-mode",
        nargs="+",
        choices=SHARD_MODES,
        default=["process"],
        help="where the sharded rows' shards run: worker processes (default) and/or Ray actors "
        "(ray: needs the rllib extra)",
    )
    parser.add_argument("--no-float16", action="store_true", help="skip the float16 scoring row")
    parser.add_argument(
        "--workdir", type=Path, help="where catalogs are built (default: the system's temporary folder)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="output directory (default: benchmarks/results of the checkout, or ./fiq-gym-results when installed)",
    )
    args = parser.parse_args(argv)
    if min(args.sizes) < 2 or args.dialogs < 1 or args.seconds <= 0 or any(s < 1 for s in args.shards):
        parser.error("--sizes must be >= 2, --dialogs and --shards >= 1, --seconds > 0")
    if "ray" in args.shard_mode and importlib.util.find_spec("ray") is None:
        parser.error(f"--shard-mode ray needs Ray, which is not installed: {RAY_INSTALL}")
    refuse_unclean_publication(parser, args.out)
    command = command_line("fiq_gym.benchmarks.scale", argv)
    print(
        run(
            args.sizes,
            args.out,
            command,
            images=args.images,
            dialogs=args.dialogs,
            seconds=args.seconds,
            shards=args.shards,
            float16=not args.no_float16,
            workdir=args.workdir,
            shard_modes=list(dict.fromkeys(args.shard_mode)),
        )
    )


if __name__ == "__main__":
    main()
