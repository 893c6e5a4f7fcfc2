"""The template shopper's own likelihood (fiq_gym.users.template_likelihood): it never rules out
the true target of a caption the shopper wrote, and the caption distribution it implies is the
shopper's (a chi-square test that fails for a wrong mention model)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from fiq_gym.envs.configurations import CONFIGURATIONS
from fiq_gym.users.template import LUMA_WEIGHTS, TemplateNoise, TemplateUser
from fiq_gym.users.template_likelihood import ItemAttributes, TemplateLikelihood


def _terse() -> tuple[TemplateNoise, int]:
    template = CONFIGURATIONS["terse"].template
    return TemplateNoise(**template["noise"]), template["max_differences"]


SETTINGS = {
    "default": (None, 3),
    "omit": (TemplateNoise(omit=0.3), 3),
    "wrong-color": (TemplateNoise(wrong_color=0.1), 3),
    "terse": _terse(),
    "drop-word": (TemplateNoise(drop_word=0.15), 3),
}


def true_attributes(catalog) -> ItemAttributes:
    """What the shopper itself knows of the items: labels, categories and luma."""
    rgb = np.asarray(catalog.primary_rgb, dtype=np.float32)
    return ItemAttributes(
        codes=catalog.attribute_codes(),
        categories=np.asarray(catalog.categories),
        luma=rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32),
    )


def pair(catalog, name: str):
    noise, m = SETTINGS[name]
    user = TemplateUser(catalog, noise=noise, max_differences=m)
    return user, TemplateLikelihood(
        catalog.vocabulary, catalog.category_names, noise=noise, max_differences=m
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_true_target_is_never_ruled_out(small_catalog, name):
    """20,000 shopper-captioned (target, shown) pairs per setting, with floor 0: every true
    target keeps a positive likelihood, and the caption narrows the catalog down."""
    user, likelihood = pair(small_catalog, name)
    items = true_attributes(small_catalog)
    rng = np.random.default_rng(1)
    n = 20_000
    targets = rng.integers(0, len(small_catalog), n)
    shown = rng.integers(0, len(small_catalog), n)
    texts = user.describe(targets, shown, rng).texts
    share = []
    for text, t, s in zip(texts, targets.tolist(), shown.tolist(), strict=True):
        values = likelihood.likelihood(text, items, s)
        assert values[t] > 0, f"{name}: target {t} ruled out by {text!r} (shown {s})"
        share.append(values[t] / values.sum())
    assert np.mean(share) > 3 / len(small_catalog)  # one caption already narrows the catalog


def _upper_tail(statistic: float, dof: int) -> float:
    """P(chi-square with ``dof`` degrees of freedom > ``statistic``), by Wilson and Hilferty's
    normal approximation (ample for a test threshold; scipy is not a dependency)."""
    if dof <= 0:
        return 1.0
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def caption_fit(catalog, user, likelihood, target: int, shown: int, n: int, seed: int) -> tuple[float, float]:
    """(chi-square p-value, predicted mass of the captions seen) of ``n`` captions of one pair
    against the likelihood: each distinct reading (claims and form) is one cell."""
    items = true_attributes(catalog)
    rng = np.random.default_rng(seed)
    texts = user.describe(np.full(n, target), np.full(n, shown), rng).texts
    readings = [likelihood.read(text) for text in texts]
    key = {r.text: (tuple(sorted(r.claims.items())), r.same, r.shade_only, r.slight) for r in readings}
    counts = Counter(key[r.text] for r in readings)
    predicted = {}
    for r in readings:
        if key[r.text] not in predicted:
            predicted[key[r.text]] = float(likelihood.likelihood(r, items, shown)[target])
    mass = sum(predicted.values())
    cells = [(counts[k], n * p) for k, p in predicted.items()]
    # Rare readings pool into one cell, with the mass of the readings that did not come up
    # (mostly rare ones too: a wrong colour in a three-claim caption): together, an unbiased
    # cell. A model that expects captions the shopper never writes overfills it.
    small = [(o, e) for o, e in cells if e < 5] + [(0, n * max(0.0, 1.0 - mass))]
    cells = [(o, e) for o, e in cells if e >= 5]
    cells.append((sum(o for o, _ in small), sum(e for _, e in small)))
    if any(e == 0 and o > 0 for o, e in cells):
        return 0.0, mass
    statistic = sum((o - e) ** 2 / e for o, e in cells if e > 0)
    return _upper_tail(statistic, len(cells) - 1), mass


def _pairs_with_many_differences(catalog, likelihood, count: int) -> list[tuple[int, int]]:
    items = true_attributes(catalog)
    rng = np.random.default_rng(5)
    found = []
    while len(found) < count:
        t, s = (int(x) for x in rng.integers(0, len(catalog), 2))
        if likelihood.differences(items, s)[t].sum() >= 4:
            found.append((t, s))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "omit", "wrong-color"])
def test_predicted_caption_frequencies_match_the_shoppers(small_catalog, name):
    """For pairs with four or more differences, 4,000 captions each: the readings' frequencies
    match the likelihood's probabilities (chi-square), and the likelihood's mass lies on the
    captions the shopper wrote."""
    user, likelihood = pair(small_catalog, name)
    for k, (t, s) in enumerate(_pairs_with_many_differences(small_catalog, likelihood, 3)):
        p, mass = caption_fit(small_catalog, user, likelihood, t, s, 4000, seed=k)
        assert p > 1e-3, f"{name}: pair ({t}, {s}) p = {p:.2e}"
        assert mass > 0.95  # the rest: rare captions that did not come up in 4,000


@pytest.mark.slow
def test_the_frequency_test_fails_for_a_wrong_mention_model(small_catalog):
    """The same test rejects a likelihood whose mention model is wrong: a shopper that mentions
    up to three differences read as one that mentions up to two, and one that omits read as
    one that does not."""
    user, _ = pair(small_catalog, "default")
    wrong_count = TemplateLikelihood(
        small_catalog.vocabulary, small_catalog.category_names, max_differences=2
    )
    (t, s) = _pairs_with_many_differences(small_catalog, wrong_count, 1)[0]
    assert caption_fit(small_catalog, user, wrong_count, t, s, 4000, seed=0)[0] < 1e-6
    omitting, _ = pair(small_catalog, "omit")
    no_omit = TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names)
    assert caption_fit(small_catalog, omitting, no_omit, t, s, 4000, seed=0)[0] < 1e-6


def test_readings_of_the_captions_forms(small_catalog):
    likelihood = TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names)
    same = likelihood.read("looks the same")
    assert same.same and not same.claims and not same.shade_only
    slight = likelihood.read("looks the same but slightly darker")
    assert slight.shade_only and slight.slight and not slight.same
    plain = likelihood.read("is the same but in a darker shade")
    assert plain.shade_only and not plain.slight
    several = likelihood.read("is red instead of blue, has stripes and is darker")
    assert not several.shade_only and {c.type for c in several.claims.values()} == {
        "color",
        "pattern",
        "shade",
    }


def test_a_looks_the_same_caption_keeps_only_the_identical_items(small_catalog):
    likelihood = TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names)
    items = true_attributes(small_catalog)
    values = likelihood.likelihood("looks the same", items, 3)
    differs = likelihood.differences(items, 3).any(axis=1)
    np.testing.assert_array_equal(values > 0, ~differs)
    assert values[3] == 1.0  # exact: 1 x 1 x (1 - 0 - 0), no rounding anywhere on the way


def test_floor_keeps_every_item_alive_in_proportion(small_catalog):
    items = true_attributes(small_catalog)
    exact = TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names)
    floored = TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names, floor=1e-3)
    a = exact.likelihood("is red", items, 0)
    b = floored.likelihood("is red", items, 0)
    np.testing.assert_allclose(b, a + 1e-3 * a.max())
    with pytest.raises(ValueError, match="floor"):
        TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names, floor=1.5)
