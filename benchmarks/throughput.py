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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np

from fiq_gym.benchmarks.publishing import add_out_argument, provenance_lines
from fiq_gym.catalog.model import Catalog
from fiq_gym.default_catalog import load_default_catalog
from fiq_gym.envs.fashion_iq import FashionIQEnv
from fiq_gym.envs.vector import FashionIQVectorEnv
from fiq_gym.gallery import gallery_of
from fiq_gym.metrics import target_rank
from fiq_gym.utils.atomic import atomic_write_bytes, atomic_write_text
from fiq_gym.utils.threads import blas_threads

if TYPE_CHECKING:
    import torch

    from fiq_gym.users.transformer.user import TransformerUser

__all__ = ["Measurement", "measure_throughput", "run"]


@dataclass(frozen=True)
class Measurement:
    setting: str  # "single", "sync", "native", "ranking"; TRANSFORMER_SETTINGS for that shopper
    catalog_size: int
    num_envs: int
    # Environment steps (sub-env steps) per second; captions/s for captioning, rankings/s for
    # the transformer env's ranking; FLOP/s for "transformer-matmul" and FLOPs per caption
    # for "transformer-caption-flops" (see TRANSFORMER_SETTINGS).
    steps_per_second: float


#: Transformer-shopper settings: env steps/s of ``n`` single envs stepped one by one and of the
#: native vector env of ``n``; captions/s of ``TransformerUser.describe`` and of the bare
#: ``model.generate`` on the same batch of ``n`` pairs; rankings/s of the env's ranker on a
#: batch of ``n`` (as a step ranks: with the shopper's BLAS threads); the FLOPs of one caption
#: of that batch (``caption_flops``, the batch's own caption lengths); FLOP/s of torch
#: ``linear`` on the decoder's shapes at batch ``n`` (the matrix work of one decoding step,
#: on the shopper's thread count): what the machine achieves on such products. All but the
#: FLOP count are timed in turns (:func:`_interleaved`).
TRANSFORMER_SETTINGS = (
    "transformer-single",
    "transformer-native",
    "transformer-describe",
    "transformer-generate",
    "transformer-ranking",
    "transformer-caption-flops",
    "transformer-matmul",
)
TEMPLATE_SETTINGS = ("single", "sync", "native", "ranking")
#: Rounds in which the template rows of one (catalog, n) take turns.
TEMPLATE_ROUNDS = 5


def _time(step: Callable[[], object], steps_per_call: int, min_seconds: float, min_calls: int = 3) -> float:
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


# The template rows of one (catalog, n) are timed in turns (``_interleaved``), as the
# transformer's are: timed one after the other, a load change between the native env and the
# bare ranking moved (b) by itself (a published run read the bare ranking at n = 64 below n = 16).
def _sync(
    catalog: Catalog, num_envs: int, rng: np.random.Generator
) -> tuple[Callable[[], object], Callable[[], None]]:
    """A step of a ``SyncVectorEnv`` of ``num_envs`` single envs, and its closing."""
    envs = gym.vector.SyncVectorEnv([lambda: FashionIQEnv(catalog=catalog) for _ in range(num_envs)])
    envs.reset(seed=0)
    n = cast(gym.spaces.Discrete, envs.single_action_space).n
    return (lambda: envs.step(rng.integers(0, n, size=num_envs))), envs.close


def _native(
    catalog: Catalog, num_envs: int, rng: np.random.Generator
) -> tuple[Callable[[], object], Callable[[], None]]:
    """A step of the native vector env of ``num_envs`` sub-envs, and its closing."""
    envs = FashionIQVectorEnv(num_envs, catalog=catalog)
    envs.reset(seed=0)
    n = envs.num_items
    return (lambda: envs.step(rng.integers(0, n, size=num_envs))), envs.close


def _ranking(catalog: Catalog, num_envs: int, rng: np.random.Generator) -> Callable[[], object]:
    """The matrix product and the rank count an index-mode step needs, and nothing else."""
    features = gallery_of(catalog).features
    n = len(features)

    def step() -> None:
        shown = rng.integers(0, n, size=num_envs)
        targets = rng.integers(0, n, size=num_envs)
        target_rank(features[shown] @ features.T, targets)

    return step


