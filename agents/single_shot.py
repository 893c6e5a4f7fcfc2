"""Single-shot retrieval from human captions (the Fashion IQ challenge protocol), CleanRL style.

A query is a candidate image plus its relative captions (Fashion IQ's two captions joined
with " and ", Shoes' one caption); the answer is the target among the images of the
query's split and category. The network is the dialog retriever's own
(:class:`~fiq_gym.agents.retriever.RetrieverNet`), run for one turn from an empty dialog
state, so a trained checkpoint also plays the first turn of a dialog env.

Training uses the imported catalog's human captions of ``train_split``: each step draws a
batch of annotated pairs (Fashion IQ's two captions joined in random order, an
augmentation), and a contrastive loss pulls the query towards its target and away from the
batch's other targets and from random catalog items. The word tokenizer is built from the
training captions only (unseen words at evaluation become ``<unk>``) and saved beside the
weights as ``tokenizer.json``.

Evaluation: for every query of ``eval_split`` with a target, the rank of the target among
that split's images of the query's category (the candidate stays in the gallery, as in the
challenge's evaluation), reported as R@10 and R@50 per category and their mean. The split is
``val`` (Fashion IQ) or ``eval`` (Shoes) unless ``--eval-split`` names another; a split
without targets (Fashion IQ's ``test``) cannot be scored and is refused before training, as
is an import without an evaluation split (never a silent fallback).

Predictions: :func:`predict_single_shot` ranks the gallery for every query of a split, with or
without targets; ``fiq-gym predict CHECKPOINT --out DIR`` writes the Fashion IQ challenge's
files from it (:func:`write_predictions`: ``{category}.test.pred.json``, every test entry in
file order with the top-50 ASINs as ``"ranking"``, as the release's start kit writes them).

    fiq-gym train single-shot --catalog catalogs/fashioniq --out runs/single-shot
    fiq-gym predict runs/single-shot/checkpoint --out runs/single-shot/predictions
    python -m fiq_gym.agents.single_shot --help

Training plays no env: TensorBoard's x axis (``charts/``, ``losses/``, ``eval/``) is the
training queries read so far (steps x ``batch_size``), each one turn of a dialog, the
counterpart of the other trainers' env steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from fiq_gym.agents.retriever import (
    RetrieverConfig,
    RetrieverNet,
    check_catalog,
    load_checkpoint,
    save_checkpoint,
)
from fiq_gym.catalog.captions import CaptionEntry, HumanCaptions, load_human_captions
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import open_catalog
from fiq_gym.checkpoint import prepare_run
from fiq_gym.errors import CheckpointError, DatasetError
from fiq_gym.gallery import gallery_of
from fiq_gym.metrics import recall_at_k, target_rank
from fiq_gym.text import WordTokenizer
from fiq_gym.users.dataset import join_captions
from fiq_gym.utils.arguments import CatalogArgument, PathArgument, parse_dataclass_args
from fiq_gym.utils.atomic import atomic_directory, atomic_write_json

__all__ = [
    "PREDICTION_TOP",
    "Args",
    "PredictionFiles",
    "SingleShotResult",
    "evaluate_single_shot",
    "load_single_shot",
    "predict_single_shot",
    "prediction_file_name",
    "scoring_split",
    "train",
    "write_predictions",
]

#: ASINs per query in the challenge's prediction files
PREDICTION_TOP = 50


@dataclass
class Args:
    catalog: CatalogArgument = ""
    """imported catalog directory (`fiq-gym catalog import ...`); required"""
    train_split: str = "train"
    """split of the human captions to train on"""
    eval_split: str = ""
    """split to evaluate on (default: val for Fashion IQ, eval for Shoes)"""
    steps: int = 1500
    """gradient steps"""
    batch_size: int = 128
    """samples per gradient step"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    embed_dim: int = 128
    """width of the retriever's text, image and state embeddings"""
    negatives: int = 256
    """random catalog items added to each batch's negatives"""
    temperature: float = 0.07
    """softmax temperature of the contrastive loss"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the sampling"""
    eval_every: int = 500
    """rounds between evaluations (and checkpoints)"""
    out: PathArgument = "runs/single-shot"
    """run directory: TensorBoard events in tb/, checkpoint in checkpoint/"""
    overwrite: bool = False
    """replace the run in OUT (an existing OUT is an error without it)"""
    threads: int = 1
    """torch threads (0: torch's default)"""
    quiet: bool = False
    """no progress bar"""


