"""The template shopper's wordings as numbered tables, so a batch of captions is written with
numpy instead of one pair at a time.

:class:`~fiq_gym.users.template.TemplateUser` decides, for every pair, which differences to
mention and how (its plan); :class:`CaptionTables` turns a whole batch of plans into texts,
token ids and records. Every string a caption is made of (a phrase, a phrase without its
leading ``"is "`` or ``"has "``, a separator) is a *fragment* with an id; every set of
wordings a difference can be written in is a *choice set*, a run of fragment ids; every
record (:class:`~fiq_gym.users.base.Difference`) has an id. Choice sets and records are
found by integer keys (column, values, kind) in sorted key tables, and built the first time
a key is seen, so the tables hold only what captions have needed and none grows with the
catalog.

A caption's text is its fragments joined, its token ids are its fragments' token ids one after
another (fragments are whole words), so both are gathers from the tables. :meth:`CaptionTables.write`
does it for a whole batch with numpy; :meth:`CaptionTables.write_pairs` does the same one pair
at a time from the same tables, for the small batches where numpy's cost per call is more than
the loop it saves (a single env's step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import Difference
from fiq_gym.users.phrasebook import (
    CONTRAST,
    SAME_DIFFERENCE,
    SAME_WORDINGS,
    SHADE_ONLY_TAILS,
    Phrasebook,
)

__all__ = ["COMPARATIVE_PROBABILITY", "COMPRESS_PROBABILITY", "CaptionTables"]

#: Chance that a difference of an ordered type is worded as a comparative ("has longer
#: sleeves") rather than directly ("has long sleeves").
COMPARATIVE_PROBABILITY: float = 0.5

#: Chance that a later phrase is compressed ("is darker and striped", "... with long sleeves").
COMPRESS_PROBABILITY: float = 0.3


@dataclass(frozen=True)
class _Comparison:
    """What differs between each target and shown item (arrays over the pairs)."""

    t_values: np.ndarray  # (n, columns) category, each type's code, 0 for shade
    s_values: np.ndarray
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

    order: np.ndarray  # (n, slots) columns: the first count mentioned, in mention order
    count: np.ndarray  # (n,) how many are mentioned
    style: np.ndarray  # (n, 3, slots) uniforms: wording, comparative-or-direct, compression
    wrong: np.ndarray | None  # (n,) wrong colour code to name, -1 for none
    num_differences: np.ndarray


# Keys are four small non-negative integers packed into one int64 (16 bits each; the column
# in the top field): attribute codes and column numbers stay far below 2**15.
_FIELD = 1 << 16


def _key(a: np.ndarray | int, b: np.ndarray | int, c: np.ndarray | int, d: np.ndarray | int) -> np.ndarray:
    return ((np.asarray(a, dtype=np.int64) * _FIELD + b) * _FIELD + c) * _FIELD + d


def _key_of(a: int, b: int, c: int, d: int) -> int:
    """:func:`_key` of one mention, in Python integers."""
    return ((a * _FIELD + b) * _FIELD + c) * _FIELD + d


def _unpack(key: int) -> tuple[int, int, int, int]:
    return key >> 48, (key >> 32) & 0xFFFF, (key >> 16) & 0xFFFF, key & 0xFFFF


class _KeyTable:
    """Ids by int64 key, looked up for a whole array at once (sorted keys, binary search);
    a key seen for the first time gets its id from ``make``."""

    def __init__(self, make: Callable[[int], int]) -> None:
        self._make = make
        self._keys = np.empty(0, dtype=np.int64)
        self._ids = np.empty(0, dtype=np.int64)
        self._by_key: dict[int, int] = {}  # the same, for one key at a time

    def get(self, key: int) -> int:
        got = self._by_key.get(key)
        if got is None:
            got = int(self.lookup(np.array([key], dtype=np.int64))[0])
        return got

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        ids = self._find(keys)
        if (ids < 0).any():
            new = np.unique(keys[ids < 0])
            made = np.array([self._make(int(k)) for k in new], dtype=np.int64)
            self._by_key.update(zip(new.tolist(), made.tolist(), strict=True))
            order = np.argsort(np.concatenate([self._keys, new]), kind="stable")
            self._keys = np.concatenate([self._keys, new])[order]
            self._ids = np.concatenate([self._ids, made])[order]
            ids = self._find(keys)
        return ids

    def _find(self, keys: np.ndarray) -> np.ndarray:
        if not len(self._keys):
            return np.full(keys.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.where(self._keys[at] == keys, self._ids[at], -1)


class CaptionTables:
    """The fragments, choice sets and records of one phrasebook, numbered (see the module
    docstring), and the writers that read them (:meth:`write` for a batch, :meth:`write_pairs`
    pair by pair).

    Args:
        book: the phrasebook of the shopper's vocabulary and category names.
        shade_threshold: the shopper's darker/lighter threshold (a gap under twice it is
            "slightly" darker in a looks-the-same caption).
    """

    def __init__(self, book: Phrasebook, shade_threshold: float) -> None:
        self.book = book
        self.slight_limit = 2.0 * float(shade_threshold)
        self._texts: list[str] = []
        self._fragment_of: dict[str, int] = {}
        self._members: list[int] = []  # choice sets: runs of fragment ids
        self._set_start: list[int] = []
        self._set_length: list[int] = []
        self._records: list[Difference] = []
        self._arrays: dict[str, np.ndarray] = {}  # numpy copies of the lists, rebuilt when they grow
        # the fragment without its "is ", without its "has " (-1: none), whether it contrasts
        self._lists: tuple[list[int], list[int], list[bool]] = ([], [], [])
        self._arrays_size = (-1, -1, -1)
        self._tokens: tuple[CaptionTokenizer, int, list[list[int]]] | None = None
        self._token_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.empty = self.fragment("")
        self.comma, self.and_, self.with_, self.but = (
            self.fragment(s) for s in (", ", " and ", " with ", " but ")
        )
        self.same_set = self._choice_set(SAME_WORDINGS)
        # shade-only tails by [direction][slight]
        self.tail_sets = np.array(
            [[self._choice_set(tails) for tails in by_size] for by_size in SHADE_ONLY_TAILS]
        )
        self.same_record = self._record(SAME_DIFFERENCE)
        self._wordings = _KeyTable(self._make_wordings)
        self._differences = _KeyTable(self._make_difference)
        self.ordered = np.array(book.ordered, dtype=bool)
        self.named_shown = np.array([s is not None for s in book.surface], dtype=bool)
        self.color_column = -1 if book.color_column is None else book.color_column

    # --- building the tables ----------------------------------------------------------------
    def fragment(self, text: str) -> int:
        """The id of a fragment, numbered the first time it is seen."""
        got = self._fragment_of.get(text)
        if got is None:
            got = self._fragment_of[text] = len(self._texts)
            self._texts.append(text)
        return got

    def _choice_set(self, wordings: Sequence[str]) -> int:
        self._set_start.append(len(self._members))
        self._set_length.append(len(wordings))
        self._members += [self.fragment(w) for w in wordings]
        # every phrase's compressed forms, numbered now so the writer only gathers
        for w in wordings:
            if w.startswith("is "):
                self.fragment(w[3:])
            if w.startswith("has "):
                self.fragment(w[4:])
        return len(self._set_start) - 1

    def _record(self, difference: Difference) -> int:
        self._records.append(difference)
        return len(self._records) - 1

    def _make_wordings(self, key: int) -> int:
        """The choice set of key (column, claimed value + 1, shown value + 1 or 0, kind): kind
        0 direct, 1 + d the comparative of direction d (0: further along / darker)."""
        book = self.book
        c, claimed, shown, kind = _unpack(key)
        if kind:
            return self._choice_set(book.comparative[c][kind - 1])  # type: ignore[index]
        rows = book.direct[c][claimed - 1]
        shown_names = book.surface[c]
        if shown_names is not None:
            # The contrast forms ("... instead of a dress") are picked like further wordings.
            rows = rows + tuple(
                form.format(phrase=rows[0], shown=shown_names[shown - 1]) for form in CONTRAST
            )
        return self._choice_set(rows)

    def _make_difference(self, key: int) -> int:
        """The record of key (column, target value + 1, shown value + 1, claimed value + 1)
        for a direct mention; (column, 0, shown value + 1, 1 + d) for a comparative of
        direction d, the shown value of shade being the shown item's colour (0: unknown)."""
        book = self.book
        c, target, shown, last = _unpack(key)
        name = book.type_names[c]
        if target == 0:
            word = book.direction_words[c][last - 1]  # type: ignore[index]
            if c == book.shade_column:
                color = book.color_column
                shown_name = "" if color is None or shown == 0 else book.values[color][shown - 1]
            else:
                shown_name = book.values[c][shown - 1]
            return self._record(Difference(name, "comparative", word, shown_name, word))
        values = book.values[c]
        return self._record(
            Difference(name, "direct", values[target - 1], values[shown - 1], values[last - 1])
        )

    def _numpy(self) -> dict[str, np.ndarray]:
        size = (len(self._texts), len(self._set_start), len(self._records))
        if size != self._arrays_size:
            texts = self._texts
            strip_is = [self._fragment_of.get(t[3:], -1) if t.startswith("is ") else -1 for t in texts]
            strip_has = [self._fragment_of.get(t[4:], -1) if t.startswith("has ") else -1 for t in texts]
            records = np.empty(len(self._records), dtype=object)
            records[:] = self._records
            contrast = [" instead of " in t or " rather than " in t for t in texts]
            self._lists = (strip_is, strip_has, contrast)
            self._arrays = {
                "text": np.array(texts, dtype=object),
                "members": np.array(self._members, dtype=np.int64),
                "set_start": np.array(self._set_start, dtype=np.int64),
                "set_length": np.array(self._set_length, dtype=np.int64),
                "record": records,
                "strip_is": np.array(strip_is, dtype=np.int64),
                "strip_has": np.array(strip_has, dtype=np.int64),
                "contrast": np.array(contrast, dtype=bool),
            }
            self._arrays_size = size
        return self._arrays

    def token_rows(self, tokenizer: CaptionTokenizer, encode: Callable[[str], list[int]]) -> list[list[int]]:
        """Every fragment's token ids by ``encode`` (the word tokenizer's), kept while
        ``tokenizer`` is the same object."""
        cached = self._tokens
        if cached is None or cached[0] is not tokenizer:
            cached = self._tokens = (tokenizer, 0, [])
            self._token_arrays = None
        rows = cached[2]
        if len(rows) != len(self._texts):
            rows += [encode(t) for t in self._texts[len(rows) :]]
            self._tokens = (tokenizer, len(rows), rows)
            self._token_arrays = None
        return rows

    def token_ids(
        self, tokenizer: CaptionTokenizer, encode: Callable[[str], list[int]]
    ) -> tuple[np.ndarray, ...]:
        """:meth:`token_rows` as (flat ids, start, length) arrays."""
        rows = self.token_rows(tokenizer, encode)
        if self._token_arrays is None:
            lengths = np.array([len(r) for r in rows], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            flat = np.array([i for r in rows for i in r], dtype=np.int64)
            self._token_arrays = (flat, starts, lengths)
        return self._token_arrays

    # --- the writer --------------------------------------------------------------------------
    def _mentions(self, pairs: _Comparison, plan: _MentionPlan) -> dict[str, np.ndarray]:
        """One entry per mention, pair by pair in mention order: its row and position, column,
        target, shown and claimed value, whether it is a comparative (shade always), and its
        kind (0 direct, 1 + direction for a comparative)."""
        slots = plan.order.shape[1]
        row, pos = np.nonzero(np.arange(slots) < plan.count[:, None])
        cols = plan.order[row, pos]
        tv = pairs.t_values[row, cols].astype(np.int64)
        sv = pairs.s_values[row, cols].astype(np.int64)
        claimed = tv
        if plan.wrong is not None and self.color_column >= 0:
            wrong = plan.wrong[row]
            claimed = np.where((cols == self.color_column) & (wrong >= 0), wrong, tv)
        shade = cols == self.book.shade_column
        comp_u = plan.style[row, 1, pos]
        comparing = shade | (self.ordered[cols] & (comp_u < COMPARATIVE_PROBABILITY))
        # 0: the target is further along (longer, looser) or darker; 1 the other way
        direction = np.where(shade, pairs.luma_gap[row] >= 0, tv <= sv).astype(np.int64)
        kind = np.where(comparing, 1 + direction, 0)
        names = ("row", "pos", "cols", "tv", "sv", "claimed", "shade", "comparing", "kind")
        return dict(zip(names, (row, pos, cols, tv, sv, claimed, shade, comparing, kind), strict=True))

    def _records_of(
        self, pairs: _Comparison, plan: _MentionPlan, m: dict[str, np.ndarray]
    ) -> list[tuple[Difference, ...]]:
        """Each caption's records (a same caption's is :data:`SAME_DIFFERENCE`)."""
        cols, sv, kind = m["cols"], m["sv"], m["kind"]
        # a shade difference records the shown item's colour as its shown value
        if self.color_column >= 0:
            shown_color = pairs.s_codes[m["row"], self.color_column - 1].astype(np.int64) + 1
            shown = np.where(m["shade"], shown_color, sv + 1)
        else:
            shown = np.where(m["shade"], 0, sv + 1)
        keys = np.where(
            m["comparing"], _key(cols, 0, shown, kind), _key(cols, m["tv"] + 1, shown, m["claimed"] + 1)
        )
        n, slots = plan.order.shape
        ids = np.full((n, max(1, slots)), self.same_record, dtype=np.int64)
        ids[m["row"], m["pos"]] = self._differences.lookup(keys)
        rows = self._numpy()["record"][ids].tolist()
        return [tuple(r[:k]) for r, k in zip(rows, np.maximum(plan.count, 1).tolist(), strict=True)]

    def write(
        self, pairs: _Comparison, plan: _MentionPlan
    ) -> tuple[np.ndarray, Callable[[], list[tuple[Difference, ...]]]]:
        """Every caption of the batch as fragment ids, (n, width) padded with the empty
        fragment, and a function that makes their records. The grammar (see
        :mod:`fiq_gym.users.template`): the mentioned differences in plan order, each in the
        wording its uniform picks, joined ``"a, b and c"``, a later phrase sometimes
        compressed; none mentioned: a same wording; shade alone: "<same> but <shade tail>"."""
        book = self.book
        n, slots = plan.order.shape
        count = plan.count
        m = self._mentions(pairs, plan)
        row, pos, cols, comparing = m["row"], m["pos"], m["cols"], m["comparing"]
        word_u, compress_u = plan.style[row, 0, pos], plan.style[row, 2, pos]
        named = self.named_shown[cols] & ~comparing
        sets = self._wordings.lookup(
            _key(cols, np.where(comparing, 0, m["claimed"] + 1), np.where(named, m["sv"] + 1, 0), m["kind"])
        )
        a = self._numpy()
        members, set_start, set_length = a["members"], a["set_start"], a["set_length"]
        phrase = members[set_start[sets] + (word_u * set_length[sets]).astype(np.int64)]

        # Joining: a later phrase may drop its "is "; the last may be "with ..." instead of
        # "and has ..." ("with" right after "instead of a top" would read as part of it).
        later = pos > 0
        last = pos == count[row] - 1
        squeeze = later & (compress_u < COMPRESS_PROBABILITY)
        strip_has, strip_is = a["strip_has"][phrase], a["strip_is"][phrase]
        previous = np.concatenate(
            [phrase[:1], phrase[:-1]]
        )  # the same caption's previous phrase, where later
        with_form = squeeze & last & (strip_has >= 0) & ~a["contrast"][previous]
        form = np.where(with_form, strip_has, np.where(squeeze & (strip_is >= 0), strip_is, phrase))
        separator = np.where(with_form, self.with_, np.where(last, self.and_, self.comma))
        # at least 3 wide: a shade-only caption is three fragments
        fragments = np.full((n, max(3, 2 * slots - 1)), self.empty, dtype=np.int64)
        fragments[row, 2 * pos] = form
        fragments[row[later], 2 * pos[later] - 1] = separator[later]

        same = count == 0
        if same.any():
            fragments[same, 0] = self._pick(self.same_set, plan.style[same, 0, 0])
        # everything but the shade matches: "looks the same but slightly darker"
        shade_only = (plan.num_differences == 1) & ~same
        shade_only[shade_only] = plan.order[shade_only, 0] == book.shade_column
        if shade_only.any():
            gap = pairs.luma_gap[shade_only]
            tails = self.tail_sets[
                (gap >= 0).astype(np.int64), (np.abs(gap) < self.slight_limit).astype(np.int64)
            ]
            fragments[shade_only, 0] = self._pick(self.same_set, plan.style[shade_only, 0, 0])
            fragments[shade_only, 1] = self.but
            fragments[shade_only, 2] = self._pick(tails, plan.style[shade_only, 1, 0])
        return fragments, lambda: self._records_of(pairs, plan, m)

    def write_pairs(
        self, pairs: _Comparison, plan: _MentionPlan
    ) -> tuple[list[list[int]], Callable[[], list[tuple[Difference, ...]]]]:
        """:meth:`write` one pair at a time, for small batches (numpy's cost per call outweighs
        its gain per pair below about two dozen pairs): each caption's fragment ids, and the
        records' maker. The same tables and rules as :meth:`write`; a test holds the two
        together."""
        shade_col, color_col = self.book.shade_column, self.color_column
        self._numpy()  # the list forms, current
        strip_is, strip_has, contrast = self._lists
        known = len(self._texts)
        members, set_start, set_length = self._members, self._set_start, self._set_length
        ordered, named_shown = self.ordered.tolist(), self.named_shown.tolist()
        get_set = self._wordings.get
        same_start = set_start[self.same_set]
        wrong_l = plan.wrong.tolist() if plan.wrong is not None else None
        captions: list[list[int]] = []
        for i, (order, k, (word_u, comp_u, compress_u), t_values, s_values, gap, differences) in enumerate(
            zip(
                plan.order.tolist(),
                plan.count.tolist(),
                plan.style.tolist(),
                pairs.t_values.tolist(),
                pairs.s_values.tolist(),
                pairs.luma_gap.tolist(),
                plan.num_differences.tolist(),
                strict=True,
            )
        ):
            if k == 0:
                captions.append([members[same_start + int(word_u[0] * len(SAME_WORDINGS))]])
                continue
            if differences == 1 and order[0] == shade_col:
                tails = int(self.tail_sets[0 if gap < 0 else 1, int(abs(gap) < self.slight_limit)])
                tail = members[set_start[tails] + int(comp_u[0] * set_length[tails])]
                captions.append([members[same_start + int(word_u[0] * len(SAME_WORDINGS))], self.but, tail])
                continue
            phrases = []
            for p in range(k):
                c = order[p]
                tv, sv = t_values[c], s_values[c]
                if c == shade_col:
                    key = _key_of(c, 0, 0, 1 + (gap >= 0))
                elif ordered[c] and comp_u[p] < COMPARATIVE_PROBABILITY:
                    key = _key_of(c, 0, 0, 1 + (tv <= sv))
                else:
                    wrong = -1 if wrong_l is None else wrong_l[i]
                    claimed = wrong if c == color_col and wrong >= 0 else tv
                    key = _key_of(c, claimed + 1, sv + 1 if named_shown[c] else 0, 0)
                chosen = get_set(key)
                phrases.append(members[set_start[chosen] + int(word_u[p] * set_length[chosen])])
            if len(self._texts) != known:  # a new choice set numbered new fragments
                self._numpy()
                strip_is, strip_has, contrast = self._lists
                known = len(self._texts)
            fragments = [phrases[0]]
            for p in range(1, k):
                phrase, last = phrases[p], p == k - 1
                squeeze = compress_u[p] < COMPRESS_PROBABILITY
                if squeeze and last and strip_has[phrase] >= 0 and not contrast[phrases[p - 1]]:
                    fragments += (self.with_, strip_has[phrase])
                else:
                    form = strip_is[phrase] if squeeze and strip_is[phrase] >= 0 else phrase
                    fragments += (self.and_ if last else self.comma, form)
            captions.append(fragments)
        return captions, lambda: self._records_of(pairs, plan, self._mentions(pairs, plan))

    def _pick(self, sets: int | np.ndarray, u: np.ndarray) -> np.ndarray:
        """The fragment each uniform in ``u`` picks from its choice set (int(u * size))."""
        a = self._numpy()
        return a["members"][a["set_start"][sets] + (u * a["set_length"][sets]).astype(np.int64)]

    def join(self, captions: list[list[int]]) -> list[str]:
        """The captions of :meth:`write_pairs`' fragment ids."""
        texts = self._texts
        return ["".join([texts[f] for f in fragments]) for fragments in captions]

    def texts(self, fragments: np.ndarray) -> list[str]:
        """The captions of :meth:`write`'s fragment ids."""
        text = self._numpy()["text"][fragments]
        joined = text[:, 0]
        for j in range(1, text.shape[1]):
            joined = joined + text[:, j]
        return list(joined.tolist())

    def padded_token_ids(
        self, fragments: np.ndarray, tokenizer: CaptionTokenizer, encode: Callable[[str], list[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The captions' token ids, (n, longest) padded with 0 (at least one column), and the
        (n,) lengths: each caption's fragments' ids one after another."""
        flat, starts, lengths = self.token_ids(tokenizer, encode)
        sizes = lengths[fragments]
        caption_lengths = sizes.sum(axis=1)
        width = max(1, int(caption_lengths.max(initial=0)))
        sizes = sizes.ravel()
        total = int(caption_lengths.sum())
        # where each token comes from in the flat table: its fragment's start, plus its place in it
        offsets = np.repeat(starts[fragments.ravel()] - (np.cumsum(sizes) - sizes), sizes)
        ids = np.zeros((len(fragments), width), dtype=np.int64)
        ids[np.arange(width) < caption_lengths[:, None]] = flat[offsets + np.arange(total)]
        return ids, caption_lengths.astype(np.int64)
