"""Train the attribute-prediction network on a catalog's images, CleanRL style: read top to bottom.

    fiq-gym features train CATALOG --out runs/features --epochs 30
    tensorboard --logdir runs/features/tensorboard

Items are split once into training and held-out rows (deterministic from the seed). Every
epoch visits the training rows in an order drawn from ``(seed, epoch)``, then measures the
held-out loss and per-type accuracy; the weights with the lowest held-out loss are the
checkpoint, and training stops early once that loss has not improved for ``patience`` epochs.

The output directory holds the checkpoint (``config.json``, ``model.safetensors``), the
TensorBoard scalars (``tensorboard/``) and the state to resume from (``train_state/``: last
weights, optimizer moments, RNG state, counters), rewritten atomically after every epoch.
``--resume`` continues from it and ends with exactly the weights an uninterrupted run gives.
Images are read from the catalog's files one batch at a time (not through the memory map,
whose touched pages would pile up in the process), so a million-item catalog trains in the
memory of one batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import open_catalog
from fiq_gym.checkpoint import STATE_JSON, prepare_run, read_training_state, write_training_state
from fiq_gym.errors import CatalogError
from fiq_gym.features._rows import RowReader
from fiq_gym.features.model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AttributeNet,
    CheckpointError,
    HeadSpec,
    NetworkConfig,
    head_specs,
    save_checkpoint,
)
from fiq_gym.features.train_args import TrainArgs
from fiq_gym.utils.atomic import atomic_directory, atomic_write_bytes, atomic_write_json
from fiq_gym.utils.jsonfile import read_json
from fiq_gym.utils.threads import torch_threads

__all__ = [
    "EpochReport",
    "Evaluation",
    "TrainArgs",
    "TrainResult",
    "attribute_loss",
    "evaluate",
    "export_checkpoint",
    "heldout_split",
    "network_loss",
    "train",
]

STATE_DIR = "train_state"
# Arguments that may change between an interrupted run and its resumption: they do not
# change what the finished network is (epochs and patience only decide when to stop).
_RESUMABLE_CHANGES = {
    "catalog",
    "out",
    "epochs",
    "patience",
    "threads",
    "resume",
    "overwrite",
    "export",
    "progress",
    "tensorboard",
}


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and per-type accuracy of a network on some catalog rows."""

    loss: float
    accuracy: dict[str, float]
    num_items: int


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    """1-based number of the epoch just finished"""
    train_loss: float
    heldout: Evaluation
    improved: bool
    learning_rate: float


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    best_epoch: int
    epochs_run: int
    heldout: Evaluation
    stopped_early: bool
    seconds: float


@dataclass
class _State:
    """Counters that, with the weights, optimizer moments and RNG, make a run resumable."""

    epoch: int = 0
    step: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def heldout_split(
    num_items: int, fraction: float, max_items: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), both sorted, drawn from ``seed`` alone."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie strictly between 0 and 1, got {fraction}")
    size = min(max_items, max(1, round(num_items * fraction)))
    if num_items - size < 1:
        raise ValueError(f"a catalog of {num_items} item(s) is too small to split into training and held-out")
    order = np.random.default_rng(seed).permutation(num_items)
    return np.sort(order[size:]), np.sort(order[:size])