def _template_batch(
    catalog: Catalog, num_envs: int, rng: np.random.Generator, min_seconds: float, rounds: int
) -> dict[str, float]:
    """Steps per second of ``sync``, ``native`` and ``ranking`` for ``num_envs`` dialogs, timed
    in turns: ``rounds`` rounds, each setting's best round."""
    sync, close_sync = _sync(catalog, num_envs, rng)
    native, close_native = _native(catalog, num_envs, rng)
    try:
        calls = {
            "sync": (sync, num_envs),
            "native": (native, num_envs),
            "ranking": (_ranking(catalog, num_envs, rng), num_envs),
        }
        # Each setting runs about min_seconds in all, as when they were timed one after the other.
        return _interleaved(
            {k: (c, float(u)) for k, (c, u) in calls.items()}, min_seconds * len(calls), rounds
        )
    finally:
        close_sync()
        close_native()


def measure_transformer(
    catalog: Catalog,
    num_envs: int = 64,
    min_seconds: float = 1.0,
    user_kwargs: dict | None = None,
    rounds: int = 5,
) -> list[Measurement]:
    """The transformer shopper's rows (:data:`TRANSFORMER_SETTINGS`) for ``num_envs`` dialogs.

    The vector env, ``describe``, the bare call and the ranking use one shared
    :class:`~fiq_gym.users.TransformerUser` (``user_kwargs``: default checkpoint and
    decoding); each single env loads its own. The bare call gets its input tensors and uniforms
    prepared outside the timing and returns token ids; ``describe`` does everything an env step
    needs of the shopper (index checks, table lookups, uniforms from per-pair generators,
    decoding, text, claims, observation ids).

    The timed settings take turns: ``rounds`` rounds of about ``min_seconds / rounds`` each
    (at least one call), and each setting's best round counts. On a machine that other work
    shares, its load then weighs on all settings alike, so their ratios hold.
    """
    import torch

    from fiq_gym.users.transformer.modeling_relative_captioner import caption_flops
    from fiq_gym.utils.threads import torch_threads

    size = len(catalog)
    rng = np.random.default_rng(0)
    kwargs: dict[str, Any] = {"user": "transformer", "user_kwargs": user_kwargs or {}}
    singles = [FashionIQEnv(catalog=catalog, **kwargs) for _ in range(num_envs)]
    for k, env in enumerate(singles):
        env.reset(seed=k)
    n = singles[0].num_items

    def step_singles() -> None:
        for env in singles:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(n)))
            if terminated or truncated:
                env.reset()

    envs = FashionIQVectorEnv(num_envs, catalog=catalog, **kwargs)
    envs.reset(seed=0)
    user = cast("TransformerUser", envs.user)
    targets = rng.integers(0, size, size=num_envs)
    shown = (targets + 1 + rng.integers(0, size - 1, size=num_envs)) % size
    generators = [np.random.default_rng(i) for i in range(num_envs)]
    inputs = user.model_inputs(targets, shown)
    uniforms = torch.from_numpy(np.random.default_rng(0).random((num_envs, user.max_new_tokens)))

    def bare() -> None:  # with the user's thread setting, like describe
        with torch_threads(user.threads):
            user.generate_from_inputs(inputs, uniforms, user.max_new_tokens)

    ranker = envs.ranker

    def rank() -> None:  # as a step ranks: the env's ranker, the shopper's BLAS threads
        with blas_threads(user.blas_threads):
            ranker.similar_ranks(rng.integers(0, n, size=num_envs), rng.integers(0, n, size=num_envs))

    products, product_flops = _decoder_products(user, num_envs)
    rates = _interleaved(
        {
            "transformer-single": (step_singles, num_envs),
            "transformer-native": (lambda: envs.step(rng.integers(0, n, size=num_envs)), num_envs),
            "transformer-describe": (lambda: user.describe(targets, shown, generators), num_envs),
            "transformer-generate": (bare, num_envs),
            "transformer-ranking": (rank, num_envs),
            "transformer-matmul": (products, product_flops),
        },
        min_seconds,
        rounds,
    )
    out = [Measurement(s, size, num_envs, rates[s]) for s in TRANSFORMER_SETTINGS if s in rates]
    ids = user.generate_ids(targets, shown, [np.random.default_rng(i) for i in range(num_envs)])
    flops = caption_flops(user.config, _lengths(ids, user))
    out.insert(-1, Measurement("transformer-caption-flops", size, num_envs, flops))
    return out


