"""The synthetic catalog's categories, attribute vocabulary and colour palette.

Kept apart from the generator so that users (caption writers) and renderers can share the
names without importing each other.
"""

from __future__ import annotations

from fiq_gym.catalog.vocabulary import AttributeType, AttributeVocabulary

__all__ = [
    "CATEGORIES",
    "COLOR_RGB",
    "GENERATOR_VERSION",
    "HEM_HEIGHT",
    "LENGTHS_BY_CATEGORY",
    "SYNTHETIC_VOCABULARY",
]

# Bump when the sampled attributes, the rendering or the descriptions change, so cached
# catalogs are rebuilt (and lazy catalogs of another version refuse to render).
# v2: fit wording in descriptions ("fitted", not "fitted fit").
GENERATOR_VERSION = 2

CATEGORIES: tuple[str, ...] = ("dress", "shirt", "toptee")

# Base RGB of each named colour; items vary in shade around it (see ``render.shade``).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (38, 38, 42),
    "white": (246, 246, 240),
    "grey": (140, 140, 145),
    "navy": (30, 45, 110),
    "blue": (50, 115, 220),
    "red": (205, 35, 40),
    "pink": (240, 130, 180),
    "green": (40, 150, 70),
    "yellow": (245, 205, 40),
    "orange": (245, 130, 30),
    "purple": (125, 55, 165),
    "brown": (120, 75, 40),
    "beige": (215, 195, 160),
}

# Garment lengths are ordered by where the hem falls (fraction of image height), so that
# "longer" and "shorter" mean the same thing across dresses and tops.
HEM_HEIGHT: dict[str, float] = {
    "cropped": 0.46,
    "regular": 0.60,
    "mini": 0.62,
    "long": 0.72,
    "knee": 0.75,
    "midi": 0.85,
    "maxi": 0.95,
}

LENGTHS_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "dress": ("mini", "knee", "midi", "maxi"),
    "shirt": ("cropped", "regular", "long"),
    "toptee": ("cropped", "regular", "long"),
}

SYNTHETIC_VOCABULARY = AttributeVocabulary(
    (
        AttributeType("color", tuple(COLOR_RGB)),
        AttributeType("pattern", ("solid", "stripes", "polka dots", "checks", "floral")),
        AttributeType("sleeve", ("sleeveless", "short", "elbow", "long"), ordered=True),
        AttributeType("length", tuple(sorted(HEM_HEIGHT, key=HEM_HEIGHT.__getitem__)), ordered=True),
        AttributeType("neckline", ("crew", "v-neck", "scoop", "square", "boat", "collar")),
        AttributeType("fit", ("fitted", "regular", "loose"), ordered=True),
    )
)
