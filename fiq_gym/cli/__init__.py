"""The ``fiq-gym`` command line.

Subcommands import what they need lazily, so ``fiq-gym --help`` answers instantly and the
library's layers (benchmarks -> agents -> envs -> core) stay independent of this entry point.
"""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiq_gym import __version__
from fiq_gym.agents import registry  # names and module paths only: loads no agent code
from fiq_gym.catalog.limits import MAX_IMAGE_SIZE, MIN_SYNTHETIC_IMAGE_SIZE
from fiq_gym.errors import FiqGymError
from fiq_gym.utils.arguments import catalog_arg, int_between, path_arg, seed

if TYPE_CHECKING:
    from fiq_gym.catalog.model import Catalog

__all__ = ["main"]

#: `fiq-gym eval`'s dialogs when nothing says otherwise (an agent factory; an old checkpoint)
DEFAULT_EVAL_EPISODES = 1000


def _catalog_build(args: argparse.Namespace) -> int:
    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.catalog.synthetic import write_synthetic_catalog
    from fiq_gym.default_catalog import default_catalog_path
    from fiq_gym.features.default_network import attach_default_features, default_network_fits
    from fiq_gym.utils.atomic import atomic_directory

    out = Path(args.out) if args.out else default_catalog_path(args.size, args.seed, args.image_size)
    if args.images == "lazy" and not args.out:
        out = out.with_name(out.name + "-lazy")  # never in the default catalog's place
    # One atomic directory for the images and the features: a build killed in either step
    # leaves no catalog at --out (and with --overwrite the old one stays until both are done).
    fits = False
    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        write_synthetic_catalog(tmp, args.size, args.seed, args.image_size, images=args.images)
        if not args.no_features:
            fits = default_network_fits(tmp)
            if fits:
                attach_default_features(tmp)
    if not args.no_features and not fits:
        print(
            f"no features: the shipped attribute network reads 64x64 images, not {args.image_size}x"
            f"{args.image_size}; train one with `fiq-gym features train {out} --out DIR`, then "
            f"`fiq-gym features extract {out} --checkpoint DIR`",
            file=sys.stderr,
        )
    catalog = open_catalog(out)
    print(f"wrote {catalog!r} to {out}")
    return 0


def _resolve_catalog(path: str | None) -> Catalog:
    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.default_catalog import parse_synthetic_spec, resolve_catalog

    # A directory is opened afresh (a command reports what is on disk now); a
    # "synthetic:SIZE[:SEED]" spec or nothing names a cached synthetic catalog.
    if path and parse_synthetic_spec(path) is None:
        return open_catalog(path)
    return resolve_catalog(path or None)