def attribute_loss(
    logits: torch.Tensor, labels: torch.Tensor, heads: tuple[HeadSpec, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum over attribute types of each type's mean loss, and each type's number correct.

    Single-label types: cross-entropy of a softmax, over the items that have a value (an
    unlabelled item is skipped, not taught "none"); correct = arg max is the true value.
    Multi-label types: binary cross-entropy per value; correct = every value right at 0.5.
    """
    total = logits.new_zeros(())
    correct: dict[str, torch.Tensor] = {}
    start = 0
    for head in heads:
        block, target = logits[:, start : start + head.size], labels[:, start : start + head.size]
        start += head.size
        if head.multilabel:
            target = target.float()
            total = total + F.binary_cross_entropy_with_logits(block, target)
            correct[head.name] = ((block > 0) == (target > 0.5)).all(dim=1).sum()
            continue
        has = (target > 0).any(dim=1)
        if not bool(has.all()):
            if not bool(has.any()):
                correct[head.name] = logits.new_zeros((), dtype=torch.long)
                continue
            block, target = block[has], target[has]
        truth = target.argmax(dim=1)
        total = total + F.cross_entropy(block, truth)
        correct[head.name] = (block.argmax(dim=1) == truth).sum()
    return total, correct


def network_loss(
    network: AttributeNet, images: torch.Tensor, labels: torch.Tensor, categories: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`attribute_loss` plus, with a category head, the category's cross-entropy (one
    more type in the sum, counted as ``"category"``)."""
    features, logits = network(images)
    loss, correct = attribute_loss(logits, labels, network.config.heads)
    if network.category_head is not None:
        category_logits = network.category_logits(features)
        loss = loss + F.cross_entropy(category_logits, categories)
        correct["category"] = (category_logits.argmax(dim=1) == categories).sum()
    return loss, correct


def _category_codes(catalog: Catalog, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(catalog.categories[rows], dtype=np.int64))


def _labelled_counts(labels: np.ndarray, heads: tuple[HeadSpec, ...]) -> dict[str, int]:
    counts, start = {}, 0
    for head in heads:
        block = labels[:, start : start + head.size]
        counts[head.name] = len(block) if head.multilabel else int(block.any(axis=1).sum())
        start += head.size
    return counts


@torch.inference_mode()
def evaluate(
    network: AttributeNet, catalog: Catalog, rows: np.ndarray | None = None, batch_size: int = 512
) -> Evaluation:
    """Mean loss and per-type accuracy of ``network`` on catalog ``rows`` (default: all), read
    one batch at a time. Accuracy counts only items labelled for the type."""
    if catalog.images is None:
        raise CatalogError("the catalog has no images to evaluate the network on")
    rows = np.arange(len(catalog)) if rows is None else np.asarray(rows)
    was_training = network.training
    network.eval()
    heads = network.config.heads
    loss_sum = 0.0
    correct = {h.name: 0 for h in heads}
    labelled = {h.name: 0 for h in heads}
    if network.category_head is not None:
        correct["category"] = labelled["category"] = 0
    with RowReader(catalog.images) as images:
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            labels = np.asarray(catalog.labels[idx])
            loss, batch_correct = network_loss(
                network,
                torch.from_numpy(images.take(idx)),
                torch.from_numpy(labels),
                _category_codes(catalog, idx),
            )
            loss_sum += float(loss) * len(idx)
            counts = _labelled_counts(labels, heads)
            if network.category_head is not None:
                counts["category"] = len(idx)
            for name, count in counts.items():
                labelled[name] += count
                correct[name] += int(batch_correct[name])
    network.train(was_training)
    # A type no held-out item is labelled for has no accuracy, and is left out.
    accuracy = {name: correct[name] / labelled[name] for name in correct if labelled[name]}
    return Evaluation(loss=loss_sum / max(1, len(rows)), accuracy=accuracy, num_items=len(rows))


def _catalog_record(catalog: Catalog) -> dict[str, Any]:
    """What a checkpoint remembers about its training catalog (and what resuming checks)."""
    return {
        "name": catalog.provenance.get("name", ""),
        "path": str(catalog.provenance.get("path", "")),
        "num_items": len(catalog),
        "image_size": list(catalog.image_size or ()),
        # Features extracted into the catalog later must not stop a run from resuming.
        "provenance": {
            k: v for k, v in catalog.provenance.items() if k not in ("path", "features", "attribute_scores")
        },
    }


def _args_record(args: TrainArgs) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(args)))


def _save_state(
    out: Path, state: _State, network: AttributeNet, optimizer: torch.optim.Optimizer, record: dict
) -> None:
    """Write the resumable state as one directory that replaces the previous one in a rename."""
    with atomic_directory(out / STATE_DIR, overwrite=True) as tmp:
        write_training_state(
            tmp, record={**record, "state": dataclasses.asdict(state)}, optimizer=optimizer, model=network
        )


