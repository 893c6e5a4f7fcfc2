"""``fiq-gym record``: an agent's dialogs as a Minari dataset (docs/benchmarks.md,
"Offline datasets (Minari)")."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from fiq_gym.utils.arguments import catalog_arg, int_between, path_arg, path_or_name, seed, spec_arg
from fiq_gym.utils.links import doc_url

__all__ = ["add_command"]

# The modes random and greedy play (fiq_gym.agents.recording.BUILTIN_MODES, not imported here:
# the parser loads no agent code); a checkpoint brings its own mode, slates included.
_BUILTIN_MODES = ("index", "query", "scores", "shortlist")


def add_command(
    sub: argparse._SubParsersAction,
    handler: Callable[[argparse.Namespace], int],
    builtin: Mapping[str, str],
) -> None:
    """Add ``record`` to the ``fiq-gym`` subcommands; ``handler`` runs it (it lives with the
    other commands' handlers in :mod:`fiq_gym.cli`, the apps layer that may import agents), and
    ``builtin`` names the agents it plays without a checkpoint, each with its one-line help
    (:func:`fiq_gym.agents.registry.builtin_agents`, read by :mod:`fiq_gym.cli`)."""
    record = sub.add_parser(
        "record",
        help="play dialogs with an agent and write them as a Minari dataset (offline RL)",
        description=(
            "Play --episodes dialogs with an agent and write them as a Minari dataset: observations, actions, "
            "rewards, terminations, truncations and the env's info of every step (caption text, shown item, "
            "turn, rank, percentile, success; the shortlist's candidates). The dataset goes to "
            "OUT/DATASET_ID/data; read it with MINARI_DATASETS_PATH=OUT and minari.load_dataset(DATASET_ID). "
            "It is written into a hidden temporary directory and renamed when complete, and an existing "
            f"dataset is never replaced without --overwrite. See {doc_url('docs/benchmarks.md', 'offline-datasets-minari')}."
        ),
    )
    record.add_argument(
        "--agent",
        type=path_or_name(*builtin),
        required=True,
        help=(
            f"{', '.join(builtin)}, or a checkpoint directory (the checkpoint/ folder of `fiq-gym train AGENT "
            "--out RUN`, loaded as `fiq-gym eval` loads it). "
            + " ".join(f"{name}: {text}" for name, text in builtin.items())
        ),
    )
    record.add_argument(
        "--episodes", type=int_between(1), default=100, help="dialogs to record (default 100)"
    )
    record.add_argument(
        "--out",
        type=path_arg,
        help="the Minari datasets root the dataset goes under (default: $MINARI_DATASETS_PATH, else "
        "~/.minari/datasets, where minari.load_dataset finds it without arguments)",
    )
    record.add_argument(
        "--dataset-id",
        help="Minari dataset id, NAMESPACE/NAME-vN (default: ENV_ID/AGENT-ACTION_MODE-v0, e.g. "
        "fiq_gym/FashionIQ-v3/greedy-shortlist-v0)",
    )
    record.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset of that id (atomically)"
    )
    record.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seeds the episodes and the agent: the same seed gives the same dataset (default 0)",
    )
    env = record.add_argument_group("environment (default: a checkpoint's training settings)")
    env.add_argument("--env-id", help="registered environment id (default fiq_gym/FashionIQ-v3)")
    env.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the built-in synthetic catalog)"
    )
    env.add_argument(
        "--user",
        type=spec_arg,
        help="shopper: template (default), transformer, transformer:DIR, lm:DIR (a local causal language model) or dataset",
    )
    env.add_argument(
        "--action-mode",
        choices=_BUILTIN_MODES,
        help="action mode of random and greedy (default shortlist); a checkpoint keeps its own",
    )
    env.add_argument("--max-turns", type=int_between(1), help="turns per dialog (default 5)")
    env.add_argument("--reward", help="reward kind: percentile (default), reciprocal_rank, success or delta")
    env.add_argument(
        "--shortlist",
        type=spec_arg,
        help="the first stage: retriever (default, shipped), retriever:DIR or random; the env's in "
        "shortlist mode, the one greedy runs in the other modes",
    )
    env.add_argument(
        "--shortlist-size",
        type=int_between(1),
        help="shortlist mode: K, the candidates per turn (default 32)",
    )
    env.add_argument(
        "--explore", type=float, help="shortlist mode: fraction of random unseen candidates (default 0)"
    )
    record.add_argument("--no-progress", action="store_true", help="no progress bar")
    record.set_defaults(func=handler)
