"""The gallery an environment ranks (``env.unwrapped.gallery``): the items in play, their
unit-norm features and the side information agents see.

Built once per (catalog, category) and shared by every environment in the process, so a
``SyncVectorEnv`` of 64 environments holds one copy, not 64.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fiq_gym.catalog.lazy_images import LazyImages
from fiq_gym.catalog.model import Catalog
from fiq_gym.errors import CatalogError, FallbackWarning

__all__ = ["SIDE_INFO", "Gallery", "gallery_of", "import_galleries", "thumbnail_features"]

# What agents see as an item's attribute scores (``shown_attributes``):
# "predicted": the catalog's predicted scores (zeros, with a warning, when it has none);
# "labels": the ground-truth labels (an explicit opt-in: a shortcut no real system has);
# "auto": predicted if present, else labels (the shoppers' own inputs).
SIDE_INFO = ("predicted", "labels", "auto")
_FIX = "fiq-gym features extract CATALOG (or build it without --no-features)"
_IMPORT_FIX = (
    "an attribute network trained on its labels (fiq-gym features train CATALOG --out DIR, then "
    "fiq-gym features extract CATALOG --checkpoint DIR)"
)
_warned: set[tuple[str, str]] = set()


def _warn_once(catalog: Catalog, what: str, message: str) -> None:
    key = (str(catalog.provenance.get("path") or id(catalog)), what)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, FallbackWarning, stacklevel=4)


_THUMBNAIL_SIDE = 8


def thumbnail_features(
    images: np.ndarray | LazyImages, side: int = _THUMBNAIL_SIDE, batch: int = 4096
) -> np.ndarray:
    """(N, side*side*3) float32 features: each image averaged down to side x side pixels.

    The stand-in for learned features on catalogs that have none: real image content,
    no ground truth. Computed in batches, so memory stays bounded for large catalogs.
    """
    n, h, w, _ = images.shape
    if h % side or w % side:
        raise CatalogError(f"thumbnail features need an image side divisible by {side}, got {h}x{w}")
    out = np.empty((n, side * side * 3), dtype=np.float32)
    for start in range(0, n, batch):
        block = np.asarray(images[start : start + batch], dtype=np.float32) / 255.0
        block = block.reshape(len(block), side, h // side, side, w // side, 3).mean(axis=(2, 4))
        out[start : start + batch] = block.reshape(len(block), -1)
    return out


@dataclass(frozen=True, eq=False)
class Gallery:
    """Read-only arrays over the items in play (local index ``i`` is catalog row ``rows[i]``).

    Attributes:
        rows: (n,) int64 catalog rows of the items in play.
        features: (n, D) float32 unit-norm features: the catalog's, centred, or thumbnails.
        side_info: (n, A) float32 attribute scores shown to agents.
        feature_source: ``"catalog"`` or ``"thumbnails"``.
        side_info_source: ``"predicted"`` (catalog attribute scores), ``"labels"`` or
            ``"none"`` (zeros: the catalog has no predicted scores).
    """

    rows: np.ndarray
    features: np.ndarray
    side_info: np.ndarray
    feature_source: str
    side_info_source: str

    @property
    def num_items(self) -> int:
        return len(self.rows)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    # --- the two index spaces ----------------------------------------------------------
    # Everything an environment says or takes (actions, ``info["shown"]``, reset options,
    # evaluation sets) is an index in play, 0..n-1; what describes the catalog (a
    # DatasetUser's annotated pairs, HumanCaptions.rows, catalog.ids) is a catalog row.
    # In an env over all items the two coincide; in a category env they do not.
    def row_of_index(self, index: ArrayLike) -> Any:
        """The catalog row of an index in play (an int for an int, an int64 array for an
        array); ``ValueError`` for an index outside ``[0, n)``."""
        values = _integers(index, "index in play")
        bad = (values < 0) | (values >= self.num_items)
        if bad.any():
            raise ValueError(
                f"{int(values[bad][0])} is not an index in play: this gallery has {self.num_items} items "
                f"(indices 0..{self.num_items - 1}); pass an index the env gave (info['shown'], an action)"
            )
        out = self.rows[values]
        return int(out) if out.ndim == 0 else out.astype(np.int64)

    def index_of_row(self, row: ArrayLike) -> Any:
        """The index in play of a catalog row (an int for an int, an int64 array for an array),
        what ``reset(options={"target": ..., "shown": ...})`` takes.

        ``ValueError`` (one line, naming the row) for a row that is not in play, e.g. a row of
        another category in a category env."""
        values = _integers(row, "catalog row")
        order = self._row_order
        index = order[np.minimum(np.searchsorted(self.rows, values, sorter=order), self.num_items - 1)]
        bad = self.rows[index] != values
        if bad.any():
            missing = int(values[bad][0])
            raise ValueError(
                f"catalog row {missing} is not in play ({int(bad.sum())} of {bad.size} rows given are not; this "
                f"gallery holds {self.num_items} of the catalog's items, e.g. one category's): start only from "
                "rows in play (pairs of the env's category), or make the env over every item (category=None)"
            )
        return int(index) if index.ndim == 0 else index.astype(np.int64)

    def in_play(self, row: ArrayLike) -> Any:
        """Whether each catalog row is in play (a bool for an int, a bool array for an array):
        which annotated pairs a category env can start from."""
        values = _integers(row, "catalog row")
        order = self._row_order
        found = order[np.minimum(np.searchsorted(self.rows, values, sorter=order), self.num_items - 1)]
        out = self.rows[found] == values
        return bool(out) if out.ndim == 0 else out

    @functools.cached_property
    def _row_order(self) -> np.ndarray:
        # rows is sorted as built; argsort keeps the lookup right should a gallery not be.
        return np.argsort(self.rows, kind="stable")


def _integers(value: ArrayLike, what: str) -> np.ndarray:
    """``value`` as an int64 array (0-d for a scalar); ``ValueError`` for anything else."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise ValueError(f"a {what} must be an integer (or an array of them), got {value!r}")
    return array.astype(np.int64)


