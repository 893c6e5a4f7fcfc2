"""Optional inputs of a dataset import: precomputed feature files and attribute label files."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fiq_gym.catalog.vocabulary import AttributeType, AttributeVocabulary
from fiq_gym.errors import DatasetError
from fiq_gym.utils.jsonfile import read_json

__all__ = ["label_matrix", "load_attribute_labels", "load_feature_file", "read_id_list", "read_json_list"]


def read_json_list(file: Path, what: str) -> list[Any]:
    """A release file that must hold a JSON list, with an error naming the file otherwise.

    A missing, unparsable or non-list file is an error in any mode: without it there is
    nothing to import.
    """
    if not file.is_file():
        raise DatasetError(f"{file} does not exist: expected {what}; check the dataset root and layout")
    data = read_json(file, DatasetError, "restore it from the dataset release")
    if not isinstance(data, list):
        raise DatasetError(f"{file} holds a JSON {type(data).__name__}, expected a list ({what})")
    return data


def read_id_list(file: Path) -> list[str]:
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
    ids: list[str] | None = read_id_list(Path(ids_file)) if ids_file is not None else None
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
    data = read_json(file, DatasetError, "fix the label file")
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


def label_matrix(
    vocabulary: AttributeVocabulary, labels: dict[str, dict[str, set[str]]], ids: Sequence[str]
) -> np.ndarray:
    matrix = np.zeros((len(ids), vocabulary.size), dtype=np.uint8)
    for row, item in enumerate(ids):
        for type_name, values in labels.get(item, {}).items():
            for value in values:
                matrix[row, vocabulary.column(type_name.replace(":", "_") or "attribute", value)] = 1
    return matrix
