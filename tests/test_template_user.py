"""The template shopper: truthful, parseable, varied, deterministic, and strict about input."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.catalog import AttributeType, AttributeVocabulary, Catalog
from fiq_gym.catalog.synthetic_spec import (
    CATEGORIES,
    LENGTHS_BY_CATEGORY,
    SYNTHETIC_VOCABULARY,
)
from fiq_gym.users import CaptionBatch, Difference, TemplateNoise, TemplateUser, parse_caption
from fiq_gym.users.base import row_uniforms
from fiq_gym.users.phrasebook import (
    CONTRAST as CONTRAST_FORMS,
)
from fiq_gym.users.phrasebook import (
    SAME_WORDINGS,
    SHADE_COMPARATIVES,
    SHADE_ONLY_TAILS,
    SHADE_WORDS,
)
from fiq_gym.users.template import LUMA_WEIGHTS, SAME_DIFFERENCE, SHADE_THRESHOLD

# direction word -> sign of (target code - shown code) for ordered types
DIRECTION_SIGN = {"longer": 1, "shorter": -1, "looser": 1, "tighter": -1, "more": 1, "less": -1}


def make_catalog(
    n: int = 60,
    seed: int = 0,
    vocabulary: AttributeVocabulary = SYNTHETIC_VOCABULARY,
    category_names: tuple[str, ...] = CATEGORIES,
    with_rgb: bool = True,
    unlabelled: float = 0.04,
) -> Catalog:
    """A small in-memory catalog of random codes in which every value occurs at least once.

    Lengths respect each category's allowed lengths when the vocabulary is the synthetic one;
    a few codes are -1 (unlabelled) so that skipping them is exercised.
    """
    rng = np.random.default_rng(seed)
    categories = rng.permutation(np.arange(n) % len(category_names)).astype(np.int16)
    codes = np.zeros((n, len(vocabulary)), dtype=np.int64)
    for k, t in enumerate(vocabulary.types):
        codes[:, k] = rng.permutation(np.arange(n) % len(t.values))
    if "length" in vocabulary.type_names and set(category_names) == set(LENGTHS_BY_CATEGORY):
        k = vocabulary.type_names.index("length")
        values = vocabulary["length"].values
        for code, name in enumerate(category_names):
            rows = np.flatnonzero(categories == code)
            allowed = [values.index(v) for v in LENGTHS_BY_CATEGORY[name]]
            codes[rows, k] = np.resize(allowed, rows.size)[rng.permutation(rows.size)]
    codes[rng.random(codes.shape) < unlabelled] = -1
    return Catalog(
        ids=np.array([f"item{i:04d}" for i in range(n)]),
        categories=categories,
        category_names=category_names,
        vocabulary=vocabulary,
        labels=vocabulary.encode(codes),
        descriptions=[f"garment {i}" for i in range(n)],
        primary_rgb=rng.integers(0, 256, size=(n, 3)).astype(np.uint8) if with_rgb else None,
    )


CATALOG = make_catalog()
CODES = CATALOG.attribute_codes()
LUMA = CATALOG.primary_rgb.astype(np.float64) @ np.array(LUMA_WEIGHTS)

GENERIC_VOCABULARY = AttributeVocabulary(
    (
        AttributeType("color", ("teal", "black", "off white")),
        AttributeType("material", ("cotton", "silk", "faux leather")),
        AttributeType("heel", ("flat", "low", "high"), ordered=True),
        AttributeType("sleeve", ("none", "short", "3/4", "long"), ordered=True),
    )
)
GENERIC_CATEGORIES = ("boots", "ankle_boot", "sneakers")
GENERIC_CATALOG = make_catalog(
    40, seed=3, vocabulary=GENERIC_VOCABULARY, category_names=GENERIC_CATEGORIES, with_rgb=False
)


def claim_is_true(catalog: Catalog, t: int, s: int, claim: tuple[str, str, str]) -> bool:
    """Whether ``claim`` holds of target ``t`` relative to shown ``s``, from the raw arrays."""
    type_name, kind, value = claim
    codes = catalog.attribute_codes()
    if kind == "same":
        same_codes = all(a == b or a < 0 or b < 0 for a, b in zip(codes[t], codes[s], strict=True))
        gap = 0.0
        if catalog.primary_rgb is not None:
            luma = catalog.primary_rgb.astype(np.float64) @ np.array(LUMA_WEIGHTS)
            gap = abs(luma[t] - luma[s])
        return same_codes and catalog.categories[t] == catalog.categories[s] and gap < SHADE_THRESHOLD
    if type_name == "category":
        return catalog.category_of(t) == value and catalog.category_of(s) != value
    if type_name == "shade":
        luma = catalog.primary_rgb.astype(np.float64) @ np.array(LUMA_WEIGHTS)
        gap = luma[t] - luma[s]
        return gap <= -SHADE_THRESHOLD + 1e-3 if value == "darker" else gap >= SHADE_THRESHOLD - 1e-3
    k = catalog.vocabulary.type_names.index(type_name)
    tc, sc = int(codes[t, k]), int(codes[s, k])
    if tc < 0 or sc < 0:
        return False
    if kind == "direct":
        values = catalog.vocabulary[type_name].values
        return values[tc] == value and values[sc] != value
    assert catalog.vocabulary[type_name].ordered
    return np.sign(tc - sc) == DIRECTION_SIGN[value]


def check_batch_is_faithful(
    catalog: Catalog, user: TemplateUser, targets, shown, batch: CaptionBatch
) -> None:
    names = catalog.category_names
    for t, s, text, diffs in zip(targets, shown, batch.texts, batch.differences, strict=True):
        assert 1 <= len(diffs) <= user.max_differences
        claims = {d.claim for d in diffs}
        assert len(claims) == len(diffs), f"a type mentioned twice in {text!r}"
        assert parse_caption(text, catalog.vocabulary, names) == claims, text
        for d in diffs:
            assert d.claimed == d.target
            assert claim_is_true(catalog, int(t), int(s), d.claim), (text, d)


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_captions_and_different_seeds_differ():
    user = TemplateUser(CATALOG)
    pairs = np.random.default_rng(5).integers(0, len(CATALOG), size=(2, 128))
    a = user.describe(pairs[0], pairs[1], np.random.default_rng(42))
    b = user.describe(pairs[0], pairs[1], np.random.default_rng(42))
    c = user.describe(pairs[0], pairs[1], np.random.default_rng(43))
    assert a == b
    assert a.texts != c.texts


def test_noisy_user_is_deterministic_too():
    user = TemplateUser(CATALOG, TemplateNoise(omit=0.3, wrong_color=0.5, drop_word=0.2))
    pairs = np.random.default_rng(6).integers(0, len(CATALOG), size=(2, 64))
    a = user.describe(pairs[0], pairs[1], np.random.default_rng(1))
    b = user.describe(pairs[0], pairs[1], np.random.default_rng(1))
    assert a == b


# --- truthfulness and parsing (property tests) ------------------------------------------------

index = st.integers(0, len(CATALOG) - 1)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(index, index), min_size=1, max_size=24),
    seed=st.integers(0, 2**32 - 1),
    max_differences=st.integers(1, 4),
)
def test_noise_free_claims_are_true_and_parse_back_exactly(pairs, seed, max_differences):
    user = TemplateUser(CATALOG, max_differences=max_differences)
    targets = np.array([p[0] for p in pairs])
    shown = np.array([p[1] for p in pairs])
    batch = user.describe(targets, shown, np.random.default_rng(seed))
    assert len(batch) == len(pairs)
    check_batch_is_faithful(CATALOG, user, targets, shown, batch)


generic_index = st.integers(0, len(GENERIC_CATALOG) - 1)


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(generic_index, generic_index), min_size=1, max_size=24),
    seed=st.integers(0, 2**32 - 1),
)
def test_generic_vocabulary_without_rgb_is_faithful_and_parseable(pairs, seed):
    user = TemplateUser(GENERIC_CATALOG)
    targets = np.array([p[0] for p in pairs])
    shown = np.array([p[1] for p in pairs])
    batch = user.describe(targets, shown, np.random.default_rng(seed))
    check_batch_is_faithful(GENERIC_CATALOG, user, targets, shown, batch)
    assert all(d.type != "shade" for diffs in batch.differences for d in diffs)


def test_large_batch_is_faithful():
    """A broad sweep of the whole grammar, beyond what the property tests sample."""
    user = TemplateUser(CATALOG, max_differences=4)
    rng = np.random.default_rng(11)
    targets, shown = rng.integers(0, len(CATALOG), size=(2, 3000))
    batch = user.describe(targets, shown, rng)
    check_batch_is_faithful(CATALOG, user, targets, shown, batch)


def test_generic_wording_for_unknown_types_and_categories():
    user = TemplateUser(GENERIC_CATALOG)
    assert user.wordings("material", "direct", "silk") == (
        "has silk material",
        "has a silk material",
    )
    assert user.wordings("heel", "comparative", "more")[0] == "has more heel"
    assert user.wordings("category", "direct", "ankle_boot")[0] == "is an ankle boot"


# --- same and shade-only captions -----------------------------------------------------------


def test_identical_pairs_look_the_same():
    user = TemplateUser(CATALOG)
    items = np.arange(len(CATALOG))
    batch = user.describe(items, items, np.random.default_rng(0))
    same_wordings = set(user.wordings("none", "same", "same"))
    assert set(batch.texts) <= same_wordings
    assert len(set(batch.texts)) >= 2
    assert all(diffs == (SAME_DIFFERENCE,) for diffs in batch.differences)
    for text in batch.texts:
        assert parse_caption(text, CATALOG.vocabulary) == {("none", "same", "same")}


def twins_catalog(rgb_a, rgb_b) -> Catalog:
    """Two items with identical attributes and category, differing only in rendered colour."""
    codes = np.zeros((2, len(SYNTHETIC_VOCABULARY)), dtype=np.int64)
    return Catalog(
        ids=np.array(["a", "b"]),
        categories=np.zeros(2, dtype=np.int16),
        category_names=CATEGORIES,
        vocabulary=SYNTHETIC_VOCABULARY,
        labels=SYNTHETIC_VOCABULARY.encode(codes),
        descriptions=["a", "b"],
        primary_rgb=np.array([rgb_a, rgb_b], dtype=np.uint8),
    )


def test_only_shade_differs_gives_looks_the_same_but_darker():
    catalog = twins_catalog((100, 100, 100), (125, 125, 125))  # a is 25 luma darker than b
    user = TemplateUser(catalog)
    batch = user.describe(np.zeros(50, int), np.ones(50, int), np.random.default_rng(0))
    assert all(" but " in text and "dark" in text for text in batch.texts)
    assert any("slightly" in t or "a bit" in t or "a little" in t for t in batch.texts)
    assert all(diffs[0].claim == ("shade", "comparative", "darker") for diffs in batch.differences)
    for text in batch.texts:
        assert parse_caption(text, catalog.vocabulary) == {("shade", "comparative", "darker")}
    lighter = user.describe(np.ones(5, int), np.zeros(5, int), np.random.default_rng(0))
    assert all(d[0].claimed == "lighter" for d in lighter.differences)


def test_shade_below_threshold_is_the_same():
    catalog = twins_catalog((100, 100, 100), (110, 110, 110))
    batch = TemplateUser(catalog).describe(np.array([0]), np.array([1]), np.random.default_rng(0))
    assert batch.differences[0] == (SAME_DIFFERENCE,)


# --- variety ----------------------------------------------------------------------------------

CONTRAST = re.compile(r" (instead of|rather than) .*$")


def test_every_difference_appears_with_at_least_two_wordings():
    user = TemplateUser(CATALOG, max_differences=1)
    rng = np.random.default_rng(7)
    targets, shown = rng.integers(0, len(CATALOG), size=(2, 30000))
    batch = user.describe(targets, shown, rng)
    wordings: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for text, diffs in zip(batch.texts, batch.differences, strict=True):
        (d,) = diffs
        wordings[d.claim].add(CONTRAST.sub(r" \1", text))

    vocabulary = CATALOG.vocabulary
    expected = {("category", "direct", c) for c in CATEGORIES}
    expected |= {("shade", "comparative", w) for w in ("darker", "lighter")}
    for t in vocabulary.types:
        expected |= {(t.name, "direct", v) for v in t.values}
        if t.ordered:
            words = {"fit": ("looser", "tighter")}.get(t.name, ("longer", "shorter"))
            expected |= {(t.name, "comparative", w) for w in words}
    missing = expected - set(wordings)
    assert not missing, f"never described: {sorted(missing)}"
    too_few = {claim: sorted(w) for claim, w in wordings.items() if len(w) < 2}
    assert not too_few, f"fewer than two wordings: {too_few}"


def test_direct_comparative_and_mixed_captions_all_occur():
    user = TemplateUser(CATALOG)
    rng = np.random.default_rng(8)
    targets, shown = rng.integers(0, len(CATALOG), size=(2, 2000))
    kinds = {frozenset(d.kind for d in diffs) for diffs in user.describe(targets, shown, rng).differences}
    assert {frozenset({"direct"}), frozenset({"comparative"})} <= kinds
    assert frozenset({"direct", "comparative"}) in kinds


# --- noise --------------------------------------------------------------------------------


def sample_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    targets, shown = np.random.default_rng(seed).integers(0, len(CATALOG), size=(2, n))
    return targets, shown


def test_wrong_color_claims_another_colour_and_parses_as_claimed():
    user = TemplateUser(CATALOG, TemplateNoise(wrong_color=0.5))
    targets, shown = sample_pairs(2000, 9)
    batch = user.describe(targets, shown, np.random.default_rng(0))
    wrong = [d for diffs in batch.differences for d in diffs if d.claimed != d.target]
    assert wrong
    assert all(d.type == "color" and d.claimed not in (d.target, d.shown) for d in wrong)
    assert not all(d.is_faithful for diffs in batch.differences for d in diffs)
    for text, diffs in zip(batch.texts, batch.differences, strict=True):
        assert parse_caption(text, CATALOG.vocabulary) == {d.claim for d in diffs}


def test_cached_wordings_write_what_a_fresh_shopper_writes():
    """The wordings a shopper keeps from earlier captions (numbered as captions need them)
    never change a caption: after thousands of captions it writes the same texts, records and
    token ids as a fresh shopper given the same pairs and draws."""
    noise = TemplateNoise(omit=0.2, wrong_color=0.4)
    warm = TemplateUser(CATALOG, noise, max_differences=4)
    warm.describe(*sample_pairs(3000, 1), np.random.default_rng(1))
    for seed in range(20):
        targets, shown = sample_pairs(50, 100 + seed)
        fresh = TemplateUser(CATALOG, noise, max_differences=4)
        got = warm.describe(targets, shown, np.random.default_rng(seed))
        want = fresh.describe(targets, shown, np.random.default_rng(seed))
        assert got.texts == want.texts and got.differences == want.differences
        np.testing.assert_array_equal(got.word_ids, want.word_ids)


def reference_captions(
    user: TemplateUser, targets: np.ndarray, shown: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], list[tuple[Difference, ...]]]:
    """The template grammar written one caption at a time, from the shopper's own plan (which
    differences, in what order, with which uniforms): the reading the batched writer
    (fiq_gym.users.template_tables) must agree with. Noise-free of dropped words."""
    book = user._book
    pairs = user._compare(targets, shown)
    plan = user._plan_mentions(pairs, row_uniforms(rng, len(targets), user._uniform_width))

    def pick(wordings, u):
        return wordings[int(u * len(wordings))]

    def shade_record(i, direction):
        code = pairs.s_codes[i, book.color_column - 1] if book.color_column is not None else -1
        name = book.values[book.color_column][code] if code >= 0 else ""
        return Difference("shade", "comparative", SHADE_WORDS[direction], name, SHADE_WORDS[direction])

    texts, records = [], []
    for i in range(len(targets)):
        word_u, comp_u, compress_u = plan.style[i]
        cols = plan.order[i, : plan.count[i]].tolist()
        gap = float(pairs.luma_gap[i])
        shade_direction = 0 if gap < 0 else 1
        if not cols:
            texts.append(pick(SAME_WORDINGS, word_u[0]))
            records.append((SAME_DIFFERENCE,))
            continue
        if plan.num_differences[i] == 1 and cols[0] == book.shade_column:
            tail = pick(SHADE_ONLY_TAILS[shade_direction][abs(gap) < 2 * user.shade_threshold], comp_u[0])
            texts.append(f"{pick(SAME_WORDINGS, word_u[0])} but {tail}")
            records.append((shade_record(i, shade_direction),))
            continue
        parts, record = [], []
        for pos, c in enumerate(cols):
            if c == book.shade_column:
                parts.append(pick(SHADE_COMPARATIVES[shade_direction], word_u[pos]))
                record.append(shade_record(i, shade_direction))
                continue
            tv, sv = (
                (pairs.t_cats[i], pairs.s_cats[i])
                if c == 0
                else (pairs.t_codes[i, c - 1], pairs.s_codes[i, c - 1])
            )
            name, values = book.type_names[c], book.values[c]
            if book.ordered[c] and comp_u[pos] < 0.5:
                direction = 0 if tv > sv else 1
                word = book.direction_words[c][direction]
                parts.append(pick(book.comparative[c][direction], word_u[pos]))
                record.append(Difference(name, "comparative", word, values[sv], word))
                continue
            wrong = -1 if plan.wrong is None else plan.wrong[i]
            claimed = wrong if c == book.color_column and wrong >= 0 else tv
            wordings = book.direct[c][claimed]
            if book.surface[c] is not None:
                wordings += tuple(
                    f.format(phrase=wordings[0], shown=book.surface[c][sv]) for f in CONTRAST_FORMS
                )
            parts.append(pick(wordings, word_u[pos]))
            record.append(Difference(name, "direct", values[tv], values[sv], values[claimed]))
        text = parts[0]
        for pos in range(1, len(parts)):
            phrase, squeeze, last = parts[pos], compress_u[pos] < 0.3, pos == len(parts) - 1
            contrast = " instead of " in parts[pos - 1] or " rather than " in parts[pos - 1]
            if last and squeeze and phrase.startswith("has ") and not contrast:
                text += " with " + phrase[4:]
                continue
            text += " and " if last else ", "
            text += phrase[3:] if squeeze and phrase.startswith("is ") else phrase
        texts.append(text)
        records.append(tuple(record))
    return texts, records


ODD_VOCABULARY = AttributeVocabulary(
    (
        AttributeType("color", ("red", "blue")),
        AttributeType("size", ("s", "m", "l"), ordered=True),
        AttributeType("gloss", ("matte",)),
    )
)


@pytest.mark.parametrize("max_differences", [1, 2, 3, 5])
@pytest.mark.parametrize(
    "noise",
    [None, TemplateNoise(omit=0.3), TemplateNoise(wrong_color=0.5), TemplateNoise(omit=0.2, wrong_color=0.4)],
)
@pytest.mark.parametrize("catalog_kind", ["synthetic", "no colour rendering", "other vocabulary"])
def test_batched_writer_writes_the_grammar_caption_by_caption(max_differences, noise, catalog_kind):
    """Every caption of a batch, its records and its token ids are what the grammar gives one
    caption at a time (reference_captions) for the same plan, with every noise that changes
    what is said, several caption sizes and vocabularies (a colour-only palette of two, an
    ordered type without wordings of its own, category names with articles)."""
    catalog = {
        "synthetic": CATALOG,
        "no colour rendering": make_catalog(80, 1, with_rgb=False),
        "other vocabulary": make_catalog(
            50, 3, vocabulary=ODD_VOCABULARY, category_names=("hat", "ankle boot")
        ),
    }[catalog_kind]
    user = TemplateUser(catalog, noise, max_differences=max_differences)
    for seed, size in enumerate((1, 9, 300)):
        targets, shown = np.random.default_rng([seed, 7]).integers(0, len(catalog), size=(2, size))
        shown[: size // 10] = targets[: size // 10]  # some identical pairs: "looks the same"
        batch = user.describe(targets, shown, np.random.default_rng(seed))
        texts, records = reference_captions(user, targets, shown, np.random.default_rng(seed))
        # exact throughout: strings, records and integer token ids, no float arithmetic
        assert batch.texts == texts
        assert batch.differences == records
        ids, lengths = user.tokenizer.encode_batch(
            texts, max(1, max(len(t.split()) + t.count(",") for t in texts))
        )
        np.testing.assert_array_equal(batch.word_ids, ids[:, : batch.word_ids.shape[1]])
        np.testing.assert_array_equal(batch.word_lengths, lengths)


@pytest.mark.parametrize("noise", [None, TemplateNoise(omit=0.3, wrong_color=0.5)])
def test_small_and_large_batches_write_alike(noise):
    """Batches below TABLE_WRITER_MIN_BATCH are written pair by pair, larger ones with numpy,
    from the same tables: with one generator per pair, each caption (text, records, token ids)
    is the same whichever batch it is written in."""
    from fiq_gym.users.template import TABLE_WRITER_MIN_BATCH

    user = TemplateUser(CATALOG, noise)
    targets, shown = sample_pairs(3 * TABLE_WRITER_MIN_BATCH, 21)
    shown[:5] = targets[:5]

    def generators():
        return [np.random.default_rng([4, i]) for i in range(len(targets))]

    whole = user.describe(targets, shown, generators())
    rngs = generators()
    for start in range(0, len(targets), 5):
        part = user.describe(targets[start : start + 5], shown[start : start + 5], rngs[start : start + 5])
        assert part.texts == whole.texts[start : start + 5]
        assert part.differences == whole.differences[start : start + 5]
        width = part.word_ids.shape[1]
        np.testing.assert_array_equal(part.word_ids, whole.word_ids[start : start + 5, :width])
        assert not whole.word_ids[start : start + 5, width:].any()


def test_records_are_made_when_first_read_and_pickle_made():
    """A batch's records are worked out on first read (an env never reads them), the same
    whenever they are read, and a pickled batch carries them made."""
    import pickle

    user = TemplateUser(CATALOG, TemplateNoise(wrong_color=0.5))
    targets, shown = sample_pairs(40, 3)
    batch = user.describe(targets, shown, np.random.default_rng(0))
    assert "differences" not in batch.__dict__
    again = pickle.loads(pickle.dumps(user.describe(targets, shown, np.random.default_rng(0))))
    assert "differences" in again.__dict__
    assert batch == again and batch.differences == again.differences
    assert len(batch.differences) == 40


def test_drop_word_shortens_captions_but_never_empties_them():
    targets, shown = sample_pairs(1000, 10)
    clean = TemplateUser(CATALOG).describe(targets, shown, np.random.default_rng(0))
    noisy = TemplateUser(CATALOG, TemplateNoise(drop_word=0.3)).describe(
        targets, shown, np.random.default_rng(0)
    )
    assert clean.differences == noisy.differences  # word drops happen after everything else
    words = [len(t.split()) for t in clean.texts]
    noisy_words = [len(t.split()) for t in noisy.texts]
    assert np.mean(noisy_words) < 0.8 * np.mean(words)
    assert min(noisy_words) >= 1
    all_dropped = TemplateUser(CATALOG, TemplateNoise(drop_word=1.0)).describe(
        targets[:50], shown[:50], np.random.default_rng(0)
    )
    assert all(len(t.split()) == 1 for t in all_dropped.texts)


def test_omit_reduces_mentions_but_keeps_at_least_one():
    targets, shown = sample_pairs(2000, 12)
    clean = TemplateUser(CATALOG).describe(targets, shown, np.random.default_rng(0))
    omitting = TemplateUser(CATALOG, TemplateNoise(omit=0.5)).describe(
        targets, shown, np.random.default_rng(0)
    )
    mentions = np.mean([len(d) for d in clean.differences])
    omitted = np.mean([len(d) for d in omitting.differences])
    assert omitted < 0.8 * mentions
    assert min(len(d) for d in omitting.differences) >= 1
    for text, diffs in zip(omitting.texts, omitting.differences, strict=True):
        assert parse_caption(text, CATALOG.vocabulary) == {d.claim for d in diffs}


@pytest.mark.parametrize("max_differences", [1, 2])
def test_every_noise_works_with_few_differences(max_differences):
    # max_differences=1 once made the omit draws 1-D and crashed describe()
    targets, shown = sample_pairs(200, 13)
    noise = TemplateNoise(omit=0.5, wrong_color=0.5, drop_word=0.2)
    batch = TemplateUser(CATALOG, noise, max_differences=max_differences).describe(
        targets, shown, np.random.default_rng(0)
    )
    assert all(1 <= len(d) <= max_differences for d in batch.differences)
    assert all(text.strip() for text in batch.texts)


@pytest.mark.parametrize("field", ["omit", "wrong_color", "drop_word"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_noise_probabilities_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        TemplateNoise(**{field: value})


# --- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "shown", "message"),
    [
        ([1, 2, 3], [1, 2], r"same length.*3 targets and 2 shown"),
        ([1, 60], [0, 0], r"targets\[1\] = 60 is out of range.*0\.\.59"),
        ([0, 0], [-1, 0], r"shown\[0\] = -1 is out of range.*0\.\.59"),
        (np.array([1.0, 2.0]), [1, 2], r"targets must hold integer.*float64"),
        ([1, 2], np.array([True, False]), r"shown must hold integer.*bool"),
        ([[1, 2]], [[1, 2]], r"targets must be a 1-D array.*\(1, 2\)"),
    ],
)
def test_bad_indices_raise_specific_errors(targets, shown, message):
    user = TemplateUser(CATALOG)
    with pytest.raises(ValueError, match=message):
        user.describe(np.asarray(targets), np.asarray(shown), np.random.default_rng(0))


def test_describe_one_and_other_argument_checks():
    user = TemplateUser(CATALOG)
    text = user.describe_one(3, 4, np.random.default_rng(0))
    assert isinstance(text, str) and text
    with pytest.raises(ValueError, match=r"target must be an integer"):
        user.describe_one(1.5, 4, np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        user.describe(np.array([1]), np.array([2]), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_differences"):
        TemplateUser(CATALOG, max_differences=0)
    empty = user.describe(np.array([], dtype=int), np.array([], dtype=int), np.random.default_rng(0))
    assert empty.texts == [] and empty.differences == []


def test_difference_records_are_plain_frozen_values():
    d = Difference("color", "direct", "red", "blue", "red")
    assert d.claim == ("color", "direct", "red") and d.is_faithful
    with pytest.raises(AttributeError):
        d.claimed = "green"  # type: ignore[misc]


def test_parser_ignores_unknown_words_and_reads_free_text():
    vocabulary = SYNTHETIC_VOCABULARY
    assert parse_caption("I want it red, please, with long sleeves!", vocabulary) == {
        ("color", "direct", "red"),
        ("sleeve", "direct", "long"),
    }
    assert parse_caption("is blue instead of black and looser", vocabulary) == {
        ("color", "direct", "blue"),
        ("fit", "comparative", "looser"),
    }
    assert parse_caption("something else entirely", vocabulary) == set()


# --- integration with vector envs and tokenizers ---------------------------------------------


def test_per_pair_generators_make_each_caption_depend_only_on_its_own():
    user = TemplateUser(CATALOG, TemplateNoise(omit=0.2, wrong_color=0.3, drop_word=0.1))
    targets, shown = sample_pairs(16, 13)
    together = user.describe(targets, shown, [np.random.default_rng(100 + i) for i in range(len(targets))])
    for i in range(len(targets)):
        alone = user.describe(targets[i : i + 1], shown[i : i + 1], [np.random.default_rng(100 + i)])
        assert alone.texts[0] == together.texts[i]
        assert alone.differences[0] == together.differences[i]
    with pytest.raises(ValueError, match=r"got 2 generators for 16 pairs"):
        user.describe(targets, shown, [np.random.default_rng(0)] * 2)


def test_caption_words_cover_every_caption_token():
    from fiq_gym.text import split_words

    for catalog in (CATALOG, GENERIC_CATALOG):
        user = TemplateUser(catalog, max_differences=4)
        words = set(user.caption_words())
        rng = np.random.default_rng(14)
        targets, shown = rng.integers(0, len(catalog), size=(2, 2000))
        batch = user.describe(targets, shown, rng)
        used = {w for text in batch.texts for w in split_words(text)}
        assert used <= words, sorted(used - words)
        assert "," in words and "and" in words