@dataclass(frozen=True)
class SingleShotResult:
    """Per-category recalls of one evaluation, and their means."""

    split: str
    per_category: dict[str, dict[str, float]]
    """category -> {"R@10", "R@50", "queries", "gallery"}"""

    @property
    def mean(self) -> dict[str, float]:
        cats = list(self.per_category.values())
        return {k: float(np.mean([c[k] for c in cats])) for k in ("R@10", "R@50")} if cats else {}


# --- data ------------------------------------------------------------------------------------
def _queries(
    entries: Sequence[CaptionEntry], rows: tuple[np.ndarray, np.ndarray], rng: np.random.Generator | None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Query texts (captions joined; shuffled first when ``rng`` is given), candidates, targets."""
    targets, candidates = rows
    keep = targets >= 0
    texts = []
    for entry, ok in zip(entries, keep.tolist(), strict=True):
        if ok:
            caps = list(entry.captions)
            if rng is not None:
                rng.shuffle(caps)
            texts.append(join_captions(caps))
    return texts, candidates[keep], targets[keep]


def _scored_queries(captions: HumanCaptions, split: str) -> int:
    return sum(1 for e in captions.entries if e.split == split and e.target is not None)


def scoring_split(captions: HumanCaptions, requested: str = "", option: str = "--eval-split") -> str:
    """The split to score on: ``requested``, else ``val`` (Fashion IQ) or ``eval`` (Shoes).

    Raises :class:`~fiq_gym.errors.DatasetError` (one line, naming the fix) for a split that
    was not imported or has no targets to score against (Fashion IQ's ``test``), and when
    nothing was requested and neither evaluation split was imported: never a silent fallback
    to another split."""
    splits = list(captions.splits)
    if not requested:
        for split in ("val", "eval"):
            if _scored_queries(captions, split):
                return split
        raise DatasetError(
            f"the import has no evaluation split with targets (val for Fashion IQ, eval for Shoes; it has "
            f"{splits}): import it too (fiq-gym catalog import ... --split train val), or name a split "
            f"with targets with {option}"
        )
    if requested not in splits:
        raise DatasetError(
            f"{option} {requested}: the import has no {requested!r} captions (it has {splits}); "
            "import that split, or name one of these"
        )
    if not _scored_queries(captions, requested):
        raise DatasetError(
            f"{option} {requested}: the {requested!r} split has no targets to score against (Fashion IQ "
            "releases its test split without them); score on val, and write the challenge's predictions "
            f"for {requested} with `fiq-gym predict CHECKPOINT --split {requested} --out DIR`"
        )
    return requested


# --- evaluation ------------------------------------------------------------------------------
def _gallery_scores(
    net: RetrieverNet,
    tokenizer: WordTokenizer,
    tensors: tuple[torch.Tensor, torch.Tensor],
    texts: list[str],
    candidates: np.ndarray,
    gallery: np.ndarray,
) -> Iterator[tuple[slice, np.ndarray]]:
    """(queries, their scores over ``gallery``) in blocks of 512 queries."""
    features, side = tensors
    items = net.encode_items(features[gallery], side[gallery])
    tokens, _ = tokenizer.encode_batch(texts, net.config.max_caption_length)
    for start in range(0, len(texts), 512):
        block = slice(start, start + 512)
        cand = torch.from_numpy(candidates[block])
        _, query = net.step(
            net.initial_state(len(cand)), torch.from_numpy(tokens[block]), features[cand], side[cand]
        )
        yield block, (query @ items.T).numpy()


@torch.no_grad()
def evaluate_single_shot(
    net: RetrieverNet, tokenizer: WordTokenizer, catalog: Catalog, captions: HumanCaptions, split: str
) -> SingleShotResult:
    """R@10 / R@50 of every category of ``split`` (queries with a target only)."""
    net.eval()
    tables = gallery_of(catalog)
    tensors = torch.tensor(np.asarray(tables.features)), torch.tensor(np.asarray(tables.side_info))
    per_category: dict[str, dict[str, float]] = {}
    for category in catalog.category_names:
        selected = captions.select(split, category)
        texts, candidates, targets = _queries(selected.entries, selected.rows(catalog), None)
        if not texts:
            continue
        gallery = captions.gallery_rows(catalog, category, split)
        position = np.full(len(catalog), -1, dtype=np.int64)
        position[gallery] = np.arange(len(gallery))
        ranks = [
            target_rank(scores, position[targets[block]])
            for block, scores in _gallery_scores(net, tokenizer, tensors, texts, candidates, gallery)
        ]
        rank = np.concatenate(ranks)
        per_category[category] = {
            "R@10": recall_at_k(rank, 10),
            "R@50": recall_at_k(rank, 50),
            "queries": len(rank),
            "gallery": len(gallery),
        }
    net.train()
    return SingleShotResult(split, per_category)


def load_single_shot(directory: str | Path) -> tuple[RetrieverNet, WordTokenizer, dict[str, Any]]:
    """A trained single-shot checkpoint: network, tokenizer and metadata."""
    net, meta = load_checkpoint(directory)
    file = Path(directory) / "tokenizer.json"
    if not file.exists():
        raise FileNotFoundError(f"{directory} has no tokenizer.json: it is not a single-shot checkpoint")
    return net, WordTokenizer.from_json(file.read_text()), meta


# --- the challenge's predictions ---------------------------------------------------------------
@torch.no_grad()
def predict_single_shot(
    net: RetrieverNet,
    tokenizer: WordTokenizer,
    catalog: Catalog,
    captions: HumanCaptions,
    split: str = "test",
    top: int = PREDICTION_TOP,
) -> dict[str, list[dict[str, Any]]]:
    """Per category, one prediction per entry of ``split`` in file order (targets or not):
    ``{"candidate", "captions", "ranking"}`` (plus ``"target"`` where it is known), where
    ``ranking`` is the ``top`` best ids of the split's gallery of that category, best first
    (the candidate stays in the gallery, as in the evaluation; ties: gallery order)."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    net.eval()
    tables = gallery_of(catalog)
    tensors = torch.tensor(np.asarray(tables.features)), torch.tensor(np.asarray(tables.side_info))
    ids = np.asarray(catalog.ids)
    out: dict[str, list[dict[str, Any]]] = {}
    for category in catalog.category_names:
        selected = captions.select(split, category)
        if not selected.entries:
            continue
        _, candidates = selected.rows(catalog)
        texts = [join_captions(e.captions) for e in selected.entries]
        gallery = captions.gallery_rows(catalog, category, split)
        k = min(top, len(gallery))
        predictions = []
        for block, scores in _gallery_scores(net, tokenizer, tensors, texts, candidates, gallery):
            best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            for entry, order in zip(selected.entries[block], best, strict=True):
                prediction: dict[str, Any] = {"candidate": entry.candidate, "captions": list(entry.captions)}
                if entry.target is not None:
                    prediction["target"] = entry.target
                prediction["ranking"] = [str(x) for x in ids[gallery[order]]]
                predictions.append(prediction)
        out[category] = predictions
    net.train()
    return out


def prediction_file_name(category: str, split: str) -> str:
    """The start kit's name of a category's prediction file."""
    return f"{category}.{split}.pred.json"


def write_predictions(
    checkpoint: str | Path,
    out: str | Path,
    *,
    catalog: str | Path | None = None,
    split: str = "test",
    top: int = PREDICTION_TOP,
    overwrite: bool = False,
) -> PredictionFiles:
    """Write the challenge's prediction files for ``split`` into the new directory ``out``
    (atomically; an existing ``out`` is refused unless ``overwrite``, and even then if it
    holds anything but prediction files).

    Refuses (:class:`~fiq_gym.errors.DatasetError`, naming the fix) an import that skipped
    entries of the split's caption files: the files' order would no longer match."""
    net, tokenizer, meta = load_single_shot(checkpoint)
    if meta.get("agent") != "single-shot":
        raise CheckpointError(
            f"{checkpoint} is a {meta.get('agent')!r} checkpoint, not a single-shot one; "
            "train one with `fiq-gym train single-shot --catalog IMPORTED --out RUN` and pass RUN/checkpoint"
        )
    where = catalog or meta.get("args", {}).get("catalog")
    if not where:
        raise CheckpointError(f"{checkpoint} names no catalog; pass the imported catalog with --catalog")
    opened = open_catalog(where)
    check_catalog(meta, opened, checkpoint)
    captions = load_human_captions(opened)
    if not captions.select(split).entries:
        raise DatasetError(
            f"the import {where} has no {split!r} captions (it has {list(captions.splits)}); import that split "
            f"too (fiq-gym catalog import {captions.source} ROOT --split {' '.join([*captions.splits, split])} "
            "--out DIR), or name one of these with --split"
        )
    checked = True
    for category in opened.category_names:
        kept = len(captions.select(split, category).entries)
        released = captions.source_entries.get(f"{category}.{split}")
        checked = checked and (released is not None or not kept)
        if released is not None and kept != released:
            raise DatasetError(
                f"the import {where} kept {kept} of the {released} entries of cap.{category}.{split}.json "
                "(its import_report.json says why), so predictions in file order would not line up with "
                "the challenge's; fix what the report names (e.g. missing images) and re-import"
            )
    predictions = predict_single_shot(net, tokenizer, opened, captions, split, top)
    out = Path(out)
    names = {prediction_file_name(c, split) for c in opened.category_names}
    if overwrite and out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in names)
        if others:
            raise FileExistsError(
                f"{out} holds files that are not prediction files ({', '.join(others[:3])}); "
                "--overwrite replaces only a directory of predictions: choose another --out"
            )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for category, items in predictions.items():
            atomic_write_json(tmp / prediction_file_name(category, split), items)
    return PredictionFiles(
        out, split, {category: len(items) for category, items in predictions.items()}, checked
    )


@dataclass(frozen=True)
class PredictionFiles:
    """What :func:`write_predictions` wrote."""

    directory: Path
    split: str
    counts: dict[str, int]
    """predictions (entries) per category, one file each"""
    checked: bool
    """every entry of the release's caption files is known to be there; False for an import
    made before fiq-gym recorded their counts (re-import to check)"""

    def file(self, category: str) -> Path:
        return self.directory / prediction_file_name(category, self.split)


# --- training --------------------------------------------------------------------------------
def train(args: Args) -> tuple[Path, SingleShotResult]:
    if not args.catalog:
        raise ValueError("--catalog is required: an imported catalog directory (fiq-gym catalog import ...)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    catalog = open_catalog(args.catalog)
    captions = load_human_captions(catalog)
    eval_split = scoring_split(captions, args.eval_split)
    train_entries = captions.select(args.train_split)
    train_rows = train_entries.rows(catalog)
    if (train_rows[0] >= 0).sum() < 2:
        raise ValueError(
            f"the import has no {args.train_split!r} caption pairs with targets (splits: {list(captions.splits)}); "
            "import the training split too (--split train val)"
        )
    texts_for_vocab = [c for e in train_entries.entries for c in e.captions]
    tokenizer = WordTokenizer.from_texts([*texts_for_vocab, "and"])
    tables = gallery_of(catalog)
    features = torch.tensor(np.asarray(tables.features))
    side = torch.tensor(np.asarray(tables.side_info))
    config = RetrieverConfig(
        vocab_size=tokenizer.vocab_size,
        feature_dim=int(features.shape[1]),
        attribute_dim=int(side.shape[1]),
        num_items=len(catalog),
        embed_dim=args.embed_dim,
    )
    net = RetrieverNet(config)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    out = Path(args.out)
    prepare_run(
        out,
        resume=False,
        resumable=False,
        overwrite=args.overwrite,
        state=out / "checkpoint",
        kind="single-shot",
    )
    writer = SummaryWriter(str(out / "tb"))
    writer.add_text("args", str(dataclasses.asdict(args)))
    started = time.perf_counter()
    result = SingleShotResult(eval_split, {})
    bar = tqdm(range(1, args.steps + 1), desc="single-shot", disable=args.quiet)
    for step in bar:
        # A batch of annotated pairs; each query's captions joined in a fresh random order.
        pick = rng.choice(np.flatnonzero(train_rows[0] >= 0), size=args.batch_size)
        entries = [train_entries.entries[i] for i in pick.tolist()]
        texts, candidates, targets = _queries(entries, (train_rows[0][pick], train_rows[1][pick]), rng)
        tokens, _ = tokenizer.encode_batch(texts, config.max_caption_length)
        cand = torch.from_numpy(candidates)
        _, query = net.step(
            net.initial_state(len(cand)), torch.from_numpy(tokens), features[cand], side[cand]
        )
        # Candidates: the batch's targets (row i's positive is column i) plus random items.
        pool = np.concatenate([targets, rng.integers(len(catalog), size=args.negatives)])
        items = net.encode_items(features[pool], side[pool])
        logits = query @ items.T / args.temperature
        # A batch item equal to another row's target is that row's positive too: mask it.
        same = torch.from_numpy(pool[None, :] == targets[:, None])
        same[torch.arange(len(targets)), torch.arange(len(targets))] = False
        loss = F.cross_entropy(logits.masked_fill(same, -1e9), torch.arange(len(targets)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        queries = step * args.batch_size  # TensorBoard's x axis
        writer.add_scalar("losses/contrastive", loss.item(), queries)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            result = evaluate_single_shot(net, tokenizer, catalog, captions, eval_split)
            for category, values in result.per_category.items():
                for k in ("R@10", "R@50"):
                    writer.add_scalar(f"eval/{category}/{k}", values[k], queries)
            for k, v in result.mean.items():
                writer.add_scalar(f"eval/mean/{k}", v, queries)
            writer.add_scalar("charts/seconds", time.perf_counter() - started, queries)
            save_checkpoint(
                out / "checkpoint",
                net,
                args=dataclasses.asdict(args),
                agent="single-shot",
                state={"step": step, "eval": {"split": eval_split, **result.per_category}},
                files={"tokenizer.json": tokenizer.to_json()},
                catalog=catalog,
            )
    writer.close()
    return out / "checkpoint", result


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_dataclass_args(Args, argv, __doc__.splitlines()[0], prog=prog)
    checkpoint, result = train(args)
    print(f"evaluated on the {result.split!r} split")
    for category, values in result.per_category.items():
        print(
            f"{category:<10} R@10 {values['R@10']:.3f}  R@50 {values['R@50']:.3f}  ({values['queries']} queries, gallery {values['gallery']})"
        )
    print(f"{'mean':<10} R@10 {result.mean['R@10']:.3f}  R@50 {result.mean['R@50']:.3f}")
    print(f"checkpoint: {checkpoint}")


if __name__ == "__main__":
    main()
