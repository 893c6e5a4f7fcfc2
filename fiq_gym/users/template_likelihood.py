"""The template shopper's own likelihood: how probable a caption is for every candidate target.

:class:`TemplateLikelihood` answers ``P(caption | target = t, shown = s)`` for all items ``t``
at once, from the rules :class:`~fiq_gym.users.template.TemplateUser` writes captions by (its
phrasebook, :data:`~fiq_gym.users.template.SALIENCE`, the mention count, the comparative
wording and its :class:`~fiq_gym.users.template.TemplateNoise`), so a change to the shopper
changes the likelihood with it. It is the likelihood of the Bayesian reader in
:mod:`fiq_gym.agents.posterior`.

What a caption says about a candidate ``t`` (columns: the category, each attribute type, shade):

* **which differences are mentioned.** The shopper mentions ``min(1 + Binomial(m - 1, 1/2),
  |D|)`` of the differences ``D`` between ``t`` and ``s``, sampled by salience without
  replacement; with ``omit`` noise each mention is then dropped with that chance, keeping at
  least the first. The probability of the mentioned set ``M`` sums over the orders in which it
  can be drawn (:meth:`TemplateLikelihood.mention_probability`); ``M`` must lie in ``D``;
* **what each mention claims.** A direct claim names ``t``'s value (a colour: with
  ``wrong_color`` noise, another colour that is neither ``t``'s nor ``s``'s, uniformly); an
  ordered type is worded as a comparative with :data:`COMPARATIVE_PROBABILITY` ("longer":
  ``t`` is further along the order), shade always ("darker": ``t``'s luma is lower by at
  least the threshold);
* **the caption's form.** "looks the same" means ``D`` is empty; "looks the same but slightly
  darker" means the shade is the only difference, "slightly" that the gap is under twice the
  threshold.

``drop_word`` noise deletes words, which can break a phrase so that its claim is no longer
read. The likelihood treats each claim as read with the chance that its phrase survives
(worked out once per claim by deleting every subset of the phrase's words and parsing what is
left, over its wordings) and sums over the claims that may have been lost; the caption's form
is not used then, and ``floor`` covers what this does not model (a phrase built from the
remains of two). Without ``drop_word`` the likelihood is exact: it gives the true target a
positive probability on every caption the shopper writes, and the caption distribution it
implies is the shopper's (``tests/test_template_likelihood.py`` checks both).

The reader supplies what it believes of each item (:class:`ItemAttributes`): the value codes,
the categories and the luma. A reader that knows the labels gets the exact likelihood; an
agent has only predictions (argmax attribute scores, an estimated category and luma), so it
passes a small ``floor`` that keeps a mispredicted target alive.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.users.phrasebook import (
    CONTRAST,
    SAME_WORDINGS,
    SHADE_COMPARATIVES,
    SHADE_ONLY_TAILS,
    SHADE_WORDS,
    Claim,
    Phrasebook,
    phrasebook,
)
from fiq_gym.users.template import (
    COMPARATIVE_PROBABILITY,
    SHADE_SALIENCE_WITH_COLOR_CHANGE,
    SHADE_THRESHOLD,
    TemplateNoise,
    column_salience,
    differing_columns,
    extra_mentions_pmf,
)

__all__ = ["CaptionReading", "ItemAttributes", "TemplateLikelihood"]


@dataclass(frozen=True)
class ItemAttributes:
    """What a reader believes of the N items in play.

    Attributes:
        codes: (N, T) value index of each attribute type (the vocabulary's order), -1 unknown.
        categories: (N,) category codes (into the catalog's category names).
        luma: (N,) perceived brightness on the template shopper's 0..255 scale, or None when
            unknown (then no shade difference is expected, as the shopper does without colours).
    """

    codes: np.ndarray
    categories: np.ndarray
    luma: np.ndarray | None = None
    luma_std: np.ndarray | None = None
    """(N,) the standard deviation of a luma that is estimated, not known (None: known)"""

    def __len__(self) -> int:
        return len(self.categories)


@dataclass(frozen=True)
class CaptionReading:
    """A caption read once: its claims by column, and its form."""

    text: str
    claims: dict[int, Claim]
    """column -> the claim about it (a caption mentions each column at most once)"""
    same: bool
    """a "looks the same" caption (no other claim)"""
    shade_only: bool
    """the "looks the same but <shade>" form"""
    slight: bool
    """in that form: "slightly" (the luma gap is under twice the threshold)"""


class TemplateLikelihood:
    """``P(caption | target, shown)`` of a :class:`~fiq_gym.users.template.TemplateUser` with
    these settings, for every candidate target at once (see the module docstring).

    Args:
        vocabulary: the catalog's attribute vocabulary.
        category_names: the catalog's category names.
        noise: the shopper's noise (a configuration's, e.g. ``terse``); None for none.
        max_differences: the shopper's ``max_differences``.
        shade_threshold: the shopper's ``shade_threshold``.
        floor: added to every likelihood (relative to the largest of the candidates): 0 for a
            reader that knows the items' attributes exactly, a small number for one that
            predicts them, so that a mispredicted target is not ruled out for good.
    """

    def __init__(
        self,
        vocabulary: AttributeVocabulary,
        category_names: Sequence[str],
        noise: TemplateNoise | None = None,
        max_differences: int = 3,
        shade_threshold: float = SHADE_THRESHOLD,
        floor: float = 0.0,
    ) -> None:
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"floor must lie in [0, 1), got {floor!r}")
        self.book: Phrasebook = phrasebook(vocabulary, tuple(category_names))
        self.noise = noise if noise is not None else TemplateNoise()
        self.max_differences = int(max_differences)
        self.shade_threshold = float(shade_threshold)
        self.floor = float(floor)
        book = self.book
        self.num_columns = len(book.type_names)
        self._salience = column_salience(book.type_names)
        self._column = {name: c for c, name in enumerate(book.type_names)}
        self._pmf = extra_mentions_pmf(self.max_differences)
        self._mention_cache: dict[tuple[int, int], float] = {}
        self._read_cache: dict[tuple[object, ...], float] = {}
        slight_tails = {tail for by_size in SHADE_ONLY_TAILS for tail in by_size[1]}
        self._slight_tokens = {tuple(tail.split()) for tail in slight_tails}
        colors = book.values[book.color_column] if book.color_column is not None else ()
        self._num_colors = len(colors)

    # --- reading a caption -------------------------------------------------------------------
    def read(self, text: str) -> CaptionReading:
        """The claims and form of ``text`` (by the shopper's own phrasebook)."""
        matched = self.book.scan(text)
        claims: dict[int, Claim] = {}
        same, shade_tail = False, None
        for tokens, claim in matched:
            if claim.kind == "same":
                same = True
                continue
            column = self._column[claim.type]
            if column in claims:
                continue
            claims[column] = claim
            if claim.type == "shade":
                shade_tail = tokens
        shade_only = same and bool(claims) and set(claims) == {self.book.shade_column}
        return CaptionReading(
            text=text,
            claims=claims,
            same=same and not claims,
            shade_only=shade_only,
            slight=shade_only and shade_tail in self._slight_tokens,
        )

    def reading_key(self, reading: CaptionReading) -> tuple[object, ...]:
        """A key under which captions have equal likelihoods: the claims and the form, or,
        with ``drop_word`` noise (whose likelihood reads the surviving words), the text.
        Wordings of the same claims ("has longer sleeves", "with longer sleeves") share it."""
        if self.noise.drop_word > 0:
            return (reading.text,)
        return (tuple(sorted(reading.claims.items())), reading.same, reading.shade_only, reading.slight)

    # --- the likelihood ----------------------------------------------------------------------
    def differences(self, items: ItemAttributes, shown: int) -> np.ndarray:
        """(N, C) which columns differ between each candidate and the shown item, by the
        shopper's own rule (:func:`~fiq_gym.users.template.differing_columns`)."""
        luma_gap = None if items.luma is None else items.luma - items.luma[shown]
        return differing_columns(
            items.codes,
            items.codes[shown],
            items.categories,
            items.categories[shown],
            luma_gap,
            self.shade_threshold,
        )

    def likelihood(self, caption: str | CaptionReading, items: ItemAttributes, shown: int) -> np.ndarray:
        """(N,) ``P(caption | target = t, shown)`` for every item ``t`` (plus ``floor`` times
        the largest), float64."""
        reading = self.read(caption) if isinstance(caption, str) else caption
        shade_bit = 1 << self.book.shade_column
        # the columns but shade that differ, as bits (bit c: column c); shade is summed over
        # below, as a candidate's luma may be uncertain
        differs = self.differences(items, shown)[:, : self.book.shade_column]
        mask = differs @ (1 << np.arange(differs.shape[1], dtype=np.int64))
        if self.noise.drop_word > 0 and self.max_differences == 1:
            out = self._likelihood_of_words(reading.text, items, shown, mask)
        elif self.noise.drop_word > 0:
            reading = self._without_contrast_remains(reading, items, shown)
            out = self._likelihood_after_drops(reading, items, shown, mask)
        else:
            # the shade is a hidden bit of each candidate: sum over "differs" and "does not"
            without, with_shade = self._shade_weights(reading, items, shown)
            out = self._claims(reading, items, shown) * (
                self._mentions(reading, mask) * without
                + self._mentions(reading, mask | shade_bit) * with_shade
            )
        if self.floor > 0:
            out = out + self.floor * max(float(out.max()), 1e-300)
        return out

    def _mentions(self, reading: CaptionReading, mask: np.ndarray) -> np.ndarray:
        """P(the caption's form and mentioned columns | the differences of each candidate)."""
        shade_bit = 1 << self.book.shade_column
        if reading.same:
            return (mask == 0).astype(np.float64)
        if reading.shade_only:
            return (mask == shade_bit).astype(np.float64)
        if not reading.claims:  # nothing the shopper could have written (without drop_word)
            return np.zeros(len(mask))
        mentioned = sum(1 << c for c in reading.claims)
        possible = ((mask & mentioned) == mentioned) & (mask != shade_bit)
        return _per_value(mask, lambda m: self.mention_probability(m, mentioned), where=possible)

    def mention_probability(self, differs: int, mentioned: int) -> float:
        """P(the shopper mentions exactly the columns of bit mask ``mentioned`` | the columns
        of bit mask ``differs`` differ), with ``omit`` noise (cached)."""
        key = (differs, mentioned)
        if key not in self._mention_cache:
            self._mention_cache[key] = self._mention_probability(differs, mentioned)
        return self._mention_cache[key]

    def _weights(self, differs: int) -> dict[int, float]:
        book = self.book
        columns = [c for c in range(self.num_columns) if differs >> c & 1]
        weights = {c: float(self._salience[c]) for c in columns}
        color = book.color_column
        if book.shade_column in weights and color is not None and differs >> color & 1:
            weights[book.shade_column] = SHADE_SALIENCE_WITH_COLOR_CHANGE
        return weights

    def _count_pmf(self, num_differences: int) -> np.ndarray:
        """P(count = k), k = 0..m: ``min(1 + Binomial(m - 1, 1/2), |D|)``."""
        m = self.max_differences
        out = np.zeros(m + 1)
        if num_differences == 0:
            out[0] = 1.0
            return out
        for extra, p in enumerate(self._pmf):
            out[min(1 + extra, num_differences)] += p
        return out

    def _mention_probability(self, differs: int, mentioned: int) -> float:
        weights = self._weights(differs)
        if not weights or mentioned & ~differs:
            return 0.0
        omit = self.noise.omit
        count_pmf = self._count_pmf(len(weights))
        wanted = {c for c in weights if mentioned >> c & 1}
        total = 0.0
        for k in range(1, len(count_pmf)):
            if count_pmf[k] == 0.0:
                continue
            if omit == 0.0:
                if k != len(wanted):
                    continue
                sequences: Sequence[tuple[int, ...]] = list(itertools.permutations(wanted))
            else:
                if k < len(wanted):
                    continue
                sequences = [seq for seq in itertools.permutations(weights, k) if wanted.issubset(seq)]
            for seq in sequences:
                p = _ordered_draw_probability(seq, weights)
                if omit > 0.0:
                    # the mentions outside `wanted` were all dropped, those in it all kept...
                    keep = (1.0 - omit) ** len(wanted) * omit ** (k - len(wanted))
                    # ...or all were dropped and the first came back
                    if wanted == {seq[0]}:
                        keep += omit**k
                    p *= keep
                total += count_pmf[k] * p
        return total

    def _claims(self, reading: CaptionReading, items: ItemAttributes, shown: int) -> np.ndarray:
        """Π over the mentioned columns but shade of P(the claim made | mentioned, t, s)."""
        out = np.ones(len(items))
        for column, claim in reading.claims.items():
            if column != self.book.shade_column:
                out *= self._claim_probability(column, claim, items, shown)
        return out

    def _shade_weights(
        self, reading: CaptionReading, items: ItemAttributes, shown: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) twice: P(the shade does not differ, and the caption's shade claim if any) and
        P(it differs, and the caption's shade claim)."""
        n = len(items)
        if items.luma is None:
            return np.ones(n), np.zeros(n)
        beyond = self._gap_beyond(items, shown)
        threshold = self.shade_threshold
        claim = reading.claims.get(self.book.shade_column)
        if claim is None:
            differs = beyond(-1, threshold) + beyond(1, threshold)
            return 1.0 - differs, differs
        sign = -1 if claim.value == SHADE_WORDS[0] else 1
        side = beyond(sign, threshold)
        if reading.shade_only and not self.noise.drop_word:
            far = beyond(sign, 2 * threshold)
            side = side - far if reading.slight else far  # "slightly": under twice the threshold
        return np.zeros(n), side

    def _gap_beyond(self, items: ItemAttributes, shown: int) -> Callable[[int, float], np.ndarray]:
        """``beyond(sign, x)``: (N,) P(the luma gap is at least ``x`` darker (sign -1) or
        lighter (+1)). With ``luma_std`` the gap is Gaussian around the believed one;
        without, it is the believed one (each chance 0 or 1)."""
        assert items.luma is not None
        # in the luma's own dtype, as the shopper subtracts (a float32 gap can round across
        # the threshold where an exact one would not)
        gap = np.asarray(items.luma - items.luma[shown], dtype=np.float64)
        if items.luma_std is None:
            return lambda sign, x: (sign * gap >= x).astype(np.float64)
        std = np.asarray(items.luma_std, dtype=np.float64)
        spread = np.maximum(np.sqrt(std**2 + float(std[shown]) ** 2), 1e-9)
        return lambda sign, x: _normal_cdf((sign * gap - x) / spread)

    def _claim_probability(self, column: int, claim: Claim, items: ItemAttributes, shown: int) -> np.ndarray:
        book = self.book
        if column == 0:
            values = items.categories
            shown_value = int(items.categories[shown])
        else:
            values = items.codes[:, column - 1]
            shown_value = int(items.codes[shown, column - 1])
        ordered = book.ordered[column]
        if claim.kind == "comparative":
            words = book.direction_words[column]
            assert words is not None
            further = values > shown_value
            wanted = further if claim.value == words[0] else ~further
            return COMPARATIVE_PROBABILITY * wanted.astype(np.float64)
        value = book.values[column].index(claim.value)
        exact = (values == value).astype(np.float64)
        wording = (1.0 - COMPARATIVE_PROBABILITY) if ordered else 1.0
        wrong = self.noise.wrong_color
        if column == book.color_column and wrong > 0:
            if self._num_colors >= 3:
                other = (values != value) & (shown_value != value)
                return wording * ((1.0 - wrong) * exact + wrong * other / (self._num_colors - 2))
            if self._num_colors == 2:
                return wording * ((1.0 - wrong) * exact + wrong * (1.0 - exact))
            return wording * np.ones(len(items))
        return wording * exact

    # --- drop_word ---------------------------------------------------------------------------
    def _without_contrast_remains(
        self, reading: CaptionReading, items: ItemAttributes, shown: int
    ) -> CaptionReading:
        """``reading`` without direct claims that name the shown item's own value: no caption
        claims that (a direct claim names the target's value, or with ``wrong_color`` a colour
        that is neither), so such a claim is what dropped words left of a contrast ("is red
        instead of blue" without "red" reads as "blue", the shown colour)."""
        book = self.book
        kept = dict(reading.claims)
        for column, claim in reading.claims.items():
            if claim.kind != "direct" or book.surface[column] is None:
                continue
            shown_value = items.categories[shown] if column == 0 else items.codes[shown, column - 1]
            if book.values[column].index(claim.value) == int(shown_value):
                del kept[column]
        if len(kept) == len(reading.claims):
            return reading
        return CaptionReading(reading.text, kept, reading.same and not kept, False, False)

    # --- drop_word, one mention a caption: exact, word by word ---------------------------------
    def _likelihood_of_words(
        self, text: str, items: ItemAttributes, shown: int, mask: np.ndarray
    ) -> np.ndarray:
        """The exact likelihood of a one-mention shopper's caption after words were dropped.

        Such a caption is one phrase (or a "looks the same" form), so the observed words are
        a subsequence of the phrase the shopper wrote: ``P(words | phrase)`` counts the ways
        to delete words to get them (with the rule that one word is kept when all would go),
        and the likelihood sums over the column mentioned (by salience), the claim made about
        it (its value, its comparative, a wrong colour) and the phrase's wording."""
        book = self.book
        observed = tuple(text.split(" "))
        shade = book.shade_column
        named = np.zeros(len(items))  # salience of the differences other than shade
        spoken = np.zeros(len(items))  # sum over those columns of salience x P(words | column)
        for column in range(self.num_columns):
            if column == shade:
                continue
            salience = ((mask >> column) & 1) * self._salience[column]
            named += salience
            chance: np.ndarray | float = 0.0
            shown_value = int(items.categories[shown] if column == 0 else items.codes[shown, column - 1])
            for claim, p in self._claims_read(observed, column, shown_value):
                chance = chance + self._claim_probability(column, claim, items, shown) * p
            if not isinstance(chance, float):
                spoken += salience * chance
        same = self._words_given(observed, SAME_WORDINGS)
        shade_salience = np.full(len(items), float(self._salience[shade]))
        if book.color_column is not None:
            shade_salience[(mask >> book.color_column) & 1 == 1] = SHADE_SALIENCE_WITH_COLOR_CHANGE
        alone = named == 0  # nothing differs but perhaps the shade
        if items.luma is None:
            return np.where(alone, same, spoken / np.maximum(named, 1e-300))
        beyond, threshold = self._gap_beyond(items, shown), self.shade_threshold
        darker, lighter = beyond(-1, threshold), beyond(1, threshold)
        out = np.where(alone, 1.0 - darker - lighter, 0.0) * same
        out += np.where(alone, 0.0, (1.0 - darker - lighter) * spoken / np.maximum(named, 1e-300))
        for direction, (sign, side) in enumerate(((-1, darker), (1, lighter))):
            comparative = self._words_given(observed, SHADE_COMPARATIVES[direction])
            with_shade = (spoken + shade_salience * comparative) / (named + shade_salience)
            out += np.where(alone, 0.0, side * with_shade)
            tails = SHADE_ONLY_TAILS[direction]  # [not slight, slight]
            only = [self._words_given(observed, _shade_only(tails[k])) for k in (0, 1)]
            if (only[0] > 0 or only[1] > 0) and alone.any():
                far = beyond(sign, 2 * threshold)
                out += np.where(alone, (side - far) * only[1] + far * only[0], 0.0)
        return out

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one likelihood per env, kept for its life
    def _claims_read(
        self, observed: tuple[str, ...], column: int, shown_value: int
    ) -> tuple[tuple[Claim, float], ...]:
        """The claims about ``column`` that can leave the words ``observed``, each with
        ``P(observed | the claim)`` (when the shown item's value there is ``shown_value``)."""
        out = []
        for claim, phrases in self._claim_wordings(column, shown_value):
            p = self._words_given(observed, phrases)
            if p > 0:
                out.append((claim, p))
        return tuple(out)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one likelihood per env, kept for its life
    def _claim_wordings(self, column: int, shown_value: int) -> tuple[tuple[Claim, tuple[str, ...]], ...]:
        """Every claim about ``column`` with its equally likely wordings (contrast forms name
        the shown item's value, ``shown_value``, as the shopper writes them)."""
        book = self.book
        name = book.type_names[column]
        surface = book.surface[column]
        shown_name = None if surface is None or shown_value < 0 else surface[shown_value]
        out = []
        for value, rows in zip(book.values[column], book.direct[column], strict=True):
            contrasts = () if shown_name is None else CONTRAST
            phrases = (*rows, *(c.format(phrase=rows[0], shown=shown_name) for c in contrasts))
            out.append((Claim(name, "direct", value), phrases))
        words, sides = book.direction_words[column], book.comparative[column]
        if words is not None and sides is not None:
            for word, side in zip(words, sides, strict=True):
                out.append((Claim(name, "comparative", word), tuple(side)))
        return tuple(out)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one likelihood per env, kept for its life
    def _words_given(self, observed: tuple[str, ...], phrases: tuple[str, ...]) -> float:
        """P(the observed words | one of ``phrases``, each as likely, was written)."""
        return sum(self._words_given_phrase(observed, phrase) for phrase in phrases) / len(phrases)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one likelihood per env, kept for its life
    def _words_given_phrase(self, observed: tuple[str, ...], phrase: str) -> float:
        """P(dropping each word of ``phrase`` with the noise's chance leaves ``observed``):
        the ways to pick the observed words in order, times the chances of keeping them and
        dropping the rest; when all would be dropped the shopper keeps one word at random."""
        p = self.noise.drop_word
        words = phrase.split(" ")
        n, k = len(words), len(observed)
        if k > n:
            return 0.0
        ways = [1] + [0] * k  # ways[j]: ways to match the first j observed words so far
        for word in words:
            for j in range(k, 0, -1):
                if observed[j - 1] == word:
                    ways[j] += ways[j - 1]
        out = ways[k] * (1 - p) ** k * p ** (n - k)
        if k == 1:
            out += p**n * words.count(observed[0]) / n
        return out

    def _likelihood_after_drops(
        self, reading: CaptionReading, items: ItemAttributes, shown: int, mask: np.ndarray
    ) -> np.ndarray:
        """The likelihood when words are dropped: each claim read comes from one mentioned
        column's claim, through what dropped words can make of its phrase (itself, or another
        claim: "is more fitted" without "more" reads "is fitted", "the sleeves are longer"
        without "sleeves" reads as the length's "longer"); mentions that left nothing readable
        are lost. Sums over which column each read claim came from."""
        shade_column = self.book.shade_column
        shade_bit = 1 << shade_column
        read = list(reading.claims.values())
        options = [sorted(self._sources(claim)) for claim in read]
        differs_any, darker, lighter = self._shade_chances(items, shown)
        out = np.zeros(len(items))
        for columns in itertools.product(*options):
            if len(set(columns)) < len(columns):
                continue
            claims = np.ones(len(items))
            with_shade, without = differs_any, 1.0 - differs_any
            for claim, column in zip(read, columns, strict=True):
                sources = self._sources(claim)[column]
                if column == shade_column:
                    with_shade = np.zeros(len(items))
                    for intended, p in sources:
                        with_shade = (
                            with_shade + (darker if intended.value == SHADE_WORDS[0] else lighter) * p
                        )
                    without = np.zeros(len(items))
                    continue
                chance = np.zeros(len(items))
                for intended, p in sources:
                    chance += self._claim_probability(column, intended, items, shown) * p
                claims *= chance
            assigned = sum(1 << c for c in columns)
            out += claims * (
                self._lookup(mask, assigned) * without + self._lookup(mask | shade_bit, assigned) * with_shade
            )
        return out

    def _lookup(self, mask: np.ndarray, assigned: int) -> np.ndarray:
        """(N,) :meth:`_read_probability` of each candidate's differences."""
        return _per_value(mask, lambda m: self._read_probability(m, assigned))

    def _shade_chances(self, items: ItemAttributes, shown: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N,) P(the shade differs), P(darker by the threshold), P(lighter by it)."""
        if items.luma is None:
            zero = np.zeros(len(items))
            return zero, zero, zero
        beyond = self._gap_beyond(items, shown)
        darker, lighter = beyond(-1, self.shade_threshold), beyond(1, self.shade_threshold)
        return darker + lighter, darker, lighter

    def _read_probability(self, differs: int, read: int) -> float:
        """P(the shopper mentions the columns of ``read``, and perhaps others whose claims were
        all lost | the columns of ``differs`` differ) (cached)."""
        key = (differs, read)
        if key not in self._read_cache:
            weights = self._weights(differs)
            if not weights:
                total = 1.0 if read == 0 else 0.0
            else:
                lost = self._lost_probability()
                others = [c for c in weights if not read >> c & 1]
                total = 0.0
                for extra in range(min(len(others), self.max_differences) + 1):
                    for subset in itertools.combinations(others, extra):
                        mentioned = read | sum(1 << c for c in subset)
                        total += self.mention_probability(differs, mentioned) * lost**extra
            self._read_cache[key] = total
        return self._read_cache[key]

    @functools.cache  # noqa: B019 - one likelihood per env, kept for its life
    def _lost_probability(self) -> float:
        """The chance that a mentioned claim leaves nothing readable (averaged over claims)."""
        lost = [1.0 - sum(self._phrase_reads(phrase).values()) for phrase in self._all_phrases()]
        return float(np.clip(np.mean(lost), 0.0, 1.0))

    @functools.cache  # noqa: B019
    def _sources(self, claim: Claim) -> dict[int, list[tuple[Claim, float]]]:
        """column -> [(intended claim, P(``claim`` is read | the intended claim is written))]."""
        out: dict[int, list[tuple[Claim, float]]] = {}
        for column, intended, phrases in self._intended_claims():
            p = float(np.mean([self._phrase_reads(phrase).get(claim, 0.0) for phrase in phrases]))
            if p > 0:
                out.setdefault(column, []).append((intended, p))
        return out

    @functools.cache  # noqa: B019
    def _intended_claims(self) -> list[tuple[int, Claim, tuple[str, ...]]]:
        """Every claim the shopper can write, with its column and its wordings."""
        book = self.book
        out: list[tuple[int, Claim, tuple[str, ...]]] = []
        for column, name in enumerate(book.type_names):
            if column == book.shade_column:
                for word, wordings, by_size in zip(
                    SHADE_WORDS, SHADE_COMPARATIVES, SHADE_ONLY_TAILS, strict=True
                ):
                    tails = tuple(tail for tails in by_size for tail in tails)
                    out.append((column, Claim(name, "comparative", word), (*wordings, *tails)))
                continue
            for value, rows in zip(book.values[column], book.direct[column], strict=True):
                contrasts = () if book.surface[column] is None else CONTRAST
                phrases: tuple[str, ...] = (*rows, *(c.format(phrase=rows[0], shown="x") for c in contrasts))
                out.append((column, Claim(name, "direct", value), phrases))
            words, sides = book.direction_words[column], book.comparative[column]
            if words is not None and sides is not None:
                for word, side in zip(words, sides, strict=True):
                    out.append((column, Claim(name, "comparative", word), tuple(side)))
        return out

    def _all_phrases(self) -> list[str]:
        return [phrase for _, _, phrases in self._intended_claims() for phrase in phrases]

    @functools.cache  # noqa: B019
    def _phrase_reads(self, phrase: str) -> dict[Claim, float]:
        """claim -> P(it is read from ``phrase`` after each word is dropped with the noise's
        chance), by enumerating which words survive (the first claim read counts)."""
        p = self.noise.drop_word
        words = phrase.split(" ")
        out: dict[Claim, float] = {}
        for kept in itertools.product((True, False), repeat=len(words)):
            left = [w for w, k in zip(words, kept, strict=True) if k]
            claims = self.read(" ".join(left)).claims if left else {}
            if not claims:
                continue
            first = next(iter(claims.values()))
            out[first] = out.get(first, 0.0) + (1 - p) ** len(left) * p ** (len(words) - len(left))
        return out


def _shade_only(tails: Sequence[str]) -> tuple[str, ...]:
    """The "looks the same but <tail>" captions, each as likely."""
    return tuple(f"{same} but {tail}" for same in SAME_WORDINGS for tail in tails)


def _per_value(
    mask: np.ndarray, value_of: Callable[[int], float], where: np.ndarray | None = None
) -> np.ndarray:
    """(N,) ``value_of(mask[i])`` (0 outside ``where``), computed once per distinct mask:
    masks are small integers (one bit per column), so a table indexed by them beats sorting."""
    present = np.flatnonzero(np.bincount(mask if where is None else mask[where], minlength=1))
    table = np.zeros(int(mask.max()) + 1 if len(mask) else 1)
    for value in present.tolist():
        table[value] = value_of(value)
    return table[mask]


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF, by Abramowitz and Stegun 7.1.26 (error under 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _ordered_draw_probability(sequence: Sequence[int], weights: dict[int, float]) -> float:
    """P(weighted sampling without replacement draws ``sequence`` first, in this order)."""
    remaining = sum(weights.values())
    p = 1.0
    for c in sequence:
        p *= weights[c] / remaining
        remaining -= weights[c]
    return p
