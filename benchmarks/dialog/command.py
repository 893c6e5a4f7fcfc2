"""``fiq-gym bench`` (``python -m fiq_gym.benchmarks.dialog``): its options, the run, the
reports, and the full preset's slate section."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from fiq_gym.benchmarks.dialog.evaluating import run_benchmark
from fiq_gym.benchmarks.dialog.presets import PRESETS, bench_agents
from fiq_gym.benchmarks.dialog.reporting import to_markdown, write_outputs
from fiq_gym.benchmarks.publishing import add_publish_argument, prepare_publish_dir
from fiq_gym.envs.configurations import CONFIGURATIONS
from fiq_gym.starts import START_MODES
from fiq_gym.users.registry import SHOPPERS
from fiq_gym.utils.arguments import absolute_path_object, catalog_arg
from fiq_gym.utils.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["build_parser", "main", "shopper_name"]

#: the first line of the package's docstring: `fiq-gym bench --help`'s description
DESCRIPTION = "The dialog retrieval benchmark: supervised vs RL-trained retrievers on one evaluation set."


def shopper_name(text: str) -> str:
    """A shopper name the envs take (``--train-users``, ``--eval-users``)."""
    if text.partition(":")[0] not in SHOPPERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no shopper: use one of {list(SHOPPERS)} (transformer:DIR, lm:DIR, dataset:SHOPPER)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """`fiq-gym bench`'s options."""
    parser = argparse.ArgumentParser(prog="fiq-gym bench", description=DESCRIPTION)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick", action="store_const", const="quick", dest="preset", help="the README's main job"
    )
    group.add_argument(
        "--full", action="store_const", const="full", dest="preset", help="more seeds, both users"
    )
    group.add_argument(
        "--preset", choices=sorted(PRESETS), dest="preset", help="a named preset (quick, full, ...)"
    )
    parser.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the built-in synthetic catalog)"
    )
    parser.add_argument(
        "--config",
        default="default",
        choices=list(CONFIGURATIONS),
        help="named configuration to play (fiq_gym.envs.configurations; results go to OUT/PRESET-CONFIG "
        "unless it is the default)",
    )
    parser.add_argument(
        "--agents",
        nargs="+",
        choices=bench_agents(),
        default=list(bench_agents()),
        help="the agents to train and compare (default: all)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="override the preset's seeds")
    parser.add_argument(
        "--train-users",
        nargs="+",
        type=shopper_name,
        help="shoppers to train with: template, transformer, or any shopper name the envs take "
        "(transformer:DIR, dataset:SHOPPER on an imported catalog) (default: the preset's)",
    )
    parser.add_argument(
        "--eval-users",
        nargs="+",
        type=shopper_name,
        help="shoppers to evaluate with, named as --train-users (default: the preset's)",
    )
    parser.add_argument(
        "--start",
        choices=START_MODES,
        default="uniform",
        help="where dialogs start: uniform, or annotated, the human-caption pairs of --start-split "
        "(training) and --eval-start-split (evaluation) of an imported catalog (docs/real_data.md)",
    )
    parser.add_argument(
        "--start-split",
        default="train",
        help="with --start annotated: the training dialogs' split (default train)",
    )
    parser.add_argument(
        "--eval-start-split",
        help="with --start annotated: the evaluation dialogs' split, e.g. val as in the papers (default: "
        "--start-split)",
    )
    parser.add_argument("--turns", type=int, default=5, help="dialog turns (max_turns)")
    parser.add_argument(
        "--out", type=absolute_path_object, default="runs/bench", help="run directory (also the cache)"
    )
    add_publish_argument(parser, "the reports to DIR/PRESET/")
    sealing = parser.add_mutually_exclusive_group()
    sealing.add_argument(
        "--isolation",
        choices=("process", "sealed", "none"),
        help="process: each agent in a process of its own (the default with --publish); sealed: the "
        "environment in a child process (the default otherwise: faster, the same numbers for honest agents); "
        "none: all in this process, for debugging (--publish refuses it)",
    )
    sealing.add_argument(
        "--sealed",
        dest="isolation",
        action="store_const",
        const="sealed",
        help="the same as --isolation sealed",
    )
    sealing.add_argument(
        "--unsealed",
        dest="isolation",
        action="store_const",
        const="none",
        help="the same as --isolation none",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run up to this many (shopper, seed) stages at once in separate processes (default 1; "
        "at most the number of cores: every stage uses one)",
    )
    parser.add_argument(
        "--no-slates",
        dest="slates",
        action="store_false",
        help="skip the full preset's slate section (python -m fiq_gym.benchmarks.slates, run after the dialog tables)",
    )
    # set by --jobs for the processes it starts: where the stage's records go, and the run directory
    parser.add_argument("--stage-records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.publish is not None and args.isolation == "none":
        parser.error("--publish needs the sealed harness: published tables never come from --unsealed runs")
    if args.isolation is None:
        args.isolation = "process" if args.publish is not None else "sealed"
    preset = PRESETS[args.preset or "quick"]
    name = preset.name if args.config == "default" else f"{preset.name}-{args.config}"
    publish_to = None if args.publish is None else prepare_publish_dir(parser, args.publish, name)
    command = "fiq-gym bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = run_benchmark(
        preset,
        args.run_dir or args.out / name,
        catalog=args.catalog,
        agents=args.agents,
        seeds=args.seeds,
        train_users=args.train_users,
        eval_users=args.eval_users,
        max_turns=args.turns,
        command=command.strip(),
        isolation=args.isolation,
        jobs=args.jobs,
        configuration=args.config,
        start=args.start,
        start_split=args.start_split,
        eval_start_split=args.eval_start_split,
    )
    if args.stage_records:
        # a stage run by another benchmark process (--jobs): hand it the records, write nothing else
        import pickle

        # plain fields: this module runs as __main__ here, so its classes would not unpickle
        records = [(r.agent, r.train_user, r.eval_user, r.seed, r.result) for r in result.records]
        budgets = {key: dataclasses.asdict(b) for key, b in result.budgets.items()}
        atomic_write_bytes(args.stage_records, pickle.dumps((records, budgets)))
        return 0
    written = write_outputs(result, args.out / name)
    if publish_to is not None:
        written += write_outputs(result, publish_to)
    print()
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    if preset.slate_section and args.slates and args.config == "default" and args.start == "uniform":
        seeds = args.seeds if args.seeds is not None else preset.seeds
        written = _slate_section(args, seeds, args.out / name, publish_to, command.strip())
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _slate_section(
    args: argparse.Namespace, seeds: Sequence[int], out: Path, publish_to: Path | None, command: str
) -> list[Path]:
    """The preset's slate section (:mod:`fiq_gym.benchmarks.slates`) into ``out`` (and
    ``publish_to``), its report naming this benchmark's command."""
    from fiq_gym.benchmarks import slates

    print("\nslate section (python -m fiq_gym.benchmarks.slates; --no-slates skips it)", flush=True)
    argv = ["--seeds", *map(str, seeds), "--out", str(out), "--no-progress"]
    if args.catalog:
        argv += ["--catalog", str(args.catalog)]
    slates.main(argv, command=command)
    written = [out / "slates.md", out / "slates.json"]
    if publish_to is not None:
        for path in list(written):
            target = publish_to / path.name
            atomic_write_text(target, path.read_text(encoding="utf-8"))
            written.append(target)
    return written
