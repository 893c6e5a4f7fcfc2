"""The template grammar: the wording tables of relative captions and the parser built from
the same phrases.

:class:`~fiq_gym.users.template.TemplateUser` writes captions from these tables, and
:func:`parse_caption` reads the claims back out of text. Because both share one phrasebook,
every noise-free template caption parses to exactly the claims it was written from, and the
parser can score a learned captioner's output for faithfulness
(:mod:`fiq_gym.users.caption_metrics`). The grammar itself is described in
:mod:`fiq_gym.users.template`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.text import split_words
from fiq_gym.users.base import Difference

__all__ = [
    "CONTRAST",
    "SAME_DIFFERENCE",
    "SAME_WORDINGS",
    "SHADE_COMPARATIVES",
    "SHADE_ONLY_TAILS",
    "SHADE_WORDS",
    "Claim",
    "Phrasebook",
    "parse_caption",
    "phrasebook",
]

# --- wording tables -------------------------------------------------------------------------
# Direct wordings per known type and value; unknown values of a known type use the type's
# generic wordings, unknown types use "has {v} {type}". Every wording must name its type
# unambiguously (checked when a phrasebook is built).

_CATEGORY_NOUNS: Mapping[str, tuple[str, ...]] = {
    "dress": ("dress",),
    "shirt": ("shirt", "button-up shirt"),
    "toptee": ("top", "tee"),
}
CONTRAST = ("{phrase} instead of {shown}", "{phrase} rather than {shown}")
_CONTRAST_MARKERS = (("instead", "of"), ("rather", "than"))

_COLOR_GENERIC = ("is {v}", "is in {v}")

_DIRECT: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "pattern": {
        "solid": ("is solid", "is plain", "has no pattern"),
        "stripes": ("has stripes", "is striped"),
        "polka dots": ("has polka dots", "is dotted"),
        "checks": ("is checked", "has a check pattern"),
        "floral": ("has a floral print", "is floral"),
    },
    "sleeve": {
        "sleeveless": ("is sleeveless", "has no sleeves"),
        "short": ("has short sleeves", "is short-sleeved"),
        "elbow": ("has elbow-length sleeves", "has elbow sleeves"),
        "long": ("has long sleeves", "is long-sleeved"),
    },
    "length": {
        "cropped": ("is cropped", "has a cropped length"),
        "regular": ("is regular length", "has a regular length"),
        "mini": ("is a mini", "is mini length"),
        "long": ("is long length", "has a long hem"),
        "knee": ("is knee length", "falls to the knee"),
        "midi": ("is a midi", "is midi length"),
        "maxi": ("is maxi length", "is a maxi", "is floor length"),
    },
    "neckline": {
        "crew": ("has a crew neck", "has a crew neckline", "has a round neck"),
        "v-neck": ("has a v-neck", "has a v neckline"),
        "scoop": ("has a scoop neck", "has a scoop neckline"),
        "square": ("has a square neck", "has a square neckline"),
        "boat": ("has a boat neck", "has a boat neckline"),
        "collar": ("has a collar", "is collared"),
    },
    "fit": {
        "fitted": ("is fitted", "is form-fitting"),
        "regular": ("is regular fit", "has a regular fit"),
        "loose": ("is loose fitting", "is loose"),
    },
}
_DIRECT_GENERIC: Mapping[str, tuple[str, ...]] = {
    "pattern": ("has a {v} pattern", "has a {v} print"),
    "sleeve": ("has {v} sleeves", "has {v}-length sleeves"),
    "length": ("is {v} length", "has a {v} length"),
    "neckline": ("has a {v} neckline", "has a {v} neck"),
    "fit": ("has a {v} fit", "is {v} fit"),
}
_OTHER_GENERIC = ("has {v} {type}", "has a {v} {type}")

# Ordered types: (word for "target is further along the order", word for "less far"),
# then the wordings of each direction.
_DIRECTION_WORDS: Mapping[str, tuple[str, str]] = {
    "sleeve": ("longer", "shorter"),
    "length": ("longer", "shorter"),
    "fit": ("looser", "tighter"),
}
_COMPARATIVE: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sleeve": (
        ("has longer sleeves", "the sleeves are longer"),
        ("has shorter sleeves", "the sleeves are shorter"),
    ),
    "length": (
        ("is longer", "has a longer hem", "is longer in length"),
        ("is shorter", "has a shorter hem"),
    ),
    "fit": (
        ("is looser", "is looser fitting", "fits more loosely"),
        ("is tighter", "is more fitted", "fits more tightly"),
    ),
}
_OTHER_DIRECTION_WORDS = ("more", "less")
_OTHER_COMPARATIVE = (
    ("has more {type}", "has a higher {type}"),
    ("has less {type}", "has a lower {type}"),
)

# Shade: index 0 = darker, 1 = lighter.
SHADE_WORDS = ("darker", "lighter")
SHADE_COMPARATIVES = (
    ("is darker", "is a darker shade", "is darker in color"),
    ("is lighter", "is brighter", "is a lighter shade"),
)
# "looks the same but <tail>" when shade is the only difference: [direction][slight] -> tails.
SHADE_ONLY_TAILS = (
    (("darker", "in a darker shade"), ("slightly darker", "a bit darker", "a little darker")),
    (("lighter", "in a lighter shade"), ("slightly lighter", "a bit lighter", "a little brighter")),
)
SAME_WORDINGS = ("looks the same", "is the same", "is identical in style", "looks identical")

_RESERVED_TYPE_NAMES = ("category", "shade", "none")
_TOKEN = re.compile(r"[a-z0-9]+(?:['/-][a-z0-9]+)*")


def _tokens(text: str) -> tuple[str, ...]:
    """Lower-case word tokens; hyphenated words ("v-neck", "long-sleeved") stay whole."""
    return tuple(_TOKEN.findall(text.lower()))


def _article(noun: str) -> str:
    """ "a dress", "an ankle boot"; plural-looking names ("sneakers") take no article."""
    if noun.endswith("s") and not noun.endswith("ss"):
        return noun
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


# --- claims ---------------------------------------------------------------------------------


class Claim(NamedTuple):
    """What a caption asserts: ``(type, kind, value)``, e.g. ``("sleeve", "comparative",
    "longer")`` or ``("color", "direct", "red")``. A plain tuple, so it compares equal to
    :attr:`Difference.claim`. A "looks the same" caption is ``("none", "same", "same")``."""

    type: str
    kind: str
    value: str


#: The structured record of a "looks the same" caption.
SAME_DIFFERENCE = Difference(type="none", kind="same", target="same", shown="same", claimed="same")
_SAME_CLAIM = Claim("none", "same", "same")


# --- the phrasebook: generation tables and the parser built from the same phrases ------------


class Phrasebook:
    """All wordings for one (vocabulary, category names) pair, indexed for fast generation,
    plus a token trie over the same phrases for parsing.

    Columns: 0 is the category, ``1..T`` the vocabulary's types in order, ``T + 1`` shade.
    """

    def __init__(self, vocabulary: AttributeVocabulary, category_names: tuple[str, ...]) -> None:
        for name in vocabulary.type_names:
            if name in _RESERVED_TYPE_NAMES:
                raise ValueError(
                    f"attribute type name {name!r} is reserved by the template user "
                    f"(reserved: {list(_RESERVED_TYPE_NAMES)}); rename the type"
                )
        self.vocabulary = vocabulary
        self.category_names = category_names
        self.type_names: tuple[str, ...] = ("category", *vocabulary.type_names, "shade")
        num_types = len(vocabulary.types)
        self.shade_column = num_types + 1
        self.color_column: int | None = (
            vocabulary.type_names.index("color") + 1 if "color" in vocabulary.type_names else None
        )
        # value names per column (category names for column 0, none for shade)
        self.values: list[tuple[str, ...]] = [
            category_names,
            *(t.values for t in vocabulary.types),
            (),
        ]
        self.ordered: list[bool] = [False, *(t.ordered for t in vocabulary.types), False]
        self.direct: list[list[tuple[str, ...]]] = []
        self.surface: list[list[str] | None] = []  # how a shown value is named after "instead of"
        self.comparative: list[tuple[tuple[str, ...], tuple[str, ...]] | None] = []
        self.direction_words: list[tuple[str, str] | None] = []

        # category
        nouns = [_CATEGORY_NOUNS.get(c, (c.replace("_", " "),)) for c in category_names]
        self.direct.append([tuple(f"is {_article(n)}" for n in ns) for ns in nouns])
        self.surface.append([_article(ns[0]) for ns in nouns])
        self.comparative.append(None)
        self.direction_words.append(None)
        # attribute types
        for t in vocabulary.types:
            if t.name == "color":
                rows = [tuple(w.format(v=v) for w in _COLOR_GENERIC) for v in t.values]
                self.surface.append(list(t.values))
            else:
                known = _DIRECT.get(t.name, {})
                generic = _DIRECT_GENERIC.get(t.name, _OTHER_GENERIC)
                rows = [known.get(v) or tuple(w.format(v=v, type=t.name) for w in generic) for v in t.values]
                self.surface.append(None)
            self.direct.append(rows)
            if t.ordered:
                words = _DIRECTION_WORDS.get(t.name, _OTHER_DIRECTION_WORDS)
                phrases = _COMPARATIVE.get(t.name) or tuple(
                    tuple(w.format(type=t.name) for w in side) for side in _OTHER_COMPARATIVE
                )
                self.comparative.append(phrases)  # type: ignore[arg-type]
                self.direction_words.append(words)
            else:
                self.comparative.append(None)
                self.direction_words.append(None)
        # shade
        self.direct.append([])
        self.surface.append(None)
        self.comparative.append(SHADE_COMPARATIVES)
        self.direction_words.append(SHADE_WORDS)

        self._build_parser(nouns)

    # --- parser tables ---------------------------------------------------------------------
    def _register(self, phrase: str, claim: Claim, *, variants: bool = True) -> None:
        forms = [phrase]
        if variants and phrase.startswith("is "):
            forms.append(phrase[3:])
        if variants and phrase.startswith("has "):
            forms.append("with " + phrase[4:])
        for form in forms:
            toks = _tokens(form)
            if not toks:
                continue
            known = self._phrases.get(toks)
            if known is not None and known != claim:
                raise ValueError(
                    f"ambiguous wording {form!r}: it would mean both {tuple(known)} and "
                    f"{tuple(claim)}; rename one of the attribute values"
                )
            self._phrases[toks] = claim

    def _build_parser(self, nouns: Sequence[tuple[str, ...]]) -> None:
        self._phrases: dict[tuple[str, ...], Claim] = {}
        for c, type_name in enumerate(self.type_names):
            for v, rows in zip(self.values[c], self.direct[c], strict=False):
                for phrase in rows:
                    self._register(phrase, Claim(type_name, "direct", v))
            comparative, words = self.comparative[c], self.direction_words[c]
            if comparative is not None and words is not None:
                for word, side in zip(words, comparative, strict=True):
                    for phrase in side:
                        self._register(phrase, Claim(type_name, "comparative", word))
        for word, by_size in zip(SHADE_WORDS, SHADE_ONLY_TAILS, strict=True):
            for tails in by_size:
                for tail in tails:
                    self._register(tail, Claim("shade", "comparative", word), variants=False)
        for phrase in SAME_WORDINGS:
            self._register(phrase, _SAME_CLAIM)
        # first token -> candidate phrases, longest first (greedy longest match)
        index: dict[str, list[tuple[tuple[str, ...], Claim]]] = {}
        for toks, claim in self._phrases.items():
            index.setdefault(toks[0], []).append((toks, claim))
        for cands in index.values():
            cands.sort(key=lambda item: -len(item[0]))
        self._index = index
        # shown-value mentions to skip after "instead of" / "rather than", per claim type
        surfaces: dict[str, list[tuple[str, ...]]] = {
            "category": sorted(
                {_tokens(s) for ns in nouns for n in ns for s in (_article(n), n)},
                key=lambda toks: -len(toks),
            )
        }
        if self.color_column is not None:
            surfaces["color"] = sorted(
                {_tokens(v) for v in self.values[self.color_column]}, key=lambda toks: -len(toks)
            )
        self._surfaces = surfaces

    def caption_words(self) -> tuple[str, ...]:
        """Every token a caption can contain (by :func:`fiq_gym.text.split_words`), sorted.

        Includes the joining words and the comma, so a word tokenizer built from it never
        needs ``<unk>`` for a template caption."""
        texts = ["and", "with", "but", ", ", *(" ".join(m) for m in _CONTRAST_MARKERS)]
        texts += SAME_WORDINGS
        for rows in self.direct:
            texts += [phrase for row in rows for phrase in row]
        for sides in self.comparative:
            if sides is not None:
                texts += [phrase for side in sides for phrase in side]
        texts += [tail for by_size in SHADE_ONLY_TAILS for tails in by_size for tail in tails]
        texts += [name for names in self.surface if names is not None for name in names]
        return tuple(sorted({word for text in texts for word in split_words(text)}))

    def parse(self, text: str) -> set[Claim]:
        """The claims ``text`` makes, by greedy longest match of known phrases.

        Words that are not part of a phrase (connectives, typos) are skipped. A "same" claim
        is reported only if the caption makes no other claim ("looks the same but slightly
        darker" claims a shade difference).
        """
        matched = self.scan(text)
        claims = {claim for _, claim in matched if claim.kind != "same"}
        if not claims and any(claim.kind == "same" for _, claim in matched):
            claims.add(_SAME_CLAIM)
        return claims

    def scan(self, text: str) -> list[tuple[tuple[str, ...], Claim]]:
        """Every phrase ``text`` matches, in order, as ``(phrase tokens, claim)``, "same"
        wordings included: what :meth:`parse` reduces to claims, and what tells a reader the
        caption's form ("looks the same but slightly darker": a same wording and a shade tail).
        """
        toks = _tokens(text)
        found: list[tuple[tuple[str, ...], Claim]] = []
        i, n = 0, len(toks)
        index = self._index
        while i < n:
            match = None
            for phrase, claim in index.get(toks[i], ()):
                if toks[i : i + len(phrase)] == phrase:
                    match = (phrase, claim)
                    break
            if match is None:
                i += 1
                continue
            phrase, claim = match
            i += len(phrase)
            found.append(match)
            if claim.type in self._surfaces and toks[i : i + 2] in _CONTRAST_MARKERS:
                i += 2
                for surface in self._surfaces[claim.type]:
                    if toks[i : i + len(surface)] == surface:
                        i += len(surface)
                        break
        return found


@functools.lru_cache(maxsize=32)
def phrasebook(vocabulary: AttributeVocabulary, category_names: tuple[str, ...]) -> Phrasebook:
    """The (cached) phrasebook of one vocabulary and its category names."""
    return Phrasebook(vocabulary, category_names)


def parse_caption(
    text: str,
    vocabulary: AttributeVocabulary,
    category_names: Sequence[str] = ("dress", "shirt", "toptee"),
) -> set[Claim]:
    """Recover the ``(type, kind, value)`` claims a relative caption makes, from text alone.

    Matches the template grammar's phrases (see the module docstring), so it recovers exactly
    the claims of any noise-free :class:`TemplateUser` caption over the same vocabulary and
    category names, and reads a learned captioner's output the same way for faithfulness
    scoring. Unknown words are ignored; an empty set means no recognisable claim.

    Args:
        text: the caption.
        vocabulary: the catalog's attribute vocabulary.
        category_names: the catalog's category names (default: the synthetic ones).
    """
    return phrasebook(vocabulary, tuple(category_names)).parse(text)
