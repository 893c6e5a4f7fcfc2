"""Turning environment arguments into the parts a dialog runs on, shared across envs.

Environments made in one process with the same catalog share the opened catalog
(:func:`~fiq_gym.default_catalog.resolve_catalog`), the retrieval tables and the shopper with
its tokenizer (:func:`~fiq_gym.users.registry.make_user`).
"""

from __future__ import annotations

import os
from typing import Any

from fiq_gym.catalog.model import Catalog
from fiq_gym.default_catalog import resolve_catalog
from fiq_gym.retrieval import RetrievalTables, retrieval_tables
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import User
from fiq_gym.users.registry import SHOPPERS, make_user

__all__ = ["USERS", "build_dialog_parts"]

USERS = SHOPPERS


def build_dialog_parts(
    catalog: Catalog | str | os.PathLike | None,
    category: str | None,
    user: str | User,
    user_kwargs: dict[str, Any] | None,
    tokenizer: CaptionTokenizer | None,
    side_info: str = "auto",
) -> tuple[Catalog, RetrievalTables, User, CaptionTokenizer]:
    """Resolve the catalog, its tables for ``category`` (attribute scores per ``side_info``,
    see :data:`fiq_gym.retrieval.SIDE_INFO`), the user and the caption tokenizer."""
    opened = resolve_catalog(catalog)
    tables = retrieval_tables(opened, category, side_info)
    chosen = make_user(user, opened, **(user_kwargs or {}))
    return opened, tables, chosen, tokenizer or chosen.tokenizer