def import_galleries(catalog: Catalog) -> dict[str, np.ndarray] | None:
    """The image splits of an imported catalog as sorted catalog rows, keyed
    ``"{category}.{split}"`` (its ``human_captions.json``); None for a catalog that is no import."""
    from fiq_gym.catalog.captions import CAPTIONS_FILE, HumanCaptions

    where = catalog.provenance.get("path")
    if not where or not (Path(str(where)) / CAPTIONS_FILE).is_file():
        return None
    galleries = HumanCaptions.load(str(where)).galleries
    position = {str(x): i for i, x in enumerate(np.asarray(catalog.ids).tolist())}
    return {
        key: np.array(sorted(position[x] for x in ids if x in position), dtype=np.int64)
        for key, ids in galleries.items()
    }


def _rows_in_play(catalog: Catalog, category: str | None, split: str | None) -> np.ndarray:
    """The catalog rows of a (category, split) env. On an import, a category holds every image
    any of its split files lists (an image listed by shirt and toptee is in both), and a split
    the images of its split files; elsewhere a category is the items of that category."""
    if category is not None and category not in catalog.category_names:
        raise ValueError(
            f"unknown category {category!r}; this catalog has {list(catalog.category_names)} (or None for all)"
        )
    galleries = import_galleries(catalog) if category is not None or split is not None else None
    if split is not None:
        if galleries is None:
            raise ValueError(
                f"split={split!r} keeps the items of one image split of a catalog imported with `fiq-gym catalog "
                "import`, and this catalog is none; drop split= or pass an imported catalog"
            )
        keys = [
            k for k in galleries if k.rpartition(".")[2] == split and category in (None, k.rpartition(".")[0])
        ]
        if not keys:
            raise ValueError(
                f"this import has no image split {split!r}{'' if category is None else f' of {category!r}'}; "
                f"it has {sorted(galleries)}: pass one of their splits (or import that split)"
            )
        return np.unique(np.concatenate([galleries[k] for k in keys]))
    if category is None:
        return np.arange(len(catalog), dtype=np.int64)
    rows = np.flatnonzero(np.asarray(catalog.categories) == catalog.category_names.index(category))
    if galleries is not None:
        listed = [v for k, v in galleries.items() if k.rpartition(".")[0] == category]
        rows = np.unique(np.concatenate([rows, *listed])).astype(np.int64)
    return rows


