"""``fiq-gym features train``, ``fiq-gym features extract`` and ``fiq-gym features prune``.

Only argparse here: torch and the network load when a command runs, so ``fiq-gym --help``
stays instant.
"""

from __future__ import annotations

import argparse
from typing import Any

from fiq_gym.features.train_args import TrainArgs
from fiq_gym.utils.arguments import (
    add_dataclass_arguments,
    catalog_arg,
    dataclass_from_namespace,
    path_arg,
    spec_arg,
)

__all__ = ["add_commands"]


def _train(args: argparse.Namespace) -> int:
    from fiq_gym.features.train import train

    result = train(dataclass_from_namespace(TrainArgs, args))
    how = "stopped early" if result.stopped_early else "finished"
    print(
        f"{how} after {result.epochs_run} epochs ({result.seconds:.0f} s of training); best held-out "
        f"loss {result.heldout.loss:.4f} at epoch {result.best_epoch} on {result.heldout.num_items} items"
    )
    for name, accuracy in result.heldout.accuracy.items():
        print(f"  {name:<12} {accuracy:7.2%}")
    print(f"checkpoint: {result.checkpoint}" + (f" (copied to {args.export})" if args.export else ""))
    print(f"next: fiq-gym features extract {args.catalog} --checkpoint {result.checkpoint}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from fiq_gym.features.extract import extract_features

    result = extract_features(
        args.catalog,
        checkpoint=args.checkpoint,
        encoder=args.encoder,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.no_progress,
    )
    scores = (
        f"attribute scores ({result.num_items} x {result.num_attributes})"
        if result.num_attributes
        else "no attribute scores (existing ones, if any, were kept)"
    )
    print(
        f"wrote features ({result.num_items} x {result.feature_dim}) and {scores} into "
        f"{result.path} in {result.seconds:.1f} s"
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from fiq_gym.features.prune import prune_checkpoint

    result = prune_checkpoint(args.checkpoint, args.catalog, args.out, min_active=args.min_active)
    dropped = result.feature_dim_before - len(result.kept)
    print(
        f"kept {len(result.kept)} of {result.feature_dim_before} feature units ({dropped} fired on at most "
        f"{args.min_active:.2%} of the images); wrote {result.path}"
    )
    print(
        "models trained on the old features: `fiq-gym user narrow --features "
        f"{result.path} --checkpoint OLD --out NEW` drops the same inputs"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Add the ``features`` command group to the ``fiq-gym`` subparsers ``sub``."""
    features = sub.add_parser(
        "features",
        help="train the attribute network; extract image features into a catalog",
        description="Image features: the attribute-prediction network, or a local Hugging Face vision model.",
    )
    group = features.add_subparsers(dest="features_command", required=True)

    train = group.add_parser(
        "train",
        help="train the attribute-prediction network on a catalog's images",
        description=(
            "Train a small CNN to predict the catalog's attributes. Its penultimate layer gives "
            "the item features, its predicted probabilities the side information. Writes the "
            "checkpoint (config.json, model.safetensors), TensorBoard scalars (OUT/tensorboard) "
            "and the state to --resume from (OUT/train_state)."
        ),
    )
    add_dataclass_arguments(train, TrainArgs)
    train.set_defaults(func=_train)

    extract = group.add_parser(
        "extract",
        help="write features and predicted attributes into a catalog directory",
        description=(
            "Compute every item's features (and, with an attribute network, attribute scores) "
            "and write them into the catalog directory atomically, one batch in memory at a time. "
            "With --encoder hf:PATH the features come from a local Hugging Face vision model; it "
            "predicts no attributes, so existing attribute scores are kept (or there are none)."
        ),
    )
    extract.add_argument("catalog", type=catalog_arg, help="catalog directory")
    source = extract.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint",
        type=path_arg,
        help="attribute-network checkpoint directory (default: the one shipped with fiq-gym)",
    )
    source.add_argument(
        "--encoder", type=spec_arg, help="hf:/local/path: a Hugging Face vision model saved in that folder"
    )
    extract.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    extract.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the same features whatever the machine's core count; 0: all cores)",
    )
    extract.add_argument("--no-progress", action="store_true", help="no progress bar")

    prune = group.add_parser(
        "prune",
        help="drop the dead units of an attribute network's feature layer",
        description=(
            "Measure how often each feature unit fires on the images of the given catalogs and "
            "write a checkpoint without the units that (almost) never do: smaller features, the "
            "same attribute predictions. Extract features with the new checkpoint afterwards."
        ),
    )
    prune.add_argument(
        "--checkpoint", type=path_arg, help="attribute-network checkpoint (default: the shipped one)"
    )
    prune.add_argument(
        "--catalog",
        type=catalog_arg,
        action="append",
        required=True,
        help="catalog whose images decide (repeatable)",
    )
    prune.add_argument("--out", type=path_arg, required=True, help="directory for the pruned checkpoint")
    prune.add_argument(
        "--min-active",
        type=float,
        default=1e-3,
        help="drop units active on at most this fraction of the images (default 0.001)",
    )
    prune.set_defaults(func=_prune)
    extract.set_defaults(func=_extract)
