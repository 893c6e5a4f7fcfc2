"""Catalog build and open costs: build time and peak memory per size, and the time a fresh
process takes to open a catalog (memory-mapped, so it should not grow with the size).

    python -m fiq_gym.benchmarks.catalog                      # sizes 10k, 100k; writes results/
    python -m fiq_gym.benchmarks.catalog --sizes 2000 --out /tmp/catalog-bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fiq_gym.benchmarks.publishing import add_out_argument, provenance_lines
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["run"]

_BUILD = """
import json, resource, sys, time
from fiq_gym.catalog.synthetic import build_synthetic_catalog
start = time.perf_counter()
build_synthetic_catalog(sys.argv[1], size=int(sys.argv[2]), seed=0, progress=False)
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": own, "worker_peak_mb": workers}))
"""

_OPEN = """
import json, resource, sys, time
import numpy as np
from fiq_gym.catalog.storage import open_catalog
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
catalog = open_catalog(sys.argv[1])
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_growth_mb": after - before, "items": len(catalog),
                  "images_mapped": isinstance(catalog.images, np.memmap)}))
"""


def _python(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: Sequence[int], out: Path, command: str) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"cat-{size}"
            build = _python(_BUILD, str(path), str(size))
            opened = min((_python(_OPEN, str(path)) for _ in range(3)), key=lambda r: r["seconds"])
            disk_mb = sum(f.stat().st_size for f in path.iterdir()) / 2**20
            rows.append((size, build, opened, disk_mb))
            print(f"size {size:,}: build {build['seconds']:.1f}s, open {opened['seconds'] * 1000:.1f} ms")
    lines = [
        "# Catalog build and open",
        "",
        "Synthetic catalogs at 64x64. Build: one process writing chunks as they arrive, rendering in",
        "worker processes. Open: `open_catalog` in a fresh process (best of 3), arrays memory-mapped.",
        "",
        "| items | build (s) | items/s | writer peak RSS (MB) | worker peak RSS (MB) | on disk (MB) | open (ms) | RSS growth on open (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, build, opened, disk_mb in rows:
        lines.append(
            f"| {size:,} | {build['seconds']:.1f} | {size / build['seconds']:,.0f} | {build['peak_mb']:.0f} | "
            f"{build['worker_peak_mb']:.0f} | {disk_mb:,.0f} | {opened['seconds'] * 1000:.1f} | "
            f"{opened['rss_growth_mb']:.1f} |"
        )
    lines += provenance_lines(command)
    text = "\n".join(lines)
    atomic_write_text(out / "catalog.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    add_out_argument(parser)
    args = parser.parse_args(argv)
    command = "python -m fiq_gym.benchmarks.catalog " + " ".join(sys.argv[1:] if argv is None else argv)
    print(run(args.sizes, args.out, command.strip()))


if __name__ == "__main__":
    main()
