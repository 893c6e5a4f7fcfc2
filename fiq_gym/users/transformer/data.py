"""Training data for the relative captioner: (target, shown, caption) triples over a catalog.

The trainer consumes any iterable of :class:`CaptionPair` (catalog rows and a caption), so a
new source only has to produce those: :func:`template_dataset` writes them with the template
shopper on a synthetic catalog; the real-data loaders will yield human-annotated Fashion IQ
pairs the same way.

Pairs are drawn the way dialogs meet them: half uniformly at random (an agent's first guess
is usually far off), half between an item and one of its nearest neighbours by feature
(later turns show close items, whose captions name one or two fine differences). Items are
split into train / validation / test first, so held-out pairs show items the model never
saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.gallery import gallery_of
from fiq_gym.users.template import TemplateNoise, TemplateUser
from fiq_gym.users.words import template_words

if TYPE_CHECKING:
    from fiq_gym.catalog.captions import HumanCaptions

__all__ = [
    "CaptionDataset",
    "CaptionPair",
    "ItemSplit",
    "group_references",
    "held_out_pairs",
    "human_dataset",
    "sample_pairs",
    "split_items",
    "template_captions",
    "template_dataset",
]


@dataclass(frozen=True)
class CaptionPair:
    """One training example: a caption of how catalog row ``target`` differs from ``shown``."""

    target: int
    shown: int
    caption: str


@dataclass(frozen=True)
class CaptionDataset:
    """What the trainer needs: caption pairs over one catalog, for training and validation.

    Attributes:
        catalog: the catalog the rows index.
        train, val: the caption pairs; several captions of one pair are several entries.
        caption_source: ``"template"`` or ``"human"``; recorded in the model's config.
        extra_words: words the tokenizer must know even if no training caption uses them.
    """

    catalog: Catalog
    train: Sequence[CaptionPair]
    val: Sequence[CaptionPair]
    caption_source: str = "template"
    extra_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemSplit:
    """Disjoint sets of catalog rows (sorted int64 arrays)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_items(
    num_items: int, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> ItemSplit:
    """A random split of rows ``0..num_items-1``, the same for the same arguments."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in (0, 1) and sum below 1, got {val_fraction}, {test_fraction}")
    order = np.random.default_rng([seed, 0]).permutation(num_items)
    n_val = max(2, round(num_items * val_fraction))
    n_test = max(2, round(num_items * test_fraction))
    if num_items - n_val - n_test < 2:
        raise ValueError(f"a catalog of {num_items} items is too small to split into train, val and test")
    return ItemSplit(
        train=np.sort(order[n_val + n_test :]),
        val=np.sort(order[:n_val]),
        test=np.sort(order[n_val : n_val + n_test]),
    )


def _nearest(features: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """(n, k) indices of each row's k most similar other rows (cosine; rows are unit-norm)."""
    n = len(features)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        sims = features[start : start + block] @ features.T
        rows = np.arange(start, min(start + block, n))
        sims[rows - start, rows] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + block] = part
    return out


