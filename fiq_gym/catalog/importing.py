"""Turning a real dataset (Fashion IQ, Shoes) into a regular catalog directory.

A loader (:mod:`~fiq_gym.catalog.fashioniq`, :mod:`~fiq_gym.catalog.shoes`) reads the
release's files into an :class:`ImportPlan`: the items (id, category, image file) and the
caption entries, with every problem it met recorded in an :class:`ImportReport`.
:func:`write_import` then decodes the images, drops what cannot be used (and says why),
attaches features and labels, and writes the catalog directory plus ``human_captions.json``
and ``import_report.json`` in one atomic rename.

Validation policy: in the default mode a bad entry is skipped and counted under its reason,
with the first few offending files and entries kept as examples; ``strict=True`` stops at the
first problem with an error naming the file and the entry. Nothing is dropped without being
counted.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fiq_gym.catalog.captions import CaptionEntry, HumanCaptions
from fiq_gym.catalog.import_inputs import (
    label_matrix,
    load_attribute_labels,
    load_feature_file,
    read_json_list,
)
from fiq_gym.catalog.limits import MAX_IMAGE_SIZE, MIN_IMPORT_IMAGE_SIZE
from fiq_gym.catalog.photos import decode_image, decode_images, primary_rgb
from fiq_gym.catalog.storage import CatalogWriter, _AppendArray, write_catalog_arrays
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.errors import DatasetError
from fiq_gym.utils.atomic import atomic_directory, atomic_write_json, reclaim_staging, staging_file
from fiq_gym.utils.workers import WorkerPool

#: Writes image features (and maybe attribute scores) into a catalog directory that is being
#: imported, ``(directory, progress) -> what it used``. The catalog layer takes it as a
#: parameter because the networks that compute features live above it (fiq_gym.features).
FeatureExtractor = Callable[[Path, bool], str]

__all__ = [
    "IMAGE_SUFFIXES",
    "NO_IMAGE",
    "REPORT_FILE",
    "ImportPlan",
    "ImportReport",
    "ImportResult",
    "PlannedItem",
    "index_images",
    "load_attribute_labels",
    "load_feature_file",
    "read_json_list",
    "write_import",
]

REPORT_FILE = "import_report.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
#: The report's reason for dropping an entry whose target is its own candidate: a relative
#: caption of an image against itself starts no dialog (an env refuses target == shown) and
#: is no single-shot query either (the query image is left out of the ranked gallery).
SELF_PAIR = "caption entry compares an image with itself (target = candidate)"
_EXAMPLES = 3


# --- the report ----------------------------------------------------------------------------
@dataclass
class ImportReport:
    """What an import skipped, counted by reason, with the first offending entries as examples.

    ``strict``: raise :class:`~fiq_gym.errors.DatasetError` at the first problem instead.
    """

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dropped_captions: Counter = field(default_factory=Counter)
    """captions left out of entries that were kept (e.g. one empty caption of two), by reason"""

    def flag(self, reason: str, file: str | os.PathLike, where: str) -> None:
        """Record one problem: ``reason`` (what is wrong), in ``file``, at ``where``."""
        text = f"{file}: {where}"
        if self.strict:
            raise DatasetError(
                f"{text}: {reason} (--strict stops at the first problem; without it such entries are "
                "skipped and counted in the import report)"
            )
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _EXAMPLES:
            examples.append(text)

    def drop_caption(self, reason: str, file: str | os.PathLike, where: str) -> None:
        """Record a caption left out of an entry that is kept with its other captions."""
        text = f"{file}: {where}"
        if self.strict:
            raise DatasetError(
                f"{text}: {reason} (--strict stops at the first problem; without it the caption is "
                "dropped, its entry kept with its other captions, and counted in the import report)"
            )
        self.dropped_captions[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _EXAMPLES:
            examples.append(text)

    def note(self, text: str) -> None:
        """Something worth telling that is not a problem (e.g. items without labels)."""
        self.notes.append(text)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            lines = ["no entries skipped" if self.dropped_captions else "no problems found"]
        else:
            lines = [f"skipped {self.total} entr{'y' if self.total == 1 else 'ies'}:"]
            for reason, count in self.counts.most_common():
                lines.append(f"  {count:>6}  {reason} (e.g. {self.examples[reason][0]})")
        if self.dropped_captions:
            n = sum(self.dropped_captions.values())
            lines.append(f"dropped {n} caption{'' if n == 1 else 's'} from entries kept with their others:")
            for reason, count in self.dropped_captions.most_common():
                lines.append(f"  {count:>6}  {reason} (e.g. {self.examples[reason][0]})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "skipped": dict(self.counts.most_common()),
            "dropped_captions": dict(self.dropped_captions.most_common()),
            "examples": self.examples,
            "notes": self.notes,
        }


# --- reading release files -------------------------------------------------------------------
def index_images(
    folder: Path, *, recursive: bool, key: Callable[[Path], str], report: ImportReport
) -> dict[str, Path]:
    """``key(path) -> path`` for every image file under ``folder`` (sorted, so the first of
    two files with one key is always the same one; the second is reported)."""
    if not folder.is_dir():
        raise DatasetError(
            f"image folder {folder} does not exist; pass the folder holding the images with --images"
        )
    found: dict[str, Path] = {}
    if recursive:
        paths = sorted(
            Path(d) / name for d, _, names in os.walk(folder) for name in names if not name.startswith(".")
        )
    else:
        paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in paths:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        k = key(path)
        if k in found:
            report.flag(f"duplicate image name (kept {found[k]})", path, f"image {k!r}")
            continue
        found[k] = path
    return found


# --- images --------------------------------------------------------------------------------


# --- the plan and the writer -----------------------------------------------------------------
@dataclass(frozen=True)
class PlannedItem:
    id: str
    category: str
    image: Path


#: the image of a planned item read with ``captions_only=True`` (no image was looked for)
NO_IMAGE = Path()


@dataclass
class ImportPlan:
    """What a loader found: items with image files, and caption entries naming them by id."""

    source: str
    category_names: tuple[str, ...]
    items: list[PlannedItem]
    entries: list[tuple[CaptionEntry, str, str]]
    """(entry, file, where) so later drops can name the entry's origin"""
    report: ImportReport
    provenance: dict[str, Any]
    galleries: dict[str, list[str]] = field(default_factory=dict)
    """item ids of each image split, keyed ``"{category}.{split}"``"""
    source_entries: dict[str, int] = field(default_factory=dict)
    """entries of each caption file as released (kept or not), keyed ``"{category}.{split}"``"""

    def keep_entries_within(self, present: set[str], reason: str) -> None:
        """Drop (and report under ``reason``) the entries naming an item not in ``present``."""
        kept = []
        for entry, file, where in self.entries:
            lost = [x for x in (entry.candidate, entry.target) if x is not None and x not in present]
            if lost:
                self.report.flag(reason, file, f"{where} ({lost[0]!r})")
            else:
                kept.append((entry, file, where))
        self.entries = kept


