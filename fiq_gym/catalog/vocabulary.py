"""Attribute vocabularies: named attribute values grouped by type.

A catalog's attribute labels are a multi-hot matrix whose columns are the values of an
:class:`AttributeVocabulary`, type after type. Column names are ``"type:value"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AttributeType", "AttributeVocabulary"]


@dataclass(frozen=True)
class AttributeType:
    """One attribute type (``color``) and its values (``("black", "white", ...)``).

    ``ordered`` says whether the values are listed from least to most (sleeve length, garment
    length, fit looseness); comparative phrases ("longer", "looser") only make sense then.
    """

    name: str
    values: tuple[str, ...]
    ordered: bool = False

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"attribute type name must be non-empty without ':', got {self.name!r}")
        if not self.values:
            raise ValueError(f"attribute type {self.name!r} has no values")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"attribute type {self.name!r} has duplicate values: {self.values}")


@dataclass(frozen=True)
class AttributeVocabulary:
    """An ordered collection of attribute types; the label matrix columns follow this order."""

    types: tuple[AttributeType, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.types]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate attribute type names: {names}")

    # --- shape -------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of label columns (all values of all types)."""
        return sum(len(t.values) for t in self.types)

    @property
    def type_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(f"{t.name}:{v}" for t in self.types for v in t.values)

    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self) -> Iterator[AttributeType]:
        return iter(self.types)

    def __getitem__(self, name: str) -> AttributeType:
        for t in self.types:
            if t.name == name:
                return t
        raise KeyError(f"no attribute type {name!r}; known types: {list(self.type_names)}")

    def slice(self, name: str) -> slice:
        """The label columns of attribute type ``name``."""
        start = 0
        for t in self.types:
            if t.name == name:
                return slice(start, start + len(t.values))
            start += len(t.values)
        raise KeyError(f"no attribute type {name!r}; known types: {list(self.type_names)}")

    def column(self, name: str, value: str) -> int:
        """Label column of ``name:value``."""
        t = self[name]
        try:
            return self.slice(name).start + t.values.index(value)
        except ValueError:
            raise KeyError(
                f"attribute type {name!r} has no value {value!r}; values: {list(t.values)}"
            ) from None

    # --- conversions -------------------------------------------------------------------
    def encode(self, codes: np.ndarray) -> np.ndarray:
        """Per-type value indices (N x T, -1 for "none") -> multi-hot labels (N x size, uint8)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.types):
            raise ValueError(f"codes must have shape (N, {len(self.types)}), got {codes.shape}")
        labels = np.zeros((codes.shape[0], self.size), dtype=np.uint8)
        rows = np.arange(codes.shape[0])
        for k, t in enumerate(self.types):
            col = codes[:, k]
            if np.any(col >= len(t.values)) or np.any(col < -1):
                raise ValueError(f"codes for {t.name!r} out of range [-1, {len(t.values)})")
            has = col >= 0
            labels[rows[has], self.slice(t.name).start + col[has]] = 1
        return labels

    def decode(self, labels: np.ndarray) -> np.ndarray:
        """Multi-hot labels (N x size) -> per-type value index (N x T int16); -1 where a type
        has no positive label. Where a type has several, the first is taken."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != self.size:
            raise ValueError(f"labels must have shape (N, {self.size}), got {labels.shape}")
        codes = np.full((labels.shape[0], len(self.types)), -1, dtype=np.int16)
        for k, t in enumerate(self.types):
            block = labels[:, self.slice(t.name)]
            has = block.any(axis=1)
            codes[has, k] = np.argmax(block[has], axis=1)
        return codes

    def to_json(self) -> list[dict]:
        return [{"name": t.name, "values": list(t.values), "ordered": t.ordered} for t in self.types]

    @classmethod
    def from_json(cls, data: Any) -> AttributeVocabulary:
        """The inverse of :meth:`to_json`: a list of ``{"name": str, "values": [str, ...],
        "ordered": bool}`` objects (``ordered`` may be left out: false).

        Raises ``ValueError`` naming the attribute type when an entry has a member of another
        type. Nothing is converted: ``str`` of a misplaced string would make one attribute
        value per character and ``bool("false")`` is true, so a converted vocabulary would
        load and mislabel every column after it."""
        if not isinstance(data, Sequence) or isinstance(data, str):
            raise ValueError(f"a vocabulary is a list of attribute types, got {type(data).__name__}")
        types = []
        for k, entry in enumerate(data):
            if not isinstance(entry, Mapping):
                raise ValueError(
                    f"attribute type {k} must be an object with a name and values, got {entry!r:.60}"
                )
            name, values, ordered = entry.get("name"), entry.get("values"), entry.get("ordered", False)
            if not isinstance(name, str):
                raise ValueError(f"attribute type {k}: name must be a string, got {name!r:.60}")
            if (
                not isinstance(values, Sequence)
                or isinstance(values, str)
                or not all(isinstance(v, str) for v in values)
            ):
                raise ValueError(
                    f"attribute type {name!r}: values must be a list of strings, got {values!r:.60}"
                )
            if not isinstance(ordered, bool):
                raise ValueError(
                    f"attribute type {name!r}: ordered must be true or false, got {ordered!r:.60}"
                )
            types.append(AttributeType(name, tuple(values), ordered))
        return cls(tuple(types))

    @classmethod
    def from_types(cls, types: Iterable[AttributeType]) -> AttributeVocabulary:
        return cls(tuple(types))
