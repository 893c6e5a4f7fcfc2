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

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.text import WordTokenizer, pad_token_ids
from fiq_gym.users.base import CaptionBatch, Difference, User, row_uniforms
from fiq_gym.users.phrasebook import (
    CONTRAST,
    SAME_DIFFERENCE,
    SAME_WORDINGS,
    SHADE_COMPARATIVES,
    SHADE_ONLY_TAILS,
    SHADE_WORDS,
    Claim,
    parse_caption,
    phrasebook,
)

__all__ = [
    "COMPARATIVE_PROBABILITY",
    "LUMA_WEIGHTS",
    "SALIENCE",
    "SAME_DIFFERENCE",
    "SHADE_THRESHOLD",
    "Claim",
    "TemplateNoise",
    "TemplateUser",
    "column_salience",
    "differing_columns",
    "extra_mentions_pmf",
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


def column_salience(column_names: Sequence[str]) -> np.ndarray:
    """:data:`SALIENCE` of each phrasebook column (category, the types, shade), 1.0 for
    unknown types; the shade's becomes :data:`SHADE_SALIENCE_WITH_COLOR_CHANGE` in pairs whose
    named colours differ too."""
    return np.array([SALIENCE.get(n, 1.0) for n in column_names], dtype=np.float64)


def differing_columns(
    t_codes: np.ndarray,
    s_codes: np.ndarray,
    t_categories: np.ndarray,
    s_categories: np.ndarray,
    luma_gap: np.ndarray | None,
    shade_threshold: float,
) -> np.ndarray:
    """(n, T + 2) which phrasebook columns (category, each type, shade) differ between
    targets and shown items (arrays that broadcast to n pairs): a known value on both sides
    that differs, or a luma gap (target minus shown, 0..255) of at least the threshold; no
    shade difference when the luma is unknown (None). The shopper's rule, which
    :class:`~fiq_gym.users.template_likelihood.TemplateLikelihood` reads too."""
    category = np.asarray(t_categories != s_categories)
    types = (t_codes != s_codes) & (t_codes >= 0) & (s_codes >= 0)
    out = np.empty((len(category), types.shape[-1] + 2), dtype=bool)  # filled as column_stack would
    out[:, 0] = category
    out[:, 1:-1] = types
    if luma_gap is None:
        out[:, -1] = False
    else:
        np.greater_equal(np.abs(luma_gap), shade_threshold, out=out[:, -1])
    return out


def extra_mentions_pmf(max_differences: int) -> np.ndarray:
    """P(a caption means to mention ``1 + j`` differences), j = 0..m-1: Binomial(m - 1, 1/2),
    before the cap at the number of differences there are."""
    m = max_differences
    return np.array([math.comb(m - 1, k) for k in range(m)], dtype=np.float64) / 2.0 ** (m - 1)


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


# --- the user's steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Comparison:
    """What differs between each target and shown item (arrays over the pairs)."""

    t_codes: np.ndarray
    s_codes: np.ndarray
    t_cats: np.ndarray
    s_cats: np.ndarray
    differs: np.ndarray  # (n, columns) bool: category, each type, shade
    salience: np.ndarray  # (n, columns) weights of being mentioned
    luma_gap: np.ndarray  # target minus shown luma


@dataclass(frozen=True)
class _MentionPlan:
    """Which differences each caption mentions and how (arrays over the pairs)."""

    order: np.ndarray  # (n, slots) columns by sampled salience
    mention: np.ndarray  # (n, slots) bool: slot is mentioned
    style: np.ndarray  # (n, 3, slots) uniforms: wording, comparative-or-direct, compression
    wrong: np.ndarray | None  # (n,) wrong colour code to name, -1 for none
    num_differences: np.ndarray


def _join_phrases(parts: list[str], compress_u: Sequence[float]) -> list[str]:
    """ "a, b and c", with later phrases sometimes compressed ("is darker and striped",
    "... with long sleeves"), as the fragments whose concatenation is the caption (phrases and
    the separators between them, each of whole words, so their token ids concatenate too)."""
    fragments = [parts[0]]
    last = len(parts) - 1
    for pos in range(1, len(parts)):
        phrase = parts[pos]
        compress = compress_u[pos] < COMPRESS_PROBABILITY
        if pos == last:
            # "with" right after "instead of a top" would read as part of it
            previous = parts[pos - 1]
            if (
                compress
                and phrase.startswith("has ")
                and " instead of " not in previous
                and " rather than " not in previous
            ):
                fragments += (" with ", phrase[4:])
                continue
            sep = " and "
        else:
            sep = ", "
        if compress and phrase.startswith("is "):
            phrase = phrase[3:]
        fragments += (sep, phrase)
    return fragments


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

    rows_independent = True  # every draw of pair i comes from rng[i] (row_uniforms, _drop_words)

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
        self._book = phrasebook(catalog.vocabulary, tuple(catalog.category_names))
        self._codes = np.ascontiguousarray(catalog.attribute_codes())
        self._categories = np.asarray(catalog.categories, dtype=np.int16)
        self._luma: np.ndarray | None = None
        if catalog.primary_rgb is not None:
            rgb = np.asarray(catalog.primary_rgb, dtype=np.float32)
            self._luma = rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        names = self._book.type_names
        self._salience = column_salience(names)
        self._differences: dict[tuple, Difference] = {}  # immutable records, reused
        # per-pair uniform block: [keys (D) | count | omit (m) | style (3m) | wrong | wrong_pick]
        d, m = len(names), self.max_differences
        widths = {"keys": d, "count": 1, "omit": m, "style": 3 * m, "wrong": 1, "wrong_pick": 1}
        self._uniform_slots: dict[str, slice | int] = {}
        start = 0
        vectors = {"keys", "omit", "style"}  # always 2-D, even when max_differences is 1
        for name, width in widths.items():
            self._uniform_slots[name] = slice(start, start + width) if name in vectors else start
            start += width
        self._uniform_width = start
        # number of extra mentions beyond the first, by inverse CDF
        self._count_cdf = np.cumsum(extra_mentions_pmf(m))[:-1]

    @property
    def vocabulary(self) -> AttributeVocabulary:
        return self.catalog.vocabulary

    @property
    def num_items(self) -> int:
        return self.__dict__.get("_imagined_items", len(self.catalog))

    def imagining(self, codes: np.ndarray, categories: np.ndarray, luma: np.ndarray | None) -> TemplateUser:
        """This shopper, describing hypothetical items instead of the catalog's: item ``i`` has
        attribute codes ``codes[i]``, category ``categories[i]`` and luma ``luma[i]`` (None:
        no shade), and :meth:`describe` takes indices into these arrays.

        For planners that ask "what would the shopper say if the target were ``t``?" of items
        they only believe things about (e.g. the posterior agent's predicted attributes): the
        captions follow this shopper's rules and noise exactly, on the given attributes.
        """
        codes = np.ascontiguousarray(codes)
        categories = np.asarray(categories, dtype=np.int16)
        if codes.ndim != 2 or codes.shape[1] != self._codes.shape[1] or len(categories) != len(codes):
            raise ValueError(
                f"imagined items need codes of shape (N, {self._codes.shape[1]}) and N categories, got "
                f"{codes.shape} and {categories.shape}"
            )
        other = copy.copy(self)
        other._codes = codes
        other._categories = categories
        other._luma = None if luma is None else np.asarray(luma, dtype=np.float32)
        other.__dict__["_imagined_items"] = len(codes)
        return other

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
            return SAME_WORDINGS
        c = book.type_names.index(type_name)
        if kind == "direct":
            rows = book.direct[c][book.values[c].index(value)]
            if book.surface[c] is not None:
                rows = rows + tuple(w.format(phrase=rows[0], shown="{shown}") for w in CONTRAST)
            return rows
        if kind == "comparative":
            words, side = book.direction_words[c], book.comparative[c]
            if words is None or side is None:
                raise ValueError(f"type {type_name!r} is not ordered; it has no comparatives")
            return side[words.index(value)]
        raise ValueError(f"kind must be 'direct', 'comparative' or 'same', got {kind!r}")

    def pick(self, targets: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(n,) the slate position this shopper compares its target with, when shown several
        items at once: the item whose differences from the target weigh least, each difference
        weighted by the salience the shopper notices it with (:data:`SALIENCE`; a shade
        difference beside a colour change weighs :data:`SHADE_SALIENCE_WITH_COLOR_CHANGE`),
        ties to the earliest position. Deterministic: the shopper's noise does not touch it.

        Args:
            targets: (n,) item indices.
            slates: (n, K) item indices shown together (or (K,) for one slate shown to all).
        """
        targets = np.asarray(targets, dtype=np.int64)
        slates = np.broadcast_to(np.asarray(slates, dtype=np.int64), (len(targets), np.shape(slates)[-1]))
        n, k = slates.shape
        t = np.repeat(targets, k)
        s = slates.reshape(-1)
        luma_gap = None if self._luma is None else self._luma[t] - self._luma[s]
        differs = differing_columns(
            self._codes[t],
            self._codes[s],
            self._categories[t],
            self._categories[s],
            luma_gap,
            self.shade_threshold,
        )
        weights = np.broadcast_to(self._salience, differs.shape).copy()
        color, shade = self._book.color_column, self._book.shade_column
        if color is not None:
            weights[differs[:, color], shade] = SHADE_SALIENCE_WITH_COLOR_CHANGE
        distance = (differs * weights).sum(axis=1).reshape(n, k)
        return np.argmin(distance, axis=1)  # argmin takes the first of equal values

    # --- the batched core ------------------------------------------------------------------
    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        if targets.size == 0:
            return CaptionBatch([], [])
        pairs = self._compare(targets, shown)
        # Every random decision of pair i comes from row i of one uniform block (layout in
        # _uniform_slots), the same draws whatever the noise settings.
        plan = self._plan_mentions(pairs, row_uniforms(rng, targets.size, self._uniform_width))
        ids_of = self._fragment_ids()
        texts, records, token_rows = self._write(pairs, plan, ids_of)
        if self.noise.drop_word > 0:
            return CaptionBatch(self._drop_words(texts, self.noise.drop_word, rng), records)
        if token_rows is None:
            return CaptionBatch(texts, records)
        # The token ids the tokenizer would give the texts, so the env need not tokenize them.
        word_ids, word_lengths = pad_token_ids(token_rows, max(1, *map(len, token_rows)))
        return CaptionBatch(texts, records, word_ids, word_lengths, self.tokenizer)

    def _fragment_ids(self) -> Callable[[str], list[int]] | None:
        """Token ids of a caption fragment (a phrase or a separator) by this shopper's
        :attr:`tokenizer`, cached: a caption's ids are its fragments' ids one after another
        (fragments are whole words). None unless the tokenizer is a plain
        :class:`~fiq_gym.text.WordTokenizer` and no words are dropped."""
        tokenizer = self.tokenizer
        if type(tokenizer) is not WordTokenizer or self.noise.drop_word > 0:
            return None
        cached = self.__dict__.get("_fragment_cache")
        if cached is None or cached[0] is not tokenizer:
            cached = self.__dict__["_fragment_cache"] = (tokenizer, {})
        ids: dict[str, list[int]] = cached[1]
        encode = tokenizer.encode

        def ids_of(fragment: str) -> list[int]:
            got = ids.get(fragment)
            if got is None:
                got = ids[fragment] = encode(fragment)
            return got

        return ids_of

    def _compare(self, targets: np.ndarray, shown: np.ndarray) -> _Comparison:
        """Step 1: which of the columns (category, each type, shade) differ, for all pairs."""
        n = targets.size
        book = self._book
        t_codes, s_codes = self._codes[targets], self._codes[shown]
        t_cats, s_cats = self._categories[targets], self._categories[shown]
        luma_gap = None if self._luma is None else self._luma[targets] - self._luma[shown]
        differs = differing_columns(t_codes, s_codes, t_cats, s_cats, luma_gap, self.shade_threshold)
        if luma_gap is not None and book.color_column is not None:
            salience = np.empty(differs.shape)
            salience[...] = self._salience
            salience[differs[:, book.color_column], book.shade_column] = SHADE_SALIENCE_WITH_COLOR_CHANGE
        else:
            salience = np.broadcast_to(self._salience, differs.shape)
        if luma_gap is None:
            luma_gap = np.zeros(n, dtype=np.float32)
        return _Comparison(t_codes, s_codes, t_cats, s_cats, differs, salience, luma_gap)

    def _plan_mentions(self, pairs: _Comparison, u: np.ndarray) -> _MentionPlan:
        """Step 2: which differences each caption mentions, in what order and wording style,
        and (with noise) which are omitted and which colour is named wrongly."""
        n, m, noise, slots = len(u), self.max_differences, self.noise, self._uniform_slots
        color_col = self._book.color_column
        num_differences = pairs.differs.sum(axis=1)
        # which to mention: weighted sampling without replacement (Efraimidis-Spirakis keys
        # log(u)/w, largest first); how many: 1 + Binomial(m - 1, 1/2), capped
        keys = np.log1p(-u[:, slots["keys"]]) / pairs.salience
        keys[~pairs.differs] = -np.inf
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
                pairs.t_codes[:, color_col - 1], pairs.s_codes[:, color_col - 1], u[:, slots["wrong_pick"]]
            )
            wrong[u[:, slots["wrong"]] >= noise.wrong_color] = -1
        return _MentionPlan(order, mention, style, wrong, num_differences)

    def _write(
        self, pairs: _Comparison, plan: _MentionPlan, ids_of: Callable[[str], list[int]] | None = None
    ) -> tuple[list[str], list[tuple[Difference, ...]], list[list[int]] | None]:
        """Step 3: per-pair text assembly from the phrase tables (lists, not arrays: this is
        the one per-pair loop, and Python indexing of lists is several times faster); with
        ``ids_of`` (:meth:`_fragment_ids`), each caption's token ids as well."""
        shade_col = self._book.shade_column
        slight_limit = 2.0 * self.shade_threshold
        t_codes_l, s_codes_l = pairs.t_codes.tolist(), pairs.s_codes.tolist()
        t_cats_l, s_cats_l = pairs.t_cats.tolist(), pairs.s_cats.tolist()
        gap_l = pairs.luma_gap.tolist()
        ndiff_l = plan.num_differences.tolist()
        wrong_l = plan.wrong.tolist() if plan.wrong is not None else None
        # A difference's wordings and record, by (column, target value, shown value, wrong
        # colour, comparative draw): built once each (_wordings), so the loop only looks up.
        wordings = self.__dict__.setdefault("_wording_cache", {})
        wordings_of = self._wordings
        texts: list[str] = []
        records: list[tuple[Difference, ...]] = []
        tokens: list[list[int]] | None = None if ids_of is None else []
        for i, (order, mention, style) in enumerate(
            zip(plan.order.tolist(), plan.mention.tolist(), plan.style.tolist(), strict=True)
        ):
            word_u, comp_u, compress_u = style
            cols = list(compress(order, mention))
            if not cols:
                same = SAME_WORDINGS[int(word_u[0] * len(SAME_WORDINGS))]
                texts.append(same)
                records.append((SAME_DIFFERENCE,))
                if tokens is not None and ids_of is not None:
                    tokens.append(ids_of(same))
                continue
            if ndiff_l[i] == 1 and cols[0] == shade_col:
                # everything but the shade matches: "looks the same but slightly darker"
                gap = gap_l[i]
                direction = 0 if gap < 0 else 1
                tails = SHADE_ONLY_TAILS[direction][abs(gap) < slight_limit]
                same = SAME_WORDINGS[int(word_u[0] * len(SAME_WORDINGS))]
                tail = tails[int(comp_u[0] * len(tails))]
                texts.append(f"{same} but {tail}")
                records.append((self._shade_record(direction, t_codes_l[i], s_codes_l[i]),))
                if tokens is not None and ids_of is not None:
                    tokens.append(ids_of(same) + ids_of(" but ") + ids_of(tail))
                continue
            parts: list[str] = []
            record: list[Difference] = []
            t_codes, s_codes = t_codes_l[i], s_codes_l[i]
            wrong = wrong_l[i] if wrong_l is not None else -1
            for pos, c in enumerate(cols):
                if c == shade_col:
                    direction = 0 if gap_l[i] < 0 else 1
                    side = SHADE_COMPARATIVES[direction]
                    parts.append(side[int(word_u[pos] * len(side))])
                    record.append(self._shade_record(direction, t_codes, s_codes))
                    continue
                if c == 0:
                    tv, sv = t_cats_l[i], s_cats_l[i]
                else:
                    tv, sv = t_codes[c - 1], s_codes[c - 1]
                key = (c, tv, sv, wrong, comp_u[pos] < COMPARATIVE_PROBABILITY)
                entry = wordings.get(key)
                if entry is None:
                    entry = wordings[key] = wordings_of(*key)
                side, diff = entry
                parts.append(side[int(word_u[pos] * len(side))])
                record.append(diff)
            records.append(tuple(record))
            if len(parts) == 1:  # a third of the captions: nothing to join
                texts.append(parts[0])
                if tokens is not None and ids_of is not None:
                    tokens.append(ids_of(parts[0]))
                continue
            fragments = _join_phrases(parts, compress_u)
            texts.append("".join(fragments))
            if tokens is not None and ids_of is not None:
                tokens.append(list(chain.from_iterable(map(ids_of, fragments))))
        return texts, records, tokens

    def _wordings(
        self, c: int, tv: int, sv: int, wrong: int, comparative: bool
    ) -> tuple[tuple[str, ...], Difference]:
        """The wordings a difference in column ``c`` (not shade) is written in, one picked by
        its wording uniform, and its record: target value ``tv``, shown value ``sv``;
        ``wrong`` a colour to name instead (-1: none); ``comparative`` whether its
        comparative-or-direct draw chose the comparative (which only ordered types have)."""
        book, cache = self._book, self._differences
        if book.ordered[c] and comparative:
            direction = 0 if tv > sv else 1
            key: tuple[int, ...] = (c, direction, sv)
            diff = cache.get(key)
            if diff is None:
                word = book.direction_words[c][direction]  # type: ignore[index]
                diff = Difference(book.type_names[c], "comparative", word, book.values[c][sv], word)
                cache[key] = diff
            return book.comparative[c][direction], diff  # type: ignore[index]
        claimed = wrong if c == book.color_column and wrong >= 0 else tv
        rows = book.direct[c][claimed]
        shown_names = book.surface[c]
        if shown_names is not None:
            # The contrast forms ("... instead of a dress") are picked like further wordings.
            rows = rows + tuple(form.format(phrase=rows[0], shown=shown_names[sv]) for form in CONTRAST)
        key = (c, tv, sv, claimed)
        diff = cache.get(key)
        if diff is None:
            values = book.values[c]
            diff = Difference(book.type_names[c], "direct", values[tv], values[sv], values[claimed])
            cache[key] = diff
        return rows, diff

    # --- helpers ---------------------------------------------------------------------------
    def _shade_record(self, direction: int, t_codes: list[int], s_codes: list[int]) -> Difference:
        """The shade difference; ``shown`` is the shown item's colour name ("" if unknown)."""
        color_col = self._book.color_column
        shown_code = s_codes[color_col - 1] if color_col is not None else -1
        key = ("shade", direction, shown_code)
        diff = self._differences.get(key)
        if diff is None:
            shown_name = self._book.values[color_col][shown_code] if shown_code >= 0 else ""  # type: ignore[index]
            word = SHADE_WORDS[direction]
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
