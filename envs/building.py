"""Turning environment arguments into the parts a dialog runs on, shared across envs.

Environments made in one process with the same catalog share the opened catalog, the
retrieval tables, and the shopper (template or transformer) with its tokenizer.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

from fiq_gym.catalog.model import Catalog
from fiq_gym.default_catalog import resolve_catalog
from fiq_gym.retrieval import RetrievalTables, retrieval_tables
from fiq_gym.text import CaptionTokenizer, WordTokenizer
from fiq_gym.users.base import User
from fiq_gym.users.template import TemplateNoise, TemplateUser

__all__ = ["USERS", "build_dialog_parts"]

USERS = ("template", "transformer", "dataset")

_template_users: weakref.WeakKeyDictionary[Catalog, dict[tuple, tuple[TemplateUser, WordTokenizer]]] = (
    weakref.WeakKeyDictionary()
)
_transformer_users: weakref.WeakKeyDictionary[Catalog, dict[tuple, User]] = weakref.WeakKeyDictionary()
_dataset_users: weakref.WeakKeyDictionary[Catalog, dict[tuple, User]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _template_user(catalog: Catalog, user_kwargs: dict[str, Any]) -> tuple[TemplateUser, WordTokenizer]:
    kwargs = dict(user_kwargs)
    noise = kwargs.get("noise")
    if isinstance(noise, dict):
        kwargs["noise"] = TemplateNoise(**noise)
    key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
    with _lock:
        per_catalog = _template_users.setdefault(catalog, {})
        if key not in per_catalog:
            user = TemplateUser(catalog, **kwargs)
            per_catalog[key] = (user, WordTokenizer(user.caption_words()))
        return per_catalog[key]


def _transformer_user(catalog: Catalog, user_kwargs: dict[str, Any]) -> User:
    """The learned shopper: ``user_kwargs`` may name a ``checkpoint`` directory (default: the
    shipped one), ``decoding`` settings and a torch ``device``. Imported here, not at module
    level, so template-only environments never import torch's model code."""
    from fiq_gym.users.transformer.user import TransformerUser

    kwargs = dict(user_kwargs)
    if kwargs.get("checkpoint") is not None:
        kwargs["checkpoint"] = str(Path(kwargs["checkpoint"]).expanduser().resolve())
    key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
    with _lock:
        per_catalog = _transformer_users.setdefault(catalog, {})
        if key not in per_catalog:
            per_catalog[key] = TransformerUser(catalog, **kwargs)
        return per_catalog[key]


def _dataset_user(catalog: Catalog, user_kwargs: dict[str, Any]) -> User:
    """Human captions of an imported catalog: ``user_kwargs`` may give ``split`` (one or
    several), ``mode`` (``"random"`` / ``"joined"``) and ``fallback`` (``"template"``,
    ``"transformer"``, a :class:`User`, or None to raise on unannotated pairs)."""
    from fiq_gym.users.dataset import DatasetUser

    kwargs = dict(user_kwargs)
    unknown = set(kwargs) - {"split", "mode", "fallback"}
    if unknown:
        raise ValueError(f"user='dataset' takes user_kwargs split, mode and fallback, not {sorted(unknown)}")
    split = kwargs.get("split")
    key = (repr(split), kwargs.get("mode", "random"), repr(kwargs.get("fallback")))
    with _lock:
        per_catalog = _dataset_users.setdefault(catalog, {})
        cached = per_catalog.get(key)
    if cached is not None:
        return cached
    fallback = kwargs.get("fallback")
    if fallback == "template":
        fallback = _template_user(catalog, {})[0]
    elif fallback == "transformer":
        fallback = _transformer_user(catalog, {})
    elif fallback is not None and not isinstance(fallback, User):
        raise ValueError(f"fallback must be 'template', 'transformer', a User or None, got {fallback!r}")
    user = DatasetUser.from_captions(
        catalog,
        split=tuple(split) if isinstance(split, list) else split,
        mode=kwargs.get("mode", "random"),
        fallback=fallback,
    )
    with _lock:
        return per_catalog.setdefault(key, user)


def build_dialog_parts(
    catalog: Catalog | str | os.PathLike | None,
    category: str | None,
    user: str | User,
    user_kwargs: dict[str, Any] | None,
    tokenizer: CaptionTokenizer | None,
) -> tuple[Catalog, RetrievalTables, User, CaptionTokenizer]:
    """Resolve the catalog, its tables for ``category``, the user and the caption tokenizer."""
    opened = resolve_catalog(catalog)
    tables = retrieval_tables(opened, category)
    if isinstance(user, User):
        if user_kwargs:
            raise ValueError("user_kwargs only apply when user is given by name, e.g. user='template'")
        if user.catalog is not opened and len(user.catalog) != len(opened):
            raise ValueError(
                f"the user describes a catalog of {len(user.catalog)} items but the environment's has "
                f"{len(opened)}; build the user on the same catalog"
            )
        chosen = user
        if tokenizer is None:
            tokenizer = getattr(user, "tokenizer", None)
            if tokenizer is None and hasattr(user, "caption_words"):
                tokenizer = WordTokenizer(user.caption_words())
        if tokenizer is None:
            raise ValueError(
                f"{type(user).__name__} has neither a tokenizer nor caption_words(); pass tokenizer=..."
            )
    elif user == "template":
        chosen, word_tokenizer = _template_user(opened, user_kwargs or {})
        tokenizer = tokenizer or word_tokenizer
    elif user == "transformer" or (isinstance(user, str) and user.startswith("transformer:")):
        # "transformer:DIR" names a checkpoint in one string, so every trainer's --user flag
        # can pick a shopper trained elsewhere (e.g. on human captions).
        kwargs = dict(user_kwargs or {})
        if user != "transformer":
            kwargs["checkpoint"] = user.partition(":")[2]
        chosen = _transformer_user(opened, kwargs)
        tokenizer = tokenizer or chosen.tokenizer  # type: ignore[attr-defined]
    elif user == "dataset":
        chosen = _dataset_user(opened, user_kwargs or {})
        tokenizer = tokenizer or chosen.tokenizer  # type: ignore[attr-defined]
    else:
        raise ValueError(f"user must be one of {list(USERS)} or a User instance, got {user!r}")
    return opened, tables, chosen, tokenizer
