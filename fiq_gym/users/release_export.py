"""Writing a synthetic catalog out in the Fashion IQ or Shoes release layout.

A stand-in for the real datasets, which fiq-gym never downloads: the same files, the same
JSON shapes, images as files, and two template-shopper captions per pair (Fashion IQ) or one
(Shoes). It lets a user try the real-data path (import, DatasetUser, captioner training on
"human" captions, the single-shot benchmark) end to end before they have the data, and it is
what the tests and the published single-shot figures run on.

    fiq-gym catalog export fashioniq OUT [--catalog DIR] [--pairs 2000]
    fiq-gym catalog export shoes OUT
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fiq_gym.catalog.model import Catalog
from fiq_gym.users.template import TemplateUser
from fiq_gym.users.transformer.data import sample_pairs, split_items
from fiq_gym.utils.atomic import atomic_directory

__all__ = ["export_fashioniq_release", "export_shoes_release"]


def _write_json(file: Path, data: object) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_images(catalog: Catalog, rows: np.ndarray, paths: list[Path], progress: bool) -> None:
    if catalog.images is None:
        raise ValueError("the catalog has no images to export")
    for row, path in tqdm(
        zip(rows.tolist(), paths, strict=True), total=len(paths), desc="writing images", disable=not progress
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(catalog.images[row])).save(path)


def _pairs_with_captions(
    catalog: Catalog, items: np.ndarray, count: int, captions: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    rng = np.random.default_rng([seed, 21])
    targets, shown = sample_pairs(catalog, items, count, rng, near_fraction=0.7)
    user = TemplateUser(catalog)
    texts = [
        user.describe(targets, shown, np.random.default_rng([seed, 22, k])).texts for k in range(captions)
    ]
    return targets, shown, [[texts[k][i] for k in range(captions)] for i in range(len(targets))]


def export_fashioniq_release(
    catalog: Catalog,
    root: str | os.PathLike,
    *,
    pairs_per_split: int = 600,
    seed: int = 0,
    image_format: str = "png",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``catalog`` as a Fashion IQ release under ``root`` (atomically).

    Each category's items are split 80/10/10 into train/val/test; each split gets
    ``pairs_per_split`` (target, candidate) pairs per category with two template captions;
    the test split's entries have no ``"target"``, as in the release.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    root = Path(root)
    with atomic_directory(root, overwrite=overwrite) as tmp:
        all_rows = []
        for c, category in enumerate(catalog.category_names):
            rows = np.flatnonzero(np.asarray(catalog.categories) == c)
            if len(rows) < 20:
                continue
            split = split_items(len(rows), seed)
            for name, part in (("train", split.train), ("val", split.val), ("test", split.test)):
                items = rows[part]
                _write_json(
                    tmp / "image_splits" / f"split.{category}.{name}.json",
                    [str(catalog.ids[r]) for r in items],
                )
                targets, shown, texts = _pairs_with_captions(
                    catalog, items, pairs_per_split, 2, seed * 1000 + c * 10 + len(name)
                )
                entries = []
                for t, s, caps in zip(targets.tolist(), shown.tolist(), texts, strict=True):
                    entry = {
                        "target": str(catalog.ids[t]),
                        "candidate": str(catalog.ids[s]),
                        "captions": caps,
                    }
                    if name == "test":
                        del entry["target"]
                    entries.append(entry)
                _write_json(tmp / "captions" / f"cap.{category}.{name}.json", entries)
            all_rows.append(rows)
        rows = np.concatenate(all_rows) if all_rows else np.zeros(0, dtype=np.int64)
        paths = [tmp / "images" / f"{catalog.ids[r]}.{image_format}" for r in rows.tolist()]
        _save_images(catalog, rows, paths, progress)
    return root


def export_shoes_release(
    catalog: Catalog,
    root: str | os.PathLike,
    *,
    pairs: int = 2000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``catalog`` as a Shoes release under ``root``: images in per-category subfolders
    named ``img_{id}.jpg``, a 90/10 train/eval split, one template caption per pair."""
    root = Path(root)
    with atomic_directory(root, overwrite=overwrite) as tmp:
        n = len(catalog)
        split = split_items(n, seed, val_fraction=0.05, test_fraction=0.05)
        eval_rows = np.sort(np.concatenate([split.val, split.test]))
        names = [f"img_{catalog.ids[r]}.jpg" for r in range(n)]
        entries = []
        for part, count in ((split.train, pairs), (eval_rows, max(2, pairs // 10))):
            targets, shown, texts = _pairs_with_captions(catalog, part, count, 1, seed + len(part))
            entries += [
                {"ImageName": names[t], "ReferenceImageName": names[s], "RelativeCaption": caps[0]}
                for t, s, caps in zip(targets.tolist(), shown.tolist(), texts, strict=True)
            ]
        _write_json(tmp / "relative_captions_shoes.json", entries)
        (tmp / "train_im_names.txt").write_text("".join(names[r] + "\n" for r in split.train.tolist()))
        (tmp / "eval_im_names.txt").write_text("".join(names[r] + "\n" for r in eval_rows.tolist()))
        folders = [catalog.category_of(r) for r in range(n)]
        paths = [tmp / "images" / folders[r] / names[r] for r in range(n)]
        _save_images(catalog, np.arange(n), paths, progress)
    return root
