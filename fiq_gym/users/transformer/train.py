"""Train the relative captioner (``fiq-gym user train``).

One readable loop in the CleanRL manner: the settings are one dataclass (:class:`TrainArgs`),
the data are built, the model is built, then epochs of teacher-forced cross-entropy with
AdamW, a warm-up and a cosine decay. After each epoch the validation loss and the greedy
captions' BLEU-4 go to TensorBoard; the best model by validation loss is written to ``out``
(replaced atomically, loadable with ``TransformerUser(catalog, checkpoint=out)``), and the
full training state to ``work_dir/last`` (also atomically). Training stops early after
``patience`` epochs without improvement.

Resuming (``--resume``) continues from ``work_dir/last`` exactly: the model, optimizer,
schedule and torch's random state are restored, and the data are rebuilt from the same seed,
so an interrupted run ends with the same weights as an uninterrupted one (on the same
machine and thread count).

The shipped checkpoint is trained with defaults on the default catalog::

    fiq-gym user train --out fiq_gym/users/transformer/default --work-dir runs/transformer-user-default --overwrite
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiq_gym.catalog.model import Catalog
from fiq_gym.checkpoint import STATE_JSON, prepare_run, read_training_state, write_training_state
from fiq_gym.errors import CheckpointError
from fiq_gym.gallery import gallery_of
from fiq_gym.users.caption_metrics import caption_scores
from fiq_gym.users.transformer.configuration_relative_captioner import RelativeCaptionerConfig
from fiq_gym.users.transformer.data import (
    CaptionDataset,
    CaptionPair,
    group_references,
    human_dataset,
    template_dataset,
)
from fiq_gym.users.transformer.modeling_relative_captioner import CaptionerInputs, RelativeCaptionerModel
from fiq_gym.users.transformer.tokenization import CaptionerTokenizer, build_caption_tokenizer
from fiq_gym.users.transformer.train_args import TrainArgs
from fiq_gym.users.transformer.user import feature_weights, quiet_transformers
from fiq_gym.utils.atomic import atomic_directory, atomic_write_json
from fiq_gym.utils.jsonfile import read_json
from fiq_gym.utils.threads import torch_threads

__all__ = ["RUN_ONLY_FIELDS", "TrainArgs", "TrainResult", "read_saved_args", "train_captioner"]


#: Settings that may differ between a run and its resumption (they do not change the result).
RUN_ONLY_FIELDS = frozenset({"threads", "progress", "stop_after"})


@dataclass(frozen=True)
class TrainResult:
    out: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    val_bleu4: float
    seconds: float
    stopped_early: bool
    finished: bool


def _load_catalog(path: str | None) -> Catalog:
    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.default_catalog import load_default_catalog

    return open_catalog(path) if path else load_default_catalog()


def _encode(
    pairs: list[CaptionPair], tokenizer: CaptionerTokenizer, max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target rows, shown rows, and labels (N, max_len): word ids, ``<eos>``, -100 padding."""
    labels = torch.full((len(pairs), max_len), -100, dtype=torch.long)
    for i, p in enumerate(pairs):
        ids = [*tokenizer.encode(p.caption)[: max_len - 1], tokenizer.eos_id]
        labels[i, : len(ids)] = torch.tensor(ids)
    targets = torch.tensor([p.target for p in pairs], dtype=torch.long)
    shown = torch.tensor([p.shown for p in pairs], dtype=torch.long)
    return targets, shown, labels


class _Inputs:
    """Model inputs for catalog rows, gathered from the gallery (torch copies)."""

    def __init__(self, catalog: Catalog, use_attributes: bool) -> None:
        tables = gallery_of(catalog)
        self.features = torch.from_numpy(np.array(tables.features))
        self.attributes = torch.from_numpy(np.array(tables.side_info)) if use_attributes else None
        self.feature_source = tables.feature_source

    def __call__(self, targets: torch.Tensor, shown: torch.Tensor) -> CaptionerInputs:
        out: CaptionerInputs = {
            "target_features": self.features[targets],
            "shown_features": self.features[shown],
        }
        if self.attributes is not None:
            out["target_attributes"] = self.attributes[targets]
            out["shown_attributes"] = self.attributes[shown]
        return out


