"""Environment throughput: steps per second for one env, Gymnasium's SyncVectorEnv and the
native vector env, against the bare batched ranking that is the floor under any step; and,
for the transformer shopper, the native vector env against single envs stepped one by one,
and its batched captioning against a bare ``model.generate`` call.

    python -m fiq_gym.benchmarks.throughput            # sizes 1k, 10k, 100k; writes results/
    python -m fiq_gym.benchmarks.throughput --sizes 1000 --batches 1 16 --users template --out /tmp/tp

Every figure of one table comes from one run on one machine, so ratios are comparable even
when the machine is shared and absolute numbers are noisy.
"""

from __future__ import annotations

import argparse
import io
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from fiq_gym.atomic import atomic_write_bytes, atomic_write_text
from fiq_gym.benchmarks.publishing import default_results_dir
from fiq_gym.catalog.model import Catalog
from fiq_gym.default_catalog import load_default_catalog
from fiq_gym.envs.fashion_iq import FashionIQEnv
from fiq_gym.envs.vector import FashionIQVectorEnv
from fiq_gym.metrics import target_rank
from fiq_gym.retrieval import retrieval_tables

__all__ = ["Measurement", "measure_throughput", "run"]


@dataclass(frozen=True)
class Measurement:
    setting: str  # "single", "sync", "native", "ranking"; TRANSFORMER_SETTINGS for that shopper
    catalog_size: int
    num_envs: int
    steps_per_second: float  # environment steps (sub-env steps) per second; captions/s for captioning


#: Transformer-shopper settings: env steps/s of ``n`` single envs stepped one by one and of the
#: native vector env of ``n``; captions/s of ``TransformerUser.describe`` and of the bare
#: ``model.generate`` on the same batch of ``n`` pairs.
TRANSFORMER_SETTINGS = (
    "transformer-single",
    "transformer-native",
    "transformer-describe",
    "transformer-generate",
)
TEMPLATE_SETTINGS = ("single", "sync", "native", "ranking")


def _time(step: Callable[[], None], steps_per_call: int, min_seconds: float, min_calls: int = 3) -> float:
    step()  # warm up caches and lazy work
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= min_seconds:
            return calls * steps_per_call / elapsed


def _single(catalog: Catalog, rng: np.random.Generator, min_seconds: float) -> float:
    env = FashionIQEnv(catalog=catalog)
    env.reset(seed=0)
    n = env.num_items

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(n)))
        if terminated or truncated:
            env.reset()

    return _time(step, 1, min_seconds)


def _sync(catalog: Catalog, num_envs: int, rng: np.random.Generator, min_seconds: float) -> float:
    envs = gym.vector.SyncVectorEnv([lambda: FashionIQEnv(catalog=catalog) for _ in range(num_envs)])
    envs.reset(seed=0)
    n = envs.single_action_space.n
    rate = _time(lambda: envs.step(rng.integers(0, n, size=num_envs)), num_envs, min_seconds)
    envs.close()
    return rate


def _native(catalog: Catalog, num_envs: int, rng: np.random.Generator, min_seconds: float) -> float:
    envs = FashionIQVectorEnv(num_envs, catalog=catalog)
    envs.reset(seed=0)
    n = envs.num_items
    return _time(lambda: envs.step(rng.integers(0, n, size=num_envs)), num_envs, min_seconds)


def _ranking(catalog: Catalog, num_envs: int, rng: np.random.Generator, min_seconds: float) -> float:
    """The matrix product and the rank count an index-mode step needs, and nothing else."""
    features = retrieval_tables(catalog).features
    n = len(features)

    def step() -> None:
        shown = rng.integers(0, n, size=num_envs)
        targets = rng.integers(0, n, size=num_envs)
        target_rank(features[shown] @ features.T, targets)

    return _time(step, num_envs, min_seconds)


