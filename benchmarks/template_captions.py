"""Throughput of the template shopper: relative captions per second on one core.

The vector env captions every sub-env each step, so the template user must never be the
bottleneck. This times :meth:`TemplateUser.describe` on batches of random (target, shown)
pairs over an in-memory catalog of random attribute codes (no images, so the figure is the
captioning cost alone), with and without noise, and writes
``benchmarks/results/template_captions.md``.

Run: ``python -m fiq_gym.benchmarks.template_captions [--catalog-size N] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from fiq_gym.benchmarks.publishing import default_results_dir
from fiq_gym.catalog import Catalog
from fiq_gym.catalog.synthetic_spec import CATEGORIES, LENGTHS_BY_CATEGORY, SYNTHETIC_VOCABULARY
from fiq_gym.users import TemplateNoise, TemplateUser
from fiq_gym.utils.atomic import atomic_write_text

NOISY = TemplateNoise(omit=0.2, wrong_color=0.2, drop_word=0.1)
# (label, noise, one generator per pair as a vector env passes them)
SETTINGS: list[tuple[str, TemplateNoise | None, bool]] = [
    ("noise off, one generator", None, False),
    ("noise off, one generator per pair", None, True),
    ("noise on (omit 0.2, wrong_color 0.2, drop_word 0.1), one generator", NOISY, False),
]


def random_catalog(size: int, seed: int = 0) -> Catalog:
    """A catalog of random synthetic-vocabulary codes, lengths valid per category, random
    rendered colours; built directly so the benchmark does not depend on the renderer."""
    rng = np.random.default_rng(seed)
    vocabulary = SYNTHETIC_VOCABULARY
    categories = rng.integers(0, len(CATEGORIES), size=size).astype(np.int16)
    codes = np.stack([rng.integers(0, len(t.values), size=size) for t in vocabulary.types], 1)
    length = vocabulary.type_names.index("length")
    values = vocabulary["length"].values
    for code, name in enumerate(CATEGORIES):
        rows = np.flatnonzero(categories == code)
        allowed = np.array([values.index(v) for v in LENGTHS_BY_CATEGORY[name]])
        codes[rows, length] = rng.choice(allowed, size=rows.size)
    return Catalog(
        ids=np.array([f"b{i:07d}" for i in range(size)]),
        categories=categories,
        category_names=CATEGORIES,
        vocabulary=vocabulary,
        labels=vocabulary.encode(codes),
        descriptions=[""] * size,
        primary_rgb=rng.integers(0, 256, size=(size, 3)).astype(np.uint8),
        provenance={"name": "benchmark-random"},
    )


def time_user(
    user: TemplateUser, batch: int, batches: int, repeats: int, seed: int, per_pair: bool
) -> list[float]:
    """Captions per second for each repeat of ``batches`` calls on fresh random pairs.

    With ``per_pair`` every call gets one persistent generator per pair, as a vector env
    passes its sub-envs' generators."""
    rng = np.random.default_rng(seed)
    n = len(user.catalog)
    pairs = rng.integers(0, n, size=(batches, 2, batch))
    source = [np.random.default_rng(seed + 1 + i) for i in range(batch)] if per_pair else rng
    user.describe(pairs[0, 0], pairs[0, 1], source)  # warm the phrase and record caches
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for targets, shown in pairs:
            user.describe(targets, shown, source)
        rates.append(batches * batch / (time.perf_counter() - start))
    return rates


def render_report(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Template user throughput",
        "",
        f"`TemplateUser.describe` on batches of {args.batch} random pairs, catalog of "
        f"{args.catalog_size} random items, max_differences 3, one process. "
        f"Median of {args.repeats} repeats of {args.batches} batches.",
        "",
        "| setting | captions/s (median) | captions/s (min) | µs per caption |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {row['median']:,.0f} | {row['min']:,.0f} | {1e6 / row['median']:.1f} |"
        )
    lines += [
        "",
        "Reproduce: `python -m fiq_gym.benchmarks.template_captions "
        f"--catalog-size {args.catalog_size} --batch {args.batch} --repeats {args.repeats}`",
        "",
        f"machine: platform={platform.platform()} cpus={os.cpu_count()} "
        f"python={platform.python_version()} numpy={np.__version__}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog-size", type=int, default=10_000, help="items in the catalog")
    parser.add_argument("--batch", type=int, default=256, help="pairs per describe() call")
    parser.add_argument("--batches", type=int, default=200, help="describe() calls per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        type=Path,
        default=default_results_dir() / "template_captions.md",
        help="markdown result file (default: template_captions.md in benchmarks/results of the checkout, "
        "or in ./fiq-gym-results when installed)",
    )
    args = parser.parse_args(argv)
    for name in ("catalog_size", "batch", "batches", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    catalog = random_catalog(args.catalog_size, args.seed)
    rows = []
    for setting, noise, per_pair in SETTINGS:
        user = TemplateUser(catalog, noise=noise)
        rates = time_user(user, args.batch, args.batches, args.repeats, args.seed + 1, per_pair)
        rows.append({"setting": setting, "median": statistics.median(rates), "min": min(rates)})
        print(f"{setting}: {statistics.median(rates):,.0f} captions/s (median)")
    atomic_write_text(args.output, render_report(rows, args))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
