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

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fiq_gym._atomic import atomic_directory, atomic_write_json
from fiq_gym.catalog.captions import CaptionEntry, HumanCaptions
from fiq_gym.catalog.storage import CatalogWriter, _AppendArray, open_catalog, write_catalog_arrays
from fiq_gym.catalog.vocabulary import AttributeType, AttributeVocabulary
from fiq_gym.errors import DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "REPORT_FILE",
    "ImportPlan",
    "ImportReport",
    "ImportResult",
    "PlannedItem",
    "index_images",
    "load_attribute_labels",
    "load_feature_file",
    "load_image",
    "read_json_list",
    "write_import",
]

REPORT_FILE = "import_report.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
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

    def note(self, text: str) -> None:
        """Something worth telling that is not a problem (e.g. items without labels)."""
        self.notes.append(text)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            lines = ["no problems found"]
        else:
            lines = [f"skipped {self.total} entr{'y' if self.total == 1 else 'ies'}:"]
            for reason, count in self.counts.most_common():
                lines.append(f"  {count:>6}  {reason} (e.g. {self.examples[reason][0]})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "skipped": dict(self.counts.most_common()),
            "examples": self.examples,
            "notes": self.notes,
        }


# --- reading release files -------------------------------------------------------------------
def read_json_list(file: Path, what: str) -> list[Any]:
    """A release file that must hold a JSON list, with an error naming the file otherwise.

    A missing, unparsable or non-list file is an error in any mode: without it there is
    nothing to import.
    """
    if not file.is_file():
        raise DatasetError(f"{file} does not exist: expected {what}; check the dataset root and layout")
    try:
        with open(file, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "restore it from the dataset release"
        ) from None
    except UnicodeDecodeError:
        raise DatasetError(f"{file} is not UTF-8 JSON; restore it from the dataset release") from None
    if not isinstance(data, list):
        raise DatasetError(f"{file} holds a JSON {type(data).__name__}, expected a list ({what})")
    return data


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
def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """A photo as a (size, size, 3) uint8 array: padded to a square with white (product
    photos sit on white), then resized. Raises ``OSError``/``ValueError`` if unreadable."""
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size * 2, size * 2))  # JPEGs decode at a reduced scale: much faster
        rgb = img.convert("RGB")
    w, h = rgb.size
    if w < 1 or h < 1:
        raise ValueError("empty image")
    side = max(w, h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - w) // 2, (side - h) // 2))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _decode(args: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    path, size = args
    try:
        return load_image(path, size), ""
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


def _primary_rgb(images: np.ndarray) -> np.ndarray:
    """(B, 3) mean colour of each image's non-background (not near-white) pixels."""
    flat = images.reshape(len(images), -1, 3).astype(np.float32)
    garment = (flat < 235).any(axis=2)
    counts = garment.sum(axis=1, keepdims=True)
    mean = np.where(
        counts > 0, (flat * garment[..., None]).sum(axis=1) / np.maximum(counts, 1), flat.mean(axis=1)
    )
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


# --- features and labels ---------------------------------------------------------------------
def _read_id_list(file: Path) -> list[str]:
    if not file.is_file():
        raise DatasetError(f"feature id list {file} does not exist")
    if file.suffix.lower() == ".json":
        ids = read_json_list(file, "a JSON list of item ids, one per feature row")
    else:
        ids = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(x) for x in ids]