def _length_batches(lengths: torch.Tensor, batch_size: int, seed: int, pool: int = 50) -> list[torch.Tensor]:
    """Shuffled batches of similar-length captions: shuffle, sort each run of ``pool``
    batches by length, cut, shuffle the batches. Padding to a batch's longest caption then
    wastes little (captions run from 2 to ~20 words), which halves the compute per epoch."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g)
    chunk = batch_size * pool
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[torch.sort(lengths[part], stable=True).indices]
        batches += list(part.split(batch_size))
    shuffle = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in shuffle]


def _schedule(args: TrainArgs, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@torch.no_grad()
def _validate(
    model: RelativeCaptionerModel,
    inputs: _Inputs,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    references: tuple[np.ndarray, np.ndarray, list[list[str]]],
    tokenizer: CaptionerTokenizer,
    batch_size: int,
) -> tuple[float, float]:
    """Validation loss (mean over tokens) and BLEU-4 of greedy captions."""
    model.eval()
    targets, shown, labels = val
    total, tokens = 0.0, 0
    for start in range(0, len(labels), batch_size):
        sl = slice(start, start + batch_size)
        out = model(**inputs(targets[sl], shown[sl]), labels=labels[sl])
        n = int((labels[sl] != -100).sum())
        total += float(out.loss) * n
        tokens += n
    ref_t, ref_s, refs = references
    captions: list[str] = []
    for start in range(0, len(refs), batch_size):
        t = torch.from_numpy(ref_t[start : start + batch_size])
        s = torch.from_numpy(ref_s[start : start + batch_size])
        ids = model.generate(**inputs(t, s), strategy="greedy")
        captions += tokenizer.decode_batch(ids.tolist())
    model.train()
    return total / max(tokens, 1), caption_scores(captions, refs)["BLEU-4"]


def _save_model(
    model: RelativeCaptionerModel, tokenizer: CaptionerTokenizer, path: Path, extra: dict
) -> None:
    """The loadable checkpoint: model, tokenizer, the run's settings and metrics."""
    with atomic_directory(path, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.hf.save_pretrained(tmp)
        for name, obj in extra.items():
            atomic_write_json(tmp / name, obj)
        for file in tmp.iterdir():  # safetensors files come out owner-only; the package ships them
            file.chmod(0o644)


def train_captioner(
    args: TrainArgs, dataset: CaptionDataset | None = None, resume: bool = False, overwrite: bool = False
) -> TrainResult:
    """Train a captioner with ``args`` (on ``dataset``, or template captions of
    ``args.catalog``); with ``resume``, continue the run in ``args.work_path``.

    Raises:
        FileExistsError: ``args.out`` or the work directory holds an earlier run and neither
            ``resume`` nor ``overwrite`` is set.
        CheckpointError: ``resume`` with nothing to resume, or with settings that differ from
            the saved run's.
    """
    with quiet_transformers(), torch_threads(args.threads):  # no weight-saving bars inside the epoch bar
        return _train(args, dataset, resume, overwrite)


def read_saved_args(work_dir: str | Path) -> dict[str, Any]:
    """The settings of the run whose training state is in ``work_dir`` (to resume it)."""
    fix = "start without --resume (add --overwrite to replace the run)"
    state = read_json(Path(work_dir) / "last" / STATE_JSON, CheckpointError, f"the state is damaged; {fix}")
    record = state.get("record") if isinstance(state, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
        raise CheckpointError(f"{work_dir}/last/{STATE_JSON} is not a captioner training state; {fix}")
    return record


@dataclass
class _Progress:
    """Counters of a run, saved with its training state (the keys ``fiq-gym user train
    --resume`` reads back)."""

    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    best_val_loss: float = math.inf
    best_epoch: int = -1
    best_val_bleu4: float = 0.0
    bad_epochs: int = 0


def _claim_run(args: TrainArgs, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Apply the run-directory rule to ``out`` and the work directory; when resuming, the
    saved state after checking the settings that shape the result are unchanged."""
    work, out = args.work_path, Path(args.out)
    if not resume and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} already holds a model; pass --resume to continue its run, --overwrite to replace it, "
            "or choose another --out"
        )
    if not prepare_run(work, resume=resume, overwrite=overwrite, state=work / "last", kind="shopper"):
        return None
    state = read_saved_args(work)
    saved = state["args"]
    conflicts = {
        f.name: (saved[f.name], getattr(args, f.name))
        for f in fields(TrainArgs)
        if f.name not in RUN_ONLY_FIELDS and saved.get(f.name, f.default) != getattr(args, f.name)
    }
    if conflicts:
        listed = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in conflicts.items())
        raise CheckpointError(f"cannot resume {work} with different settings ({listed}); drop those options")
    return state


def _caption_dataset(args: TrainArgs, dataset: CaptionDataset | None) -> CaptionDataset:
    """The given dataset, human captions (``args.captions``) or template captions."""
    if dataset is None and args.captions != "template":
        dataset = human_dataset(_load_catalog(args.catalog), args.captions, seed=args.seed)
    if dataset is None:
        dataset = template_dataset(
            _load_catalog(args.catalog),
            train_pairs=args.train_pairs,
            val_pairs=args.val_pairs,
            captions_per_pair=args.captions_per_pair,
            seed=args.seed,
            noise=args.noise if args.noise.active else None,
            near_fraction=args.near_fraction,
        )
    if not list(dataset.train) or not list(dataset.val):
        raise ValueError("the dataset needs training and validation pairs")
    return dataset


def _captioner_config(
    args: TrainArgs, dataset: CaptionDataset, tokenizer: CaptionerTokenizer, inputs: _Inputs
) -> RelativeCaptionerConfig:
    catalog = dataset.catalog
    vocabulary = catalog.vocabulary
    return RelativeCaptionerConfig(
        vocab_size=tokenizer.vocab_size,
        feature_dim=int(inputs.features.shape[1]),
        attribute_type_names=vocabulary.type_names,
        attribute_group_sizes=[len(t.values) for t in vocabulary.types],
        attribute_names=vocabulary.column_names,
        category_names=catalog.category_names,
        use_attributes=args.use_attributes,
        d_model=args.d_model,
        num_heads=args.num_heads,
        ffn_dim=args.ffn_dim,
        num_encoder_layers=args.num_encoder_layers,
        num_decoder_layers=args.num_decoder_layers,
        dropout=args.dropout,
        max_caption_length=args.max_caption_length,
        feature_source=inputs.feature_source,
        feature_weights=feature_weights(catalog) if inputs.feature_source == "catalog" else None,
        caption_source=dataset.caption_source,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        unk_token_id=tokenizer.unk_id,
    )


def _train_epoch(
    model: RelativeCaptionerModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    inputs: _Inputs,
    train_data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    lengths: torch.Tensor,
    args: TrainArgs,
    progress: _Progress,
    writer: Any,
) -> float:
    """One epoch over length-bucketed batches; returns the smoothed training loss."""
    from tqdm.auto import tqdm

    targets, shown, labels = train_data
    batches = _length_batches(lengths, args.batch_size, args.seed * 100_003 + progress.epoch)
    bar = tqdm(
        batches, desc=f"epoch {progress.epoch + 1}/{args.epochs}", disable=not args.progress, leave=False
    )
    running = 0.0
    for i, idx in enumerate(bar):
        batch_labels = labels[idx]
        width = int((batch_labels != -100).sum(dim=1).max())
        out = model(**inputs(targets[idx], shown[idx]), labels=batch_labels[:, :width])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        progress.step += 1
        loss = out.loss.item()
        running = loss if i == 0 else 0.98 * running + 0.02 * loss
        if progress.step % 25 == 0:
            writer.add_scalar("train/loss", loss, progress.step)
            writer.add_scalar("train/learning_rate", scheduler.get_last_lr()[0], progress.step)
        bar.set_postfix(loss=f"{running:.3f}")
    bar.close()
    return running


def _train(args: TrainArgs, dataset: CaptionDataset | None, resume: bool, overwrite: bool) -> TrainResult:
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PreTrainedTokenizerFast

    state = _claim_run(args, resume, overwrite)
    last = args.work_path / "last"
    torch.manual_seed(args.seed)

    # --- data ---------------------------------------------------------------------------
    dataset = _caption_dataset(args, dataset)
    catalog = dataset.catalog
    train_pairs, val_pairs = list(dataset.train), list(dataset.val)
    if state is not None:
        hf = PreTrainedTokenizerFast.from_pretrained(str(last), local_files_only=True)
    else:
        hf = build_caption_tokenizer((p.caption for p in train_pairs), dataset.extra_words)
    tokenizer = CaptionerTokenizer(hf)
    train_data = _encode(train_pairs, tokenizer, args.max_caption_length)
    val_data = _encode(val_pairs, tokenizer, args.max_caption_length)
    ref_t, ref_s, refs = group_references(val_pairs)
    references = (ref_t[: args.bleu_pairs], ref_s[: args.bleu_pairs], refs[: args.bleu_pairs])
    inputs = _Inputs(catalog, args.use_attributes)
    lengths = (train_data[2] != -100).sum(dim=1)

    # --- model, optimizer, schedule -------------------------------------------------------
    model = RelativeCaptionerModel(_captioner_config(args, dataset, tokenizer, inputs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = len(_length_batches(lengths, args.batch_size, 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(args, args.epochs * steps_per_epoch))
    progress = _Progress()
    if state is not None:
        read_training_state(last, optimizer=optimizer, model=model)
        scheduler.load_state_dict(state["scheduler"])
        progress = _Progress(**{f.name: state[f.name] for f in fields(_Progress)})
    model.train()
    saved_args = {k: v for k, v in asdict(args).items() if k not in RUN_ONLY_FIELDS}
    writer = SummaryWriter(str(args.work_path / "tensorboard"))
    if state is None:
        writer.add_text("args", json.dumps(saved_args, indent=2))
        writer.add_scalar("model/parameters", sum(p.numel() for p in model.parameters()), 0)

    # --- epochs ---------------------------------------------------------------------------
    started = time.perf_counter() - progress.elapsed
    stopped_early = progress.bad_epochs >= args.patience
    epochs_this_run = 0
    while progress.epoch < args.epochs and not stopped_early:
        if args.stop_after is not None and epochs_this_run >= args.stop_after:
            break
        running = _train_epoch(
            model, optimizer, scheduler, inputs, train_data, lengths, args, progress, writer
        )
        progress.epoch += 1
        epochs_this_run += 1
        val_loss, val_bleu = _validate(model, inputs, val_data, references, tokenizer, 256)
        writer.add_scalar("val/loss", val_loss, progress.step)
        writer.add_scalar("val/bleu4", val_bleu, progress.step)
        progress.elapsed = time.perf_counter() - started
        improved = val_loss < progress.best_val_loss - 1e-4
        if improved:
            progress.best_val_loss, progress.best_epoch, progress.best_val_bleu4 = (
                val_loss,
                progress.epoch,
                val_bleu,
            )
            progress.bad_epochs = 0
            metrics = {
                "best_epoch": progress.best_epoch,
                "val_loss": val_loss,
                "val_bleu4": val_bleu,
                "train_seconds": round(progress.elapsed, 1),
                "parameters": sum(p.numel() for p in model.parameters()),
                "train_captions": len(train_pairs),
            }
            _save_model(
                model, tokenizer, Path(args.out), {"training_args.json": saved_args, "metrics.json": metrics}
            )
        else:
            progress.bad_epochs += 1
        stopped_early = progress.bad_epochs >= args.patience
        if args.progress:
            print(
                f"epoch {progress.epoch}: train loss {running:.4f}  val loss {val_loss:.4f}  val BLEU-4 "
                f"{val_bleu:.4f}{'  (best, saved)' if improved else ''}  [{progress.elapsed / 60:.1f} min]",
                flush=True,
            )
        with atomic_directory(last, overwrite=True) as tmp:
            tokenizer.hf.save_pretrained(tmp)
            record = {"args": saved_args, **asdict(progress), "scheduler": scheduler.state_dict()}
            write_training_state(tmp, optimizer=optimizer, model=model, record=record)
    writer.close()
    return TrainResult(
        out=Path(args.out),
        epochs_run=progress.epoch,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val_loss,
        val_bleu4=progress.best_val_bleu4,
        seconds=time.perf_counter() - started,
        stopped_early=stopped_early,
        finished=stopped_early or progress.epoch >= args.epochs,
    )
