"""Reading the Fashion IQ release (Wu et al., CVPR 2021) into an import plan.

The release's layout, under a root folder::

    captions/cap.{category}.{split}.json      [{"target": ASIN, "candidate": ASIN,
                                                "captions": [str, str]}, ...]
                                               (the test split's entries have no "target")
    image_splits/split.{category}.{split}.json [ASIN, ...]
    images/{ASIN}.jpg | .png                   (or another folder, given with --images)

Categories are ``dress``, ``shirt`` and ``toptee``; splits ``train``, ``val`` and ``test``.
The catalog holds every image of the chosen categories' split lists that has a readable
image file; caption entries that name anything else are skipped and counted.

    fiq-gym catalog import fashioniq ROOT --category dress --split val --out catalogs/fiq-dress-val
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

__all__ = ["CATEGORIES", "SPLITS", "caption_file", "plan_fashioniq", "split_file"]

CATEGORIES = ("dress", "shirt", "toptee")
SPLITS = ("train", "val", "test")
_IMAGE_FOLDERS = ("images", "resized_images", "image_data")


def caption_file(root: Path, category: str, split: str) -> Path:
    return root / "captions" / f"cap.{category}.{split}.json"


def split_file(root: Path, category: str, split: str) -> Path:
    return root / "image_splits" / f"split.{category}.{split}.json"


def _image_folder(root: Path, images: str | os.PathLike | None) -> Path:
    if images is not None:
        return Path(images)
    for name in _IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(
        f"no image folder under {root} (looked for {', '.join(_IMAGE_FOLDERS)}); "
        "pass the folder holding {ASIN}.jpg / .png files with --images DIR"
    )


def _check_choice(name: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise DatasetError(f"unknown {name} {bad or values!r}; Fashion IQ has {list(allowed)}")


def plan_fashioniq(
    root: str | os.PathLike,
    *,
    categories: tuple[str, ...] = CATEGORIES,
    splits: tuple[str, ...] = ("val",),
    images: str | os.PathLike | None = None,
    strict: bool = False,
    captions_only: bool = False,
) -> ImportPlan:
    """Read and validate the release files of ``categories`` x ``splits`` under ``root``.

    ``captions_only``: read the caption and split files only, without looking for images
    (every listed id counts as present): the captions, matched to a catalog by id, of a
    release whose images are elsewhere or absent. Such a plan cannot be imported."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Fashion IQ root {root} does not exist or is not a folder")
    categories, splits = tuple(dict.fromkeys(categories)), tuple(dict.fromkeys(splits))
    _check_choice("category", categories, CATEGORIES)
    _check_choice("split", splits, SPLITS)
    report = ImportReport(strict=strict)
    folder = None if captions_only else _image_folder(root, images)
    files = (
        None if folder is None else index_images(folder, recursive=False, key=lambda p: p.stem, report=report)
    )

    # Items: the split lists, in category then split then file order. The release lists
    # some garments in several split files (3,302 images: shirt and toptee overlap, sometimes
    # across splits); such a garment is one catalog item (with the category of its first
    # listing) that belongs to every gallery listing it, so the challenge's queries on any of
    # them are kept.
    items: list[PlannedItem] = []
    home: dict[str, tuple[str, str]] = {}  # id -> (category, split) of its first listing
    split_of: dict[tuple[str, str], set[str]] = {}
    shared: dict[str, list[tuple[str, str]]] = {}  # id -> its further listings
    for category in categories:
        for split in splits:
            file = split_file(root, category, split)
            listed = read_json_list(file, f"the {category} {split} image split (a JSON list of ASINs)")
            members: set[str] = set()
            for k, asin in enumerate(listed):
                where = f"entry {k}"
                if not isinstance(asin, str) or not asin.strip():
                    report.flag("image split entry is not a non-empty string", file, f"{where} ({asin!r})")
                    continue
                asin = asin.strip()
                if asin in members:
                    report.flag("image listed twice in one split file", file, f"{where} ({asin!r})")
                    continue
                if asin in home:
                    shared.setdefault(asin, []).append((category, split))
                    members.add(asin)
                    continue
                image = NO_IMAGE if files is None else files.get(asin)
                if image is None:
                    report.flag("image file not found", str(folder), f"{asin}.jpg|.png ({file.name} {where})")
                    continue
                home[asin] = (category, split)
                members.add(asin)
                items.append(PlannedItem(asin, category, image))
            split_of[(category, split)] = members
    if shared:
        example = next(iter(shared))
        also = ", ".join(f"{c} {sp}" for c, sp in shared[example])
        report.note(
            f"{len(shared)} images are listed in more than one image split (e.g. {example!r}: "
            f"{home[example][0]} {home[example][1]}, also {also}); each is one item, in every "
            "gallery that lists it, with the category of its first listing"
        )

    # Entries, in file order. A repeated entry with a target adds nothing and is skipped; an
    # entry without one (the test split's) is a query of its own whose target is hidden, so
    # it is always kept: the challenge's predictions go one per entry, in file order.
    entries: list[tuple[CaptionEntry, str, str]] = []
    source_entries: dict[str, int] = {}
    seen: set[tuple] = set()
    for category in categories:
        for split in splits:
            file = caption_file(root, category, split)
            members = split_of[(category, split)]
            listed = read_json_list(file, f"the {category} {split} captions")
            source_entries[f"{category}.{split}"] = len(listed)
            for k, raw in enumerate(listed):
                entry = _entry(raw, k, file, category, split, members, report)
                if entry is None:
                    continue
                key = (entry.target, entry.candidate, entry.captions, split, category)
                if entry.target is not None and key in seen:
                    report.flag("duplicate caption entry", file, f"entry {k}")
                    continue
                seen.add(key)
                entries.append((entry, str(file), f"entry {k}"))
    return ImportPlan(
        source="fashioniq",
        category_names=categories,
        items=items,
        entries=entries,
        report=report,
        galleries={f"{c}.{sp}": sorted(m) for (c, sp), m in split_of.items()},
        source_entries=source_entries,
        provenance={
            "dataset": "Fashion IQ",
            "root": str(root.resolve()),
            "images": None if folder is None else str(folder.resolve()),
            "categories": list(categories),
            "splits": list(splits),
        },
    )


