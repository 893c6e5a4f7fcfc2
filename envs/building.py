"""Turning environment arguments into the parts a dialog runs on, shared across envs.

Environments made in one process with the same catalog share the opened catalog
(:func:`~fiq_gym.default_catalog.resolve_catalog`), the gallery (:func:`~fiq_gym.gallery.gallery_of`) and the shopper with
its tokenizer (:func:`~fiq_gym.users.registry.make_user`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

from fiq_gym.action_modes import Picker, mode_class
from fiq_gym.catalog.model import Catalog
from fiq_gym.default_catalog import resolve_catalog
from fiq_gym.dialog_engine import DialogBatch
from fiq_gym.env_config import EnvConfig
from fiq_gym.envs.configurations import apply_configuration
from fiq_gym.gallery import Gallery, gallery_of
from fiq_gym.ranking import make_ranker
from fiq_gym.shortlist import FirstStage, make_first_stage
from fiq_gym.starts import annotated_starts, check_start_shopper
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import User
from fiq_gym.users.registry import SHOPPERS, make_user
from fiq_gym.users.template import TemplateUser

__all__ = [
    "USERS",
    "EnvParts",
    "build_dialog",
    "build_dialog_parts",
    "build_first_stage",
    "forget_first_stages",
    "slate_picker",
]

USERS = SHOPPERS


def build_dialog_parts(
    catalog: Catalog | str | os.PathLike | None,
    category: str | None,
    user: str | User,
    user_kwargs: dict[str, Any] | None,
    tokenizer: CaptionTokenizer | None,
    side_info: str = "auto",
    split: str | None = None,
) -> tuple[Catalog, Gallery, User, CaptionTokenizer]:
    """Resolve the catalog, its tables for ``category`` and ``split`` (attribute scores per
    ``side_info``, see :data:`fiq_gym.gallery.SIDE_INFO`), the user and the caption tokenizer."""
    opened = resolve_catalog(catalog)
    tables = gallery_of(opened, category, side_info, split)
    chosen = make_user(user, opened, **(user_kwargs or {}))
    return opened, tables, chosen, tokenizer or chosen.tokenizer


# (spec, tables) -> first stage: envs of one process on the same tables share the network.
_FIRST_STAGES: dict[tuple[str, int], tuple[Gallery, FirstStage]] = {}


def build_first_stage(
    spec: str | FirstStage, action_mode: str, catalog: Catalog, tables: Gallery
) -> FirstStage | None:
    """The shortlist's first stage ``spec`` names (None in modes without candidates, where
    :class:`~fiq_gym.env_config.EnvConfig` allows only the default ``spec``)."""
    if not mode_class(action_mode).uses_first_stage:
        return None
    if not isinstance(spec, str):
        return make_first_stage(spec, catalog, tables)
    key = (spec, id(tables))
    cached = _FIRST_STAGES.get(key)
    if cached is None or cached[0] is not tables:
        cached = (tables, make_first_stage(spec, catalog, tables))
        _FIRST_STAGES[key] = cached
    return cached[1]


def forget_first_stages() -> None:
    """Drop the first stages shared by this process's envs; envs made afterwards build their
    own. A first stage keeps the state of recent dialog prefixes, so a benchmark that replays
    the same seeded dialogs calls this between measurements: otherwise the second one runs on
    the first one's warm cache. Envs already made keep the first stage they have."""
    _FIRST_STAGES.clear()


@dataclass
class EnvParts:
    """What an environment runs on: its catalog, shopper, caption tokenizer, shortlist first
    stage (None outside ``shortlist`` mode) and the dialogs' engine."""

    catalog: Catalog
    user: User
    tokenizer: CaptionTokenizer
    first_stage: FirstStage | None
    dialog: DialogBatch


def slate_picker(action_mode: str, user: User, catalog: Catalog) -> Picker | None:
    """``slate`` modes: the shopper's own pick rule, or the template shopper's (default salience)
    for shoppers without one (the transformer, dataset and LM shoppers write captions only)."""
    if not mode_class(action_mode).uses_picker:
        return None
    own = getattr(user, "pick", None)
    if own is not None:
        return cast("Picker", own)
    try:
        return TemplateUser(catalog).pick
    except ValueError as err:
        raise ValueError(
            f"action_mode='slate' needs the template shopper's pick rule on this catalog, which it cannot "
            f"build ({err}); use a catalog with attribute labels or another action mode"
        ) from None


def build_dialog(
    config: EnvConfig,
    num_dialogs: int = 1,
    *,
    shards: int | None = None,
    shard_mode: str = "process",
) -> EnvParts:
    """The parts of an environment of ``config`` with ``num_dialogs`` dialogs: the single env
    (one) and the native vector env (``num_envs``) are built by this one function.
    ``config.configuration`` fills in the catalog and shopper settings left at their defaults
    (:mod:`fiq_gym.envs.configurations`). ``config.scoring``, ``shards`` and ``shard_mode``
    choose the ranker (:func:`fiq_gym.ranking.make_ranker`); a sharded one holds worker
    processes (or Ray actors) until ``parts.dialog.ranker.close()``."""
    rules = config.dialog_config()
    split = config.split
    catalog, user_kwargs = apply_configuration(
        config.configuration, config.catalog, config.user, config.user_kwargs
    )
    opened, tables, chosen, tok = build_dialog_parts(
        catalog, config.category, config.user, user_kwargs, config.tokenizer, config.side_info, split
    )
    first_stage = build_first_stage(config.shortlist, config.action_mode, opened, tables)
    starts = None
    if config.start == "annotated":
        # The start split defaults to the env's split (its gallery), else train.
        start_split = config.start_split or split or "train"
        starts = annotated_starts(opened, tables, start_split, config.category)
        check_start_shopper(chosen, tables, starts, start_split)
    ranker = make_ranker(tables.features, config.scoring, shards, shard_mode)
    dialog = DialogBatch(
        tables,
        chosen,
        tok,
        rules,
        num_dialogs=num_dialogs,
        first_stage=first_stage,
        ranker=ranker,
        picker=slate_picker(config.action_mode, chosen, opened),
        starts=starts,
    )
    return EnvParts(opened, chosen, tok, first_stage, dialog)
