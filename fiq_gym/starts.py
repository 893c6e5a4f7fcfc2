"""Where a dialog starts: the env's ``start`` modes and the annotated pairs they draw from.

``start="uniform"`` (the default) draws a target and a different first item uniformly over the
items in play. ``start="annotated"`` draws a (target, candidate) pair of the catalog's human
captions of one split (``start_split``), as both papers' dialogs start, so that a shopper
replaying those captions answers turn 0 with human text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.errors import CatalogError
from fiq_gym.gallery import Gallery
from fiq_gym.users.base import User

if TYPE_CHECKING:
    from fiq_gym.catalog.captions import HumanCaptions

__all__ = ["START_MODES", "annotated_starts", "check_start_shopper", "start_kwargs"]

START_MODES = ("uniform", "annotated")


def annotated_starts(
    catalog: Catalog, tables: Gallery, split: str, category: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, shown) as indices in play: every distinct annotated pair of ``split`` (of the
    caption files of ``category``, None: every category) whose target and candidate are both
    in play and differ, in the captions' file order.

    Raises ``ValueError`` (one line naming the fix) for a catalog without human captions, a
    split the import lacks or whose targets are hidden, or a split with no pair in play."""
    from fiq_gym.catalog.captions import load_human_captions

    try:
        captions = load_human_captions(catalog)
    except CatalogError as err:
        raise ValueError(
            "start='annotated' draws the pairs of a catalog imported with `fiq-gym catalog import` "
            f"(docs/real_data.md), and this one has no human captions ({err}); pass such a catalog or "
            "start='uniform'"
        ) from None
    if split not in captions.splits:
        raise ValueError(
            f"start_split={split!r} is not a split of this import, which has {list(captions.splits)}; "
            "pass one of them (or import that split)"
        )
    selected = captions.select(split, category)
    if not len(selected):
        raise ValueError(
            f"start_split={split!r} has no caption entries of category {category!r} in this import; pick "
            f"a category its captions have: {sorted({e.category for e in captions.select(split).entries})}"
        )
    targets, shown = selected.rows(catalog)
    keep = (targets >= 0) & (targets != shown)
    if not keep.any():
        raise ValueError(
            f"start_split={split!r} has no pair with a target (its targets are hidden, as in Fashion IQ's "
            f"test split); pass a split with targets: {_splits_with_targets(captions)}"
        )
    targets, shown = targets[keep], shown[keep]
    playing = tables.in_play(targets) & tables.in_play(shown)
    if not playing.any():
        raise ValueError(
            f"no annotated pair of start_split={split!r}{'' if category is None else f' of {category!r}'} "
            "has both items in play in this env "
            f"({tables.num_items} items, e.g. another category's); pick the category or split the pairs belong to"
        )
    pairs = np.stack([tables.index_of_row(targets[playing]), tables.index_of_row(shown[playing])], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    pairs = pairs[np.sort(first)]
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _splits_with_targets(captions: HumanCaptions) -> list[str]:
    return [s for s in captions.splits if any(e.target is not None for e in captions.select(s).entries)]


def check_start_shopper(
    user: User, tables: Gallery, starts: tuple[np.ndarray, np.ndarray], split: str
) -> None:
    """A dataset shopper must have a human caption for every start pair (else turn 0 would be
    its fallback's): ``ValueError`` naming the split to replay otherwise."""
    from fiq_gym.users.dataset import DatasetUser

    if not isinstance(user, DatasetUser):
        return
    rows_t, rows_s = tables.rows[starts[0]], tables.rows[starts[1]]
    missing = sum(
        1 for t, s in zip(rows_t.tolist(), rows_s.tolist(), strict=True) if not user.captions_of(t, s)
    )
    if missing:
        raise ValueError(
            f"the dataset shopper has no human caption for {missing} of the {len(rows_t)} start pairs of "
            f"start_split={split!r} (it replays another split): make it replay that split, "
            f"user_kwargs={{'split': {split!r}, ...}}, or leave its split out (every split)"
        )


def start_kwargs(args: object) -> dict[str, Any]:
    """The env arguments of a trainer's ``--start`` and ``--start-split`` flags: none for the
    default uniform start (so the env arguments of such runs are what they always were)."""
    start = getattr(args, "start", None) or "uniform"
    if start == "uniform":
        return {}
    return {"start": start, "start_split": getattr(args, "start_split", None) or "train"}
