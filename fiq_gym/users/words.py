"""The caption words of the shoppers whose words follow from the catalog alone, for their
word tokenizers: read without building the shopper (:func:`fiq_gym.users.registry.tokenizer_for`)."""

from __future__ import annotations

from fiq_gym.catalog.model import Catalog
from fiq_gym.text import split_words
from fiq_gym.users.phrasebook import phrasebook

__all__ = ["language_model_words", "template_words"]


def template_words(catalog: Catalog) -> tuple[str, ...]:
    """Every word the template shopper's captions of ``catalog`` can contain, sorted
    (:meth:`TemplateUser.caption_words <fiq_gym.users.template.TemplateUser.caption_words>`)."""
    return phrasebook(catalog.vocabulary, tuple(catalog.category_names)).caption_words()


def language_model_words(catalog: Catalog) -> tuple[str, ...]:
    """A language-model shopper's observation words on ``catalog``: the template shopper's
    (same order, so the same ids), then the other words of the catalog's descriptions, sorted."""
    template = template_words(catalog)
    known = set(template)
    extra: set[str] = set()
    for description in catalog.descriptions:
        extra.update(split_words(description))
    return template + tuple(sorted(extra - known))
