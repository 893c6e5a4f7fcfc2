"""Caption quality: the COCO caption metrics, and faithfulness to the true differences.

**Language metrics.** BLEU-1..4, ROUGE-L and CIDEr (CIDEr-D) come from the scorers of
``pycocoevalcap``, the maintained Python 3 port of the COCO caption evaluation, so numbers are
comparable with the captioning literature. Only the tokenisation differs: the COCO code runs
Stanford's Java PTB tokenizer, which this project cannot require; captions are tokenised with
:func:`fiq_gym.text.split_words` instead (lower-case, hyphenated words whole, punctuation as
separate tokens), the same words the environments' tokenizers see. CIDEr's document
frequencies come from the references of the evaluated set, as in the COCO code, so CIDEr is
comparable only between systems scored on the same pairs.

**Faithfulness** (synthetic catalogs, where the attributes are known): does a caption say true
things about how the target differs from the shown item, and how many of the differences does
it cover? Captions are read with the template grammar's parser
(:func:`fiq_gym.users.template.parse_caption`), which turns text into claims
``(type, kind, value)``. The truth for a pair is what the template shopper would consider a
difference (:class:`DifferenceOracle`):

* a *type* differs when both items have a known value and the values differ (``category`` and
  every attribute type), or, for ``shade``, when the rendered colours' luma gap is at least
  :data:`~fiq_gym.users.template.SHADE_THRESHOLD` (only on catalogs that record rendered
  colours);
* a **direct** claim ``(type, "direct", v)`` is correct iff ``type`` differs and ``v`` is the
  target's value ("is red" when the target is red and the shown item is not);
* a **comparative** claim ``(type, "comparative", w)`` is correct iff ``type`` differs and ``w``
  is the true direction word: for an ordered type the word the template uses for "the
  target's value comes later in the type's order" ("longer", "looser") or earlier ("shorter",
  "tighter"); for shade "darker" or "lighter" by the sign of the luma gap;
* the **same** claim ``("none", "same", "same")`` is correct iff nothing differs;
* a claim about a type whose value is unknown on either side cannot be checked and is not
  scored. Any other claim is incorrect, including a true statement about a type that does not
  differ ("is red" when both are red): a relative caption should only state differences.

**Precision** is correct claims / scored claims, summed over all captions (micro-averaged).
**Recall** is covered differences / differences: each differing type of a pair (or the single
"nothing differs" fact of an identical pair) counts once, and is covered when the caption makes
at least one correct claim about it. The template shopper mentions at most three differences,
so its own recall is below 1: its row in a benchmark is the ceiling, not 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.text import split_words
from fiq_gym.users.base import Difference
from fiq_gym.users.phrasebook import Claim, phrasebook
from fiq_gym.users.template import LUMA_WEIGHTS, SHADE_THRESHOLD

__all__ = [
    "LANGUAGE_METRICS",
    "DifferenceOracle",
    "Faithfulness",
    "PairTruth",
    "caption_scores",
    "faithfulness",
]

#: The keys :func:`caption_scores` returns, in table order.
LANGUAGE_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")

_SAME = Claim("none", "same", "same")
_PHRASE_BREAK = re.compile(r",|\band\b|\bbut\b|(?=\bwith\b)")
_PIECE_CACHE_SIZE = 100_000  # phrases whose claims an oracle keeps (then it starts afresh)
_EMPTY = "<empty>"  # stands in for an empty caption: ROUGE-L divides by the candidate's length


def _coco_text(text: str) -> str:
    words = split_words(text)
    return " ".join(words) if words else _EMPTY


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus-level BLEU-1..4, ROUGE-L and CIDEr-D of ``candidates[i]`` against
    ``references[i]`` (one or more captions each), with the COCO evaluation's scorers.

    Scores are fractions (BLEU 1.0 for candidates identical to a reference), CIDEr on its
    usual 0..10 scale. An empty candidate scores as a word that matches nothing.

    Raises:
        ValueError: if the lengths differ, a pair has no reference, or there is no pair.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("caption_scores needs at least one candidate")
    res: dict[int, list[str]] = {}
    gts: dict[int, list[str]] = {}
    for i, (candidate, refs) in enumerate(zip(candidates, references, strict=True)):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{i}] must be a non-empty list of captions, got {refs!r}")
        res[i] = [_coco_text(candidate)]
        gts[i] = [_coco_text(r) for r in refs]
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"BLEU-{n}": float(bleu[n - 1]) for n in range(1, 5)}
    out["ROUGE-L"] = float(rouge)
    out["CIDEr"] = float(cider)
    return out


@dataclass(frozen=True)
class PairTruth:
    """What differs between one target and one shown item, as the template shopper sees it.

    Attributes:
        differing: the differing types (``"category"``, attribute type names, ``"shade"``);
            empty when the items look the same.
        claims: every claim that is correct for the pair (see the module docstring).
        unknown: types whose value is unknown on either side; claims about them are not scored.
        values: per type, ``(target value, shown value)`` for ``category`` and the attribute
            types where both are known.
        directions: per differing ordered type (and ``shade``), the true comparative word.
    """

    differing: frozenset[str]
    claims: frozenset[Claim]
    unknown: frozenset[str]
    values: Mapping[str, tuple[str, str]]
    directions: Mapping[str, str]

    def is_correct(self, claim: Claim | tuple[str, str, str]) -> bool | None:
        """True or False for a scorable claim, None when it cannot be checked."""
        claim = Claim(*claim)
        if claim.type in self.unknown:
            return None
        return claim in self.claims

    def covered_type(self, claim: Claim | tuple[str, str, str]) -> str:
        """The unit of recall a correct claim covers: its type, or ``"none"`` for "same"."""
        return Claim(*claim).type


class DifferenceOracle:
    """The true differences between catalog items, in the template grammar's terms.

    Built once per catalog (attribute codes, category codes and rendered luma are cached), then
    queried per pair with :meth:`truth`. Uses the same comparison rules as
    :class:`~fiq_gym.users.template.TemplateUser`: codes compared by type, comparatives by the
    type's value order, shade by a luma gap of at least ``shade_threshold``.

    Args:
        catalog: the catalog whose items are compared.
        shade_threshold: the luma gap (0..255) for darker / lighter; use the template user's.
    """

    def __init__(self, catalog: Catalog, shade_threshold: float = SHADE_THRESHOLD) -> None:
        self.catalog = catalog
        self.shade_threshold = float(shade_threshold)
        self._book = phrasebook(catalog.vocabulary, tuple(catalog.category_names))
        # The claims of each phrase seen (pure function of the text; captions repeat phrases).
        self._piece_claims: dict[str, tuple[Claim, ...]] = {}
        self._codes = np.asarray(catalog.attribute_codes()).tolist()
        self._categories = np.asarray(catalog.categories).tolist()
        self._luma: list[float] | None = None
        if catalog.primary_rgb is not None:
            rgb = np.asarray(catalog.primary_rgb, dtype=np.float32)
            self._luma = (rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)).tolist()

    def truth(self, target: int, shown: int) -> PairTruth:
        """The :class:`PairTruth` of catalog rows ``target`` and ``shown``."""
        t, s = int(target), int(shown)
        book = self._book
        differing: set[str] = set()
        claims: set[Claim] = set()
        unknown: set[str] = set()
        values: dict[str, tuple[str, str]] = {}
        directions: dict[str, str] = {}
        tc, sc = self._categories[t], self._categories[s]
        values["category"] = (book.values[0][tc], book.values[0][sc])
        if tc != sc:
            differing.add("category")
            claims.add(Claim("category", "direct", book.values[0][tc]))
        for k, (tv, sv) in enumerate(zip(self._codes[t], self._codes[s], strict=True)):
            column = k + 1
            name = book.type_names[column]
            if tv < 0 or sv < 0:
                unknown.add(name)
                continue
            names = book.values[column]
            values[name] = (names[tv], names[sv])
            if tv == sv:
                continue
            differing.add(name)
            claims.add(Claim(name, "direct", names[tv]))
            words = book.direction_words[column]
            if words is not None:
                directions[name] = words[0] if tv > sv else words[1]
                claims.add(Claim(name, "comparative", directions[name]))
        if self._luma is None:
            unknown.add("shade")
        else:
            gap = self._luma[t] - self._luma[s]
            if abs(gap) >= self.shade_threshold:
                words = book.direction_words[book.shade_column]
                assert words is not None  # shade always has its darker/lighter words
                word = words[0] if gap < 0 else words[1]
                differing.add("shade")
                claims.add(Claim("shade", "comparative", word))
                directions["shade"] = word
        if not differing:
            claims.add(_SAME)
        return PairTruth(frozenset(differing), frozenset(claims), frozenset(unknown), values, directions)

    def parse(self, text: str) -> set[Claim]:
        """The claims ``text`` makes, by the template grammar of this catalog."""
        return self._book.parse(text)

    def parse_in_order(self, text: str) -> list[Claim]:
        """The claims of ``text`` in the order the caption makes them.

        The template grammar joins phrases with ", ", " and ", " but " and a final
        " with ...", and every phrase names its type, so parsing the pieces one by one finds
        the same claims as :meth:`parse`, in order ("same" only when nothing else is claimed).
        """
        claims: list[Claim] = []
        cache = self._piece_claims
        for piece in _PHRASE_BREAK.split(text.lower()):
            found = cache.get(piece)
            if found is None:
                if len(cache) >= _PIECE_CACHE_SIZE:
                    cache.clear()
                found = cache[piece] = tuple(sorted(self._book.parse(piece)))
            for claim in found:
                if claim not in claims:
                    claims.append(claim)
        if len(claims) > 1 and _SAME in claims:
            claims.remove(_SAME)
        return claims

    def differences(self, text: str, target: int, shown: int) -> tuple[Difference, ...]:
        """The claims of a generated caption about rows ``target`` and ``shown``, in order,
        as :class:`~fiq_gym.users.Difference` records judged against the truth.

        Learned and language-model shoppers report their captions' differences this way, so
        ``is_faithful`` says whether the model told the truth: a record's ``target`` is the
        true value (direct claims) or direction (comparatives), ``"same"`` when the claimed
        type does not differ, ``""`` when it cannot be checked, and ``"different"`` for a
        "looks the same" claim about items that differ. Text the grammar cannot read has no
        records.
        """
        claims = self.parse_in_order(text)
        if not claims:
            return ()
        truth = self.truth(target, shown)
        return tuple(_judged(claim, truth) for claim in claims)


def _judged(claim: tuple[str, str, str], truth: PairTruth) -> Difference:
    """A claim as a :class:`Difference` whose ``target`` holds the truth (see
    :meth:`DifferenceOracle.differences`)."""
    type_, kind, value = claim
    if type_ == "none":
        return Difference("none", "same", "same" if not truth.differing else "different", "same", "same")
    if type_ in truth.unknown:
        return Difference(type_, kind, "", "", value)
    if type_ == "shade":
        shown = truth.values["color"][1] if "color" in truth.values else ""
    else:
        shown = truth.values.get(type_, ("", ""))[1]
    if type_ not in truth.differing:
        target = "same"
    elif kind == "comparative":
        target = truth.directions.get(type_, "")
    else:
        target = truth.values[type_][0]
    return Difference(type_, kind, target, shown, value)


@dataclass(frozen=True)
class Faithfulness:
    """Faithfulness of a set of captions (see the module docstring for the definitions).

    Attributes:
        precision: correct / scored claims (1.0 when no claim was scored).
        recall: covered / total differences.
        claims: scored claims made.
        correct: of those, correct.
        differences: differing types over all pairs (an identical pair counts one).
        covered: of those, covered by a correct claim.
        unparsed: captions from which the grammar recognised no claim at all.
    """

    precision: float
    recall: float
    claims: int
    correct: int
    differences: int
    covered: int
    unparsed: int


def faithfulness(
    captions: Sequence[str],
    targets: Sequence[int] | np.ndarray,
    shown: Sequence[int] | np.ndarray,
    oracle: DifferenceOracle,
) -> Faithfulness:
    """Score ``captions[i]`` (about catalog rows ``targets[i]`` vs ``shown[i]``) for
    faithfulness against ``oracle``'s truth."""
    if not len(captions) == len(targets) == len(shown):
        raise ValueError(
            f"captions, targets and shown must have one entry per pair, got {len(captions)}, "
            f"{len(targets)} and {len(shown)}"
        )
    claims = correct = differences = covered = unparsed = 0
    for text, t, s in zip(captions, np.asarray(targets).tolist(), np.asarray(shown).tolist(), strict=True):
        truth = oracle.truth(t, s)
        made = oracle.parse(text)
        if not made:
            unparsed += 1
        hit: set[str] = set()
        for claim in made:
            verdict = truth.is_correct(claim)
            if verdict is None:
                continue
            claims += 1
            if verdict:
                correct += 1
                hit.add(truth.covered_type(claim))
        units = truth.differing or frozenset({"none"})
        differences += len(units)
        covered += len(hit & units)
    return Faithfulness(
        precision=correct / claims if claims else 1.0,
        recall=covered / differences if differences else 1.0,
        claims=claims,
        correct=correct,
        differences=differences,
        covered=covered,
        unparsed=unparsed,
    )