def measure_transformer(
    catalog: Catalog,
    num_envs: int = 64,
    min_seconds: float = 1.0,
    user_kwargs: dict | None = None,
) -> list[Measurement]:
    """The transformer shopper's rows (:data:`TRANSFORMER_SETTINGS`) for ``num_envs`` dialogs.

    All four use one shared :class:`~fiq_gym.users.TransformerUser` (``user_kwargs``: default
    checkpoint and decoding). The bare call gets its input tensors and uniforms prepared
    outside the timing and returns token ids; ``describe`` does everything an env step needs
    (index checks, table lookups, uniforms from per-pair generators, decoding, text, claims).
    """
    import torch

    from fiq_gym.threads import torch_threads

    size = len(catalog)
    rng = np.random.default_rng(0)
    kwargs = {"user": "transformer", "user_kwargs": user_kwargs or {}}
    singles = [FashionIQEnv(catalog=catalog, **kwargs) for _ in range(num_envs)]
    for k, env in enumerate(singles):
        env.reset(seed=k)
    n = singles[0].num_items

    def step_singles() -> None:
        for env in singles:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(n)))
            if terminated or truncated:
                env.reset()

    out = [Measurement("transformer-single", size, num_envs, _time(step_singles, num_envs, min_seconds))]
    envs = FashionIQVectorEnv(num_envs, catalog=catalog, **kwargs)
    envs.reset(seed=0)
    native = _time(lambda: envs.step(rng.integers(0, n, size=num_envs)), num_envs, min_seconds)
    out.append(Measurement("transformer-native", size, num_envs, native))

    user = envs.user
    targets = rng.integers(0, size, size=num_envs)
    shown = (targets + 1 + rng.integers(0, size - 1, size=num_envs)) % size
    generators = [np.random.default_rng(i) for i in range(num_envs)]
    describe = _time(lambda: user.describe(targets, shown, generators), num_envs, min_seconds)
    out.append(Measurement("transformer-describe", size, num_envs, describe))
    inputs = user.model_inputs(targets, shown)
    d = user.decoding
    uniforms = torch.from_numpy(np.random.default_rng(0).random((num_envs, user.max_new_tokens)))

    def bare() -> None:  # with the user's thread setting, like describe
        with torch_threads(user.threads):
            _generate()

    def _generate() -> None:
        user.model.generate(
            **inputs,
            strategy=d.strategy,
            max_new_tokens=user.max_new_tokens,
            uniforms=uniforms,
            temperature=d.temperature,
            top_k=d.top_k,
            top_p=d.top_p,
            num_beams=d.num_beams,
            length_penalty=d.length_penalty,
        )

    out.append(Measurement("transformer-generate", size, num_envs, _time(bare, num_envs, min_seconds)))
    return out


def measure_throughput(
    sizes: Sequence[int],
    batches: Sequence[int],
    min_seconds: float = 1.0,
    progress: bool = True,
    users: Sequence[str] = ("template", "transformer"),
    transformer_size: int = 10_000,
    transformer_envs: int = 64,
) -> list[Measurement]:
    rng = np.random.default_rng(0)
    out: list[Measurement] = []
    for size in sizes:
        catalog = load_default_catalog(size=size, progress=progress)
        retrieval_tables(catalog)  # build once, outside the timings
        if "transformer" in users and size == transformer_size:
            rows = measure_transformer(catalog, transformer_envs, min_seconds)
            out += rows
            if progress:
                print(
                    f"size {size:>7} transformer: "
                    + "  ".join(f"{m.setting} {m.steps_per_second:,.0f}/s" for m in rows)
                )
        if "template" not in users:
            continue
        out.append(Measurement("single", size, 1, _single(catalog, rng, min_seconds)))
        for b in batches:
            out.append(Measurement("sync", size, b, _sync(catalog, b, rng, min_seconds)))
            out.append(Measurement("native", size, b, _native(catalog, b, rng, min_seconds)))
            out.append(Measurement("ranking", size, b, _ranking(catalog, b, rng, min_seconds)))
            if progress:
                row = [m for m in out if m.catalog_size == size and m.num_envs == b]
                print(
                    f"size {size:>7} n {b:>4}: "
                    + "  ".join(f"{m.setting} {m.steps_per_second:,.0f}/s" for m in row)
                )
    return out


# Environment variables that choose CPU kernels. Trained networks differ bit for bit between
# kernel choices (AVX-512 vs AVX2 ATen kernels, MKL code paths), so a report records them.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    import os

    import torch

    pinned = [f"{k}={os.environ[k]}" for k in KERNEL_VARIABLES if os.environ.get(k)]
    return (
        f"{platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"torch CPU kernels {torch.backends.cpu.get_cpu_capability()}"
        f"{' (' + ', '.join(pinned) + ')' if pinned else ''}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, gymnasium {gym.__version__}, torch {torch.__version__}"
    )


def _lookup(ms: list[Measurement], setting: str, size: int, n: int) -> float | None:
    for m in ms:
        if (m.setting, m.catalog_size, m.num_envs) == (setting, size, n):
            return m.steps_per_second
    return None


def _transformer_markdown(ms: list[Measurement]) -> list[str]:
    rows = [m for m in ms if m.setting in TRANSFORMER_SETTINGS]
    if not rows:
        return []
    size, n = rows[0].catalog_size, rows[0].num_envs
    single, native, describe, bare = (_lookup(ms, s, size, n) for s in TRANSFORMER_SETTINGS)
    return [
        "",
        "## Transformer shopper",
        "",
        f"The shipped relative captioner (env default decoding: nucleus sampling), catalog of {size:,} items,",
        f"n = {n}. Env rows are env steps per second, `index` actions at random; captioning rows are",
        "captions per second for one batch of n random pairs.",
        "",
        "| setting | per second |",
        "|---|---:|",
        f"| {n} single envs stepped one by one (steps) | {single:,.0f} |",
        f"| native vector env of {n} (steps) | {native:,.0f} |",
        f"| `TransformerUser.describe`, batch of {n} (captions) | {describe:,.0f} |",
        f"| bare `model.generate`, same batch (captions) | {bare:,.0f} |",
        "",
        f"- (d) native vector env / single envs: **{native / single:.1f}x** (target >= 15x)",
        f"- (e) batched decoder (`describe`) / bare `model.generate`: **{describe / bare:.2f}** (target >= 0.5)",
    ]


