"""Garment catalogs: the model, the on-disk format, the synthetic generator."""

from fiq_gym.catalog.model import Catalog, Item, StringColumn
from fiq_gym.catalog.vocabulary import AttributeType, AttributeVocabulary

__all__ = ["AttributeType", "AttributeVocabulary", "Catalog", "Item", "StringColumn"]
