"""``make_user``: a shopper from its name, the one place that maps names to classes;
``tokenizer_for``: the caption tokenizer of a shopper's name, without building the shopper.

Environments made in one process on the same catalog with the same settings share one
shopper (a vector env of 64 single envs loads the learned shopper once, not 64 times); the
shared shoppers are kept per catalog and go away with it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fiq_gym.catalog.model import Catalog
from fiq_gym.text import CaptionTokenizer, WordTokenizer
from fiq_gym.users.base import User
from fiq_gym.users.template import TemplateNoise, TemplateUser
from fiq_gym.users.words import language_model_words, template_words

__all__ = ["SHOPPERS", "make_user", "tokenizer_for"]

#: Shopper names ``make_user`` understands; ``"transformer:DIR"`` names a checkpoint too,
#: ``"lm:DIR"`` the directory of a local causal language model, and ``"dataset:SHOPPER"`` the
#: dataset shopper with SHOPPER as its fallback.
SHOPPERS = ("template", "transformer", "dataset", "lm")

_shared: weakref.WeakKeyDictionary[Catalog, dict[tuple, User]] = weakref.WeakKeyDictionary()
_lock = threading.RLock()  # re-entrant: a dataset shopper makes its fallback shopper


def make_user(spec: str | User, catalog: Catalog, **kwargs: Any) -> User:
    """The shopper ``spec`` names, describing ``catalog``.

    Args:
        spec: ``"template"`` (:class:`~fiq_gym.users.TemplateUser`; kwargs ``noise`` as a
            :class:`~fiq_gym.users.TemplateNoise` or a dict of its fields,
            ``max_differences``, ``shade_threshold``), ``"transformer"`` or
            ``"transformer:DIR"`` (:class:`~fiq_gym.users.TransformerUser`; kwargs
            ``checkpoint``, ``decoding``, ``device``, ``threads``), ``"lm:DIR"``
            (:class:`~fiq_gym.users.LanguageModelUser`, a local Hugging Face causal LM; kwargs
            ``prompt``, ``decoding``, ``max_words``, ``batch_size``, ``device``, ``threads``,
            or ``model_dir`` with ``"lm"``), ``"dataset"``
            (:class:`~fiq_gym.users.DatasetUser`; kwargs ``split``, ``mode`` and ``fallback``:
            ``"template"``, ``"transformer"``, ``"transformer:DIR"``, ``"lm:DIR"``, a
            :class:`User` or None), ``"dataset:SHOPPER"`` (the same with ``fallback=SHOPPER``,
            e.g. ``"dataset:transformer:DIR"``: one string for a trainer's ``--user``), or a
            :class:`User` instance, returned as it is after checking it describes a catalog
            of this size.
        catalog: the catalog whose items the shopper describes.
    """
    if isinstance(spec, User):
        if kwargs:
            raise ValueError("user_kwargs only apply when user is given by name, e.g. user='template'")
        if spec.catalog is not catalog and len(spec.catalog) != len(catalog):
            raise ValueError(
                f"the user describes a catalog of {len(spec.catalog)} items but the environment's has "
                f"{len(catalog)}; build the user on the same catalog"
            )
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"user must be one of {list(SHOPPERS)} or a User instance, got {spec!r}")
    name, _, checkpoint = spec.partition(":")
    build: Callable[..., User]
    if name == "template" and not checkpoint:
        build, kwargs = TemplateUser, _template_kwargs(kwargs)
    elif name == "transformer":
        # "transformer:DIR" names a checkpoint in one string, so every trainer's --user flag
        # can pick a shopper trained elsewhere (e.g. on human captions).
        build, kwargs = _transformer_class(), _transformer_kwargs(kwargs, checkpoint)
    elif name == "lm":
        # "lm:DIR": the user brings the weights, so the name must say where they are.
        build, kwargs = _language_model_class(), _language_model_kwargs(kwargs, checkpoint)
    elif name == "dataset":
        # "dataset:SHOPPER": the human captions, SHOPPER (any other shopper's name) answering
        # the pairs nobody annotated, in one string for the trainers' --user flag.
        build, kwargs = _dataset_builder, _dataset_kwargs(kwargs, checkpoint)
    else:
        raise ValueError(f"user must be one of {list(SHOPPERS)} or a User instance, got {spec!r}")
    key = (name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _lock:
        per_catalog = _shared.setdefault(catalog, {})
        if key not in per_catalog:
            per_catalog[key] = build(catalog, **kwargs)
        shared = per_catalog[key]
    from fiq_gym.users.dataset import DatasetUser

    # The dataset shopper's captions are shared; its human-share counters are each env's own.
    return shared.with_own_counters() if isinstance(shared, DatasetUser) else shared


def tokenizer_for(shopper: str | User, catalog: Catalog, **kwargs: Any) -> CaptionTokenizer:
    """The caption tokenizer of an env with ``user=shopper`` (and ``user_kwargs=kwargs``) on
    ``catalog``: the same token ids as ``make_user(shopper, catalog, **kwargs).tokenizer``,
    without building the shopper where its words do not need it. ``"template"``: a word
    tokenizer over the catalog's phrasebook; ``"lm:DIR"``: the same words, then the catalog's
    description words (no model is loaded); ``"transformer"`` / ``"transformer:DIR"``: the
    checkpoint's own ``tokenizer.json`` (no weights are loaded). A ``"dataset"`` shopper's
    words are its recorded captions', so it is built (shared, as envs share it); a
    :class:`User` instance brings its own."""
    if isinstance(shopper, str) and not kwargs:
        name, _, where = shopper.partition(":")
        if name == "template" and not where:
            return WordTokenizer(template_words(catalog))
        if name == "lm" and where:
            return WordTokenizer(language_model_words(catalog))
        if name == "transformer":
            from fiq_gym.users.transformer.user import load_captioner_tokenizer

            return load_captioner_tokenizer(_transformer_kwargs({}, where).get("checkpoint"))
    return make_user(shopper, catalog, **kwargs).tokenizer


def _template_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("noise"), dict):
        kwargs["noise"] = TemplateNoise(**kwargs["noise"])
    return kwargs


def _transformer_class() -> type[User]:
    # Imported on use, so template-only environments never import torch's model code.
    from fiq_gym.users.transformer.user import TransformerUser

    return TransformerUser


def _transformer_kwargs(kwargs: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if checkpoint:
        kwargs["checkpoint"] = checkpoint
    if kwargs.get("checkpoint") is not None:
        kwargs["checkpoint"] = str(Path(kwargs["checkpoint"]).expanduser().resolve())
    return kwargs


def _language_model_class() -> type[User]:
    # Imported on use, so template-only environments never import transformers.
    from fiq_gym.users.language_model import LanguageModelUser

    return LanguageModelUser


def _language_model_kwargs(kwargs: dict[str, Any], model_dir: str) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if model_dir and kwargs.get("model_dir") is not None:
        raise ValueError(f"user='lm:{model_dir}' names the model directory; drop user_kwargs['model_dir']")
    if model_dir:
        kwargs["model_dir"] = model_dir
    if kwargs.get("model_dir") is None:
        raise ValueError(
            "user='lm' needs the directory of a local causal language model: user='lm:DIR' "
            "(save one there with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR))"
        )
    kwargs["model_dir"] = str(Path(kwargs["model_dir"]).expanduser().resolve())
    return kwargs


#: what the dataset shopper's ``fallback`` may name (as ``user=`` does, but not itself)
FALLBACK_NAMES = ("template", "transformer", "transformer:DIR", "lm:DIR")


def _dataset_kwargs(kwargs: dict[str, Any], named_fallback: str = "") -> dict[str, Any]:
    unknown = set(kwargs) - {"split", "mode", "fallback"}
    if unknown:
        raise ValueError(f"user='dataset' takes user_kwargs split, mode and fallback, not {sorted(unknown)}")
    fallback = kwargs.get("fallback")
    if named_fallback:
        if fallback is not None:
            raise ValueError(
                f"user='dataset:{named_fallback}' names the fallback, and user_kwargs gives another "
                f"({fallback!r}); name it once"
            )
        fallback = named_fallback
    if isinstance(fallback, str):
        fallback = _fallback_spec(fallback)
    elif fallback is not None and not isinstance(fallback, User):
        raise ValueError(f"fallback must be one of {list(FALLBACK_NAMES)}, a User or None, got {fallback!r}")
    split = kwargs.get("split")
    return {
        "split": tuple(split) if isinstance(split, list) else split,
        "mode": kwargs.get("mode", "random"),
        "fallback": fallback,
    }


def _fallback_spec(spec: str) -> str:
    """A fallback shopper's name, checked, with a directory made absolute (so envs made from
    another working directory name the same shopper)."""
    name, _, where = spec.partition(":")
    if name == "template" and not where:
        return spec
    if name in ("transformer", "lm") and (where or name == "transformer"):
        return f"{name}:{Path(where).expanduser().resolve()}" if where else spec
    raise ValueError(f"fallback must be one of {list(FALLBACK_NAMES)}, a User or None, got {spec!r}")


def _dataset_builder(catalog: Catalog, *, split: Any, mode: str, fallback: Any) -> User:
    from fiq_gym.users.dataset import DatasetUser

    if isinstance(fallback, str):
        fallback = make_user(fallback, catalog)
    return DatasetUser.from_captions(catalog, split=split, mode=mode, fallback=fallback)