def _load_state(
    out: Path, args: TrainArgs, network: AttributeNet, optimizer: torch.optim.Optimizer, record: dict
) -> _State:
    """Restore weights, optimizer moments, RNG and counters saved by :func:`_save_state`,
    after checking the run being resumed used the same catalog and arguments."""
    directory = out / STATE_DIR
    fix = "start without --resume (add --overwrite to replace the run)"
    if not (directory / STATE_JSON).is_file():
        raise CheckpointError(f"nothing to resume in {out}: {directory} holds no training state; {fix}")
    saved = read_json(directory / STATE_JSON, CheckpointError, f"the training state is damaged; {fix}")
    saved = saved.get("record", {}) if isinstance(saved, dict) else {}
    if not {"args", "catalog", "vocabulary", "state"} <= set(saved):
        raise CheckpointError(f"{directory / STATE_JSON} is not a feature-network training state; {fix}")
    different = [
        f"{key}={saved['args'].get(key)!r} (now {value!r})"
        for key, value in record["args"].items()
        if key not in _RESUMABLE_CHANGES and saved["args"].get(key) != value
    ]
    if different:
        raise CheckpointError(
            f"cannot resume {out}: it was started with "
            + ", ".join(different)
            + "; pass the same arguments, or choose a new --out to start afresh"
        )
    was, now = saved["catalog"], record["catalog"]
    keys = ("name", "num_items", "image_size", "provenance")
    if any(was.get(k) != now.get(k) for k in keys) or saved["vocabulary"] != record["vocabulary"]:
        raise CheckpointError(
            f"cannot resume {out}: it was trained on catalog {was.get('path')!r} "
            f"({was.get('num_items')} items), not on {now.get('path')!r} ({now.get('num_items')} items)"
        )
    read_training_state(directory, optimizer=optimizer, model=network, fix=fix)
    return _State(**saved["state"])


def _learning_rate(args: TrainArgs, step: int, total_steps: int) -> float:
    return args.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _record_totals(out: Path, state: _State) -> None:
    """Add the whole run's length to the checkpoint's config (written at its best epoch)."""
    file = out / CONFIG_FILE
    record = json.loads(file.read_text(encoding="utf-8"))
    totals = {"epochs_run": state.epoch, "stopped_early": state.stopped_early, "total_seconds": state.seconds}
    if {k: record["training"].get(k) for k in totals} != totals:
        record["training"].update(totals)
        atomic_write_json(file, record)


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a checkpoint's two files into ``target`` (created if needed), each atomically and
    the weights first, leaving the run's logs and training state behind."""
    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        atomic_write_bytes(target / name, (source / name).read_bytes())
    return target