def _catalog_show(args: argparse.Namespace) -> int:
    from fiq_gym.catalog.sheet import save_contact_sheet

    catalog = _resolve_catalog(args.catalog)
    out = Path(args.out) if args.out else Path("contact_sheet.png")
    save_contact_sheet(catalog, out, count=args.count, seed=args.seed, columns=args.columns, scale=args.scale)
    print(f"{catalog!r}\nwrote a contact sheet of {min(args.count, len(catalog))} items to {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fiq_gym.play.demo import play_demo_dialog

    play_demo_dialog(_resolve_catalog(args.catalog), seed=args.seed, turns=args.turns)
    return 0


def __getattr__(name: str) -> Any:
    # TRAINERS: `fiq-gym train`'s agents (name -> trainer module), as registered now
    if name == "TRAINERS":
        return registry.trainers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _train(args: argparse.Namespace) -> int:
    import importlib

    try:
        # rllib-ppo needs the rllib extra (the message below names it when Ray is missing);
        # behaviour-cloning the offline extra (Minari; its import error names it)
        trainer = importlib.import_module(registry.trainers()[args.agent])
    except ModuleNotFoundError as e:
        if e.name in ("minari", "pyarrow"):  # fiq_gym.envs.offline's message names the extra
            raise FiqGymError(f"fiq-gym train {args.agent}: {e}") from None
        if e.name != "ray" and not str(e.name).startswith("ray."):
            raise
        raise FiqGymError(
            f"fiq-gym train {args.agent} needs Ray RLlib, which is not installed; "
            'install it with pip install -e ".[rllib]"'
        ) from None
    trainer.main(list(args.agent_args), prog=f"fiq-gym train {args.agent}")
    return 0


def _record(args: argparse.Namespace) -> int:
    try:
        from fiq_gym.agents.recording import record
    except ModuleNotFoundError as e:
        if e.name not in ("minari", "pyarrow"):
            raise
        raise FiqGymError(str(e)) from None
    result = record(
        args.agent,
        episodes=args.episodes,
        out=args.out,
        dataset_id=args.dataset_id,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        env_id=args.env_id,
        catalog=args.catalog,
        user=args.user,
        action_mode=args.action_mode,
        max_turns=args.max_turns,
        reward=args.reward,
        shortlist=args.shortlist,
        shortlist_size=args.shortlist_size,
        explore=args.explore,
    )
    root = shlex.quote(str(result.root))
    print(
        f"wrote {result.episodes} episodes ({result.steps} steps) to {result.path}\n"
        f"read it with: MINARI_DATASETS_PATH={root} python -c "
        f"\"import minari; print(minari.load_dataset('{result.dataset_id}'))\"",
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fiq_gym.agents.single_shot import write_predictions

    written = write_predictions(
        args.checkpoint,
        args.out,
        catalog=args.catalog,
        split=args.split,
        top=args.top,
        overwrite=args.overwrite,
    )
    for category, count in written.counts.items():
        print(f"{category:<8} {count:>6} predictions  {written.file(category)}")
    print(
        f"wrote {sum(written.counts.values())} predictions of the {args.split!r} split, every entry in file order"
    )
    if not written.checked:
        print(
            "note: this import predates fiq-gym's count of each release file's entries, so it cannot show that "
            "none was skipped; re-import the release to check",
            file=sys.stderr,
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from fiq_gym.benchmarks.dialog import main as bench_main

    return bench_main(list(args.bench_args))


def _held_out(args: argparse.Namespace) -> Any:
    from fiq_gym.envs.evaluation import HeldOutSeed

    if args.held_out_seed_file:
        return HeldOutSeed.from_file(args.held_out_seed_file)
    if args.held_out:
        return HeldOutSeed.from_environment()
    return None


def _eval(args: argparse.Namespace) -> int:
    held_out = _held_out(args)
    if held_out is not None and args.seed is not None:
        raise ValueError("--seed and a held-out seed exclude each other: the held-out seed draws the set")
    if held_out is not None and args.isolation != "process":
        raise ValueError("a held-out set needs --isolation process (the default)")
    if (args.checkpoint is None) == (args.agent is None):
        raise ValueError("give a checkpoint directory or --agent FACTORY (one of them)")
    if args.agent is not None and args.isolation != "process":
        raise ValueError(
            "--agent runs the agent in its own process: it needs --isolation process (the default)"
        )
    if args.isolation != "process":
        return _evaluate_and_report(args, held_out)
    from fiq_gym.envs.evaluation import AgentSpec, close_prestarted, prestart

    # The agent's process first: it imports its libraries while this one does.
    if args.agent is not None:
        prestart(AgentSpec(args.agent))
    elif Path(args.checkpoint).expanduser().is_dir():
        where = str(Path(args.checkpoint).expanduser().resolve())
        prestart(AgentSpec("fiq_gym.agents.evaluate_checkpoint:agent_from_checkpoint", {"checkpoint": where}))
    try:
        return _evaluate_and_report(args, held_out)
    finally:
        close_prestarted()  # one that no evaluation took (an error before it started)


def _evaluation_set(args: argparse.Namespace, held_out: Any) -> tuple[Any, int, str]:
    """(seed, episodes, where they come from) of the set `fiq-gym eval` plays: by default the
    set the checkpoint's trainer evaluated it on, so the number matches the end of training."""
    trained = None
    if args.checkpoint is not None and held_out is None:
        from fiq_gym.agents.loading import load_agent

        trained = load_agent(args.checkpoint, load_model=False).training_evaluation
    if held_out is not None:
        return held_out, args.episodes or DEFAULT_EVAL_EPISODES, "a held-out set"
    if trained is not None:
        seed = trained[0] if args.seed is None else args.seed
        episodes = trained[1] if args.episodes is None else args.episodes
        same = (seed, episodes) == trained
        where = (
            "the set its trainer evaluated it on, as its config.json records"
            if same
            else f"not the set its trainer evaluated it on (seed {trained[0]}, {trained[1]} dialogs)"
        )
        return seed, episodes, where
    seed = 0 if args.seed is None else args.seed
    return seed, args.episodes or DEFAULT_EVAL_EPISODES, "the checkpoint records no training evaluation set"


def _evaluate_and_report(args: argparse.Namespace, held_out: Any) -> int:
    seed, episodes, where = _evaluation_set(args, held_out)
    if args.agent is not None:
        where = "an agent factory has no training set"
    args.episodes = episodes
    # The agent's process loads its libraries and model, the env builds its catalog: tell a
    # person at a terminal what is happening rather than stay silent for a minute (scripts
    # reading stderr keep getting one line per error).
    if sys.stderr.isatty():
        print(
            f"fiq-gym eval: {args.checkpoint or args.agent}, {episodes} dialogs, isolation {args.isolation} ...",
            file=sys.stderr,
            flush=True,
        )
    timeout = args.turn_timeout or None
    if (args.checkpoint is None) == (args.agent is None):
        raise ValueError("give a checkpoint directory or --agent FACTORY (one of them)")
    if args.agent is not None:
        from fiq_gym.envs.evaluation import AgentSpec, evaluate

        if args.isolation != "process":
            raise ValueError(
                "--agent runs the agent in its own process: it needs --isolation process (the default)"
            )
        env_kwargs: dict[str, Any] = {"action_mode": args.action_mode}
        env_kwargs.update({k: v for k, v in (("start", args.start), ("start_split", args.start_split)) if v})
        if args.catalog:
            env_kwargs["catalog"] = str(Path(args.catalog).expanduser().resolve())
        result = evaluate(
            AgentSpec(args.agent),
            args.env_id,
            args.episodes,
            seed,
            isolation="process",
            num_envs=min(64, args.episodes),
            turn_timeout=timeout,
            **env_kwargs,
        )
    else:
        from fiq_gym.agents.evaluate_checkpoint import evaluate_checkpoint

        result = evaluate_checkpoint(
            args.checkpoint,
            episodes=args.episodes,
            seed=seed,
            catalog=args.catalog,
            isolation=args.isolation,
            turn_timeout=timeout,
            start=args.start,
            start_split=args.start_split,
        )
    result.meta["evaluation_set"] = where
    shown_seed = "held out" if held_out is not None else seed
    print(f"evaluation set: seed {shown_seed}, {episodes} dialogs ({where})")
    print(result)
    if args.out:
        result.save_json(args.out)
        print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiq-gym",
        description="Gymnasium environments for dialog-based interactive fashion image retrieval.",
    )
    parser.add_argument("--version", action="version", version=f"fiq-gym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="build and inspect garment catalogs")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    build = catalog_sub.add_parser("build", help="generate a synthetic catalog")
    build.add_argument(
        "--size", type=int_between(1), default=10_000, help="number of garments (default 10000)"
    )
    build.add_argument("--seed", type=seed, default=0, help="generator seed (default 0)")
    build.add_argument(
        "--image-size",
        type=int_between(MIN_SYNTHETIC_IMAGE_SIZE, MAX_IMAGE_SIZE),
        default=64,
        help="image side in pixels (default 64)",
    )
    build.add_argument(
        "--images",
        choices=("stored", "lazy"),
        default="stored",
        help="stored: write every image (default); lazy: store each garment's shade and pattern offset "
        "instead and render images when they are read, identical to stored ones (12 kB an item less)",
    )
    build.add_argument(
        "--out", type=path_arg, help="output directory (default: the cache folder, see FIQ_GYM_CACHE)"
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    build.add_argument(
        "--no-features",
        action="store_true",
        help="skip extracting features and attribute scores with the shipped network (the default does it)",
    )
    build.set_defaults(func=_catalog_build)

    show = catalog_sub.add_parser("show", help="write a contact-sheet PNG of sampled items")
    show.add_argument(
        "catalog", type=catalog_arg, nargs="?", help="catalog directory (default: the default catalog)"
    )
    show.add_argument("--out", type=path_arg, help="PNG path (default contact_sheet.png)")
    show.add_argument("--count", type=int_between(1), default=32, help="items to show (default 32)")
    show.add_argument("--columns", type=int_between(1), default=8, help="items per row (default 8)")
    show.add_argument("--scale", type=int, default=2, help="pixel magnification")
    show.add_argument("--seed", type=seed, default=0, help="seed of the sampled items (default 0)")
    show.set_defaults(func=_catalog_show)
    from fiq_gym.cli.catalog_import import add_commands as add_dataset_commands  # argparse only

    add_dataset_commands(catalog_sub)
    from fiq_gym.cli.catalog_export import add_export_command  # argparse only

    add_export_command(catalog_sub)

    demo = sub.add_parser("demo", help="play one dialog: a random retriever and the template shopper")
    demo.add_argument("--catalog", type=catalog_arg, help="catalog directory (default: the default catalog)")
    demo.add_argument(
        "--seed", type=seed, default=0, help="seed of the target and the first item (default 0)"
    )
    demo.add_argument("--turns", type=int_between(1), default=5, help="turns to play (default 5)")
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train",
        help="train a retriever agent (arguments after AGENT go to the agent; see AGENT --help)",
        add_help=True,
    )
    train.add_argument(
        "agent",
        choices=sorted(registry.trainers()),
        help="the trainer; `fiq-gym train AGENT --help` lists its options",
    )
    train.add_argument("agent_args", nargs=argparse.REMAINDER, help="the agent's own arguments")
    train.set_defaults(func=_train)

    bench = sub.add_parser(
        "bench",
        help="train and compare every retriever on one evaluation set (--quick: the main job)",
        prefix_chars="+",  # pass every dash option through to the benchmark's own parser
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="see `fiq-gym bench --help`")
    bench.set_defaults(func=_bench)

    evaluation = sub.add_parser(
        "eval",
        help="evaluate a trained checkpoint (or an agent factory) on a fixed evaluation set",
        description="Evaluate an agent on a fixed evaluation set. By default the agent runs in a process of "
        "its own (--isolation process), out of reach of the set, its seed and the result.",
    )
    evaluation.add_argument(
        "checkpoint",
        type=path_arg,
        nargs="?",
        help="checkpoint directory written by `fiq-gym train` (or give --agent)",
    )
    evaluation.add_argument(
        "--agent",
        metavar="FACTORY",
        help="instead of a checkpoint: 'package.module:function' or 'file.py:function', called with the agent "
        "process's own vector env; returns the agent (with --env-id, --catalog, --action-mode)",
    )
    evaluation.add_argument(
        "--env-id", default="fiq_gym/FashionIQ-v3", help="with --agent: the env id (default %(default)s)"
    )
    evaluation.add_argument(
        "--action-mode",
        default="index",
        choices=("index", "scores", "query", "shortlist"),
        help="with --agent: the action mode the agent speaks (default %(default)s)",
    )
    evaluation.add_argument(
        "--episodes",
        type=int_between(1),
        default=None,
        help="dialogs in the set (default: the checkpoint trainer's --eval-episodes; "
        f"{DEFAULT_EVAL_EPISODES} for --agent or a checkpoint that records none)",
    )
    evaluation.add_argument(
        "--seed",
        type=seed,
        default=None,
        help="the public seed that draws the set and seeds the env (default: the set the trainer evaluated "
        "the run on, seed 10000 + the run's --seed, so the result matches the end of training; 0 for --agent "
        "or a checkpoint that records none)",
    )
    held = evaluation.add_mutually_exclusive_group()
    held.add_argument(
        "--held-out",
        action="store_true",
        help="draw the set from the secret seed in $FIQ_GYM_HELD_OUT_SEED (the agent's process never sees it); "
        "the result names the set by a fingerprint",
    )
    held.add_argument(
        "--held-out-seed-file",
        type=path_arg,
        metavar="FILE",
        help="the same, the secret seed read from FILE (keep it unreadable to the account the agent runs as)",
    )
    evaluation.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the one the agent was trained on)"
    )
    evaluation.add_argument(
        "--start",
        choices=("uniform", "annotated"),
        help="where the dialogs start (default: as the agent was trained): uniform, or annotated, the pairs "
        "of the human captions of --start-split (an imported catalog; docs/real_data.md)",
    )
    evaluation.add_argument(
        "--start-split",
        metavar="SPLIT",
        help="with annotated starts: the split whose pairs start the dialogs, e.g. val (default: the "
        "training run's --start-split)",
    )
    evaluation.add_argument("--out", type=path_arg, help="also write the per-turn metrics as JSON here")
    evaluation.add_argument(
        "--turn-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="seconds the agent may take per turn before the evaluation stops (default %(default)s; 0: no limit)",
    )
    sealing = evaluation.add_mutually_exclusive_group()
    sealing.add_argument(
        "--isolation",
        choices=("process", "sealed", "none"),
        default="process",
        help="process: the agent in its own process (default); sealed: the env in a child, the agent in this "
        "process; none: all in this process (debugging). Honest agents score the same in each",
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
    evaluation.set_defaults(func=_eval)

    # --- subcommands defined next to their code (one line each) ---
    from fiq_gym.cli.features import add_commands as add_feature_commands  # argparse only

    add_feature_commands(sub)
    from fiq_gym.cli.user import add_commands as add_user_commands  # argparse only

    add_user_commands(sub)
    from fiq_gym.cli.predict import add_command as add_predict_command  # argparse only

    add_predict_command(sub, _predict)
    from fiq_gym.cli.record import add_command as add_record_command  # argparse only

    builtin = {name: registry.get(name).help for name in registry.builtin_agents()}
    add_record_command(sub, _record, builtin)
    from fiq_gym.play.commands import add_commands as add_play_commands  # argparse only

    add_play_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (FiqGymError, ValueError) as e:
        print(f"fiq-gym: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fiq-gym: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "fiq-gym: error: out of memory; ask for less (a smaller --size, --image-size, --batch-size "
            "or catalog)",
            file=sys.stderr,
        )
        return 2


_OS_FIXES = {
    errno.EACCES: "permission denied; fix its permissions or choose another path",
    errno.EPERM: "operation not permitted; fix its permissions or choose another path",
    errno.EROFS: "it is on a read-only file system; choose a writable path",
    errno.ENOSPC: "no space left on the device; free some space or choose another path",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.EISDIR: "it is a directory where a file is needed; choose another path",
    errno.EEXIST: "it already exists (and is in the way); choose another path",
    errno.ENOENT: "no such file or directory; check the path",
}


def describe_os_error(e: OSError) -> str:
    """One line for a failed file operation: the path, what went wrong and what to do."""
    if e.filename is None:  # our own messages (e.g. "X already exists; use --overwrite")
        return str(e)
    paths = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    fix = _OS_FIXES.get(e.errno or 0, f"{e.strerror}; check the path and its permissions")
    return f"{paths}: {fix}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