def _entry(
    raw: object, k: int, file: Path, category: str, split: str, members: set[str], report: ImportReport
) -> CaptionEntry | None:
    where = f"entry {k}"
    if not isinstance(raw, dict):
        report.flag("malformed entry (not a JSON object)", file, where)
        return None
    candidate, target = raw.get("candidate"), raw.get("target")
    if not isinstance(candidate, str) or not candidate.strip():
        report.flag("malformed entry (no candidate ASIN)", file, where)
        return None
    if target is None and split != "test":
        report.flag("malformed entry (no target ASIN outside the test split)", file, where)
        return None
    if target is not None and (not isinstance(target, str) or not target.strip()):
        report.flag("malformed entry (target is not an ASIN string)", file, where)
        return None
    captions = raw.get("captions")
    if not isinstance(captions, list) or not captions:
        report.flag("malformed entry (no captions list)", file, where)
        return None
    good = [" ".join(c.split()) for c in captions if isinstance(c, str) and c.strip()]
    bad = [c for c in captions if not (isinstance(c, str) and c.strip())]
    if not good:
        report.flag("malformed entry (every caption empty or not a string)", file, f"{where} ({bad!r})")
        return None
    for c in bad:
        # The entry keeps its good caption (the release has 16 entries with one empty one).
        report.drop_caption("empty or non-string caption", file, f"{where} ({c!r})")
    candidate = candidate.strip()
    target = None if target is None else target.strip()
    if target == candidate:
        report.flag(SELF_PAIR, file, f"{where} ({target!r})")
        return None
    for name, asin in (("candidate", candidate), ("target", target)):
        if asin is not None and asin not in members:
            report.flag(
                "caption entry names an image missing from the split (or its file)",
                file,
                f"{where} ({name} {asin!r} not in split.{category}.{split}.json)",
            )
            return None
    return CaptionEntry(
        target=target, candidate=candidate, captions=tuple(good), split=split, category=category
    )