def to_markdown(ms: list[Measurement], command: str) -> str:
    template = [m for m in ms if m.setting in TEMPLATE_SETTINGS]
    if not template:
        return "\n".join(
            [
                "# Environment throughput",
                *_transformer_markdown(ms),
                "",
                f"Command: `{command}`",
                "",
                f"Machine: {machine_line()}",
                "",
            ]
        )
    sizes = sorted({m.catalog_size for m in template})
    batches = sorted({m.num_envs for m in template if m.setting != "single"})
    lines = [
        "# Environment throughput",
        "",
        "Env steps per second (one sub-env step = one step), template shopper, `index` actions",
        "chosen at random, default observation. `ranking` is the bare batched ranking (feature",
        "matrix product plus the rank count) for the same batch: the floor under any env step.",
        "",
        "| catalog | n | single env | SyncVectorEnv(n) | native vector env(n) | bare ranking | native / sync | native / ranking |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        single = _lookup(ms, "single", size, 1)
        for b in batches:
            sync, native, rank = (_lookup(ms, s, size, b) for s in ("sync", "native", "ranking"))
            lines.append(
                f"| {size:,} | {b} | {single:,.0f} | {sync:,.0f} | {native:,.0f} | {rank:,.0f} | "
                f"{native / sync:.1f}x | {native / rank:.2f} |"
            )
    lines += ["", "## Targets (template shopper, 64 sub-envs)", ""]
    if 10_000 in sizes and 64 in batches:
        native, sync, rank = (_lookup(ms, s, 10_000, 64) for s in ("native", "sync", "ranking"))
        lines.append(f"- (a) native / SyncVectorEnv at 10k: **{native / sync:.1f}x** (target >= 3x)")
        lines.append(f"- (b) native / bare ranking at 10k: **{native / rank:.2f}** (target >= 0.5)")
        if 100_000 in sizes:
            big = _lookup(ms, "native", 100_000, 64)
            lines.append(
                f"- (c) time per step, 100k / 10k catalog: **{native / big:.1f}x** (target < 10x; "
                "the ranking is linear in the catalog size)"
            )
    else:
        lines.append("- not measured in this run (needs the 10k catalog and n = 64)")
    lines += _transformer_markdown(ms)
    lines += ["", f"Command: `{command}`", "", f"Machine: {machine_line()}", ""]
    return "\n".join(lines)


def plot(ms: list[Measurement]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({m.catalog_size for m in ms if m.setting in TEMPLATE_SETTINGS})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), sharey=True, squeeze=False)
    styles = {"native": "o-", "sync": "s--", "ranking": "k:"}
    for ax, size in zip(axes[0], sizes, strict=True):
        for setting, style in styles.items():
            pts = sorted(
                (m.num_envs, m.steps_per_second)
                for m in ms
                if m.setting == setting and m.catalog_size == size
            )
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    style,
                    label={"native": "native vector env", "sync": "SyncVectorEnv", "ranking": "bare ranking"}[
                        setting
                    ],
                )
        single = _lookup(ms, "single", size, 1)
        if single:
            ax.axhline(single, color="grey", lw=0.8, label="one env")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"catalog of {size:,} items")
        ax.set_xlabel("sub-envs n")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("env steps / second")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def run(
    sizes: Sequence[int],
    batches: Sequence[int],
    out: Path,
    min_seconds: float,
    command: str,
    users: Sequence[str] = ("template", "transformer"),
    transformer_size: int = 10_000,
    transformer_envs: int = 64,
) -> str:
    ms = measure_throughput(
        sizes,
        batches,
        min_seconds,
        users=users,
        transformer_size=transformer_size,
        transformer_envs=transformer_envs,
    )
    text = to_markdown(ms, command)
    atomic_write_text(out / "throughput.md", text)
    if any(m.setting in TEMPLATE_SETTINGS for m in ms):
        atomic_write_bytes(out / "throughput.png", plot(ms))
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument(
        "--out",
        type=Path,
        default=default_results_dir(),
        help="output directory (default: benchmarks/results of the checkout, or ./fiq-gym-results when installed)",
    )
    parser.add_argument(
        "--users",
        nargs="+",
        choices=("template", "transformer"),
        default=["template", "transformer"],
        help="shoppers to measure (the transformer's rows: at --transformer-size only)",
    )
    parser.add_argument(
        "--transformer-size", type=int, default=10_000, help="catalog size of the transformer rows"
    )
    parser.add_argument(
        "--transformer-envs", type=int, default=64, help="sub-envs / batch of the transformer rows"
    )
    args = parser.parse_args(argv)
    import sys

    command = "python -m fiq_gym.benchmarks.throughput " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        run(
            args.sizes,
            args.batches,
            args.out,
            args.min_seconds,
            command.strip(),
            args.users,
            args.transformer_size,
            args.transformer_envs,
        )
    )


if __name__ == "__main__":
    main()