@dataclass(frozen=True)
class ImportResult:
    path: Path
    num_items: int
    num_entries: int
    num_captions: int
    report: ImportReport
    feature_source: str


def _keep_items(
    plan: ImportPlan, keep: Iterable[bool], reason: str, detail: Callable[[PlannedItem], str]
) -> None:
    kept = []
    for item, ok in zip(plan.items, keep, strict=True):
        if ok:
            kept.append(item)
        else:
            plan.report.flag(reason, item.image, f"item {item.id!r} ({detail(item)})")
    plan.items = kept


def _drop_orphan_entries(plan: ImportPlan) -> None:
    plan.keep_entries_within(
        {item.id for item in plan.items}, "caption entry names an item whose image was skipped"
    )


def write_import(
    plan: ImportPlan,
    out: str | os.PathLike,
    *,
    image_size: int = 64,
    features: str | os.PathLike | None = None,
    feature_ids: str | os.PathLike | None = None,
    extractor: FeatureExtractor | None = None,
    attributes: str | os.PathLike | None = None,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> ImportResult:
    """Decode, validate and write ``plan`` as a catalog directory ``out`` (atomically).

    Features: ``features`` (a precomputed file, aligned by id), else ``extractor`` run on the
    written catalog before it appears (e.g.
    :func:`fiq_gym.features.extract.import_extractor` ``("attribute-net")``), else none (the
    environments then rank by image thumbnails and say so).
    """
    if not MIN_IMPORT_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be from {MIN_IMPORT_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, got {image_size}"
        )
    report = plan.report
    out = Path(out)
    if plan.provenance.get("images", "") is None:
        raise DatasetError(
            "this plan was read with captions_only=True, without images; plan the release again without it "
            "(and with --images DIR if the images are not under its root) to import it"
        )
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    feature_matrix = None
    if features is not None:
        ids, matrix = load_feature_file(features, feature_ids)
        row_of = {x: i for i, x in enumerate(ids)}
        _keep_items(
            plan,
            [item.id in row_of for item in plan.items],
            "no row in the feature file",
            lambda i: str(features),
        )
        feature_matrix = (row_of, matrix)
    vocabulary = AttributeVocabulary(())
    label_map: dict[str, dict[str, set[str]]] = {}
    if attributes is not None:
        vocabulary, label_map = load_attribute_labels(attributes)

    workers = workers or min(4, os.cpu_count() or 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    reclaim_staging(out.parent, f".{out.name}.images-*.npy")  # what killed imports left
    with staging_file(out.parent / f".{out.name}.images-{os.getpid()}.npy") as staging:
        ok = _decode_all(plan, staging, image_size, workers, progress)
        _keep_items_with_rows(plan, ok)
        _drop_orphan_entries(plan)
        if len(plan.items) < 2:
            raise DatasetError(
                f"only {len(plan.items)} usable item(s) remain after validation, a catalog needs at least 2:\n"
                + report.summary()
            )
        staged = np.load(staging, mmap_mode="r")
        rows = np.flatnonzero(ok)
        ids = [item.id for item in plan.items]
        unlabelled = sum(1 for x in ids if x not in label_map)
        if attributes is not None and unlabelled:
            report.note(
                f"{unlabelled} of {len(ids)} items have no attribute labels (their label rows are empty)"
            )
        labels = label_matrix(vocabulary, label_map, ids)
        codes = np.array([plan.category_names.index(item.category) for item in plan.items], dtype=np.int16)
        present = set(ids)
        galleries = {k: tuple(x for x in v if x in present) for k, v in plan.galleries.items()}
        captions = HumanCaptions(
            plan.source, tuple(e for e, _, _ in plan.entries), galleries, dict(plan.source_entries)
        )
        provenance = {
            **plan.provenance,
            "source": plan.source,
            "name": out.name,
            "image_size": image_size,
            "items": len(ids),
            "caption_entries": len(captions),
        }
        with atomic_directory(out, overwrite=overwrite) as tmp:
            writer = CatalogWriter(tmp, len(ids), image_size, vocabulary)
            step = 1024
            for start in range(0, len(ids), step):
                block = np.asarray(staged[rows[start : start + step]])
                writer.write(
                    ids=np.array(ids[start : start + step]),
                    categories=codes[start : start + step],
                    labels=labels[start : start + step],
                    descriptions=[""] * len(block),
                    primary_rgb=primary_rgb(block),
                    images=block,
                )
            writer.close(category_names=plan.category_names, provenance=provenance)
            del staged
            feature_source = _attach_features(tmp, ids, feature_matrix, extractor, progress)
            captions.save(tmp)
            atomic_write_json(tmp / REPORT_FILE, report.to_json())
    return ImportResult(
        path=out,
        num_items=len(ids),
        num_entries=len(captions),
        num_captions=sum(len(e.captions) for e in captions.entries),
        report=report,
        feature_source=feature_source,
    )


def _keep_items_with_rows(plan: ImportPlan, ok: np.ndarray) -> None:
    plan.items = [item for item, good in zip(plan.items, ok.tolist(), strict=True) if good]


def _decode_all(plan: ImportPlan, staging: Path, size: int, workers: int, progress: bool) -> np.ndarray:
    """Decode every planned image into the staging file; returns which rows are readable
    (unreadable images are reported and their rows left black)."""
    n = len(plan.items)
    ok = np.zeros(n, dtype=bool)
    out = _AppendArray(staging, np.uint8, (n, size, size, 3))
    blank = np.zeros((1, size, size, 3), dtype=np.uint8)
    jobs = [(str(item.image), size) for item in plan.items]
    bar = tqdm(total=n, desc="decoding images", unit="img", disable=not progress)
    try:
        if workers > 1 and n > 64:
            # fiq-gym's own workers: they die with this process and never re-run __main__.
            with WorkerPool(workers) as pool:
                batches = [jobs[i : i + 32] for i in range(0, n, 32)]
                results: Iterable = itertools.chain.from_iterable(pool.map(decode_images, batches))
                _collect(plan, results, out, blank, ok, bar)
        else:
            _collect(plan, map(decode_image, jobs), out, blank, ok, bar)
    finally:
        bar.close()
    out.close()
    return ok


def _collect(
    plan: ImportPlan, results: Iterable, out: _AppendArray, blank: np.ndarray, ok: np.ndarray, bar: tqdm
) -> None:
    for k, (image, error) in enumerate(results):
        if image is None:
            item = plan.items[k]
            plan.report.flag("unreadable image", item.image, f"item {item.id!r} ({error})")
            out.append(blank)
        else:
            ok[k] = True
            out.append(image[None])
        bar.update()


def _attach_features(
    directory: Path,
    ids: list[str],
    given: tuple[dict[str, int], np.ndarray] | None,
    extractor: FeatureExtractor | None,
    progress: bool,
) -> str:
    if given is not None:
        row_of, matrix = given
        write_catalog_arrays(
            directory,
            {"features": matrix[[row_of[x] for x in ids]]},
            provenance={"features": {"encoder": "file", "feature_dim": int(matrix.shape[1])}},
        )
        return "file"
    if extractor is None:
        return "none (ranked by image thumbnails)"
    return extractor(directory, progress)
