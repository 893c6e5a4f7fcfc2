"""Caption metrics: COCO scores on known cases, faithfulness on hand-made pairs."""

from __future__ import annotations

import numpy as np
import pytest

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.synthetic_spec import CATEGORIES, SYNTHETIC_VOCABULARY
from fiq_gym.users.caption_metrics import (
    LANGUAGE_METRICS,
    DifferenceOracle,
    caption_scores,
    faithfulness,
)
from fiq_gym.users.template import Claim, TemplateNoise, TemplateUser

# --- language metrics -------------------------------------------------------------------


def test_identical_candidates_score_one():
    caps = ["is red and has longer sleeves", "is a shirt instead of a dress, darker and striped"]
    scores = caption_scores(caps, [[c] for c in caps])
    assert list(scores) == list(LANGUAGE_METRICS)
    for n in range(1, 5):
        assert scores[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(1.0)


def test_disjoint_candidates_score_zero_and_partial_overlap_in_between():
    refs = [["is red and has longer sleeves"], ["has a v-neck and is loose"]]
    zero = caption_scores(["looks identical", "floral print"], refs)
    assert zero["BLEU-1"] == pytest.approx(0.0, abs=1e-6)
    assert zero["ROUGE-L"] == 0.0
    assert zero["CIDEr"] == 0.0
    partial = caption_scores(["is red and has short sleeves", "has a v-neck"], refs)
    assert 0.0 < partial["BLEU-4"] < 1.0
    assert 0.0 < partial["ROUGE-L"] < 1.0
    assert partial["CIDEr"] > zero["CIDEr"]


def test_scores_use_split_words_tokenisation():
    """Case and punctuation spacing do not matter: 'Red,' is the words 'red' and ','."""
    a = caption_scores(["Is Red, and DARKER"], [["is red , and darker"]])
    assert a["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_more_references_can_only_help_bleu():
    one = caption_scores(["is red"], [["is blue"]])
    two = caption_scores(["is red"], [["is blue", "is red"]])
    assert two["BLEU-1"] > one["BLEU-1"]


def test_caption_scores_validates_input():
    with pytest.raises(ValueError, match="2 candidates but 1"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores(["a"], [[]])
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores(["a"], ["a plain string is not a list of references"])
    with pytest.raises(ValueError, match="at least one"):
        caption_scores([], [])
    # an empty candidate is scored, not a crash (ROUGE-L divides by its length)
    assert caption_scores([""], [["is red"]])["ROUGE-L"] == 0.0


# --- faithfulness -----------------------------------------------------------------------


def _item_codes(**values: str) -> list[int]:
    """Per-type codes for the synthetic vocabulary; missing types are unknown (-1)."""
    return [
        SYNTHETIC_VOCABULARY[t.name].values.index(values[t.name]) if t.name in values else -1
        for t in SYNTHETIC_VOCABULARY.types
    ]


@pytest.fixture(scope="module")
def hand_catalog() -> Catalog:
    """Four hand-made items:

    0: red dress, solid, long sleeves, midi, crew, fitted, dark (luma ~ 80)
    1: blue dress, solid, short sleeves, mini, crew, fitted, bright (luma ~ 180)
    2: red dress, same as 0 but its pattern is unknown, and the same luma
    3: red shirt, as 0 otherwise
    """
    base = dict(color="red", pattern="solid", sleeve="long", length="midi", neckline="crew", fit="fitted")
    rows = [
        _item_codes(**base),
        _item_codes(**{**base, "color": "blue", "sleeve": "short", "length": "mini"}),
        _item_codes(**{k: v for k, v in base.items() if k != "pattern"}),
        _item_codes(**{**base, "length": "long"}),
    ]
    rgb = np.array([[120, 60, 60], [190, 180, 170], [120, 60, 60], [120, 60, 60]], dtype=np.uint8)
    return Catalog(
        ids=np.array(["a", "b", "c", "d"]),
        categories=np.array([0, 0, 0, 1], dtype=np.int16),
        category_names=CATEGORIES,
        vocabulary=SYNTHETIC_VOCABULARY,
        labels=SYNTHETIC_VOCABULARY.encode(np.array(rows)),
        descriptions=[""] * 4,
        primary_rgb=rgb,
    )


def test_pair_truth_of_hand_made_items(hand_catalog):
    oracle = DifferenceOracle(hand_catalog)
    truth = oracle.truth(0, 1)
    assert truth.differing == {"color", "sleeve", "length", "shade"}
    assert truth.claims == {
        Claim("color", "direct", "red"),
        Claim("sleeve", "direct", "long"),
        Claim("sleeve", "comparative", "longer"),
        Claim("length", "direct", "midi"),
        Claim("length", "comparative", "longer"),
        Claim("shade", "comparative", "darker"),
    }
    assert truth.directions == {"sleeve": "longer", "length": "longer", "shade": "darker"}
    # the reverse pair flips every direction and names the other values
    back = oracle.truth(1, 0)
    assert Claim("sleeve", "comparative", "shorter") in back.claims
    assert Claim("shade", "comparative", "lighter") in back.claims
    assert Claim("color", "direct", "blue") in back.claims
    # identical items: only "the same" is true; an unknown pattern is unscorable
    same = oracle.truth(0, 2)
    assert same.differing == frozenset() and same.claims == {Claim("none", "same", "same")}
    assert same.unknown == {"pattern"}
    assert same.is_correct(("pattern", "direct", "floral")) is None
    assert oracle.truth(3, 0).claims == {
        Claim("category", "direct", "shirt"),
        Claim("length", "direct", "long"),
        Claim("length", "comparative", "shorter"),  # a long top ends above a midi dress
    }


def test_faithfulness_counts_on_hand_made_captions(hand_catalog):
    oracle = DifferenceOracle(hand_catalog)
    # pair (0, 1) has 4 differences: color, sleeve, length, shade
    f = faithfulness(["is red and has longer sleeves"], [0], [1], oracle)
    assert (f.claims, f.correct, f.differences, f.covered) == (2, 2, 4, 2)
    assert (f.precision, f.recall) == (1.0, 0.5)
    # a wrong direction, a wrong value, a true-but-not-different claim, one right claim
    f = faithfulness(["is shorter, is blue, is fitted and is darker"], [0], [1], oracle)
    assert (f.claims, f.correct, f.covered) == (4, 1, 1)
    assert f.precision == pytest.approx(0.25) and f.recall == pytest.approx(0.25)
    # both wordings of one difference: two correct claims, one covered difference
    f = faithfulness(["has long sleeves and the sleeves are longer"], [0], [1], oracle)
    assert (f.claims, f.correct, f.covered) == (2, 2, 1)
    # "looks the same" is right only when nothing differs; unknown types are not scored
    f = faithfulness(["looks the same", "looks the same", "is floral"], [0, 0, 0], [2, 1, 2], oracle)
    assert (f.claims, f.correct, f.differences, f.covered) == (2, 1, 1 + 4 + 1, 1)
    # a caption with no recognisable claim: no precision penalty, recall lost, counted
    f = faithfulness(["the weather is nice"], [0], [1], oracle)
    assert (f.claims, f.precision, f.recall, f.unparsed) == (0, 1.0, 0.0, 1)
    with pytest.raises(ValueError, match="one entry per pair"):
        faithfulness(["a"], [0, 1], [1, 0], oracle)


def test_noise_free_template_captions_are_fully_precise(small_catalog):
    """The template shopper states only true differences; recall is what it mentions."""
    rng = np.random.default_rng(0)
    n = len(small_catalog)
    targets = rng.integers(n, size=400)
    shown = (targets + 1 + rng.integers(n - 1, size=400)) % n
    batch = TemplateUser(small_catalog).describe(targets, shown, rng)
    oracle = DifferenceOracle(small_catalog)
    f = faithfulness(batch.texts, targets, shown, oracle)
    assert f.precision == 1.0 and f.unparsed == 0
    mentioned = sum(len({d.type for d in records}) for records in batch.differences)
    assert f.covered == mentioned
    assert 0.3 < f.recall < 1.0  # at most 3 of often more differences
    noisy = TemplateUser(small_catalog, noise=TemplateNoise(wrong_color=1.0))
    f_noisy = faithfulness(noisy.describe(targets, shown, rng).texts, targets, shown, oracle)
    assert f_noisy.precision < 0.95


def test_parse_in_order_follows_the_caption(hand_catalog):
    oracle = DifferenceOracle(hand_catalog)
    claims = oracle.parse_in_order("is darker, has longer sleeves and is red")
    assert [c.type for c in claims] == ["shade", "sleeve", "color"]
    assert set(claims) == oracle.parse("is darker, has longer sleeves and is red")
    assert oracle.parse_in_order("is red with short sleeves") == [
        Claim("color", "direct", "red"),
        Claim("sleeve", "direct", "short"),
    ]
    assert oracle.parse_in_order("looks the same but slightly darker") == [
        Claim("shade", "comparative", "darker")
    ]
    assert oracle.parse_in_order("looks identical") == [Claim("none", "same", "same")]
