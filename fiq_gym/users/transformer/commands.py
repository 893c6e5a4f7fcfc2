"""``fiq-gym user ...``: train the transformer shopper and look at its captions.

Only argparse is imported here; torch and transformers load when a command runs, so
``fiq-gym --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from fiq_gym.errors import CheckpointError

__all__ = ["add_commands"]

# CLI option -> TrainArgs field. Every option defaults to None ("not given"), so a resumed
# run takes its saved settings and only options given again are checked against them.
_TRAIN_OPTIONS: dict[str, tuple[str, type, str]] = {
    "--catalog": ("catalog", str, "catalog directory (default: the default synthetic catalog)"),
    "--out": ("out", str, "directory for the best model (default runs/transformer-user)"),
    "--work-dir": ("work_dir", str, "training state and TensorBoard logs (default: <out>-training)"),
    "--captions": (
        "captions",
        str,
        "caption source: template (default), catalog (an imported catalog's human captions), "
        "fashioniq:ROOT or shoes:ROOT",
    ),
    "--captions-per-pair": ("captions_per_pair", int, "template captions per pair (default 3)"),
    "--train-pairs": ("train_pairs", int, "training pairs (default 20000)"),
    "--val-pairs": ("val_pairs", int, "validation pairs (default 1000)"),
    "--near-fraction": ("near_fraction", float, "share of nearest-neighbour pairs (default 0.5)"),
    "--epochs": ("epochs", int, "most epochs (default 15)"),
    "--batch-size": ("batch_size", int, "captions per batch (default 64)"),
    "--lr": ("learning_rate", float, "peak learning rate (default 1e-3)"),
    "--patience": ("patience", int, "early stopping: epochs without improvement (default 3)"),
    "--d-model": ("d_model", int, "model width (default 128)"),
    "--heads": ("num_heads", int, "attention heads (default 4)"),
    "--ffn-dim": ("ffn_dim", int, "feed-forward width (default 512)"),
    "--encoder-layers": ("num_encoder_layers", int, "item encoder layers (default 1)"),
    "--decoder-layers": ("num_decoder_layers", int, "caption decoder layers (default 2)"),
    "--dropout": ("dropout", float, "dropout (default 0: the data are plentiful)"),
    "--seed": ("seed", int, "seed of the data split, pairs, captions and initialisation (default 0)"),
    "--threads": ("threads", int, "torch CPU threads (default: torch's choice)"),
    "--stop-after": ("stop_after", int, "train at most N epochs now; continue later with --resume"),
}
_NOISE_KINDS = {"omit": "noise_omit", "wrong_color": "noise_wrong_color", "drop_word": "noise_drop_word"}


def _parse_noise(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        kind, sep, value = item.partition("=")
        if not sep or kind not in _NOISE_KINDS:
            raise ValueError(f"--noise takes KIND=P with KIND in {sorted(_NOISE_KINDS)}, got {item!r}")
        try:
            out[_NOISE_KINDS[kind]] = float(value)
        except ValueError:
            raise ValueError(f"--noise {kind}= needs a probability, got {value!r}") from None
    return out


def _train(ns: argparse.Namespace) -> int:
    from fiq_gym.users.transformer.train import TrainArgs, read_saved_args, train_captioner

    given: dict[str, Any] = {
        field: getattr(ns, field) for field, _, _ in _TRAIN_OPTIONS.values() if getattr(ns, field) is not None
    }
    if ns.noise:
        given.update(_parse_noise(ns.noise))
    if ns.no_attributes:
        given["use_attributes"] = False
    if ns.no_progress:
        given["progress"] = False
    args = TrainArgs(**given)
    if ns.resume:  # the saved run's settings, except those given again on the command line
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``fiq-gym user train`` and ``fiq-gym user caption`` to the CLI's subparsers."""
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
    for option, (field, kind, text) in _TRAIN_OPTIONS.items():
        train.add_argument(option, dest=field, type=kind, default=None, help=text)
    train.add_argument(
        "--noise",
        nargs="+",
        metavar="KIND=P",
        help="template noise, e.g. --noise omit=0.2 wrong_color=0.1 drop_word=0.05 (default: none)",
    )
    train.add_argument(
        "--no-attributes", action="store_true", help="do not feed attribute scores to the model"
    )
    train.add_argument("--resume", action="store_true", help="continue the run saved in the work directory")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the model in --out and the run in the work directory",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(func=_train)

    caption = user_sub.add_parser(
        "caption", help="caption random pairs with a checkpoint, beside the template shopper"
    )
    caption.add_argument("--checkpoint", help="model directory (default: the shipped checkpoint)")
    caption.add_argument("--catalog", help="catalog directory (default: the default catalog)")
    caption.add_argument("--count", type=int, default=8)
    caption.add_argument("--seed", type=int, default=0)
    caption.add_argument("--decoding", choices=("greedy", "sample", "beam"), default="sample")
    caption.set_defaults(func=_caption)