def load_feature_file(
    file: str | os.PathLike, ids_file: str | os.PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """Precomputed features: ``(ids, matrix)`` with ``matrix`` (N, D) float32.

    Accepted: a ``.npy`` (N, D) array with ``ids_file`` (a JSON list or a text file, one id
    per line, in row order); a ``.pt`` holding a tensor (with ``ids_file``), a dict
    ``{"ids": [...], "features": tensor}`` or a dict ``{id: 1-D tensor}``.
    """
    file = Path(file)
    if not file.is_file():
        raise DatasetError(f"feature file {file} does not exist")
    ids: list[str] | None = _read_id_list(Path(ids_file)) if ids_file is not None else None
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            matrix = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{file} cannot be read as a .npy array ({e})") from None
    elif suffix in (".pt", ".pth"):
        import torch

        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DatasetError(f"{file} cannot be read with torch.load ({type(e).__name__}: {e})") from None
        if isinstance(data, dict) and "features" in data:
            if ids is None:
                key = next((k for k in ("ids", "asins", "names") if k in data), None)
                if key is None:
                    raise DatasetError(
                        f"{file} has 'features' but no 'ids' list; add one or pass --feature-ids"
                    )
                ids = [str(x) for x in data[key]]
            matrix = data["features"]
        elif isinstance(data, dict):
            ids = [str(k) for k in data]
            matrix = (
                torch.stack([torch.as_tensor(v).reshape(-1) for v in data.values()])
                if data
                else torch.zeros(0, 0)
            )
        else:
            matrix = data
        matrix = matrix.detach().float().numpy() if hasattr(matrix, "detach") else np.asarray(matrix)
    else:
        raise DatasetError(f"feature file {file} must be a .npy or a .pt file, got {suffix or 'no suffix'}")
    if ids is None:
        raise DatasetError(
            f"{file} has no item ids; pass --feature-ids FILE (a JSON list or one id per line, in row order)"
        )
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        raise DatasetError(f"{file} must hold a 2-D numeric (N, D) matrix, got {matrix.dtype} {matrix.shape}")
    if len(ids) != len(matrix):
        raise DatasetError(
            f"{file} has {len(matrix)} feature rows but {len(ids)} ids; they must align row by row"
        )
    if len(set(ids)) != len(ids):
        dup = next(x for x, c in Counter(ids).items() if c > 1)
        raise DatasetError(f"{file}: id {dup!r} has more than one feature row")
    matrix = matrix.astype(np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{file}: feature row {row} (id {ids[row]!r}) is not finite")
    return ids, matrix


def load_attribute_labels(
    file: str | os.PathLike,
) -> tuple[AttributeVocabulary, dict[str, dict[str, set[str]]]]:
    """Optional attribute labels: a JSON object ``{id: {type: value | [values]}}`` or
    ``{id: [values]}`` (one multi-label type ``"attribute"``). Types are sorted by name and
    their values alphabetically."""
    file = Path(file)
    if not file.is_file():
        raise DatasetError(f"attribute label file {file} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{file} must hold a JSON object {{id: labels}}, got a {type(data).__name__}")
    labels: dict[str, dict[str, set[str]]] = {}
    for item, value in data.items():
        if isinstance(value, list):
            value = {"attribute": value}
        if not isinstance(value, dict):
            raise DatasetError(
                f"{file}: labels of {item!r} must be a list or an object of types, got {value!r}"
            )
        per_type: dict[str, set[str]] = {}
        for type_name, values in value.items():
            values = [values] if isinstance(values, str) else values
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise DatasetError(
                    f"{file}: {item!r} type {type_name!r} must be a string or a list of strings"
                )
            if values:
                per_type[str(type_name)] = {v.strip() for v in values if v.strip()}
        labels[str(item)] = per_type
    types: dict[str, set[str]] = {}
    for per_type in labels.values():
        for t, values in per_type.items():
            types.setdefault(t.replace(":", "_") or "attribute", set()).update(values)
    vocabulary = AttributeVocabulary(
        tuple(AttributeType(t, tuple(sorted(v))) for t, v in sorted(types.items()) if v)
    )
    return vocabulary, labels


def _label_matrix(
    vocabulary: AttributeVocabulary, labels: dict[str, dict[str, set[str]]], ids: Sequence[str]
) -> np.ndarray:
    matrix = np.zeros((len(ids), vocabulary.size), dtype=np.uint8)
    for row, item in enumerate(ids):
        for type_name, values in labels.get(item, {}).items():
            for value in values:
                matrix[row, vocabulary.column(type_name.replace(":", "_") or "attribute", value)] = 1
    return matrix


# --- the plan and the writer -----------------------------------------------------------------
@dataclass(frozen=True)
class PlannedItem:
    id: str
    category: str
    image: Path


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
    present = {item.id for item in plan.items}
    kept = []
    for entry, file, where in plan.entries:
        lost = [x for x in (entry.candidate, entry.target) if x is not None and x not in present]
        if lost:
            plan.report.flag(
                "caption entry names an item whose image was skipped", file, f"{where} ({lost[0]!r})"
            )
        else:
            kept.append((entry, file, where))
    plan.entries = kept


def write_import(
    plan: ImportPlan,
    out: str | os.PathLike,
    *,
    image_size: int = 64,
    features: str | os.PathLike | None = None,
    feature_ids: str | os.PathLike | None = None,
    encoder: str | None = "attribute-net",
    attributes: str | os.PathLike | None = None,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> ImportResult:
    """Decode, validate and write ``plan`` as a catalog directory ``out`` (atomically).

    Features: ``features`` (a precomputed file, aligned by id), else ``encoder`` run on the
    stored images (``"attribute-net"``: the network shipped with fiq-gym, or
    ``"attribute-net:DIR"`` / ``"hf:DIR"``), else none (``encoder=None``: the environments
    then rank by image thumbnails).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    report = plan.report
    out = Path(out)
    if (
        features is None
        and encoder not in (None, "none", "attribute-net")
        and not encoder.startswith(("hf:", "attribute-net:"))
    ):
        # Checked before hours of decoding, not after.
        raise ValueError(
            f"--encoder must be attribute-net, attribute-net:DIR, hf:DIR or none, got {encoder!r}"
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
    vocabulary, label_map = AttributeVocabulary(()), {}
    if attributes is not None:
        vocabulary, label_map = load_attribute_labels(attributes)

    workers = workers or min(4, os.cpu_count() or 1)
    staging = out.parent / f".{out.name}.images-{os.getpid()}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
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
        labels = _label_matrix(vocabulary, label_map, ids)
        codes = np.array([plan.category_names.index(item.category) for item in plan.items], dtype=np.int16)
        present = set(ids)
        galleries = {k: tuple(x for x in v if x in present) for k, v in plan.galleries.items()}
        captions = HumanCaptions(plan.source, tuple(e for e, _, _ in plan.entries), galleries)
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
                    primary_rgb=_primary_rgb(block),
                    images=block,
                )
            writer.close(category_names=plan.category_names, provenance=provenance)
            del staged
            feature_source = _attach_features(tmp, ids, feature_matrix, encoder, progress)
            captions.save(tmp)
            atomic_write_json(tmp / REPORT_FILE, report.to_json())
    finally:
        staging.unlink(missing_ok=True)
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
            with ProcessPoolExecutor(workers) as pool:
                results: Iterable = pool.map(_decode, jobs, chunksize=32)
                _collect(plan, results, out, blank, ok, bar)
        else:
            _collect(plan, map(_decode, jobs), out, blank, ok, bar)
    finally:
        bar.close()
    out.close()
    return ok


def _collect(
    plan: ImportPlan, results: Iterable, out: _AppendArray, blank: np.ndarray, ok: np.ndarray, bar
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
    encoder: str | None,
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
    if encoder is None or encoder == "none":
        return "none (ranked by image thumbnails)"
    from fiq_gym.features.extract import extract_features

    if encoder.startswith("hf:"):
        extract_features(directory, encoder=encoder, progress=progress)
        return encoder
    if encoder == "attribute-net" or encoder.startswith("attribute-net:"):
        checkpoint = encoder.partition(":")[2] or None
        extract_features(directory, checkpoint=checkpoint, features_only="auto", progress=progress)
        return encoder
    raise ValueError(f"--encoder must be attribute-net, attribute-net:DIR, hf:DIR or none, got {encoder!r}")


def open_import(path: str | os.PathLike):
    """Open an imported catalog and its human captions: ``(catalog, HumanCaptions)``."""
    catalog = open_catalog(path)
    return catalog, HumanCaptions.load(path)