def _train_epoch(
    network: AttributeNet,
    optimizer: torch.optim.Optimizer,
    catalog: Catalog,
    reader: RowReader,
    train_rows: np.ndarray,
    epoch: int,
    state: _State,
    args: TrainArgs,
    bar: tqdm,
) -> tuple[float, float]:
    """One pass over the training rows in the epoch's seeded order; returns the mean loss
    and the last learning rate."""
    steps_per_epoch = math.ceil(len(train_rows) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    order = train_rows[np.random.default_rng([args.seed, epoch]).permutation(len(train_rows))]
    network.train()
    loss_sum, lr = 0.0, 0.0
    for batch in range(steps_per_epoch):
        # Sorted rows read the image file front to back; the batch is the same set.
        idx = np.sort(order[batch * args.batch_size : (batch + 1) * args.batch_size])
        images = torch.from_numpy(reader.take(idx))
        labels = torch.from_numpy(np.asarray(catalog.labels[idx]))
        lr = _learning_rate(args, state.step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, _ = network_loss(network, images, labels, _category_codes(catalog, idx))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state.step += 1
        loss_sum += float(loss.detach()) * len(idx)
        bar.update(1)
    return loss_sum / len(train_rows), lr


def _best_record(record: dict[str, Any], state: _State, heldout: Evaluation) -> dict[str, Any]:
    """What the checkpoint says about the run that made it."""
    return {
        **record,
        "best_epoch": state.epoch,
        "heldout_loss": heldout.loss,
        "heldout_accuracy": heldout.accuracy,
        "seconds": state.seconds,
    }


def _log_epoch(
    writer: Any, bar: tqdm, state: _State, train_loss: float, heldout: Evaluation, lr: float, seconds: float
) -> None:
    """TensorBoard scalars (when enabled) and the progress bar's summary of an epoch."""
    if writer is not None:
        writer.add_scalar("losses/train", train_loss, state.epoch)
        writer.add_scalar("losses/heldout", heldout.loss, state.epoch)
        for name, acc in heldout.accuracy.items():
            writer.add_scalar(f"heldout_accuracy/{name}", acc, state.epoch)
        writer.add_scalar("charts/learning_rate", lr, state.epoch)
        writer.add_scalar("charts/epoch_seconds", seconds, state.epoch)
        writer.flush()
    worst = min(heldout.accuracy.items(), key=lambda kv: kv[1], default=("-", math.nan))
    bar.set_postfix(epoch=state.epoch, heldout_loss=f"{heldout.loss:.3f}", worst=f"{worst[0]} {worst[1]:.3f}")


def default_out(catalog_path: str | os.PathLike, seed: int) -> Path:
    return Path("runs") / f"features-{Path(catalog_path).resolve().name}-s{seed}"


def train(args: TrainArgs, *, on_epoch_end: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """Train an :class:`AttributeNet` on ``args.catalog``; return where the best checkpoint is.

    ``on_epoch_end`` is called after each epoch's state is saved (for logging or to stop a
    run from outside by raising).
    """
    with torch_threads(args.threads):
        return _train(args, on_epoch_end)


def _train(args: TrainArgs, on_epoch_end: Callable[[EpochReport], None] | None) -> TrainResult:
    catalog = open_catalog(args.catalog)
    if catalog.images is None:
        raise CatalogError(
            f"catalog {args.catalog} has no images, so there is nothing to train on; "
            "open or import the catalog with its images"
        )
    for name in ("epochs", "batch_size", "feature_dim", "patience"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(args, name)}")
    out = Path(args.out) if args.out else default_out(args.catalog, args.seed)
    train_rows, heldout_rows = heldout_split(len(catalog), args.heldout_fraction, args.heldout_max, args.seed)

    torch.manual_seed(args.seed)
    config = NetworkConfig(
        image_size=catalog.image_size,  # type: ignore[arg-type]
        heads=head_specs(catalog.vocabulary, catalog.labels),
        feature_dim=args.feature_dim,
        channels=tuple(args.channels),
        # A head would learn nothing from a catalog whose items are all of one category.
        categories=tuple(catalog.category_names)
        if args.category_head and len(np.unique(np.asarray(catalog.categories))) > 1
        else (),
    )
    network = AttributeNet(config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    record = {
        "args": _args_record(args),
        "catalog": _catalog_record(catalog),
        "vocabulary": catalog.vocabulary.to_json(),
        "split": {"train": len(train_rows), "heldout": len(heldout_rows)},
    }
    if prepare_run(out, resume=args.resume, overwrite=args.overwrite, state=out / STATE_DIR, kind="features"):
        state = _load_state(out, args, network, optimizer, record)
    else:
        state = _State()

    steps_per_epoch = math.ceil(len(train_rows) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops scalars an interrupted run logged after its last saved epoch.
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=state.epoch + 1 if args.resume else None)
    reader = RowReader(catalog.images)
    bar = tqdm(
        total=total_steps,
        initial=min(state.step, total_steps),
        desc="training attribute network",
        unit="batch",
        disable=not args.progress,
    )
    try:
        for epoch in range(state.epoch, args.epochs):
            if state.stopped_early:
                break
            started = time.perf_counter()
            train_loss, lr = _train_epoch(
                network, optimizer, catalog, reader, train_rows, epoch, state, args, bar
            )
            heldout = evaluate(network, catalog, heldout_rows, batch_size=max(args.batch_size, 256))
            state.epoch = epoch + 1
            state.seconds += time.perf_counter() - started
            state.history.append(
                {
                    "epoch": state.epoch,
                    "train_loss": train_loss,
                    "heldout_loss": heldout.loss,
                    "heldout_accuracy": heldout.accuracy,
                }
            )
            improved = heldout.loss < state.best_loss
            if improved:
                state.best_loss, state.best_epoch, state.bad_epochs = heldout.loss, state.epoch, 0
                save_checkpoint(
                    out, network, catalog.vocabulary, training=_best_record(record, state, heldout)
                )
            else:
                state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= args.patience and state.epoch < args.epochs
            _save_state(out, state, network, optimizer, record)
            _log_epoch(writer, bar, state, train_loss, heldout, lr, time.perf_counter() - started)
            if on_epoch_end is not None:
                on_epoch_end(EpochReport(state.epoch, train_loss, heldout, improved, lr))
    finally:
        bar.close()
        reader.close()
        if writer is not None:
            writer.close()

    _record_totals(out, state)
    if args.export:
        export_checkpoint(out, args.export)
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    return TrainResult(
        checkpoint=out,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        heldout=Evaluation(best["heldout_loss"], best["heldout_accuracy"], len(heldout_rows)),
        stopped_early=state.stopped_early,
        seconds=state.seconds,
    )
