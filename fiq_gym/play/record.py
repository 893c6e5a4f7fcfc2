"""Recorded dialogs: what a person (or a watched shopper) said to a retriever, as JSON.

A file holds one or more dialogs::

    {"format": "fiq-gym-dialogs", "version": 1, "dialogs": [DIALOG, ...]}

and each dialog is::

    {"id": "3f2a...", "created": "2025-01-31T12:00:00Z", "mode": "human", "shopper": "human",
     "agent": {"name": "supervised (shipped default)", "checkpoint": "..."},
     "env_id": "fiq_gym/FashionIQ-v3", "category": null, "max_turns": 5,
     "catalog": {"name": ..., "num_items": 10000, "ids_sha256": ..., "labels_sha256": ..., ...},
     "target_index": 812, "target_row": 812, "target_id": "syn-0000812",
     "turns": [{"turn": 0, "shown_index": 17, "shown_row": 17, "shown_id": "syn-0000017",
                "rank": 4410, "percentile": 0.559, "caption": "is red and longer",
                "unknown_words": []}, ...],
     "success": false, "finished": true}

``*_index`` is the position among the items in play (what env actions and
``reset(options=...)`` use), ``*_row`` the catalog row, ``*_id`` the item id. Turn ``t``'s
``caption`` is the feedback on the garment shown at turn ``t``; ``null`` when nobody was
asked (the target was shown, or it was the last turn). ``rank`` is the target's 0-based rank
when that garment was shown (0 once it is the target). The ``catalog`` block identifies the
catalog (hashes of the item ids and attribute labels), so a recording is never replayed on a
catalog whose rows mean other garments.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fiq_gym.catalog.model import Catalog
from fiq_gym.utils.atomic import atomic_write_json, exclusive
from fiq_gym.utils.jsonfile import read_json

__all__ = [
    "DIALOGS_FORMAT",
    "DialogRecord",
    "TurnRecord",
    "append_dialogs",
    "catalog_identity",
    "check_catalog",
    "dialogs_document",
    "load_dialogs",
    "save_dialogs",
]

DIALOGS_FORMAT = "fiq-gym-dialogs"
DIALOGS_VERSION = 1

_identities: weakref.WeakKeyDictionary[Catalog, dict[str, Any]] = weakref.WeakKeyDictionary()


def catalog_identity(catalog: Catalog) -> dict[str, Any]:
    """What identifies a catalog's rows: its size, hashes of its ids and labels, and the
    provenance fields that say how it was made (cached per catalog object)."""
    if catalog not in _identities:
        provenance = catalog.provenance
        identity: dict[str, Any] = {
            "name": provenance.get("name"),
            "source": provenance.get("source"),
            "generator_version": provenance.get("generator_version"),
            "num_items": len(catalog),
            "ids_sha256": catalog.content_sha256("ids"),
            "labels_sha256": catalog.content_sha256("labels"),
        }
        _identities[catalog] = identity
    return dict(_identities[catalog])


def check_catalog(recorded: Mapping[str, Any], catalog: Catalog, where: str = "the recording") -> None:
    """Raise ``ValueError`` unless ``catalog`` is the catalog ``recorded`` describes."""
    differs = catalog.differences(recorded)
    if differs:
        mine = catalog_identity(catalog)
        raise ValueError(
            f"{where} was made on another catalog ({recorded.get('name')!r}, {recorded.get('num_items')} items) "
            f"than this one ({mine['name']!r}, {mine['num_items']} items): {'; '.join(differs)}. Replay it on the "
            "catalog it was recorded on (pass --catalog DIR)"
        )


@dataclass
class TurnRecord:
    """One turn: the garment shown, the target's rank then, and the feedback on it."""

    turn: int
    shown_index: int
    shown_row: int
    shown_id: str
    rank: int
    percentile: float
    caption: str | None = None
    unknown_words: list[str] = field(default_factory=list)