def sample_pairs(
    catalog: Catalog,
    items: np.ndarray,
    count: int,
    rng: np.random.Generator,
    near_fraction: float = 0.5,
    neighbours: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (target, shown) pairs of distinct catalog rows from ``items``.

    A ``near_fraction`` of them pair the target with one of its ``neighbours`` nearest items
    (by the retrieval features, within ``items``); the rest are uniform.
    """
    items = np.asarray(items, dtype=np.int64)
    if len(items) < 2:
        raise ValueError("need at least 2 items to form pairs")
    features = gallery_of(catalog).features[items]
    targets = rng.integers(len(items), size=count)
    near = rng.random(count) < near_fraction
    uniform = rng.integers(len(items) - 1, size=count)
    uniform += uniform >= targets
    nn = _nearest(features, neighbours)
    pick = nn[targets, rng.integers(nn.shape[1], size=count)]
    shown = np.where(near, pick, uniform)
    return items[targets], items[shown]


def template_captions(
    catalog: Catalog,
    targets: np.ndarray,
    shown: np.ndarray,
    captions_per_pair: int,
    seed: Sequence[int],
    noise: TemplateNoise | None = None,
) -> list[CaptionPair]:
    """``captions_per_pair`` template captions of each pair, pair by pair; caption ``k`` of
    every pair comes from generator ``default_rng([*seed, k])``."""
    user = TemplateUser(catalog, noise=noise)
    texts = [
        user.describe(targets, shown, np.random.default_rng([*seed, k])).texts
        for k in range(captions_per_pair)
    ]
    return [
        CaptionPair(int(t), int(s), texts[k][i])
        for i, (t, s) in enumerate(zip(targets.tolist(), shown.tolist(), strict=True))
        for k in range(captions_per_pair)
    ]


def template_dataset(
    catalog: Catalog,
    *,
    train_pairs: int,
    val_pairs: int,
    captions_per_pair: int,
    seed: int,
    noise: TemplateNoise | None = None,
    near_fraction: float = 0.5,
) -> CaptionDataset:
    """Template captions of pairs of training items and of validation items."""
    split = split_items(len(catalog), seed)
    train = sample_pairs(catalog, split.train, train_pairs, np.random.default_rng([seed, 1]), near_fraction)
    val = sample_pairs(catalog, split.val, val_pairs, np.random.default_rng([seed, 2]), near_fraction)
    return CaptionDataset(
        catalog=catalog,
        train=template_captions(catalog, *train, captions_per_pair, seed=(seed, 11), noise=noise),
        val=template_captions(catalog, *val, captions_per_pair, seed=(seed, 12), noise=noise),
        caption_source="template",
        extra_words=template_words(catalog),
    )


def held_out_pairs(
    catalog: Catalog, seed: int, count: int, near_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out pairs of test items for a model trained by :func:`template_dataset` with
    ``seed`` (items it never saw in training or validation)."""
    split = split_items(len(catalog), seed)
    return sample_pairs(catalog, split.test, count, np.random.default_rng([seed, 3]), near_fraction)


def group_references(pairs: Iterable[CaptionPair]) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Distinct (target, shown) pairs in first-seen order, with all their captions."""
    refs: dict[tuple[int, int], list[str]] = {}
    for p in pairs:
        refs.setdefault((p.target, p.shown), []).append(p.caption)
    keys = list(refs)
    targets = np.array([k[0] for k in keys], dtype=np.int64)
    shown = np.array([k[1] for k in keys], dtype=np.int64)
    return targets, shown, [refs[k] for k in keys]


def human_dataset(catalog: Catalog, source: str, seed: int = 0) -> CaptionDataset:
    """Human caption pairs over ``catalog`` for training the captioner.

    ``source``: ``"catalog"`` (the captions stored by ``fiq-gym catalog import``),
    ``"fashioniq:ROOT"`` or ``"shoes:ROOT"`` (the caption and split files of the release
    under ROOT, matched to the catalog by item id, so ROOT needs no images; entries naming
    items the catalog lacks are skipped and counted). Training pairs come from the ``train`` split, validation pairs from ``val``
    (Fashion IQ) or ``eval`` (Shoes); with no such split, 5% of the training pairs (grouped
    by target) are held out instead. Entries without a target (a test split) are not used.
    """
    from fiq_gym.catalog.captions import load_human_captions

    kind, _, root = source.partition(":")
    if source == "catalog":
        captions = load_human_captions(catalog)
    elif kind in ("fashioniq", "shoes") and root:
        captions = _captions_from_release(catalog, kind, root)
    else:
        raise ValueError(
            f"--captions {source!r} is not understood; use template, catalog, fashioniq:ROOT or shoes:ROOT"
        )
    train_entries = captions.select("train")
    val_entries = captions.select(["val", "eval"])
    train = _caption_pairs(catalog, train_entries)
    val = _caption_pairs(catalog, val_entries)
    if not train:
        raise ValueError(
            f"no training captions with targets among {len(captions)} entries (splits {list(captions.splits)}); "
            "import the train split too"
        )
    if not val:
        targets = np.unique([p.target for p in train])
        held = set(
            np.random.default_rng([seed, 5])
            .choice(targets, size=max(1, len(targets) // 20), replace=False)
            .tolist()
        )
        val = [p for p in train if p.target in held]
        train = [p for p in train if p.target not in held]
    return CaptionDataset(catalog=catalog, train=train, val=val, caption_source="human")


def _caption_pairs(catalog: Catalog, captions: HumanCaptions) -> list[CaptionPair]:
    return [CaptionPair(t, s, c) for t, s, c in captions.triples(catalog)]


def _captions_from_release(catalog: Catalog, kind: str, root: str) -> HumanCaptions:
    """The release's caption entries whose items are all in ``catalog`` (the rest counted)."""
    from fiq_gym.catalog.captions import HumanCaptions

    present = set(np.asarray(catalog.ids).tolist())
    if kind == "fashioniq":
        from fiq_gym.catalog.fashioniq import CATEGORIES, plan_fashioniq

        categories = tuple(c for c in catalog.category_names if c in CATEGORIES)
        if not categories:
            raise ValueError(f"the catalog's categories {list(catalog.category_names)} are not Fashion IQ's")
        plan = plan_fashioniq(root, categories=categories, splits=("train", "val"), captions_only=True)
    else:
        from fiq_gym.catalog.shoes import plan_shoes

        plan = plan_shoes(root, captions_only=True)
    plan.keep_entries_within(present, "caption entry names an item that is not in the catalog")
    print(plan.report.summary())
    return HumanCaptions(kind, tuple(entry for entry, _, _ in plan.entries))
