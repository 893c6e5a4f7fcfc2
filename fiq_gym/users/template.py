"""The template shopper: exact, fast, rule-based relative captions.

:class:`TemplateUser` compares the target's and the shown item's attributes and writes a
Fashion IQ-style caption about the target ("is red and has longer sleeves"). Differences are
computed for the whole batch with numpy; only the final string assembly is per pair, from
phrase tables built once per vocabulary.

The same phrase tables drive :func:`parse_caption`, which reads the claims back out of text.
Because generation and parsing share one phrasebook, every noise-free template caption parses
to exactly the claims it was written from, and the parser can score a learned captioner's
output for faithfulness.

Grammar, in short: a caption is one to ``max_differences`` *phrases* joined by ``", "`` and a
final ``" and "``. Every phrase names its attribute type unambiguously ("has long sleeves",
"is long length", "is longer"), so phrases never need context. Two optional compressions
make wording less mechanical: a later phrase may drop its leading ``"is "`` ("is darker and
striped") and a final ``"has ..."`` phrase may become ``"with ..."`` ("is red with short
sleeves"). Colour and category phrases may name the shown value after ``"instead of"`` or
``"rather than"``; the parser skips that part. A caption with no difference says "looks the
same"; one whose only difference is shade says "looks the same but slightly darker".
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.text import split_words
from fiq_gym.users.base import CaptionBatch, Difference, User, row_uniforms

__all__ = [
    "COMPARATIVE_PROBABILITY",
    "LUMA_WEIGHTS",
    "SALIENCE",
    "SAME_DIFFERENCE",
    "SHADE_THRESHOLD",
    "Claim",
    "TemplateNoise",
    "TemplateUser",
    "parse_caption",
]

# --- tunables -------------------------------------------------------------------------------

#: Rec. 601 luma weights: perceived brightness of an sRGB colour, 0..255 for uint8 input.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

#: Minimum luma gap (0..255 scale) for "darker"/"lighter". About 8% of the range: below it two
#: renderings of one named colour look alike to a person, above it the difference is visible.
#: Gaps under twice the threshold are "slightly" darker in a looks-the-same caption.
SHADE_THRESHOLD: float = 20.0

#: Relative chance that a difference is mentioned (weighted sampling without replacement), so
#: captions usually lead with what a shopper notices first. Unknown types get 1.0.
SALIENCE: Mapping[str, float] = {
    "category": 10.0,
    "color": 6.0,
    "shade": 6.0,  # when the named colour is the same (or unknown) on both sides
    "pattern": 4.0,
    "length": 3.0,
    "sleeve": 3.0,
    "neckline": 2.0,
    "fit": 1.5,
}
#: Salience of a shade difference when the named colours differ too ("is darker and red").
SHADE_SALIENCE_WITH_COLOR_CHANGE: float = 2.0

#: Chance that a difference of an ordered type is worded as a comparative ("has longer
#: sleeves") rather than directly ("has long sleeves").
COMPARATIVE_PROBABILITY: float = 0.5

#: Chance that a later phrase is compressed ("is darker and striped", "... with long sleeves").
COMPRESS_PROBABILITY: float = 0.3

# --- wording tables -------------------------------------------------------------------------
# Direct wordings per known type and value; unknown values of a known type use the type's
# generic wordings, unknown types use "has {v} {type}". Every wording must name its type
# unambiguously (checked when a phrasebook is built).

_CATEGORY_NOUNS: Mapping[str, tuple[str, ...]] = {
    "dress": ("dress",),
    "shirt": ("shirt", "button-up shirt"),
    "toptee": ("top", "tee"),
}
_CONTRAST = ("{phrase} instead of {shown}", "{phrase} rather than {shown}")
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
_SHADE_WORDS = ("darker", "lighter")
_SHADE_COMPARATIVE = (
    ("is darker", "is a darker shade", "is darker in color"),
    ("is lighter", "is brighter", "is a lighter shade"),
)
# "looks the same but <tail>" when shade is the only difference: [direction][slight] -> tails.
_SHADE_ONLY_TAILS = (
    (("darker", "in a darker shade"), ("slightly darker", "a bit darker", "a little darker")),
    (("lighter", "in a lighter shade"), ("slightly lighter", "a bit lighter", "a little brighter")),
)
_SAME = ("looks the same", "is the same", "is identical in style", "looks identical")

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


# --- claims, noise --------------------------------------------------------------------------


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


@dataclass(frozen=True)
class TemplateNoise:
    """Imperfect-shopper noise, all off by default (each a probability in [0, 1]).

    Attributes:
        omit: each chosen difference is left out with this chance (at least one mention is
            always kept); models shoppers who mention less than they could.
        wrong_color: a mentioned colour is replaced by another random colour (recorded in
            ``Difference.claimed``; ``target`` keeps the truth).
        drop_word: each word of the final caption is deleted with this chance (never all of
            them); models terse or sloppy typing. Recorded differences are not changed.
    """

    omit: float = 0.0
    wrong_color: float = 0.0
    drop_word: float = 0.0

    def __post_init__(self) -> None:
        for name in ("omit", "wrong_color", "drop_word"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"TemplateNoise.{name} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
                raise ValueError(f"TemplateNoise.{name} must lie in [0, 1], got {value!r}")

    @property
    def active(self) -> bool:
        return self.omit > 0 or self.wrong_color > 0 or self.drop_word > 0


# --- the phrasebook: generation tables and the parser built from the same phrases ------------


class _Phrasebook:
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
        self.comparative.append(_SHADE_COMPARATIVE)
        self.direction_words.append(_SHADE_WORDS)

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
        for word, by_size in zip(_SHADE_WORDS, _SHADE_ONLY_TAILS, strict=True):
            for tails in by_size:
                for tail in tails:
                    self._register(tail, Claim("shade", "comparative", word), variants=False)
        for phrase in _SAME:
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
        texts += _SAME
        for rows in self.direct:
            texts += [phrase for row in rows for phrase in row]
        for sides in self.comparative:
            if sides is not None:
                texts += [phrase for side in sides for phrase in side]
        texts += [tail for by_size in _SHADE_ONLY_TAILS for tails in by_size for tail in tails]
        texts += [name for names in self.surface if names is not None for name in names]
        return tuple(sorted({word for text in texts for word in split_words(text)}))

    def parse(self, text: str) -> set[Claim]:
        """The claims ``text`` makes, by greedy longest match of known phrases.

        Words that are not part of a phrase (connectives, typos) are skipped. A "same" claim
        is reported only if the caption makes no other claim ("looks the same but slightly
        darker" claims a shade difference).
        """
        toks = _tokens(text)
        claims: set[Claim] = set()
        same = False
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
            if claim.kind == "same":
                same = True
                continue
            claims.add(claim)
            if claim.type in self._surfaces and toks[i : i + 2] in _CONTRAST_MARKERS:
                i += 2
                for surface in self._surfaces[claim.type]:
                    if toks[i : i + len(surface)] == surface:
                        i += len(surface)
                        break
        if not claims and same:
            claims.add(_SAME_CLAIM)
        return claims


@functools.lru_cache(maxsize=32)
def _phrasebook(vocabulary: AttributeVocabulary, category_names: tuple[str, ...]) -> _Phrasebook:
    return _Phrasebook(vocabulary, category_names)


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
    return _phrasebook(vocabulary, tuple(category_names)).parse(text)


# --- the user -------------------------------------------------------------------------------


class TemplateUser(User):
    """A rule-based shopper that writes exact relative captions in varied wording.

    It mentions 1 to ``max_differences`` of the true differences between target and shown
    item, sampled by :data:`SALIENCE` (category > colour > pattern > length > sleeve >
    neckline > fit), worded directly ("is red"), comparatively for ordered types and shade
    ("is darker", "has longer sleeves"), or mixed. With ``noise`` it can omit differences,
    name a wrong colour, or drop words. All randomness comes from the ``rng`` passed to
    :meth:`describe`, so a seeded generator reproduces the captions exactly.

    Args:
        catalog: the catalog whose items are described. Attribute codes and luma are cached
            here, so later changes to the catalog's arrays are not seen.
        noise: imperfection settings; ``None`` means a perfect shopper.
        max_differences: most differences one caption mentions (at least 1).
        shade_threshold: luma gap (0..255) for a darker/lighter difference; see
            :data:`SHADE_THRESHOLD`.
    """

    def __init__(
        self,
        catalog: Catalog,
        noise: TemplateNoise | None = None,
        max_differences: int = 3,
        *,
        shade_threshold: float = SHADE_THRESHOLD,
    ) -> None:
        super().__init__(catalog)
        if isinstance(max_differences, bool) or not isinstance(max_differences, int | np.integer):
            raise ValueError(f"max_differences must be an integer >= 1, got {max_differences!r}")
        if max_differences < 1:
            raise ValueError(f"max_differences must be at least 1, got {max_differences}")
        if not (isinstance(shade_threshold, int | float) and shade_threshold > 0):
            raise ValueError(f"shade_threshold must be a positive number, got {shade_threshold!r}")
        if noise is not None and not isinstance(noise, TemplateNoise):
            raise TypeError(f"noise must be a TemplateNoise or None, got {type(noise).__name__}")
        self.noise = noise if noise is not None else TemplateNoise()
        self.max_differences = int(max_differences)
        self.shade_threshold = float(shade_threshold)
        self._book = _phrasebook(catalog.vocabulary, tuple(catalog.category_names))
        self._codes = np.ascontiguousarray(catalog.attribute_codes())
        self._categories = np.asarray(catalog.categories, dtype=np.int16)
        self._luma: np.ndarray | None = None
        if catalog.primary_rgb is not None:
            rgb = np.asarray(catalog.primary_rgb, dtype=np.float32)
            self._luma = rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        names = self._book.type_names
        self._salience = np.array([SALIENCE.get(n, 1.0) for n in names], dtype=np.float64)
        self._differences: dict[tuple, Difference] = {}  # immutable records, reused
        # per-pair uniform block: [keys (D) | count | omit (m) | style (3m) | wrong | wrong_pick]
        d, m = len(names), self.max_differences
        widths = {"keys": d, "count": 1, "omit": m, "style": 3 * m, "wrong": 1, "wrong_pick": 1}
        self._uniform_slots: dict[str, slice | int] = {}
        start = 0
        for name, width in widths.items():
            self._uniform_slots[name] = start if width == 1 else slice(start, start + width)
            start += width
        self._uniform_width = start
        # number of extra mentions beyond the first: Binomial(m - 1, 1/2), by inverse CDF
        pmf = np.array([math.comb(m - 1, k) for k in range(m)], dtype=np.float64) / 2.0 ** (m - 1)
        self._count_cdf = np.cumsum(pmf)[:-1]

    @property
    def vocabulary(self) -> AttributeVocabulary:
        return self.catalog.vocabulary

    def caption_words(self) -> tuple[str, ...]:
        """Every token this user's captions can contain, sorted; feeds a
        :class:`~fiq_gym.text.WordTokenizer` so template captions never hit ``<unk>``."""
        return self._book.caption_words()

    def parse(self, text: str) -> set[Claim]:
        """:func:`parse_caption` with this catalog's vocabulary and category names."""
        return self._book.parse(text)

    def wordings(self, type_name: str, kind: str, value: str) -> tuple[str, ...]:
        """The phrase templates for one claim, e.g. ``("sleeve", "comparative", "longer")``
        or ``("color", "direct", "red")``; contrast forms show ``{shown}``. For
        documentation and tests."""
        book = self._book
        if type_name == "none" and kind == "same":
            return _SAME
        c = book.type_names.index(type_name)
        if kind == "direct":
            rows = book.direct[c][book.values[c].index(value)]
            if book.surface[c] is not None:
                rows = rows + tuple(w.format(phrase=rows[0], shown="{shown}") for w in _CONTRAST)
            return rows
        if kind == "comparative":
            words, side = book.direction_words[c], book.comparative[c]
            if words is None or side is None:
                raise ValueError(f"type {type_name!r} is not ordered; it has no comparatives")
            return side[words.index(value)]
        raise ValueError(f"kind must be 'direct', 'comparative' or 'same', got {kind!r}")

    # --- the batched core ------------------------------------------------------------------
    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        n = targets.size
        if n == 0:
            return CaptionBatch([], [])
        book = self._book
        m = self.max_differences
        noise = self.noise
        num_types = self._codes.shape[1]
        num_columns = num_types + 2
        shade_col = book.shade_column
        color_col = book.color_column

        # 1. which of the D columns differ, for all pairs at once
        t_codes = self._codes[targets]
        s_codes = self._codes[shown]
        t_cats = self._categories[targets]
        s_cats = self._categories[shown]
        differs = np.zeros((n, num_columns), dtype=bool)
        differs[:, 0] = t_cats != s_cats
        differs[:, 1 : num_types + 1] = (t_codes != s_codes) & (t_codes >= 0) & (s_codes >= 0)
        salience = np.broadcast_to(self._salience, differs.shape)
        if self._luma is not None:
            luma_gap = self._luma[targets] - self._luma[shown]
            differs[:, shade_col] = np.abs(luma_gap) >= self.shade_threshold
            if color_col is not None:
                salience = salience.copy()
                salience[differs[:, color_col], shade_col] = SHADE_SALIENCE_WITH_COLOR_CHANGE
        else:
            luma_gap = np.zeros(n, dtype=np.float32)
        num_differences = differs.sum(axis=1)

        # 2. every random decision of pair i comes from row i of one uniform block (layout in
        #    _uniform_slots), the same draws whatever the noise settings
        u = row_uniforms(rng, n, self._uniform_width)
        slots = self._uniform_slots
        # which to mention: weighted sampling without replacement (Efraimidis-Spirakis keys
        # log(u)/w, largest first); how many: 1 + Binomial(m - 1, 1/2), capped
        keys = np.log1p(-u[:, slots["keys"]]) / salience
        keys[~differs] = -np.inf
        order = np.argsort(-keys, axis=1, kind="stable")[:, :m]
        slots_used = order.shape[1]
        extra = np.searchsorted(self._count_cdf, u[:, slots["count"]], side="right")
        count = np.minimum(1 + extra, num_differences)
        mention = np.arange(slots_used) < count[:, None]
        if noise.omit > 0:
            kept = mention & (u[:, slots["omit"]][:, :slots_used] >= noise.omit)
            lost_all = (count > 0) & ~kept.any(axis=1)
            kept[lost_all, 0] = True
            mention = kept
        # per mention slot: wording choice, comparative-or-direct, compression
        style = u[:, slots["style"]].reshape(n, 3, m)[:, :, :slots_used]
        wrong = None
        if noise.wrong_color > 0 and color_col is not None:
            wrong = self._wrong_colors(
                t_codes[:, color_col - 1], s_codes[:, color_col - 1], u[:, slots["wrong_pick"]]
            )
            wrong[u[:, slots["wrong"]] >= noise.wrong_color] = -1

        # 3. per-pair text assembly from the phrase tables
        order_l = order.tolist()
        mention_l = mention.tolist()
        style_l = style.tolist()
        t_codes_l = t_codes.tolist()
        s_codes_l = s_codes.tolist()
        t_cats_l = t_cats.tolist()
        s_cats_l = s_cats.tolist()
        gap_l = luma_gap.tolist()
        ndiff_l = num_differences.tolist()
        wrong_l = wrong.tolist() if wrong is not None else None
        direct = book.direct
        surface = book.surface
        comparative = book.comparative
        ordered = book.ordered
        values = book.values
        names = book.type_names
        cache = self._differences
        comp_p = COMPARATIVE_PROBABILITY
        compress_p = COMPRESS_PROBABILITY
        slight_limit = 2.0 * self.shade_threshold

        texts: list[str] = []
        records: list[tuple[Difference, ...]] = []
        for i in range(n):
            word_u, comp_u, compress_u = style_l[i]
            cols = [c for c, on in zip(order_l[i], mention_l[i], strict=True) if on]
            if not cols:
                texts.append(_SAME[int(word_u[0] * len(_SAME))])
                records.append((SAME_DIFFERENCE,))
                continue
            if ndiff_l[i] == 1 and cols[0] == shade_col:
                # everything but the shade matches: "looks the same but slightly darker"
                gap = gap_l[i]
                direction = 0 if gap < 0 else 1
                tails = _SHADE_ONLY_TAILS[direction][abs(gap) < slight_limit]
                same = _SAME[int(word_u[0] * len(_SAME))]
                tail = tails[int(comp_u[0] * len(tails))]
                texts.append(f"{same} but {tail}")
                records.append((self._shade_record(direction, t_codes_l[i], s_codes_l[i]),))
                continue
            parts: list[str] = []
            record: list[Difference] = []
            for pos, c in enumerate(cols):
                if c == shade_col:
                    direction = 0 if gap_l[i] < 0 else 1
                    side = _SHADE_COMPARATIVE[direction]
                    parts.append(side[int(word_u[pos] * len(side))])
                    record.append(self._shade_record(direction, t_codes_l[i], s_codes_l[i]))
                    continue
                if c == 0:
                    tv, sv = t_cats_l[i], s_cats_l[i]
                else:
                    tv, sv = t_codes_l[i][c - 1], s_codes_l[i][c - 1]
                if ordered[c] and comp_u[pos] < comp_p:
                    direction = 0 if tv > sv else 1
                    side = comparative[c][direction]  # type: ignore[index]
                    parts.append(side[int(word_u[pos] * len(side))])
                    key = (c, direction, sv)
                    diff = cache.get(key)
                    if diff is None:
                        word = book.direction_words[c][direction]  # type: ignore[index]
                        diff = Difference(names[c], "comparative", word, values[c][sv], word)
                        cache[key] = diff
                    record.append(diff)
                    continue
                claimed = tv
                if c == color_col and wrong_l is not None and wrong_l[i] >= 0:
                    claimed = wrong_l[i]
                rows = direct[c][claimed]
                shown_names = surface[c]
                if shown_names is None:
                    parts.append(rows[int(word_u[pos] * len(rows))])
                else:
                    k = int(word_u[pos] * (len(rows) + len(_CONTRAST)))
                    if k < len(rows):
                        parts.append(rows[k])
                    else:
                        parts.append(_CONTRAST[k - len(rows)].format(phrase=rows[0], shown=shown_names[sv]))
                key = (c, tv, sv, claimed)
                diff = cache.get(key)
                if diff is None:
                    diff = Difference(names[c], "direct", values[c][tv], values[c][sv], values[c][claimed])
                    cache[key] = diff
                record.append(diff)

            text = parts[0]
            last = len(parts) - 1
            for pos in range(1, len(parts)):
                phrase = parts[pos]
                compress = compress_u[pos] < compress_p
                if pos == last:
                    # "with" right after "instead of a top" would read as part of it
                    previous = parts[pos - 1]
                    if (
                        compress
                        and phrase.startswith("has ")
                        and " instead of " not in previous
                        and " rather than " not in previous
                    ):
                        text = f"{text} with {phrase[4:]}"
                        continue
                    sep = " and "
                else:
                    sep = ", "
                if compress and phrase.startswith("is "):
                    phrase = phrase[3:]
                text = text + sep + phrase
            texts.append(text)
            records.append(tuple(record))

        if noise.drop_word > 0:
            texts = self._drop_words(texts, noise.drop_word, rng)
        return CaptionBatch(texts, records)

    # --- helpers ---------------------------------------------------------------------------
    def _shade_record(self, direction: int, t_codes: list[int], s_codes: list[int]) -> Difference:
        """The shade difference; ``shown`` is the shown item's colour name ("" if unknown)."""
        color_col = self._book.color_column
        shown_code = s_codes[color_col - 1] if color_col is not None else -1
        key = ("shade", direction, shown_code)
        diff = self._differences.get(key)
        if diff is None:
            shown_name = self._book.values[color_col][shown_code] if shown_code >= 0 else ""  # type: ignore[index]
            word = _SHADE_WORDS[direction]
            diff = Difference("shade", "comparative", word, shown_name, word)
            self._differences[key] = diff
        return diff

    def _wrong_colors(self, target: np.ndarray, shown: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A colour code per pair (from uniforms ``u``) that is neither the target's nor, if
        the palette allows, the shown item's colour, so a wrong-colour caption is really wrong."""
        num_colors = len(self._book.values[self._book.color_column])  # type: ignore[index]
        t = target.astype(np.int64)
        s = shown.astype(np.int64)
        if num_colors >= 3:
            low, high = np.minimum(t, s), np.maximum(t, s)
            pick = np.minimum((u * (num_colors - 2)).astype(np.int64), num_colors - 3)
            pick += pick >= low
            pick += pick >= high
        elif num_colors == 2:
            pick = 1 - np.clip(t, 0, 1)
        else:
            pick = np.zeros_like(t)
        return pick

    @staticmethod
    def _drop_words(
        texts: list[str],
        probability: float,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> list[str]:
        """Delete each word with ``probability``; if that would delete all, keep one.

        Drawn after the main block: one call for a single generator, or ``len(words) + 1``
        uniforms from each pair's own generator."""
        split = [text.split(" ") for text in texts]
        if isinstance(rng, np.random.Generator):
            width = max(len(words) for words in split) + 1
            rows = rng.random((len(split), width)).tolist()
        else:
            rows = [g.random(len(w) + 1).tolist() for w, g in zip(split, rng, strict=True)]
        out = []
        for words, row in zip(split, rows, strict=True):
            kept = [w for w, x in zip(words, row, strict=False) if x >= probability]
            if not kept:
                kept = [words[min(int(row[-1] * len(words)), len(words) - 1)]]
            out.append(" ".join(kept))
        return out