@dataclass
class DialogRecord:
    """One dialog between a shopper and a retriever (see the module docstring for the JSON)."""

    id: str
    created: str
    mode: str
    shopper: str
    agent: dict[str, Any]
    env_id: str
    category: str | None
    max_turns: int
    catalog: dict[str, Any]
    target_index: int
    target_row: int
    target_id: str
    turns: list[TurnRecord] = field(default_factory=list)
    success: bool = False
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "dialog") -> DialogRecord:
        """Validate and load one dialog; errors name the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a dialog must be a JSON object, got {type(data).__name__}")
        required = {
            "id": str,
            "mode": str,
            "max_turns": int,
            "catalog": dict,
            "target_index": int,
            "target_row": int,
            "target_id": str,
            "turns": list,
        }
        for key, kind in required.items():
            if key not in data:
                raise ValueError(f"{where}: missing field {key!r}")
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ValueError(f"{where}: field {key!r} must be {kind.__name__}, got {data[key]!r:.60}")
        turns = []
        for k, t in enumerate(data["turns"]):
            here = f"{where}, turn {k}"
            if not isinstance(t, dict):
                raise ValueError(f"{here}: a turn must be a JSON object")
            for key in ("turn", "shown_index", "shown_row", "rank"):
                if not isinstance(t.get(key), int) or isinstance(t.get(key), bool):
                    raise ValueError(f"{here}: field {key!r} must be an integer, got {t.get(key)!r}")
            caption = t.get("caption")
            if caption is not None and not isinstance(caption, str):
                raise ValueError(f"{here}: field 'caption' must be text or null")
            turns.append(
                TurnRecord(
                    turn=t["turn"],
                    shown_index=t["shown_index"],
                    shown_row=t["shown_row"],
                    shown_id=str(t.get("shown_id", "")),
                    rank=t["rank"],
                    percentile=float(t.get("percentile", float("nan"))),
                    caption=caption,
                    unknown_words=list(t.get("unknown_words") or []),
                )
            )
        return cls(
            id=data["id"],
            created=str(data.get("created", "")),
            mode=data["mode"],
            shopper=str(data.get("shopper", data["mode"])),
            agent=dict(data.get("agent") or {}),
            env_id=str(data.get("env_id", "fiq_gym/FashionIQ-v3")),
            category=data.get("category"),
            max_turns=data["max_turns"],
            catalog=data["catalog"],
            target_index=data["target_index"],
            target_row=data["target_row"],
            target_id=data["target_id"],
            turns=turns,
            success=bool(data.get("success", False)),
            finished=bool(data.get("finished", False)),
        )

    def captioned_pairs(self) -> list[tuple[int, int, str]]:
        """``(target_row, shown_row, caption)`` for every turn the shopper answered."""
        return [(self.target_row, t.shown_row, t.caption) for t in self.turns if t.caption]


def dialogs_document(dialogs: Iterable[DialogRecord]) -> dict[str, Any]:
    """The JSON document of a dialog file holding ``dialogs``."""
    return {
        "format": DIALOGS_FORMAT,
        "version": DIALOGS_VERSION,
        "dialogs": [d.to_json() for d in dialogs],
    }


def save_dialogs(path: str | os.PathLike, dialogs: Iterable[DialogRecord]) -> Path:
    """Write ``dialogs`` to ``path`` (replacing it), atomically."""
    atomic_write_json(path, dialogs_document(dialogs))
    return Path(path)


def append_dialogs(path: str | os.PathLike, dialogs: Iterable[DialogRecord]) -> Path:
    """Add ``dialogs`` to the file at ``path`` (created if missing), rewriting it atomically.
    A dialog already in the file (same ``id``) is replaced, so saving twice never duplicates.
    Appends from threads and processes at once are serialised (:func:`fiq_gym.utils.atomic.exclusive`),
    so none is lost."""
    new = list(dialogs)
    path = Path(path)
    with exclusive(path):
        existing = load_dialogs(path) if path.exists() else []
        ids = {d.id for d in new}
        return save_dialogs(path, [d for d in existing if d.id not in ids] + new)


def load_dialogs(path: str | os.PathLike) -> list[DialogRecord]:
    """Every dialog in a file written by :func:`save_dialogs` (``fiq-gym play --save``)."""
    path = Path(path)
    data = read_json(
        path,
        ValueError,
        "the dialog file is damaged",
        missing=f"record dialogs with `fiq-gym play --save {path}`",
    )
    if not isinstance(data, dict) or data.get("format") != DIALOGS_FORMAT:
        raise ValueError(f"{path} is not a fiq-gym dialog file (expected format {DIALOGS_FORMAT!r})")
    if data.get("version") != DIALOGS_VERSION:
        raise ValueError(
            f"{path} has dialog format version {data.get('version')!r}; this fiq-gym reads version {DIALOGS_VERSION}"
        )
    if not isinstance(data.get("dialogs"), list):
        raise ValueError(f"{path}: 'dialogs' must be a list")
    return [DialogRecord.from_json(d, where=f"{path}, dialog {k}") for k, d in enumerate(data["dialogs"])]
