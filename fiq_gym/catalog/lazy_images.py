"""Images of a synthetic catalog rendered on demand instead of stored.

A synthetic garment's image is a function of what the catalog stores about it anyway (its
category and attribute labels) plus two numbers drawn with it: the shade of its colour and
the offset of its pattern. A catalog built with ``--images lazy`` stores those two as well
(``shades.npy``, ``pattern_offsets.npy``, 10 bytes an item instead of 12 kB for a 64x64
image) and :class:`LazyImages` stands in for the ``images`` array: indexing it renders the
rows asked for with the same renderer, so every image is bit-identical to the one a
stored-image build of the same seed holds (``tests/test_lazy_images.py`` compares them all).

Only synthetic catalogs can be lazy: a real photo cannot be regenerated from its labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fiq_gym.catalog.render import GarmentSpec, render_garment
from fiq_gym.catalog.synthetic_spec import GENERATOR_VERSION
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.errors import CatalogError

__all__ = ["RENDER_ARRAYS", "LazyImages"]

#: The arrays a lazy catalog stores so that it can render its images.
RENDER_ARRAYS = ("shades", "pattern_offsets")


class LazyImages:
    """An (N, S, S, 3) uint8 array-like whose rows are rendered when read.

    Supports what catalog code does with ``images``: ``len``, ``shape``, ``dtype``, ``ndim``,
    indexing by an integer (one image), a slice or an index array (a new array of images),
    and ``np.asarray`` (every image: avoid on large catalogs). Nothing is cached: a row
    costs one render (about a millisecond at 64x64) each time it is read.

    Args:
        categories: (N,) int16 category codes into ``category_names``.
        labels: (N, A) uint8 multi-hot attribute labels over ``vocabulary``.
        shades: (N,) float64 colour shades, as drawn when the catalog was built.
        pattern_offsets: (N, 2) int16 pattern offsets, as drawn.
        image_size: the side S in pixels.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(
        self,
        categories: np.ndarray,
        labels: np.ndarray,
        shades: np.ndarray,
        pattern_offsets: np.ndarray,
        image_size: int,
        vocabulary: AttributeVocabulary,
        category_names: tuple[str, ...],
    ) -> None:
        n = len(categories)
        if not (len(labels) == len(shades) == len(pattern_offsets) == n):
            raise CatalogError(
                f"lazy images need one shade and pattern offset per item: got {n} categories, {len(labels)} "
                f"labels, {len(shades)} shades and {len(pattern_offsets)} offsets"
            )
        if pattern_offsets.ndim != 2 or pattern_offsets.shape[1] != 2:
            raise CatalogError(f"pattern_offsets must have shape (N, 2), got {pattern_offsets.shape}")
        self._categories = categories
        self._labels = labels
        self._shades = shades
        self._offsets = pattern_offsets
        self._vocabulary = vocabulary
        self._category_names = tuple(category_names)
        self.image_size = int(image_size)

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        provenance: Mapping[str, Any],
        vocabulary: AttributeVocabulary,
        category_names: tuple[str, ...],
    ) -> LazyImages:
        """The lazy images of an opened catalog directory, after checking that this fiq-gym
        renders them as the build did (raises :class:`CatalogError` naming the fix)."""
        if provenance.get("source") != "synthetic":
            raise CatalogError(
                f"only synthetic catalogs can render their images on demand; this one comes from "
                f"{provenance.get('source')!r}: import it again with its image folder"
            )
        version = provenance.get("generator_version")
        if version != GENERATOR_VERSION:
            raise CatalogError(
                f"this lazy catalog was built by synthetic generator version {version}, but this fiq-gym renders "
                f"version {GENERATOR_VERSION}: its images would not be the ones its features were computed from; "
                "rebuild it (`fiq-gym catalog build --images lazy --out DIR --overwrite`)"
            )
        missing = [name for name in RENDER_ARRAYS if name not in arrays]
        if missing:
            raise CatalogError(
                f"a lazy catalog needs the arrays {list(RENDER_ARRAYS)}; {missing} are missing"
            )
        return cls(
            arrays["categories"],
            arrays["labels"],
            arrays["shades"],
            arrays["pattern_offsets"],
            int(provenance["image_size"]),
            vocabulary,
            category_names,
        )

    # --- array-like -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._categories), self.image_size, self.image_size, 3)

    def __len__(self) -> int:
        return len(self._categories)

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} x {self.image_size}x{self.image_size}, rendered on demand)"

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, tuple):  # rows first, then the rest within the rendered rows
            head = self[index[0]]
            return head[index[1:]] if _is_integer(index[0]) else head[(slice(None), *index[1:])]
        if _is_integer(index):
            i = int(index)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(f"image index {index} out of range for {len(self)} images")
            return self._render(i)
        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
        else:
            rows = np.arange(len(self))[np.asarray(index)]
        out = np.empty((len(rows), self.image_size, self.image_size, 3), dtype=np.uint8)
        for k, i in enumerate(rows):
            out[k] = self._render(int(i))
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    # --- catalog operations -----------------------------------------------------------------
    def subset(self, rows: np.ndarray | slice) -> LazyImages:
        """The lazy images of ``rows`` (what :meth:`Catalog.subset` keeps), rendering nothing."""
        return LazyImages(
            self._categories[rows],
            self._labels[rows],
            self._shades[rows],
            self._offsets[rows],
            self.image_size,
            self._vocabulary,
            self._category_names,
        )

    def render_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store in a catalog directory for it to render these images."""
        return {"shades": np.asarray(self._shades), "pattern_offsets": np.asarray(self._offsets)}

    def _render(self, i: int) -> np.ndarray:
        codes = self._vocabulary.decode(np.asarray(self._labels[i : i + 1]))[0]
        values = {t.name: t.values[int(c)] for t, c in zip(self._vocabulary.types, codes, strict=True)}
        spec = GarmentSpec(
            category=self._category_names[int(self._categories[i])],
            shade=float(self._shades[i]),
            pattern_offset=(int(self._offsets[i, 0]), int(self._offsets[i, 1])),
            **values,
        )
        return render_garment(spec, self.image_size)


def _is_integer(index: Any) -> bool:
    return isinstance(index, int | np.integer) and not isinstance(index, bool)