def _build_gallery(
    catalog: Catalog, category: str | None, side_info: str, split: str | None = None
) -> Gallery:
    rows = _rows_in_play(catalog, category, split)
    if len(rows) < 2:
        raise CatalogError(
            f"a dialog needs at least 2 items in play, the catalog has {len(rows)} for category {category!r}"
            + ("" if split is None else f" and split {split!r}")
        )
    if catalog.features is not None:
        raw, source = np.asarray(catalog.features[rows], dtype=np.float32), "catalog"
    elif catalog.images is not None:
        images = catalog.images if len(rows) == len(catalog) else catalog.images[rows]
        raw, source = thumbnail_features(images), "thumbnails"
        _warn_once(
            catalog,
            "features",
            f"catalog {catalog.provenance.get('path') or '(in memory)'} has no image features: ranking by 8x8 colour thumbnails "
            f"(D = {raw.shape[1]}) instead; extract features with {_FIX}",
        )
    else:
        raise CatalogError("the catalog has neither features nor images; extract features first")
    # Centre before normalising so cosine similarity compares what differs between items.
    raw = raw - raw.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    features = raw / np.maximum(norms, 1e-8)
    if side_info == "labels" or (side_info == "auto" and catalog.attribute_scores is None):
        side, side_source = np.asarray(catalog.labels[rows], dtype=np.float32), "labels"
    elif catalog.attribute_scores is not None:
        side, side_source = np.asarray(catalog.attribute_scores[rows], dtype=np.float32), "predicted"
    else:
        side, side_source = np.zeros((len(rows), catalog.labels.shape[1]), dtype=np.float32), "none"
    # A catalog with no attribute vocabulary (an import without --attributes) misses nothing:
    # A = 0, and no command could predict scores for it, so there is nothing to warn about.
    if side_source == "none" and catalog.labels.shape[1]:
        # The shipped attribute network predicts the synthetic vocabulary only: an import's
        # own attributes need a network trained on them.
        imported = catalog.provenance.get("source") in ("fashioniq", "shoes")
        fix = _IMPORT_FIX if imported else _FIX
        _warn_once(
            catalog,
            "attributes",
            f"catalog {catalog.provenance.get('path') or '(in memory)'} has no predicted attribute scores: shown_attributes are "
            f"zeros; predict them with {fix}, or pass side_info='labels' to show ground-truth labels",
        )
    for arr in (rows, features, side):
        arr.setflags(write=False)
    return Gallery(rows, features.astype(np.float32), side, source, side_source)


_cache: weakref.WeakKeyDictionary[Catalog, dict[tuple[str | None, str, str | None], Gallery]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def gallery_of(
    catalog: Catalog, category: str | None = None, side_info: str = "auto", split: str | None = None
) -> Gallery:
    """The (cached) gallery of ``catalog`` restricted to ``category`` (None: all)
    and, on an imported catalog, to the images of image split ``split`` (None: all; see
    :func:`_rows_in_play`), with attribute scores chosen by ``side_info`` (see
    :data:`SIDE_INFO`)."""
    if side_info not in SIDE_INFO:
        raise ValueError(f"side_info must be one of {list(SIDE_INFO)}, got {side_info!r}")
    if split is not None and (not isinstance(split, str) or not split):
        raise ValueError(f"split must be an image split's name such as 'val', or None, got {split!r}")
    with _lock:
        per_catalog = _cache.setdefault(catalog, {})
        key = (category, side_info, split)
        if key not in per_catalog:
            per_catalog[key] = _build_gallery(catalog, category, side_info, split)
        return per_catalog[key]
