"""Human relative captions stored beside an imported catalog.

An imported Fashion IQ or Shoes catalog directory carries ``human_captions.json``: every
annotated (target, candidate) pair that survived validation, with its captions, split and
category. Items are named by id (ASIN or image name), not by row, so the file stays
meaningful if the catalog is re-imported with a different row order.

Layout::

    {"format": "fiq-gym-human-captions", "version": 1, "source": "fashioniq",
     "galleries": {"dress.val": ["B00X...", ...], ...},
     "source_entries": {"dress.val": 4035, ...},
     "entries": [{"target": "B00X...", "candidate": "B00Y...", "captions": ["...", "..."],
                  "split": "val", "category": "dress"}, ...]}

``target`` is null for entries of a split released without targets (Fashion IQ's test split):
they still make single-shot queries, but cannot be scored; they are all kept, in file order
(``fiq-gym predict`` writes the challenge's predictions for them). ``source_entries`` counts
each release caption file's entries, kept or not (imports before it was recorded lack it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.errors import CatalogError
from fiq_gym.utils.atomic import atomic_write_json
from fiq_gym.utils.jsonfile import read_json
from fiq_gym.utils.links import doc_url

__all__ = ["CAPTIONS_FILE", "CaptionEntry", "HumanCaptions", "load_human_captions"]

CAPTIONS_FILE = "human_captions.json"
_FORMAT = "fiq-gym-human-captions"
_VERSION = 1


@dataclass(frozen=True)
class CaptionEntry:
    """One annotated pair: how ``target`` differs from ``candidate``, in a person's words."""

    target: str | None
    candidate: str
    captions: tuple[str, ...]
    split: str
    category: str

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "candidate": self.candidate,
            "captions": list(self.captions),
            "split": self.split,
            "category": self.category,
        }


