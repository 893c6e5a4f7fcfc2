"""On-disk catalogs: a directory with ``manifest.json`` and one ``.npy`` file per array.

Layout (format version 1)::

    manifest.json                 format, version, counts, vocabulary, provenance, array index
    ids.npy                       (N,) unicode
    categories.npy                (N,) int16 codes into manifest["category_names"]
    labels.npy                    (N, A) uint8 multi-hot attribute labels
    descriptions_utf8.npy         (B,) uint8: all descriptions, UTF-8, concatenated
    description_offsets.npy       (N + 1,) int64 byte offsets into the blob
    images.npy                    (N, H, W, 3) uint8            optional
    features.npy                  (N, D) float32                optional
    attribute_scores.npy          (N, A) float32                optional
    primary_rgb.npy               (N, 3) uint8                  optional
    shades.npy                    (N,) float64                  lazy synthetic catalogs
    pattern_offsets.npy           (N, 2) int16                  lazy synthetic catalogs

A synthetic catalog built with ``--images lazy`` has no ``images.npy``; its manifest's
provenance says ``"images": "lazy"`` and ``images`` opens as
:class:`~fiq_gym.catalog.lazy_images.LazyImages`, rendering rows when they are read.

Opening memory-maps every array read-only, so a new process opens a large catalog in
milliseconds and vector-env workers share pages instead of copying. Directories are written
into a temporary sibling and renamed into place, so a reader never sees half a catalog.

Features and attribute scores can be added to (or replaced in, or removed from) an existing
directory with :func:`update_catalog_arrays`: new arrays go to fresh files named
``{name}-{token}.npy`` and appear in one atomic rewrite of ``manifest.json``, so a reader
sees either the old arrays or the new ones, never a mix. The manifest's ``file`` field says
which file holds each array.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fiq_gym.catalog.lazy_images import RENDER_ARRAYS, LazyImages
from fiq_gym.catalog.limits import MAX_IMAGE_SIZE, MIN_SYNTHETIC_IMAGE_SIZE
from fiq_gym.catalog.model import Catalog, StringColumn
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.errors import CatalogError
from fiq_gym.utils.atomic import atomic_directory, atomic_write_json, recover_directory
from fiq_gym.utils.jsonfile import read_json

log = logging.getLogger("fiq_gym")

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ArrayUpdate",
    "CatalogWriter",
    "open_catalog",
    "save_catalog",
    "update_catalog_arrays",
    "write_catalog_arrays",
]

FORMAT_NAME = "fiq-gym-catalog"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

_REQUIRED = ("ids", "categories", "labels", "descriptions_utf8", "description_offsets")
_OPTIONAL = ("images", "features", "attribute_scores", "primary_rgb")
_KNOWN = (*_REQUIRED, *_OPTIONAL, *RENDER_ARRAYS)
_REBUILD_HINT = "rebuild it (`fiq-gym catalog build --out DIR`) or re-import it from the original data"


def _array_entry(name: str, arr: np.ndarray) -> dict[str, Any]:
    return {
        "file": f"{name}.npy",
        "dtype": np.lib.format.dtype_to_descr(arr.dtype),
        "shape": list(arr.shape),
    }


def save_catalog(catalog: Catalog, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``catalog`` to directory ``path`` atomically and return the path."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(catalog.ids),
        "categories": np.asarray(catalog.categories),
        "labels": np.asarray(catalog.labels),
    }
    column = catalog.descriptions
    if not isinstance(column, StringColumn):  # pragma: no cover - Catalog always converts
        column = StringColumn.from_strings(list(column))
    arrays["descriptions_utf8"] = np.asarray(column.blob)
    arrays["description_offsets"] = np.asarray(column.offsets)
    provenance = dict(catalog.provenance)
    for name in _OPTIONAL:
        value = getattr(catalog, name)
        if isinstance(value, LazyImages):
            # A lazy catalog stays lazy: what renders the images, not the images.
            arrays.update(value.render_arrays())
            provenance["images"] = "lazy"
        elif value is not None:
            arrays[name] = value
    if not isinstance(catalog.images, LazyImages):
        provenance.pop("images", None)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        for name, arr in arrays.items():
            # Chunked copy keeps memory flat when the source is itself a memory map.
            out = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=arr.dtype, shape=arr.shape)
            step = max(1, (64 << 20) // max(1, arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))))
            for start in range(0, len(arr), step):
                out[start : start + step] = arr[start : start + step]
            out.flush()
            del out
        meta = {
            "num_items": len(catalog),
            "category_names": list(catalog.category_names),
            "vocabulary": catalog.vocabulary.to_json(),
            "provenance": provenance,
        }
        _write_manifest(tmp, meta, {name: _array_entry(name, arr) for name, arr in arrays.items()})
    return path


def _write_manifest(directory: Path, catalog_meta: Catalog | Mapping[str, Any], arrays: dict) -> None:
    if isinstance(catalog_meta, Catalog):
        meta = {
            "num_items": len(catalog_meta),
            "category_names": list(catalog_meta.category_names),
            "vocabulary": catalog_meta.vocabulary.to_json(),
            "provenance": dict(catalog_meta.provenance),
        }
    else:
        meta = dict(catalog_meta)
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta, "arrays": arrays}
    atomic_write_json(directory / MANIFEST, manifest)


class _AppendArray:
    """A ``.npy`` file of known final shape, filled by appending row blocks in order.

    Plain sequential writes rather than a writable memory map: dirty mapped pages count as
    the writer's resident memory, appended ones do not, so building a million-item
    catalog needs no more memory than one chunk.
    """

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self._file, header)
        self._rows = 0

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path.name}: block of shape {block.shape} does not fit {self.shape}")
        self._file.write(block.tobytes())
        self._rows += len(block)

    def close(self) -> dict[str, Any]:
        self._file.close()
        if self._rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: wrote {self._rows} rows, expected {self.shape[0]}")
        return {
            "file": self.path.name,
            "dtype": np.lib.format.dtype_to_descr(self.dtype),
            "shape": list(self.shape),
        }


class CatalogWriter:
    """Streams a catalog to disk chunk by chunk, for catalogs too large to hold in memory.

    Use through :func:`catalog_writer`; call :meth:`write` with consecutive row blocks.
    """

    def __init__(
        self,
        directory: Path,
        num_items: int,
        image_size: int | None,
        vocabulary: AttributeVocabulary,
        *,
        render_arrays: bool = False,
    ) -> None:
        """``image_size`` None: no images; ``render_arrays``: write the shades and pattern
        offsets a lazy synthetic catalog renders its images from."""
        self.directory = directory
        self.num_items = num_items
        self.vocabulary = vocabulary
        n, a = num_items, vocabulary.size
        self._arrays: dict[str, _AppendArray] = {}

        def alloc(name: str, dtype: Any, shape: tuple[int, ...]) -> None:
            self._arrays[name] = _AppendArray(directory / f"{name}.npy", dtype, shape)

        alloc("categories", np.int16, (n,))
        alloc("labels", np.uint8, (n, a))
        alloc("primary_rgb", np.uint8, (n, 3))
        if image_size is not None:
            alloc("images", np.uint8, (n, image_size, image_size, 3))
        if render_arrays:
            alloc("shades", np.float64, (n,))
            alloc("pattern_offsets", np.int16, (n, 2))
        self._ids: list[np.ndarray] = []
        self._descriptions: list[bytes] = []
        self._lengths: list[int] = []
        self._cursor = 0

    def write(
        self,
        *,
        ids: np.ndarray,
        categories: np.ndarray,
        labels: np.ndarray,
        descriptions: list[str],
        primary_rgb: np.ndarray,
        images: np.ndarray | None = None,
        shades: np.ndarray | None = None,
        pattern_offsets: np.ndarray | None = None,
    ) -> None:
        start, stop = self._cursor, self._cursor + len(ids)
        if stop > self.num_items:
            raise ValueError(f"writing rows {start}:{stop} past the declared {self.num_items} items")
        self._arrays["categories"].append(categories)
        self._arrays["labels"].append(labels)
        self._arrays["primary_rgb"].append(primary_rgb)
        if "images" in self._arrays:
            if images is None:
                raise ValueError("this catalog was declared with images; pass images= with every block")
            self._arrays["images"].append(images)
        if "shades" in self._arrays:
            if shades is None or pattern_offsets is None:
                raise ValueError("this catalog renders its images lazily; pass shades= and pattern_offsets=")
            self._arrays["shades"].append(shades)
            self._arrays["pattern_offsets"].append(pattern_offsets)
        self._ids.append(np.asarray(ids))
        encoded = [d.encode("utf-8") for d in descriptions]
        self._descriptions.extend(encoded)
        self._lengths.extend(len(b) for b in encoded)
        self._cursor = stop

    def close(self, *, category_names: tuple[str, ...], provenance: Mapping[str, Any]) -> None:
        if self._cursor != self.num_items:
            raise ValueError(f"catalog writer got {self._cursor} rows, expected {self.num_items}")
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype="<U1")
        np.save(self.directory / "ids.npy", ids)
        offsets = np.zeros(self.num_items + 1, dtype=np.int64)
        np.cumsum(self._lengths, out=offsets[1:])
        np.save(self.directory / "description_offsets.npy", offsets)
        np.save(
            self.directory / "descriptions_utf8.npy",
            np.frombuffer(b"".join(self._descriptions), dtype=np.uint8),
        )
        entries = {}
        for name, arr in self._arrays.items():
            entries[name] = arr.close()
        entries["ids"] = _array_entry("ids", ids)
        entries["description_offsets"] = _array_entry("description_offsets", offsets)
        entries["descriptions_utf8"] = {
            "file": "descriptions_utf8.npy",
            "dtype": "|u1",
            "shape": [int(offsets[-1])],
        }
        self._arrays.clear()
        _write_manifest(
            self.directory,
            {
                "num_items": self.num_items,
                "category_names": list(category_names),
                "vocabulary": self.vocabulary.to_json(),
                "provenance": dict(provenance),
            },
            entries,
        )


@contextmanager
def catalog_writer(
    path: str | os.PathLike,
    num_items: int,
    *,
    image_size: int | None,
    vocabulary: AttributeVocabulary,
    overwrite: bool = False,
) -> Iterator[CatalogWriter]:
    """Write a catalog in chunks into a temporary directory that replaces ``path`` on success."""
    with atomic_directory(path, overwrite=overwrite) as tmp:
        yield CatalogWriter(tmp, num_items, image_size, vocabulary)


def _permission_denied(file: Path, catalog: Path) -> CatalogError:
    # Not "corrupt": the files may be fine, and rebuilding would not help.
    return CatalogError(
        f"{file} cannot be read: permission denied; fix the catalog's permissions "
        f"(e.g. `chmod -R a+rX {catalog}`) or open it as a user who may read it"
    )


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    try:
        if not path.exists():
            # A process that died while replacing the catalog may have left it set aside.
            recover_directory(path)
        if not path.exists():
            raise CatalogError(
                f"catalog directory {path} does not exist; build one with `fiq-gym catalog build --out {path}`"
            )
        if not path.is_dir():
            raise CatalogError(f"{path} is a file, not a catalog directory")
        if not manifest_path.exists():
            raise CatalogError(
                f"{manifest_path} is missing: {path} is not a fiq-gym catalog directory; {_REBUILD_HINT}"
            )
        manifest = read_json(manifest_path, CatalogError, _REBUILD_HINT)
    except PermissionError as e:
        raise _permission_denied(Path(e.filename or path), path) from None
    except IsADirectoryError:
        raise CatalogError(f"{manifest_path} is a directory, not a manifest file; {_REBUILD_HINT}") from None
    _validate_manifest(manifest, manifest_path)
    return manifest


# --- the manifest's schema -------------------------------------------------------------------


class _Invalid(Exception):
    """A manifest field that breaks the schema: where it is (``arrays.ids.shape``; empty for
    the manifest as a whole), what is wrong with it, and the fix."""

    def __init__(self, where: str, problem: str, fix: str = _REBUILD_HINT) -> None:
        super().__init__(where, problem, fix)
        self.where, self.problem, self.fix = where, problem, fix


@dataclass(frozen=True)
class _Field:
    """What one manifest field must hold.

    ``kind`` is its JSON type (``int`` never accepts JSON's true and false); ``low`` and
    ``high`` bound an integer's value or a string's or list's length; ``each`` is what every
    member of a list, or every value of an object used as a map of names, must hold; ``keys``
    are the fields of an object used as a record (other keys are left alone, so provenance
    stays free-form); ``unique`` forbids repeated members of a list (a key name: repeats of
    that key among its objects); ``rule`` checks what types and ranges cannot say, after them.
    """

    kind: type
    low: int | None = None
    high: int | None = None
    each: _Field | None = None
    keys: Mapping[str, _Field] = field(default_factory=dict)
    unique: bool | str = False
    optional: bool = False
    rule: Callable[[Any, str], None] | None = None


_PLURALS = {int: "integers", str: "strings", bool: "true or false values", list: "lists", dict: "objects"}


def _show(value: Any) -> str:
    """A JSON value as the manifest spells it (``true``, ``null``, ``"300"``), cut short."""
    text = json.dumps(value)  # ASCII escapes: a lone surrogate still prints
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(spec: _Field) -> str:
    if spec.kind is int:
        if spec.low is not None and spec.high is not None:
            return f"an integer from {spec.low} to {spec.high}"
        return "a non-negative integer" if spec.low == 0 else "an integer"
    if spec.kind is list:
        return "a list" if spec.each is None else f"a list of {_PLURALS[spec.each.kind]}"
    return {str: "a string", bool: "true or false", dict: "an object"}[spec.kind]


def _check(value: Any, spec: _Field, where: str) -> None:
    """Raise :class:`_Invalid` for the first part of ``value`` that ``spec`` refuses."""

    def inner(key: str | int) -> str:
        if isinstance(key, int):
            return f"{where}[{key}]"
        return f"{where}.{key}" if where else key

    # bool is an int in Python; a JSON true where a count belongs is a mistake, not a 1.
    if not isinstance(value, spec.kind) or (isinstance(value, bool) and spec.kind is not bool):
        raise _Invalid(where, f"must be {_expected(spec)}, got {_show(value)}")
    if isinstance(value, int) and not (
        (spec.low is None or value >= spec.low) and (spec.high is None or value <= spec.high)
    ):
        raise _Invalid(where, f"must be {_expected(spec)}, got {value}")
    if isinstance(value, str | list):
        if spec.low is not None and len(value) < spec.low:
            raise _Invalid(
                where, "must not be empty" if spec.low == 1 else f"needs {spec.low} entries or more"
            )
        if spec.high is not None and len(value) > spec.high:
            raise _Invalid(where, f"has {len(value)} entries; at most {spec.high} are allowed")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON can spell a lone surrogate (\ud800), UTF-8 cannot
            raise _Invalid(where, f"is not valid Unicode text: {_show(value)}") from None
    if isinstance(value, list):
        for k, member in enumerate(value):
            if spec.each is not None:
                _check(member, spec.each, inner(k))
        if spec.unique:
            seen: set[Any] = set()
            for member in value:
                name = member[spec.unique] if isinstance(spec.unique, str) else member
                if name in seen:
                    what = (
                        f"two entries named {_show(name)}"
                        if isinstance(spec.unique, str)
                        else f"{_show(name)} twice"
                    )
                    raise _Invalid(where, f"lists {what}")
                seen.add(name)
    if isinstance(value, dict):
        for key, sub in spec.keys.items():
            if key in value:
                _check(value[key], sub, inner(key))
            elif not sub.optional:
                raise _Invalid(where, f"lacks the required key {key!r}")
        if spec.each is not None:
            for key, member in value.items():
                _check(member, spec.each, inner(key))
    if spec.rule is not None:
        spec.rule(value, where)


def _supported_version(version: int, where: str) -> None:
    if version != FORMAT_VERSION:
        raise _Invalid(
            where,
            f"{version} is not supported: this fiq-gym reads version {FORMAT_VERSION}",
            f"{_REBUILD_HINT} with this version of fiq-gym",
        )


def _known_vocabulary(data: list, where: str) -> None:
    # What the types above cannot say (':' in a type name, which would break column names):
    # ask the class itself, so the manifest accepts exactly what it can build.
    try:
        AttributeVocabulary.from_json(data)
    except ValueError as e:
        raise _Invalid(where, f"is not a valid attribute vocabulary ({e})") from None


def _numpy_dtype(descr: str, where: str) -> None:
    try:
        np.dtype(descr)  # what np.lib.format.descr_to_dtype makes of a string
    except (TypeError, ValueError):
        raise _Invalid(where, f'must be a numpy dtype such as "<f4", got {_show(descr)}') from None


# Dimensions and element types of the arrays fiq-gym reads; a dtype code is a numpy kind, then
# the item size when it matters. The wrong type would load without complaint and read wrong:
# an int64 description blob decodes eight bytes per character, integer shades render other
# colours. Byte order is left to the catalog's own checks, as before.
_LAYOUT: dict[str, tuple[int, tuple[str, ...]]] = {
    "ids": (1, ("U",)),
    "categories": (1, ("i2",)),
    "labels": (2, ("u1",)),
    "descriptions_utf8": (1, ("u1",)),
    "description_offsets": (1, ("i", "u")),
    "images": (4, ("u1",)),
    "features": (2, ("f4",)),
    "attribute_scores": (2, ("f4",)),
    "primary_rgb": (2, ("u1",)),
    "shades": (1, ("f8",)),
    "pattern_offsets": (2, ("i", "u")),
}
_KIND_NAMES = {"U": "a unicode string type", "i": "a signed integer type", "u": "an unsigned integer type"}


def _known_arrays(entries: dict[str, Any], where: str) -> None:
    for name in _REQUIRED:
        if name not in entries:
            raise _Invalid("", f"lists no {name!r} array")
    for name, (ndim, codes) in _LAYOUT.items():
        entry = entries.get(name)
        if entry is None:
            continue
        if len(entry["shape"]) != ndim:
            raise _Invalid(
                f"{where}.{name}.shape",
                f"must have {ndim} dimension{'s' * (ndim > 1)}, got {_show(entry['shape'])}",
            )
        dtype = np.dtype(entry["dtype"])
        if not any(dtype.kind == c[0] and (len(c) == 1 or dtype.itemsize == int(c[1:])) for c in codes):
            wanted = " or ".join(str(np.dtype(c)) if len(c) > 1 else _KIND_NAMES[c] for c in codes)
            raise _Invalid(f"{where}.{name}.dtype", f"must be {wanted}, got {_show(entry['dtype'])}")


# The provenance is free-form; what fiq-gym reads back from it must have the right type.
_LAZY_PROVENANCE = _Field(
    dict, keys={"image_size": _Field(int, low=MIN_SYNTHETIC_IMAGE_SIZE, high=MAX_IMAGE_SIZE)}
)


def _read_provenance(provenance: dict[str, Any], where: str) -> None:
    if provenance.get("images") == "lazy":  # the images are rendered at this size
        _check(provenance, _LAZY_PROVENANCE, where)


_ARRAY_ENTRY = _Field(
    dict,
    keys={
        "file": _Field(str, low=1, optional=True),  # left out: "{name}.npy"
        "dtype": _Field(str, low=1, rule=_numpy_dtype),
        "shape": _Field(list, high=32, each=_Field(int, low=0)),
    },
)

# The manifest, field by field, in the order checked: the version first, so that a manifest
# of another version is reported as that rather than as whatever its schema changed.
_MANIFEST_SCHEMA = _Field(
    dict,
    keys={
        "format_version": _Field(int, rule=_supported_version),
        "num_items": _Field(int, low=0),
        # Categories are int16 codes into this list.
        "category_names": _Field(list, high=1 << 15, each=_Field(str), unique=True),
        "vocabulary": _Field(
            list,
            each=_Field(
                dict,
                keys={
                    "name": _Field(str, low=1),
                    "values": _Field(list, low=1, each=_Field(str), unique=True),
                    "ordered": _Field(bool, optional=True),
                },
            ),
            unique="name",
            rule=_known_vocabulary,
        ),
        "provenance": _Field(dict, optional=True, rule=_read_provenance),
        "arrays": _Field(dict, each=_ARRAY_ENTRY, rule=_known_arrays),
    },
)


def _validate_manifest(manifest: Any, manifest_path: Path) -> None:
    """Raise :class:`CatalogError` naming the file, the field and the fix unless ``manifest``
    (parsed JSON) is a catalog manifest this fiq-gym reads: every field of the type and range
    :data:`_MANIFEST_SCHEMA` gives, and every known array of its dimensions and element type.
    Only the manifest is read; the arrays are checked against it when they are opened."""
    if not isinstance(manifest, dict):
        raise CatalogError(
            f"{manifest_path} holds {_show(manifest)}, not a JSON object: it is not a fiq-gym catalog "
            f"manifest; {_REBUILD_HINT}"
        )
    if manifest.get("format") != FORMAT_NAME:
        raise CatalogError(
            f"{manifest_path} is not a fiq-gym catalog manifest (expected format {FORMAT_NAME!r})"
        )
    try:
        _check(manifest, _MANIFEST_SCHEMA, "")
    except _Invalid as e:
        raise CatalogError(
            f"{manifest_path}{': ' if e.where else ''}{e.where} {e.problem}; {e.fix}"
        ) from None


def _load_array(path: Path, name: str, entry: Mapping[str, Any], mmap: bool) -> np.ndarray:
    listed = str(entry.get("file", f"{name}.npy"))
    # Arrays live in the catalog directory itself: a manifest must not make us map (and show
    # an agent) some other file on the machine.
    if Path(listed).name != listed or listed in ("", ".", ".."):
        raise CatalogError(
            f"{path / MANIFEST}: array {name!r} names the file {listed!r}, which is not a file inside "
            f"the catalog directory; {_REBUILD_HINT}"
        )
    file = path / listed
    if not file.exists():
        raise CatalogError(f"{file} is missing (the manifest lists array {name!r}); {_REBUILD_HINT}")
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except PermissionError:
        raise _permission_denied(file, path) from None
    except (ValueError, OSError, EOFError) as e:
        raise CatalogError(
            f"{file} cannot be read as a .npy array ({e}); it is truncated or corrupt; {_REBUILD_HINT}"
        ) from None
    want_shape = tuple(int(x) for x in entry.get("shape", ()))
    if arr.shape != want_shape:
        raise CatalogError(
            f"{file} has shape {arr.shape}, but the manifest says {want_shape}; {_REBUILD_HINT}"
        )
    want_dtype = entry.get("dtype")
    if want_dtype is not None and arr.dtype != np.lib.format.descr_to_dtype(want_dtype):
        raise CatalogError(
            f"{file} has dtype {arr.dtype}, but the manifest says {want_dtype}; {_REBUILD_HINT}"
        )
    return arr


def open_catalog(path: str | os.PathLike, *, mmap: bool = True) -> Catalog:
    """Open a catalog directory; arrays are read-only memory maps unless ``mmap=False``.

    Raises :class:`~fiq_gym.errors.CatalogError` naming the file and the problem when the
    directory is missing, incomplete, corrupt, or of another format version.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    entries = manifest["arrays"]
    arrays = {name: _load_array(path, name, entry, mmap) for name, entry in entries.items() if name in _KNOWN}
    n = int(manifest["num_items"])
    if len(arrays["ids"]) != n:
        raise CatalogError(
            f"{path / 'ids.npy'} holds {len(arrays['ids'])} ids, but the manifest says {n} items; {_REBUILD_HINT}"
        )
    vocabulary = AttributeVocabulary.from_json(manifest["vocabulary"])  # validated with the manifest
    offsets = arrays["description_offsets"]
    if len(offsets) != n + 1 or (n and int(offsets[-1]) != len(arrays["descriptions_utf8"])):
        raise CatalogError(
            f"{path / 'description_offsets.npy'} does not match the description blob; {_REBUILD_HINT}"
        )
    _check_values(path, entries, arrays)
    provenance = {**manifest.get("provenance", {}), "path": str(path)}
    images: np.ndarray | LazyImages | None = arrays.get("images")
    try:
        if images is None and provenance.get("images") == "lazy":
            images = LazyImages.from_arrays(arrays, provenance, vocabulary, tuple(manifest["category_names"]))
        catalog = Catalog(
            ids=arrays["ids"],
            categories=arrays["categories"],
            category_names=tuple(manifest["category_names"]),
            vocabulary=vocabulary,
            labels=arrays["labels"],
            descriptions=StringColumn(arrays["descriptions_utf8"], offsets),
            images=images,
            features=arrays.get("features"),
            attribute_scores=arrays.get("attribute_scores"),
            primary_rgb=arrays.get("primary_rgb"),
            provenance=provenance,
        )
    except CatalogError as e:
        raise CatalogError(f"{path}: {e}; {_REBUILD_HINT}") from None
    if mmap:
        catalog.reopen = (open_catalog, (str(path),))
    return catalog


def _blocks(arr: np.ndarray, rows: int = 1 << 16) -> Iterator[np.ndarray]:
    # Row blocks keep the checks' temporaries small for memory-mapped million-item arrays.
    for start in range(0, len(arr), rows):
        yield np.asarray(arr[start : start + rows])


def _check_values(path: Path, entries: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Values that would silently give wrong results (or fail long after opening) rather than
    fail now: descriptions that overlap or run backwards or are not UTF-8 text, labels other
    than 0/1 (e.g. a category code 255 written into the multi-hot matrix), features or scores
    that are not finite numbers, and shades of lazy images outside [-1, 1]."""

    def file(name: str) -> Path:
        return path / str(entries[name].get("file", f"{name}.npy"))

    offsets = arrays["description_offsets"]
    if len(offsets) and (int(offsets[0]) != 0 or any((np.diff(b) < 0).any() for b in _blocks(offsets))):
        raise CatalogError(
            f"{file('description_offsets')} is not an increasing list of offsets starting at 0; {_REBUILD_HINT}"
        )
    _check_text(arrays["descriptions_utf8"], offsets, file("descriptions_utf8"), file("description_offsets"))
    for block in _blocks(arrays["labels"]):
        if block.size and block.max() > 1:
            raise CatalogError(
                f"{file('labels')} holds the value {int(block.max())}, but attribute labels are 0 or 1 "
                f"(multi-hot over the vocabulary); {_REBUILD_HINT}"
            )
    for name in ("features", "attribute_scores"):
        arr = arrays.get(name)
        if arr is None:
            continue
        for block in _blocks(arr):
            if not np.isfinite(block).all():
                raise CatalogError(
                    f"{file(name)} holds NaN or infinite values; recompute them with `fiq-gym features "
                    f"extract {path}`"
                )
    if "shades" in arrays:
        for block in _blocks(arrays["shades"]):
            # Rendering clips a shade beyond [-1, 1] to another colour and fails on NaN (which
            # fails both comparisons).
            outside = ~((block >= -1.0) & (block <= 1.0))
            if outside.any():
                raise CatalogError(
                    f"{file('shades')} holds the shade {block[outside][0]}, but shades lie in [-1, 1]; "
                    f"{_REBUILD_HINT}"
                )


def _check_text(blob: np.ndarray, offsets: np.ndarray, blob_file: Path, offsets_file: Path) -> None:
    """Descriptions are decoded one at a time when read, so a blob that is not UTF-8, or an
    offset inside a character, would fail in the middle of an episode, not here. An ASCII
    block (every synthetic catalog) needs one vectorised comparison; others are decoded 16 MB
    at a time, carrying a character cut by the block's end into the next."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    ascii_only = True
    start = 0
    for block in _blocks(blob, 1 << 24):
        pending = decoder.getstate()[0]
        if pending or block.max(initial=0) >= 0x80:
            ascii_only = False
            try:
                decoder.decode(block.data)
            except UnicodeDecodeError as e:
                raise CatalogError(
                    f"{blob_file} is not UTF-8 text (byte {start - len(pending) + e.start}: {e.reason}); "
                    f"{_REBUILD_HINT}"
                ) from None
        start += len(block)
    if decoder.getstate()[0]:
        raise CatalogError(f"{blob_file} ends inside a UTF-8 character; {_REBUILD_HINT}")
    if ascii_only:  # every byte starts a character
        return
    for block in _blocks(offsets):
        starts = block[block < len(blob)]
        continuation = (np.asarray(blob[starts]) & 0xC0) == 0x80
        if continuation.any():
            raise CatalogError(
                f"{offsets_file} cuts a description inside a UTF-8 character (at byte "
                f"{int(starts[continuation][0])} of {blob_file.name}); {_REBUILD_HINT}"
            )


# --- in-place updates of derived arrays ----------------------------------------------------

# Arrays computed from the images that may be added, replaced or removed after a catalog is
# written: dtype and trailing shape (None: any positive size; "A": the vocabulary size).
_UPDATABLE: dict[str, tuple[np.dtype, tuple[int | str | None, ...]]] = {
    "features": (np.dtype(np.float32), (None,)),
    "attribute_scores": (np.dtype(np.float32), ("A",)),
}
LOCK_FILE = ".update.lock"


class ArrayUpdate:
    """The arrays being written by :func:`update_catalog_arrays`.

    Call :meth:`append` with consecutive row blocks of each declared array; each must have
    received exactly ``num_items`` rows when the ``with`` block ends. Entries added to
    :attr:`provenance` are merged into the manifest's provenance (None removes a key).
    """

    def __init__(self, num_items: int, files: dict[str, _AppendArray], provenance: Mapping[str, Any]):
        self.num_items = num_items
        self.provenance: dict[str, Any] = dict(provenance)
        self._files = files

    def append(self, name: str, block: np.ndarray) -> None:
        target = self._files.get(name)
        if target is None:
            raise KeyError(
                f"array {name!r} was not declared for this update; declared: {sorted(self._files)}"
            )
        if target._rows + len(block) > target.shape[0]:
            raise ValueError(
                f"{name}: appending {len(block)} rows after {target._rows} overflows the {target.shape[0]} items"
            )
        target.append(block)


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_update_shape(name: str, shape: tuple[int, ...], num_items: int, num_attributes: int) -> None:
    _, trailing = _UPDATABLE[name]
    want = (num_items, *(num_attributes if t == "A" else t for t in trailing))
    fits = len(shape) == len(want) and all(
        (got >= 1 if w is None else got == w) for got, w in zip(shape, want, strict=True)
    )
    if not fits:
        want_text = "(" + ", ".join("D" if w is None else str(w) for w in want) + ")"
        raise CatalogError(
            f"{name} for this catalog of {num_items} items must have shape {want_text}, got {tuple(shape)}"
        )


@contextmanager
def update_catalog_arrays(
    path: str | os.PathLike,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    remove: Iterable[str] = (),
    provenance: Mapping[str, Any] | None = None,
) -> Iterator[ArrayUpdate]:
    """Stream new ``features`` / ``attribute_scores`` into an existing catalog directory.

    ``shapes`` declares the arrays to write, e.g. ``{"features": (N, 128)}``; rows arrive block
    by block through the yielded :class:`ArrayUpdate`, so memory stays flat however large the
    catalog. ``remove`` names arrays to drop. Used by feature extraction, which computes
    these arrays long after the catalog was built.

    Readers see no change until the ``with`` block ends without error: then the new files are
    synced and ``manifest.json`` is replaced in one rename; the replaced files are deleted
    afterwards (processes that mapped them keep their pages). On error every new file is
    removed and the catalog is untouched. Concurrent updates of one directory take turns on
    a lock file; the last to finish wins.
    """
    path = Path(path)
    _read_manifest(path)  # a clear error for a missing or foreign directory before anything else
    remove = tuple(remove)
    for name in (*shapes, *remove):
        if name not in _UPDATABLE:
            raise ValueError(f"only {sorted(_UPDATABLE)} can be updated in place, not {name!r}")
    if set(shapes) & set(remove):
        raise ValueError(f"arrays {sorted(set(shapes) & set(remove))} are both written and removed")
    try:
        lock = open(path / LOCK_FILE, "a")  # noqa: SIM115 - closed by the with block below
    except OSError as e:
        raise CatalogError(
            f"cannot write into the catalog directory {path} ({e.strerror}); features and scores are "
            "stored inside the catalog: copy it somewhere writable (cp -r) or fix its permissions"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        manifest = _read_manifest(path)  # re-read under the lock: another update may have landed
        _reclaim_dead_updates(path, manifest)
        num_items = int(manifest["num_items"])
        num_attributes = AttributeVocabulary.from_json(manifest["vocabulary"]).size  # validated on reading
        token = uuid.uuid4().hex[:8]
        files: dict[str, _AppendArray] = {}
        created: list[Path] = []
        try:
            for name, shape in shapes.items():
                shape = tuple(int(x) for x in shape)
                _check_update_shape(name, shape, num_items, num_attributes)
                tmp = path / f".{name}-{token}.npy.tmp-update"
                created.append(tmp)
                files[name] = _AppendArray(tmp, _UPDATABLE[name][0], shape)
            update = ArrayUpdate(num_items, files, provenance or {})
            yield update
            entries = {name: f.close() for name, f in files.items()}
            for name, f in files.items():
                final = path / f"{name}-{token}.npy"
                _fsync(f.path)
                os.replace(f.path, final)
                created.append(final)
                entries[name]["file"] = final.name
            arrays = dict(manifest["arrays"])
            replaced = {str(arrays[n].get("file", f"{n}.npy")) for n in (*shapes, *remove) if n in arrays}
            arrays.update(entries)
            for name in remove:
                arrays.pop(name, None)
            merged = {**manifest.get("provenance", {}), **update.provenance}
            manifest = {
                **manifest,
                "arrays": arrays,
                "provenance": {k: v for k, v in merged.items() if v is not None},
            }
            atomic_write_json(path / MANIFEST, manifest)
        except BaseException:
            for f in files.values():
                f._file.close()
            for file in created:
                file.unlink(missing_ok=True)
            raise
        in_use = {str(entry.get("file", f"{name}.npy")) for name, entry in arrays.items()}
        for stale in replaced - in_use:
            (path / stale).unlink(missing_ok=True)


def _reclaim_dead_updates(path: Path, manifest: Mapping[str, Any]) -> None:
    """Remove what updates killed before they finished left in the catalog (called under the
    update lock, so no update is running): their temporary files, and array files they had
    put in place but the manifest never came to name."""
    named = {
        str(entry.get("file", f"{name}.npy")) for name, entry in dict(manifest.get("arrays", {})).items()
    }
    leftovers = list(path.glob(".*.npy.tmp-update"))
    for name in _UPDATABLE:
        leftovers += [p for p in path.glob(f"{name}-*.npy") if p.name not in named]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
        log.warning("removed %s, left by a catalog update that did not finish", leftover)


def write_catalog_arrays(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray | None],
    *,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Add or replace whole ``features`` / ``attribute_scores`` arrays of a catalog directory
    (a value of None removes that array), atomically; see :func:`update_catalog_arrays`."""
    shapes = {name: tuple(np.shape(arr)) for name, arr in arrays.items() if arr is not None}
    remove = [name for name, arr in arrays.items() if arr is None]
    with update_catalog_arrays(path, shapes, remove=remove, provenance=provenance) as update:
        for name, arr in arrays.items():
            if arr is None:
                continue
            step = max(1, (64 << 20) // max(1, 4 * int(np.prod(np.shape(arr)[1:], dtype=np.int64))))
            for start in range(0, len(arr), step):
                update.append(name, np.asarray(arr[start : start + step]))
