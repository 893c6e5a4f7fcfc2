"""The template shopper: exact, fast, rule-based relative captions.

:class:`TemplateUser` compares the target's and the shown item's attributes and writes a
Fashion IQ-style caption about the target ("is red and has longer sleeves"). Every step
works on the whole batch with numpy: which differences, which wordings, and the captions
themselves, gathered from numbered phrase tables (:mod:`fiq_gym.users.template_tables`).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.text import WordTokenizer, pad_token_ids
from fiq_gym.users.base import CaptionBatch, User, row_uniforms
from fiq_gym.users.phrasebook import (
    CONTRAST,
    SAME_DIFFERENCE,
    SAME_WORDINGS,
    Claim,
    parse_caption,
    phrasebook,
)
from fiq_gym.users.template_tables import (
    COMPARATIVE_PROBABILITY,
    COMPRESS_PROBABILITY,
    CaptionTables,
    _Comparison,
    _MentionPlan,
)

__all__ = [
    "COMPARATIVE_PROBABILITY",
    "COMPRESS_PROBABILITY",
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

#: Batches of at least this many pairs are written with numpy (``CaptionTables.write``),
#: smaller ones pair by pair from the same tables (``write_pairs``): numpy's cost per call
#: outweighs its gain per pair below it (``describe`` of 10k-catalog pairs, one BLAS thread,
#: the batched writer against the pair loop: 1 pair 150 -> 272 us, 16 pairs 274 -> 312 us,
#: 64 pairs 571 -> 408 us).
TABLE_WRITER_MIN_BATCH = 24


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


def _item_values(codes: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """(N, T + 2) int16 per item, one entry per phrasebook column: the category, each type's
    code (-1 unlabelled), 0 for shade; the describing gathers one row per item."""
    values = np.zeros((len(categories), codes.shape[1] + 2), dtype=np.int16)
    values[:, 0] = categories
    values[:, 1:-1] = codes
    return values


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
        self._values = _item_values(catalog.attribute_codes(), catalog.categories)
        self._luma: np.ndarray | None = None
        if catalog.primary_rgb is not None:
            rgb = np.asarray(catalog.primary_rgb, dtype=np.float32)
            self._luma = rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        names = self._book.type_names
        self._salience = column_salience(names)
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
    def _codes(self) -> np.ndarray:
        """(N, T) attribute codes of the items described, -1 where unlabelled."""
        return self._values[:, 1:-1]

    @property
    def _categories(self) -> np.ndarray:
        return self._values[:, 0]

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
        codes = np.asarray(codes)
        categories = np.asarray(categories)
        if codes.ndim != 2 or codes.shape[1] != self._codes.shape[1] or len(categories) != len(codes):
            raise ValueError(
                f"imagined items need codes of shape (N, {self._codes.shape[1]}) and N categories, got "
                f"{codes.shape} and {categories.shape}"
            )
        other = copy.copy(self)
        other._values = _item_values(codes, categories)
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
        tables = self._tables()
        tokenizer = self.tokenizer
        # token ids from the tables unless words are dropped or the tokenizer is not the word one
        word_tokens = type(tokenizer) is WordTokenizer and self.noise.drop_word == 0
        word_ids: np.ndarray | None = None
        if targets.size < TABLE_WRITER_MIN_BATCH:
            captions, records = tables.write_pairs(pairs, plan)
            texts = tables.join(captions)
            if word_tokens and isinstance(tokenizer, WordTokenizer):
                rows = tables.token_rows(tokenizer, tokenizer.encode)
                ids = [[t for f in fragments for t in rows[f]] for fragments in captions]
                word_ids, word_lengths = pad_token_ids(ids, max(1, *map(len, ids)))
        else:
            fragments, records = tables.write(pairs, plan)
            texts = tables.texts(fragments)
            if word_tokens and isinstance(tokenizer, WordTokenizer):
                word_ids, word_lengths = tables.padded_token_ids(fragments, tokenizer, tokenizer.encode)
        if self.noise.drop_word > 0:
            return CaptionBatch.deferred(self._drop_words(texts, self.noise.drop_word, rng), records)
        if word_ids is None:
            return CaptionBatch.deferred(texts, records)
        # The token ids the tokenizer would give the texts, so the env need not tokenize them.
        return CaptionBatch.deferred(texts, records, word_ids, word_lengths, tokenizer)

    def _tables(self) -> CaptionTables:
        """The numbered wordings this shopper writes from (built as captions need them, shared
        with the copies :meth:`imagining` makes)."""
        tables = self.__dict__.get("_caption_tables")
        if tables is None:
            tables = self.__dict__["_caption_tables"] = CaptionTables(self._book, self.shade_threshold)
        return tables

    def _compare(self, targets: np.ndarray, shown: np.ndarray) -> _Comparison:
        """Step 1: which of the columns (category, each type, shade) differ, for all pairs."""
        n = targets.size
        book = self._book
        t_values, s_values = self._values[targets], self._values[shown]
        t_codes, s_codes = t_values[:, 1:-1], s_values[:, 1:-1]
        t_cats, s_cats = t_values[:, 0], s_values[:, 0]
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
        return _Comparison(t_values, s_values, t_codes, s_codes, t_cats, s_cats, differs, salience, luma_gap)

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
        if noise.omit > 0:
            kept = (np.arange(slots_used) < count[:, None]) & (
                u[:, slots["omit"]][:, :slots_used] >= noise.omit
            )
            lost_all = (count > 0) & ~kept.any(axis=1)
            kept[lost_all, 0] = True
            # the kept mentions first, in their order
            order = np.take_along_axis(order, np.argsort(~kept, axis=1, kind="stable"), axis=1)
            count = kept.sum(axis=1)
        # per mention slot: wording choice, comparative-or-direct, compression
        style = u[:, slots["style"]].reshape(n, 3, m)[:, :, :slots_used]
        wrong = None
        if noise.wrong_color > 0 and color_col is not None:
            wrong = self._wrong_colors(
                pairs.t_codes[:, color_col - 1], pairs.s_codes[:, color_col - 1], u[:, slots["wrong_pick"]]
            )
            wrong[u[:, slots["wrong"]] >= noise.wrong_color] = -1
        return _MentionPlan(order, count, style, wrong, num_differences)

    # --- helpers ---------------------------------------------------------------------------
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
