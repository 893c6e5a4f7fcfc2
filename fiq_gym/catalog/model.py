"""The :class:`Catalog`: N garments with ids, categories, attributes, descriptions, images and
features, kept aligned row by row.

Large arrays may be read-only memory maps (see :mod:`fiq_gym.catalog.storage`); nothing here
copies them unless a subset asks for scattered rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, overload

import numpy as np

from fiq_gym.catalog.lazy_images import LazyImages
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.errors import CatalogError

__all__ = ["FEATURES_TOLERANCE", "Catalog", "Item", "StringColumn", "sketch_differs", "sketch_features"]


class StringColumn(Sequence[str]):
    """A read-only column of strings stored as one UTF-8 blob plus N+1 offsets.

    Both arrays may be memory maps, so a million descriptions cost nothing until read.
    """

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self._blob = blob
        self._offsets = offsets

    @classmethod
    def from_strings(cls, strings: Sequence[str]) -> StringColumn:
        encoded = [s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(blob, offsets)

    @property
    def blob(self) -> np.ndarray:
        return self._blob

    @property
    def offsets(self) -> np.ndarray:
        return self._offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return bytes(self._blob[start:end]).decode("utf-8")

    def take(self, indices: np.ndarray) -> StringColumn:
        return StringColumn.from_strings([self[int(i)] for i in indices])

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]


@dataclass(frozen=True)
class Item:
    """One catalog row, for display and debugging (agents use the arrays)."""

    index: int
    id: str
    category: str
    attributes: dict[str, str]
    description: str
    image: np.ndarray | None


# fingerprint key -> (catalog part, what a mismatch means)
_HASHED_PARTS = {
    "ids_sha256": ("ids", "other items (or another order)"),
    "labels_sha256": ("labels", "other attribute labels"),
    "features_sha256": ("features", "other image features"),
}

FEATURES_TOLERANCE = 1e-4
"""How far two feature matrices may differ and still be the same catalog's, relative to their
RMS: per column, the sums may differ by ``FEATURES_TOLERANCE * rms * N`` and the signed sums by
``FEATURES_TOLERANCE * rms * sqrt(N)``. The same network on another CPU model or thread count
moves features by about 1e-6 of their RMS (at most 6e-5 against the shipped network's RMS of 70,
seen between one and two threads on an Intel Xeon), so the check passes there with 100x to
spare; features from other weights, images or rows move the sums by far more, and one row that
moves by more than 1% of the RMS in a column (at 10,000 items; 10% at a million) shows in the
signed sums."""


def _row_signs(start: int, stop: int) -> np.ndarray:
    """+1 or -1 per row ``start..stop-1``: a fixed integer hash of the row index, so every
    machine and every numpy release draws the same signs."""
    rows = np.arange(start, stop, dtype=np.uint64)
    bits = (rows * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return np.where(bits & np.uint64(1), 1.0, -1.0)


def sketch_features(features: np.ndarray) -> dict[str, Any]:
    """A summary of (N, D) features that two builds of the same catalog share on any CPU, and
    a real change of the features does not: their RMS, their column sums, and their column sums
    with a fixed pseudo-random sign per row (which move with any single row). Read 16 MB at a
    time, so a memory-mapped million-item matrix costs no memory. :func:`sketch_differs`
    compares two sketches within :data:`FEATURES_TOLERANCE`."""
    n, d = features.shape
    sums = np.zeros(d, dtype=np.float64)
    signed = np.zeros(d, dtype=np.float64)
    squares = 0.0
    step = max(1, (16 << 20) // max(1, features[:1].nbytes))
    for start in range(0, n, step):
        block = np.asarray(features[start : start + step], dtype=np.float64)
        sums += block.sum(axis=0)
        signed += _row_signs(start, start + len(block)) @ block
        squares += float(np.square(block).sum())
    return {
        "rows": int(n),
        "rms": float(np.sqrt(squares / max(1, n * d))),
        "sums": [float(x) for x in sums],
        "signed_sums": [float(x) for x in signed],
    }


def sketch_differs(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether two :func:`sketch_features` records describe different features (see
    :data:`FEATURES_TOLERANCE`); a sketch of another shape or a damaged one differs."""
    try:
        n = int(recorded["rows"])
        rms = float(recorded["rms"])
        sums = np.asarray(recorded["sums"], dtype=np.float64)
        signed = np.asarray(recorded["signed_sums"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return True
    if n != current["rows"] or sums.shape != (len(current["sums"]),) or signed.shape != sums.shape:
        return True
    scale = FEATURES_TOLERANCE * max(rms, float(current["rms"]), cast(float, np.finfo(np.float32).tiny))
    if not np.isfinite(scale) or abs(rms - float(current["rms"])) > scale:
        return True
    return bool(
        np.any(~(np.abs(sums - np.asarray(current["sums"])) <= scale * max(1, n)))
        or np.any(~(np.abs(signed - np.asarray(current["signed_sums"])) <= scale * np.sqrt(max(1, n))))
    )


@dataclass(eq=False)
class Catalog:
    """N garments, row-aligned.

    Attributes:
        ids: (N,) unicode array of item ids (ASINs for Fashion IQ).
        categories: (N,) int16 codes into ``category_names``.
        category_names: category name per code, e.g. ``("dress", "shirt", "toptee")``.
        vocabulary: the attribute vocabulary; ``labels`` columns follow its order.
        labels: (N, A) uint8 multi-hot ground-truth attribute labels.
        descriptions: N product descriptions (shop titles).
        images: (N, H, W, 3) uint8 images, or None for a catalog without pixels; a
            :class:`~fiq_gym.catalog.lazy_images.LazyImages` for a synthetic catalog that
            renders them when read.
        features: (N, D) float32 image features, or None until features are extracted.
        attribute_scores: (N, A) float32 predicted attribute probabilities, or None.
        primary_rgb: (N, 3) uint8 main garment colour as rendered, or None when unknown.
        provenance: free-form JSON-able record of how the catalog was made.
    """

    ids: np.ndarray
    categories: np.ndarray
    category_names: tuple[str, ...]
    vocabulary: AttributeVocabulary
    labels: np.ndarray
    descriptions: Sequence[str]
    images: np.ndarray | LazyImages | None = None
    features: np.ndarray | None = None
    attribute_scores: np.ndarray | None = None
    primary_rgb: np.ndarray | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    reopen: tuple[Callable[..., Any], tuple[Any, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """How to open this catalog again in another process, as ``(function, arguments)``;
    None pickles the arrays themselves."""

    def __post_init__(self) -> None:
        if not isinstance(self.descriptions, StringColumn):
            self.descriptions = StringColumn.from_strings(list(self.descriptions))
        self.category_names = tuple(self.category_names)
        self.validate()

    # --- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`CatalogError` naming the first field whose shape or dtype is wrong."""
        n = len(self.ids)
        a = self.vocabulary.size

        def check(name: str, arr: np.ndarray | LazyImages | None, shape: tuple, dtype: Any) -> None:
            if arr is None:
                return
            ok_shape = len(arr.shape) == len(shape) and all(
                want is None or got == want for got, want in zip(arr.shape, shape, strict=True)
            )
            if not ok_shape:
                want_text = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise CatalogError(f"catalog field {name!r} has shape {arr.shape}, expected {want_text}")
            if arr.dtype != np.dtype(dtype):
                raise CatalogError(
                    f"catalog field {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}"
                )

        if self.ids.ndim != 1 or self.ids.dtype.kind != "U":
            raise CatalogError(
                f"catalog field 'ids' must be a 1-D unicode array, got {self.ids.dtype} {self.ids.shape}"
            )
        check("categories", self.categories, (n,), np.int16)
        check("labels", self.labels, (n, a), np.uint8)
        check("images", self.images, (n, None, None, 3), np.uint8)
        check("features", self.features, (n, None), np.float32)
        check("attribute_scores", self.attribute_scores, (n, a), np.float32)
        check("primary_rgb", self.primary_rgb, (n, 3), np.uint8)
        if len(self.descriptions) != n:
            raise CatalogError(f"catalog has {n} ids but {len(self.descriptions)} descriptions")
        if n and (self.categories.min() < 0 or self.categories.max() >= len(self.category_names)):
            raise CatalogError(
                f"category codes must lie in [0, {len(self.category_names)}) "
                f"for category names {list(self.category_names)}"
            )

    # --- pickling -------------------------------------------------------------------------
    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        # A catalog opened from disk pickles as how to open it again (set by whoever opened it,
        # fiq_gym.catalog.storage.open_catalog) and reopens as memory maps, so sending an
        # environment to a worker process copies no images. Subsets and copies with other
        # arrays are new catalogs without it: they pickle their arrays.
        if self.reopen is not None:
            return self.reopen
        return super().__reduce_ex__(protocol)

    # --- basic views ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        shape = "none" if self.images is None else "x".join(map(str, self.images.shape[1:3]))
        if isinstance(self.images, LazyImages):
            shape += " (rendered on demand)"
        feat = "none" if self.features is None else str(self.features.shape[1])
        return (
            f"Catalog({len(self)} items, categories={list(self.category_names)}, "
            f"attributes={self.vocabulary.size}, images={shape}, feature_dim={feat})"
        )

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.images is None else (int(self.images.shape[1]), int(self.images.shape[2]))

    @property
    def feature_dim(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the catalog to a trained agent: the item count, SHA-256 prefixes of
        the ids (which garment each row is) and of the labels (exact integers), and, when the
        catalog has features, a :meth:`features_sketch` compared within a tolerance (feature
        bits differ in the last places between CPU models, so a hash of them would refuse the
        same catalog built on another machine). Recorded in checkpoints, so loading one on
        another catalog of the same shape fails instead of silently ranking wrong items."""
        out: dict[str, Any] = {
            "items": len(self),
            "ids_sha256": self.content_sha256("ids")[:16],
            "labels_sha256": self.content_sha256("labels")[:16],
        }
        if self.features is not None:
            out["features_sketch"] = self.features_sketch()
        return out

    def features_sketch(self) -> dict[str, Any]:
        """:func:`sketch_features` of this catalog's features (what :meth:`fingerprint`
        records and :meth:`differences` compares)."""
        if self.features is None:
            raise ValueError("this catalog has no features to sketch")
        return sketch_features(self.features)

    def differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """What differs between this catalog and one ``recorded`` by :meth:`fingerprint` (a
        checkpoint) or by a play recording: the item count (``items`` or ``num_items``), each
        ``ids_sha256`` / ``labels_sha256`` / ``features_sha256`` given, compared over the
        recorded length (fingerprints keep a prefix, recordings the whole hash), and the
        features within :data:`FEATURES_TOLERANCE` when a ``features_sketch`` is recorded
        (then a recorded ``features_sha256`` is not compared: checkpoints written before the
        sketch existed record only that hash, which must match bit for bit). Empty: the
        same catalog. Keys that are not recorded are not compared."""
        out = []
        count = recorded.get("items", recorded.get("num_items"))
        if count is not None and count != len(self):
            out.append("a different number of items")
        sketch = recorded.get("features_sketch")
        for key, (part, what) in _HASHED_PARTS.items():
            value = recorded.get(key)
            if not value or (part == "features" and sketch):
                continue
            if (part == "features" and self.features is None) or self.content_sha256(part)[
                : len(value)
            ] != value:
                out.append(what)
        if sketch and (self.features is None or sketch_differs(sketch, self.features_sketch())):
            out.append("other image features")
        return out

    def content_sha256(self, part: str) -> str:
        """The full SHA-256 of ``"ids"`` (joined by newlines, UTF-8), ``"labels"`` or
        ``"features"`` (their bytes, row-major): the one definition behind checkpoint
        fingerprints and recorded dialogs' catalog checks."""
        import hashlib

        digest = hashlib.sha256()
        if part == "ids":
            digest.update("\n".join(np.asarray(self.ids).tolist()).encode("utf-8"))
            return digest.hexdigest()
        source = {"labels": self.labels, "features": self.features}.get(part)
        if source is None:
            raise ValueError(
                f"part must be 'ids', 'labels' or 'features' (when the catalog has them), got {part!r}"
            )
        step = max(
            1, (16 << 20) // max(1, source[:1].nbytes)
        )  # 16 MB at a time: catalogs may be memory-mapped
        for start in range(0, len(source), step):
            digest.update(np.ascontiguousarray(source[start : start + step]).tobytes())
        return digest.hexdigest()

    def attribute_codes(self) -> np.ndarray:
        """(N, T) int16: the value index of each attribute type per item, -1 if unlabelled."""
        return self.vocabulary.decode(self.labels)

    def category_of(self, index: int) -> str:
        return self.category_names[int(self.categories[index])]

    def item(self, index: int) -> Item:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"item index {index} out of range for a catalog of {len(self)} items")
        codes = self.vocabulary.decode(self.labels[index : index + 1])[0]
        attributes = {
            t.name: t.values[c] for t, c in zip(self.vocabulary.types, codes, strict=True) if c >= 0
        }
        return Item(
            index=index,
            id=str(self.ids[index]),
            category=self.category_of(index),
            attributes=attributes,
            description=self.descriptions[index],
            image=None if self.images is None else np.asarray(self.images[index]),
        )

    # --- subsets -------------------------------------------------------------------------
    def subset(self, indices: np.ndarray | Sequence[int] | slice) -> Catalog:
        """A new catalog of the given rows, every field kept aligned.

        A slice keeps memory maps as views; an index array copies the selected rows.
        """
        if isinstance(indices, slice):
            rows: Any = indices
            descriptions = StringColumn.from_strings(self.descriptions[indices])
        else:
            rows = np.asarray(indices, dtype=np.int64)
            if rows.ndim != 1:
                raise ValueError(f"indices must be 1-D, got shape {rows.shape}")
            if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
                raise IndexError(f"subset indices out of range for a catalog of {len(self)} items")
            descriptions = self.descriptions.take(rows)  # type: ignore[attr-defined]

        def take(arr: Any) -> Any:  # an array or LazyImages (subset alike), or None
            if isinstance(arr, LazyImages):
                return arr.subset(rows)
            return None if arr is None else arr[rows]

        return Catalog(
            ids=self.ids[rows],
            categories=self.categories[rows],
            category_names=self.category_names,
            vocabulary=self.vocabulary,
            labels=self.labels[rows],
            descriptions=descriptions,
            images=take(self.images),
            features=take(self.features),
            attribute_scores=take(self.attribute_scores),
            primary_rgb=take(self.primary_rgb),
            provenance={**self.provenance, "subset_of": self.provenance.get("name", "catalog")},
        )

    def by_category(self, category: str) -> Catalog:
        """The items of one category, e.g. ``catalog.by_category("dress")``."""
        if category not in self.category_names:
            raise ValueError(f"unknown category {category!r}; this catalog has {list(self.category_names)}")
        code = self.category_names.index(category)
        return self.subset(np.flatnonzero(self.categories == code))

    def select_ids(self, ids: Sequence[str]) -> Catalog:
        """The items with the given ids, in the given order."""
        position = {str(x): i for i, x in enumerate(self.ids)}
        missing = [x for x in ids if str(x) not in position]
        if missing:
            raise KeyError(
                f"{len(missing)} id(s) not in the catalog, first: {missing[0]!r} "
                f"(the catalog has {len(self)} items)"
            )
        return self.subset(np.array([position[str(x)] for x in ids], dtype=np.int64))

    def with_arrays(self, **arrays: np.ndarray | None) -> Catalog:
        """A copy with some fields replaced, e.g. ``with_arrays(features=f, attribute_scores=s)``."""
        allowed = {"features", "attribute_scores", "primary_rgb", "images"}
        unknown = set(arrays) - allowed
        if unknown:
            raise TypeError(f"with_arrays accepts {sorted(allowed)}, got {sorted(unknown)}")
        fields: dict[str, Any] = {
            "ids": self.ids,
            "categories": self.categories,
            "category_names": self.category_names,
            "vocabulary": self.vocabulary,
            "labels": self.labels,
            "descriptions": self.descriptions,
            "images": self.images,
            "features": self.features,
            "attribute_scores": self.attribute_scores,
            "primary_rgb": self.primary_rgb,
            "provenance": dict(self.provenance),
        }
        fields.update(arrays)
        return Catalog(**fields)