def _interleaved(
    calls: dict[str, tuple[Callable[[], object], float]], min_seconds: float, rounds: int
) -> dict[str, float]:
    """Units per second of each ``name: (call, units per call)``, in its best of ``rounds``
    rounds that time every call in turn for about ``min_seconds / rounds`` (at least one call
    each)."""
    for call, _ in calls.values():
        call()  # warm up caches and lazy work
    best = dict.fromkeys(calls, 0.0)
    budget = min_seconds / max(rounds, 1)
    for _ in range(max(rounds, 1)):
        for name, (call, units) in calls.items():
            done, start = 0, time.perf_counter()
            while True:
                call()
                done += 1
                elapsed = time.perf_counter() - start
                if elapsed >= budget:
                    break
            best[name] = max(best[name], done * units / elapsed)
    return best


def _lengths(ids: torch.Tensor, user: TransformerUser) -> list[int]:
    """Generated tokens per caption, ``<eos>`` included (all of a row cut at the limit)."""
    eos = user.config.eos_token_id
    return [row.index(eos) + 1 if eos in row else len(row) for row in ids.tolist()]


def _decoder_products(user: TransformerUser, batch: int) -> tuple[Callable[[], None], int]:
    """A call of torch ``linear`` (float32, the shopper's thread count) on the shapes of one
    decoding step of ``batch`` captions, and its FLOPs: per decoder layer the key/value
    (d -> 2d), query, output, cross-attention query and output (d -> d) and feed-forward
    (d -> ffn -> d) products, then the output layer (d -> vocabulary); random inputs and
    weights."""
    import torch
    import torch.nn.functional as F

    from fiq_gym.utils.threads import torch_threads

    c = user.config
    d, f, v = c.d_model, c.ffn_dim, c.vocab_size
    g = torch.Generator().manual_seed(0)
    shapes = [(d, 2 * d), (d, d), (d, d), (d, d), (d, d), (d, f), (f, d)] * c.num_decoder_layers + [(d, v)]
    work = [
        (torch.randn(batch, i, generator=g), torch.randn(o, i, generator=g), torch.randn(o, generator=g))
        for i, o in shapes
    ]

    def products() -> None:
        with torch_threads(user.threads), torch.inference_mode():
            for x, w, b in work:
                F.linear(x, w, b)

    return products, sum(2 * batch * i * o for i, o in shapes)


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
        gallery_of(catalog)  # build once, outside the timings
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
            rates = _template_batch(catalog, b, rng, min_seconds, TEMPLATE_ROUNDS)
            out += [
                Measurement(setting, size, b, rates[setting]) for setting in ("sync", "native", "ranking")
            ]
            if progress:
                row = [m for m in out if m.catalog_size == size and m.num_envs == b]
                print(
                    f"size {size:>7} n {b:>4}: "
                    + "  ".join(f"{m.setting} {m.steps_per_second:,.0f}/s" for m in row)
                )
    return out


def _lookup(ms: list[Measurement], setting: str, size: int, n: int) -> float | None:
    for m in ms:
        if (m.setting, m.catalog_size, m.num_envs) == (setting, size, n):
            return m.steps_per_second
    return None


def _measured(ms: list[Measurement], setting: str, size: int, n: int) -> float:
    """A measurement every run of its table makes."""
    value = _lookup(ms, setting, size, n)
    if value is None:
        raise ValueError(f"no {setting!r} measurement for a catalog of {size} and n = {n}")
    return value


