"""``fiq-gym catalog export``: the synthetic catalog in a real release's layout, with captions
written by the template shopper (a stand-in to try the real-data path).

Only argparse here; the exporter imports when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from fiq_gym.utils.arguments import catalog_arg, path_arg, seed

__all__ = ["add_export_command"]


def _export(args: argparse.Namespace) -> int:
    from fiq_gym.default_catalog import resolve_catalog

    catalog = resolve_catalog(args.catalog)
    if args.dataset == "fashioniq":
        from fiq_gym.users.release_export import export_fashioniq_release

        root = export_fashioniq_release(
            catalog, args.out, pairs_per_split=args.pairs, seed=args.seed, overwrite=args.overwrite
        )
    else:
        from fiq_gym.users.release_export import export_shoes_release

        root = export_shoes_release(
            catalog, args.out, pairs=args.pairs, seed=args.seed, overwrite=args.overwrite
        )
    print(
        f"wrote a synthetic {args.dataset} release to {root}; import it with `fiq-gym catalog import {args.dataset} {root}`"
    )
    return 0


def add_export_command(catalog_sub: Any) -> None:
    """Add ``export`` to the ``fiq-gym catalog`` subparsers."""
    exp = catalog_sub.add_parser(
        "export",
        help="write a synthetic catalog in the Fashion IQ or Shoes release layout (a stand-in for real data)",
    )
    exp.add_argument("dataset", choices=("fashioniq", "shoes"), help="the release layout to write")
    exp.add_argument("out", type=path_arg, help="folder to write the release into")
    exp.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the default synthetic catalog)"
    )
    exp.add_argument(
        "--pairs", type=int, default=600, help="caption pairs per category and split (Shoes: in total)"
    )
    exp.add_argument("--seed", type=seed, default=0, help="seed of the pairs and their captions (default 0)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing release folder")
    exp.set_defaults(func=_export)
