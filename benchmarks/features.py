"""Attribute-network accuracy on the default catalog and feature-extraction time.

Accuracy: the network shipped with fiq-gym (or ``--checkpoint``) on the default synthetic
catalog (seed 0, 64x64), which the shipped network never saw: it was trained on seed 1 (see
:mod:`fiq_gym.features.default_network`). Extraction: :func:`fiq_gym.features.extract_features`
end to end (read the images from the memory map, run the network, write features and
attribute scores into the catalog directory), with one thread and with every core.

    python -m fiq_gym.benchmarks.features                     # 10,000 items; writes results/
    python -m fiq_gym.benchmarks.features --size 2000 --out /tmp/features-bench
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fiq_gym.benchmarks.publishing import add_out_argument, provenance_lines
from fiq_gym.catalog.lazy_images import LazyImages
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.synthetic import build_synthetic_catalog
from fiq_gym.features.extract import extract_features
from fiq_gym.features.model import WEIGHTS_FILE, Checkpoint, load_checkpoint
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["confusions", "run"]


@torch.inference_mode()
def confusions(checkpoint: Checkpoint, catalog: Catalog, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Per attribute type, the (true value, predicted value) count matrix over every item."""
    images = _images(catalog)
    vocab = catalog.vocabulary
    counts = {t.name: np.zeros((len(t.values), len(t.values)), dtype=np.int64) for t in vocab.types}
    network = checkpoint.network.eval()
    if network.category_head is not None:
        size = len(checkpoint.config.categories)
        counts["category"] = np.zeros((size, size), dtype=np.int64)
    for start in range(0, len(catalog), batch_size):
        features, logits = network(torch.from_numpy(np.array(images[start : start + batch_size])))
        truth = vocab.decode(np.asarray(catalog.labels[start : start + batch_size]))
        for k, t in enumerate(vocab.types):
            predicted = logits[:, vocab.slice(t.name)].argmax(dim=1).numpy()
            labelled = truth[:, k] >= 0
            np.add.at(counts[t.name], (truth[labelled, k], predicted[labelled]), 1)
        if network.category_head is not None:
            predicted = network.category_logits(features).argmax(dim=1).numpy()
            np.add.at(
                counts["category"], (np.asarray(catalog.categories[start : start + batch_size]), predicted), 1
            )
    return counts


def _images(catalog: Catalog) -> np.ndarray | LazyImages:
    if catalog.images is None:
        raise ValueError("the features benchmark needs a catalog with images")
    return catalog.images


def _all_right(checkpoint: Checkpoint, catalog: Catalog, batch_size: int = 512) -> float:
    images = _images(catalog)
    vocab, right = catalog.vocabulary, 0
    with torch.inference_mode():
        for start in range(0, len(catalog), batch_size):
            _, logits = checkpoint.network(torch.from_numpy(np.array(images[start : start + batch_size])))
            truth = vocab.decode(np.asarray(catalog.labels[start : start + batch_size]))
            predicted = np.stack(
                [logits[:, vocab.slice(t.name)].argmax(dim=1).numpy() for t in vocab.types], axis=1
            )
            right += int((predicted == truth).all(axis=1).sum())
    return right / len(catalog)


def run(size: int, threads: Sequence[int], checkpoint_dir: str | None, out: Path, command: str) -> str:
    checkpoint = load_checkpoint(checkpoint_dir)
    training = checkpoint.record.get("training", {})
    with tempfile.TemporaryDirectory() as tmp:
        catalog = build_synthetic_catalog(
            Path(tmp) / "catalog", size=size, seed=0, image_size=64, progress=False
        )
        torch.set_num_threads(max(threads))
        counts = confusions(checkpoint, catalog)
        all_right = _all_right(checkpoint, catalog)
        timings = []
        load = os.getloadavg()[0]
        for t in threads:
            # Best of three: the first run also pays for reading the images from disk.
            seconds = min(
                extract_features(
                    catalog.provenance["path"], checkpoint=checkpoint_dir, threads=t, progress=False
                ).seconds
                for _ in range(3)
            )
            timings.append((t, seconds))
            print(f"extraction with {t} thread(s): {seconds:.2f} s for {size:,} items")

    vocab = catalog.vocabulary
    labels_seen = training.get("catalog", {}).get("provenance", {})
    lines = [
        "# Image features: the attribute network",
        "",
        f"The attribute network in `{'fiq_gym/features/default' if checkpoint_dir is None else checkpoint_dir}` "
        f"({sum(p.numel() for p in checkpoint.network.parameters()):,} parameters, "
        f"{(checkpoint.path / WEIGHTS_FILE).stat().st_size / 2**20:.1f} MB of weights, "
        f"{checkpoint.config.feature_dim}-dimensional features), trained on a synthetic catalog of "
        f"{labels_seen.get('size', '?'):,} items with seed {labels_seen.get('seed', '?')} "
        f"(best held-out epoch {training.get('best_epoch', '?')}, "
        f"{training.get('epochs_run', '?')} epochs, "
        f"{training.get('total_seconds', float('nan')) / 60:.0f} min of training on "
        f"{training.get('args', {}).get('threads', '?')} thread(s)). Evaluated on the default catalog "
        f"(seed 0, {size:,} items at 64x64), which it never saw.",
        "",
        "| attribute type | values | accuracy | majority baseline | most frequent confusions (true -> predicted: items) |",
        "|---|---:|---:|---:|---|",
    ]
    # The category head's row (when the network has one) follows the attribute types.
    rows = [(t.name, t.name, t.values) for t in vocab.types]  # (label, key of counts, values)
    if "category" in counts:
        rows.append(("category (head)", "category", checkpoint.config.categories))
    for name, key, values in rows:
        m = counts[key]
        total = int(m.sum())
        errors = m.copy()
        np.fill_diagonal(errors, 0)
        top = np.argsort(errors, axis=None)[::-1][:3]
        confused = [
            f"{values[i]} -> {values[j]}: {errors[i, j]}"
            for i, j in zip(*np.unravel_index(top, errors.shape), strict=True)
            if errors[i, j] > 0
        ]
        lines.append(
            f"| {name} | {len(values)} | {np.trace(m) / total:.2%} | {m.sum(axis=1).max() / total:.1%} | "
            f"{', '.join(confused) or 'none'} |"
        )
    lines += [
        "",
        f"Every attribute right: {all_right:.2%} of items.",
        "",
        f"## Extraction time, {size:,} items",
        "",
        "Features and attribute scores written into the catalog directory (best of 3). Load average",
        f"(1 min) when timing began: {load:.1f} on {os.cpu_count()} CPUs; a load near the CPU count means",
        "other processes competed for the cores, which penalises more threads most.",
        "",
        "| torch threads | seconds | items/s |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {t} | {s:.2f} | {size / s:,.0f} |" for t, s in timings]
    lines += provenance_lines(command)
    text = "\n".join(lines)
    atomic_write_text(out / "features.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=10_000, help="items of the seed-0 catalog (default 10000)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts to time (default: 1 and all cores)",
    )
    parser.add_argument("--checkpoint", help="attribute-network checkpoint (default: the shipped one)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    threads = sorted(set(args.threads or [1, os.cpu_count() or 1]))
    command = "python -m fiq_gym.benchmarks.features " + " ".join(sys.argv[1:] if argv is None else argv)
    print(run(args.size, threads, args.checkpoint, args.out, command.strip()))


if __name__ == "__main__":
    main()
