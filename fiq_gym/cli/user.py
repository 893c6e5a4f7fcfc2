"""``fiq-gym user ...``: train the transformer shopper and look at its captions.

Only argparse is imported here; torch and transformers load when a command runs, so
``fiq-gym --help`` stays fast.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from fiq_gym.errors import CheckpointError
from fiq_gym.users.transformer.train_args import TrainArgs
from fiq_gym.utils.arguments import add_dataclass_arguments, catalog_arg, int_between, path_arg, seed

__all__ = ["add_commands"]


def _train(ns: argparse.Namespace) -> int:
    from fiq_gym.users.transformer.train import read_saved_args, train_captioner

    # Flags left out are not in the namespace: a resumed run takes its saved settings, and
    # only options given again are checked against them.
    given: dict[str, Any] = {f.name: getattr(ns, f.name) for f in fields(TrainArgs) if hasattr(ns, f.name)}
    args = TrainArgs(**given)
    if ns.resume:
        if not (args.work_path / "last").is_dir():
            raise CheckpointError(
                f"nothing to resume in {args.work_path}: it holds no training state; "
                "start without --resume (add --overwrite to replace an earlier model)"
            )
        saved = read_saved_args(args.work_path)
        args = TrainArgs(**{**saved["args"], **given})
        print(f"resuming {args.work_path} (epoch {saved['epoch']})")
    result = train_captioner(args, resume=ns.resume, overwrite=ns.overwrite)
    status = "stopped early" if result.stopped_early else ("finished" if result.finished else "paused")
    print(
        f"{status} after {result.epochs_run} epochs in {result.seconds / 60:.1f} min; best epoch "
        f"{result.best_epoch}: val loss {result.best_val_loss:.4f}, val BLEU-4 {result.val_bleu4:.4f}; "
        f"model in {result.out}"
    )
    return 0


def _caption(ns: argparse.Namespace) -> int:
    import numpy as np

    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.default_catalog import load_default_catalog
    from fiq_gym.users.template import TemplateUser
    from fiq_gym.users.transformer.user import TransformerUser

    catalog = open_catalog(ns.catalog) if ns.catalog else load_default_catalog()
    user = TransformerUser(catalog, checkpoint=ns.checkpoint, decoding=ns.decoding)
    rng = np.random.default_rng(ns.seed)
    targets = rng.integers(len(catalog), size=ns.count)
    shown = (targets + 1 + rng.integers(len(catalog) - 1, size=ns.count)) % len(catalog)
    model = user.describe(targets, shown, rng)
    template = TemplateUser(catalog).describe(targets, shown, rng)
    print(repr(user))
    for t, s, text, records, ref in zip(
        targets, shown, model.texts, model.differences, template.texts, strict=True
    ):
        wrong = [d.claim for d in records if not d.is_faithful]
        flag = f"   (untrue: {wrong})" if wrong else ""
        print(f"target {t:>6} vs shown {s:>6}\n  model:    {text}{flag}\n  template: {ref}")
    return 0


def _narrow(ns: argparse.Namespace) -> int:
    from fiq_gym.users.transformer.narrow import narrow_captioner
    from fiq_gym.utils.jsonfile import read_json

    config = Path(ns.features) / "config.json"
    record = read_json(config, ValueError, "pass a checkpoint written by `fiq-gym features prune`")
    pruned = (record.get("training") or {}).get("pruned") if isinstance(record, dict) else None
    if not isinstance(pruned, dict) or "kept_units" not in pruned:
        raise ValueError(
            f"{config} records no pruning: pass a checkpoint written by `fiq-gym features prune`"
        )
    out = narrow_captioner(
        ns.checkpoint, pruned["kept_units"], ns.out, feature_weights=record.get("weights_sha256")
    )
    print(f"wrote a captioner reading {len(pruned['kept_units'])}-dim features to {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``fiq-gym user train``, ``caption`` and ``narrow`` to the CLI's subparsers."""
    user = sub.add_parser("user", help="train and try the transformer shopper (relative captioner)")
    user_sub = user.add_subparsers(dest="user_command", required=True)

    train = user_sub.add_parser(
        "train",
        help="train a relative captioner on template or human captions of a catalog",
        description="Train the transformer shopper on template captions of a catalog, or on human "
        "captions (--captions catalog | fashioniq:ROOT | shoes:ROOT with --catalog an imported catalog). The shipped "
        "checkpoint: fiq-gym user train --out fiq_gym/users/transformer/default "
        "--work-dir runs/transformer-user-default --overwrite",
    )
    add_dataclass_arguments(train, TrainArgs, unset_defaults=True)
    train.add_argument("--resume", action="store_true", help="continue the run saved in the work directory")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the model in --out and the run in the work directory",
    )
    train.set_defaults(func=_train)

    caption = user_sub.add_parser(
        "caption", help="caption random pairs with a checkpoint, beside the template shopper"
    )
    caption.add_argument(
        "--checkpoint", type=path_arg, help="model directory (default: the shipped checkpoint)"
    )
    caption.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the default catalog)"
    )
    caption.add_argument("--count", type=int_between(1), default=8, help="pairs to caption (default 8)")
    caption.add_argument(
        "--seed", type=seed, default=0, help="seed of the pairs and the sampling (default 0)"
    )
    caption.add_argument(
        "--decoding",
        choices=("greedy", "sample", "beam"),
        default="sample",
        help="how the captioner picks words (default sample)",
    )
    caption.set_defaults(func=_caption)

    narrow = user_sub.add_parser(
        "narrow",
        help="fit a captioner to a pruned attribute network's features (no retraining)",
        description="Drop the captioner's inputs for the feature units `fiq-gym features prune` "
        "removed (they were zero on the training images, so nothing it computes changes).",
    )
    narrow.add_argument(
        "--features", type=path_arg, required=True, help="the pruned attribute-network checkpoint"
    )
    narrow.add_argument(
        "--checkpoint", type=path_arg, help="captioner directory (default: the shipped checkpoint)"
    )
    narrow.add_argument("--out", type=path_arg, required=True, help="directory for the narrowed captioner")
    narrow.set_defaults(func=_narrow)
