"""``fiq-gym predict``: the Fashion IQ challenge's prediction files from a single-shot checkpoint.

Only argparse is imported here (the handler is :func:`fiq_gym.cli._predict`); torch loads
when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fiq_gym.utils.arguments import catalog_arg, int_between, path_arg
from fiq_gym.utils.links import doc_url

__all__ = ["add_command"]

_TOP = 50  # fiq_gym.agents.single_shot.PREDICTION_TOP, without importing torch for --help


def add_command(sub: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], int]) -> None:
    """Add ``predict`` to the ``fiq-gym`` subcommands; ``handler`` runs it (it lives with the
    other commands' handlers in :mod:`fiq_gym.cli`, the apps layer that may import agents)."""
    predict = sub.add_parser(
        "predict",
        help="write the Fashion IQ challenge's prediction files (top-50 ASINs per test entry) from a "
        "single-shot checkpoint",
        description=(
            "Rank the split's gallery of each category for every caption entry of the split (the candidate "
            "and its captions joined, as `fiq-gym train single-shot` scores them) and write one "
            "CATEGORY.SPLIT.pred.json per category into the new directory OUT: the entries in the release "
            'file\'s order, each with "candidate", "captions" and "ranking" (the best ASINs first), as the '
            "release's start kit writes them. An import that skipped entries of the split is refused (the "
            "order would not line up); OUT is written atomically and never replaces anything without "
            f"--overwrite. See {doc_url('docs/real_data.md')}."
        ),
    )
    predict.add_argument(
        "checkpoint",
        type=path_arg,
        help="a single-shot checkpoint directory (the checkpoint/ folder of `fiq-gym train single-shot --out RUN`)",
    )
    predict.add_argument(
        "--out",
        type=path_arg,
        required=True,
        help="the directory to write (it must not exist, see --overwrite)",
    )
    predict.add_argument(
        "--catalog",
        type=catalog_arg,
        help="the imported catalog (default: the one the checkpoint was trained on)",
    )
    predict.add_argument(
        "--split",
        default="test",
        help="the split whose entries to predict (default %(default)s; it needs no targets)",
    )
    predict.add_argument(
        "--top",
        type=int_between(1),
        default=_TOP,
        help="ASINs per entry (default %(default)s, the challenge's)",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists and holds only prediction files",
    )
    predict.set_defaults(func=handler)