@dataclass(frozen=True)
class HumanCaptions:
    """The human caption entries of one dataset import.

    Attributes:
        source: ``"fashioniq"`` or ``"shoes"``.
        entries: the validated entries, in file order.
        galleries: the item ids of each image split, keyed ``"{category}.{split}"`` (e.g.
            ``"dress.val"``): the gallery a single-shot query of that split is ranked in.
    """

    source: str
    entries: tuple[CaptionEntry, ...]
    galleries: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source_entries: dict[str, int] = field(default_factory=dict)
    """how many entries each release caption file held, kept or not, keyed like
    ``galleries`` (empty for imports made before fiq-gym recorded it): whether every entry
    of a split was kept, as the challenge's predictions in file order need"""

    def gallery_rows(self, catalog: Catalog, category: str, split: str) -> np.ndarray:
        """The catalog rows of one image split (sorted int64)."""
        key = f"{category}.{split}"
        if key not in self.galleries:
            raise CatalogError(f"no image split {key!r} in this import; it has {sorted(self.galleries)}")
        position = {str(x): i for i, x in enumerate(np.asarray(catalog.ids).tolist())}
        return np.array(sorted(position[x] for x in self.galleries[key] if x in position), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(sorted({e.split for e in self.entries}))

    def select(self, split: str | Sequence[str] | None = None, category: str | None = None) -> HumanCaptions:
        """The entries of the given split(s) and category (None: all)."""
        wanted = None if split is None else ({split} if isinstance(split, str) else set(split))
        return HumanCaptions(
            self.source,
            tuple(
                e
                for e in self.entries
                if (wanted is None or e.split in wanted) and (category is None or e.category == category)
            ),
            self.galleries,
            self.source_entries,
        )

    def rows(self, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
        """(targets, candidates) as catalog rows, int64; -1 for a missing target.

        Catalog rows, not the indices in play that an env's reset options take: in a category
        env convert with ``env.unwrapped.index_of_row(row)``.

        Raises :class:`CatalogError` naming the first id the catalog lacks.
        """
        position = {str(x): i for i, x in enumerate(np.asarray(catalog.ids).tolist())}
        targets = np.full(len(self.entries), -1, dtype=np.int64)
        candidates = np.empty(len(self.entries), dtype=np.int64)
        for k, e in enumerate(self.entries):
            for name, item in (("candidate", e.candidate), ("target", e.target)):
                if item is None:
                    continue
                row = position.get(item)
                if row is None:
                    raise CatalogError(
                        f"human caption entry {k} names {name} {item!r}, which is not in the catalog "
                        f"{catalog.provenance.get('path', '')}; re-import the dataset so captions and "
                        "images match"
                    )
                if name == "target":
                    targets[k] = row
                else:
                    candidates[k] = row
        return targets, candidates

    def triples(self, catalog: Catalog) -> Iterator[tuple[int, int, str]]:
        """``(target_row, candidate_row, caption)`` for every caption of every entry with a
        target: the form :class:`~fiq_gym.users.dataset.DatasetUser` and the captioner's
        trainer consume."""
        targets, candidates = self.rows(catalog)
        for entry, t, c in zip(self.entries, targets.tolist(), candidates.tolist(), strict=True):
            if t >= 0:
                for caption in entry.captions:
                    yield t, c, caption

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (a catalog directory or a ``.json`` file) atomically."""
        path = Path(path)
        file = path / CAPTIONS_FILE if path.is_dir() else path
        atomic_write_json(
            file,
            {
                "format": _FORMAT,
                "version": _VERSION,
                "source": self.source,
                "galleries": {k: list(v) for k, v in self.galleries.items()},
                "source_entries": dict(self.source_entries),
                "entries": [e.to_json() for e in self.entries],
            },
        )
        return file

    @classmethod
    def load(cls, path: str | os.PathLike) -> HumanCaptions:
        """Read a catalog directory's ``human_captions.json`` (or the file itself)."""
        path = Path(path)
        file = path / CAPTIONS_FILE if path.is_dir() else path
        if not file.exists():
            raise CatalogError(
                f"{file} does not exist: only catalogs made by `fiq-gym catalog import` carry human "
                f"captions; import the dataset (see {doc_url('docs/real_data.md')})"
            )
        data = read_json(file, CatalogError, "re-import the dataset")
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CatalogError(f"{file} is not a fiq-gym human caption file (expected format {_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise CatalogError(
                f"{file} has version {data.get('version')!r}, this fiq-gym reads {_VERSION}; re-import the dataset"
            )
        try:
            entries = tuple(
                CaptionEntry(
                    target=None if e["target"] is None else str(e["target"]),
                    candidate=str(e["candidate"]),
                    captions=tuple(str(c) for c in e["captions"]),
                    split=str(e["split"]),
                    category=str(e["category"]),
                )
                for e in data["entries"]
            )
        except (KeyError, TypeError) as e:
            raise CatalogError(f"{file} has a malformed entry ({e!r}); re-import the dataset") from None
        galleries = data.get("galleries", {})
        if not isinstance(galleries, dict):
            raise CatalogError(f"{file}: 'galleries' must be an object of id lists; re-import the dataset")
        counts = data.get("source_entries", {})
        if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
            raise CatalogError(
                f"{file}: 'source_entries' must map caption files to counts; re-import the dataset"
            )
        return cls(
            str(data.get("source", "unknown")),
            entries,
            {str(k): tuple(str(x) for x in v) for k, v in galleries.items()},
            {str(k): int(v) for k, v in counts.items()},
        )


def load_human_captions(catalog: Catalog | str | os.PathLike) -> HumanCaptions:
    """The human captions of an imported catalog (an opened catalog or its directory)."""
    if isinstance(catalog, Catalog):
        where = catalog.provenance.get("path")
        if where is None:
            raise CatalogError(
                "this catalog was not opened from a directory, so it has no human captions file"
            )
        return HumanCaptions.load(where)
    return HumanCaptions.load(catalog)