def _transformer_markdown(ms: list[Measurement]) -> list[str]:
    rows = [m for m in ms if m.setting in TRANSFORMER_SETTINGS]
    if not rows:
        return []
    size, n = rows[0].catalog_size, rows[0].num_envs
    single, native, describe, bare = (_measured(ms, s, size, n) for s in TRANSFORMER_SETTINGS[:4])
    ranking, flops, matmul = (_lookup(ms, s, size, n) for s in TRANSFORMER_SETTINGS[4:])
    lines = [
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
    ]
    if ranking is not None:
        lines.append(f"| the env's ranking, batch of {n} (rankings) | {ranking:,.0f} |")
    lines += [
        "",
        f"- (d) native vector env / single envs: **{native / single:.1f}x** (target >= 15x)",
        f"- (e) batched decoder (`describe`) / bare `model.generate`: **{describe / bare:.2f}** (target >= 0.5)",
    ]
    if ranking is not None:
        # Seconds a step of n spends in its parts: captioning n pairs and ranking them.
        parts_s = n / describe + n / ranking
        parts_ms, step_ms = 1e3 * parts_s, 1e3 * n / native
        lines.append(
            f"- (f) env step / its parts: a native step of {n} takes {step_ms:.1f} ms, `describe` plus the "
            f"ranking of {n} take {parts_ms:.1f} ms: **{parts_ms / step_ms:.2f}** (target >= 0.8)"
        )
    if ranking is not None and native / single < 15:
        # What bounds (d): the same ratio for an env step costing only its parts, and for
        # one whose decoder ran at the FLOP limit.
        bound = f"  - What bounds (d): an env step costing only `describe` plus the ranking would reach {n / parts_s / single:.1f}x"
        if flops is not None and matmul is not None:
            at_limit = n / (n * flops / matmul + n / ranking)
            bound += f", one whose decoder ran at the FLOP limit of (g) {at_limit / single:.0f}x"
        lines.append(
            bound + ". The batched decoder is the limit: it costs most of a native step, while one "
            "caption at a time is bound by each decoding step's fixed cost, not its arithmetic."
        )
    if flops is not None and matmul is not None:
        limit = matmul / flops
        lines += [
            f"- (g) `describe` / the captioner's FLOP limit: **{describe / limit:.0%}** (target >= 30%). One caption "
            f"costs {flops / 1e6:.2f} MFLOP, so `describe`'s {describe:,.0f} captions/s are "
            f"{describe * flops / 1e9:.1f} GFLOP/s; torch matrix products of the decoder's shapes at batch {n} "
            f"reach {matmul / 1e9:.1f} GFLOP/s on this machine, a limit of {limit:,.0f} captions/s.",
            "  - FLOPs per caption (`fiq_gym.users.transformer.modeling_relative_captioner.caption_flops`): from "
            "the model config, a multiply-add counted as 2, every linear layer and both products of every "
            "attention: the item encoder and the cross-attention keys/values once per caption, then per "
            "generated token (`<eos>` included) with the key/value cache the decoder layers' projections, "
            "attention over the cached positions and the item tokens, feed-forward and output layer; averaged "
            "over the lengths of the captions `describe` wrote for its batch. Norms, GELU, softmax and "
            "sampling are not counted.",
            "  - Achievable FLOP/s: torch `linear` (float32, the shopper's thread count) on the shapes of one "
            "decoding step at the same batch (each decoder layer's key/value, query, output, cross-attention "
            "and feed-forward products, then the output layer; random data), timed like the rows above: in "
            "the same rounds, taking turns with them, its best round.",
            "- Settings are timed in turns: rounds in which each runs for about `--min-seconds` / rounds, each "
            "setting's best round counting, so a shared machine's load weighs on all of them alike.",
        ]
    return lines


def to_markdown(ms: list[Measurement], command: str) -> str:
    template = [m for m in ms if m.setting in TEMPLATE_SETTINGS]
    if not template:
        return "\n".join(
            [
                "# Environment throughput",
                *_transformer_markdown(ms),
                *provenance_lines(command),
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
        f"SyncVectorEnv, native and bare ranking of one row are timed in turns ({TEMPLATE_ROUNDS} rounds, each",
        "setting's best round counting), so a load change weighs on the three alike.",
        "",
        "| catalog | n | single env | SyncVectorEnv(n) | native vector env(n) | bare ranking | native / sync | native / ranking |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        single = _measured(ms, "single", size, 1)
        for b in batches:
            sync, native, rank = (_measured(ms, s, size, b) for s in ("sync", "native", "ranking"))
            lines.append(
                f"| {size:,} | {b} | {single:,.0f} | {sync:,.0f} | {native:,.0f} | {rank:,.0f} | "
                f"{native / sync:.1f}x | {native / rank:.2f} |"
            )
    lines += ["", "## Targets (template shopper, 64 sub-envs)", ""]
    if 10_000 in sizes and 64 in batches:
        native, sync, rank = (_measured(ms, s, 10_000, 64) for s in ("native", "sync", "ranking"))
        lines.append(f"- (a) native / SyncVectorEnv at 10k: **{native / sync:.1f}x** (target >= 3x)")
        lines.append(f"- (b) native / bare ranking at 10k: **{native / rank:.2f}** (target >= 0.5)")
        if 100_000 in sizes:
            big = _measured(ms, "native", 100_000, 64)
            lines.append(
                f"- (c) time per step, 100k / 10k catalog: **{native / big:.1f}x** (target < 10x; "
                "the ranking is linear in the catalog size)"
            )
    else:
        lines.append("- not measured in this run (needs the 10k catalog and n = 64)")
    lines += _transformer_markdown(ms)
    lines += provenance_lines(command)
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
    add_out_argument(parser)
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
