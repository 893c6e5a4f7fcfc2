"""Reading the Shoes relative captions (Guo et al., NeurIPS 2018) into an import plan.

The release's layout, under a root folder::

    relative_captions_shoes.json   [{"ImageName": target, "ReferenceImageName": candidate,
                                     "RelativeCaption": str}, ...]
    train_im_names.txt             one image file name per line
    eval_im_names.txt              one image file name per line
    ...                            the images, found by file name anywhere under the root
                                   (or under --images), e.g. womens_clogs/0/img_womens_clogs_851.jpg

Items are named by image file name; their category is ``shoes``. A caption entry belongs to
the split that lists both of its images (``train`` or ``eval``); entries whose images sit in
different splits, or in none, are skipped and counted.

    fiq-gym catalog import shoes ROOT --split eval --out catalogs/shoes-eval
"""

from __future__ import annotations

import os
from pathlib import Path

from fiq_gym.catalog.captions import CaptionEntry
from fiq_gym.catalog.importing import (
    NO_IMAGE,
    SELF_PAIR,
    ImportPlan,
    ImportReport,
    PlannedItem,
    index_images,
    read_json_list,
)
from fiq_gym.errors import DatasetError

__all__ = ["CAPTIONS", "SPLITS", "plan_shoes"]

CAPTIONS = "relative_captions_shoes.json"
SPLITS = ("train", "eval")
_NAME_FILES = {"train": "train_im_names.txt", "eval": "eval_im_names.txt"}


def _read_names(file: Path) -> list[str]:
    if not file.is_file():
        raise DatasetError(f"{file} does not exist: expected one image file name per line")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()  # a BOM is not part of a name
    except UnicodeDecodeError:
        raise DatasetError(f"{file} is not UTF-8 text; restore it from the dataset release") from None
    names = []
    for line in lines:
        name = line.strip()
        if name:
            names.append(os.path.basename(name))  # some copies list paths; images are found by name
    return names


def plan_shoes(
    root: str | os.PathLike,
    *,
    splits: tuple[str, ...] = SPLITS,
    images: str | os.PathLike | None = None,
    strict: bool = False,
    captions_only: bool = False,
) -> ImportPlan:
    """Read and validate the Shoes files under ``root`` for ``splits``.

    ``captions_only``: read the caption and name files only, without looking for images
    (every listed name counts as present); such a plan cannot be imported."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Shoes root {root} does not exist or is not a folder")
    splits = tuple(dict.fromkeys(splits))
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise DatasetError(f"unknown split {bad or splits!r}; Shoes has {list(SPLITS)}")
    report = ImportReport(strict=strict)
    folder = Path(images) if images is not None else root
    files = (
        None if captions_only else index_images(folder, recursive=True, key=lambda p: p.name, report=report)
    )

    split_of: dict[str, str] = {}
    items: list[PlannedItem] = []
    for listed in SPLITS:  # read both lists, so a pair spanning splits is recognised as such
        file = root / _NAME_FILES[listed]
        if listed not in splits and not file.is_file():
            continue
        for k, name in enumerate(_read_names(file)):
            if name in split_of:
                report.flag(
                    "image listed twice (kept the first listing)",
                    file,
                    f"line {k + 1} ({name!r} in {split_of[name]})",
                )
                continue
            split_of[name] = listed
            if listed not in splits:
                continue
            image = NO_IMAGE if files is None else files.get(name)
            if image is None:
                report.flag("image file not found", folder, f"{name} ({file.name} line {k + 1})")
                continue
            items.append(PlannedItem(name, "shoes", image))
    present = {item.id for item in items}

    file = root / CAPTIONS
    entries: list[tuple[CaptionEntry, str, str]] = []
    seen: set[tuple] = set()
    for k, raw in enumerate(read_json_list(file, "a JSON list of Shoes relative captions")):
        where = f"entry {k}"
        if not isinstance(raw, dict):
            report.flag("malformed entry (not a JSON object)", file, where)
            continue
        target, candidate, caption = (
            raw.get("ImageName"),
            raw.get("ReferenceImageName"),
            raw.get("RelativeCaption"),
        )
        if (
            not isinstance(target, str)
            or not target.strip()
            or not isinstance(candidate, str)
            or not candidate.strip()
        ):
            report.flag("malformed entry (ImageName / ReferenceImageName missing)", file, where)
            continue
        if not isinstance(caption, str) or not caption.strip():
            report.flag("empty or non-string caption", file, f"{where} ({caption!r})")
            continue
        target, candidate = os.path.basename(target.strip()), os.path.basename(candidate.strip())
        if target == candidate:
            report.flag(SELF_PAIR, file, f"{where} ({target!r})")
            continue
        split = split_of.get(target)
        if split is None or split_of.get(candidate) is None:
            missing = target if split is None else candidate
            report.flag(
                "caption entry names an image missing from the split lists", file, f"{where} ({missing!r})"
            )
            continue
        if split_of[candidate] != split:
            report.flag(
                "caption entry's images lie in different splits", file, f"{where} ({target!r}, {candidate!r})"
            )
            continue
        if split not in splits:
            continue  # a pair of a split not being imported: not a problem
        if target not in present or candidate not in present:
            missing = target if target not in present else candidate
            report.flag(
                "caption entry names an image whose file was not found", file, f"{where} ({missing!r})"
            )
            continue
        caption = " ".join(caption.split())
        key = (target, candidate, caption)
        if key in seen:
            report.flag("duplicate caption entry", file, where)
            continue
        seen.add(key)
        entries.append((CaptionEntry(target, candidate, (caption,), split, "shoes"), str(file), where))
    return ImportPlan(
        source="shoes",
        category_names=("shoes",),
        items=items,
        entries=entries,
        report=report,
        galleries={f"shoes.{sp}": sorted(x for x in present if split_of[x] == sp) for sp in splits},
        provenance={
            "dataset": "Shoes",
            "root": str(root.resolve()),
            "images": None if files is None else str(folder.resolve()),
            "splits": list(splits),
        },
    )
