"""Splits and galleries (issue 36, item 4): on an imported catalog a category env holds every
image its split files list (an image listed by shirt and toptee is in both), and ``split=``
keeps one image split, the official protocol's gallery of each category. Other catalogs'
envs are unchanged.

The release is written in the Fashion IQ format (stand-in images) with the real release's
quirk: shirt images also listed by toptee, with toptee caption entries that use them.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.catalog.captions import HumanCaptions
from fiq_gym.catalog.fashioniq import plan_fashioniq
from fiq_gym.catalog.importing import write_import
from fiq_gym.catalog.storage import open_catalog
from fiq_gym.features.extract import import_extractor
from fiq_gym.users.release_export import export_fashioniq_release

ENV = "fiq_gym/FashionIQ-v3"
SHARED = 4  # shirt val images also listed in toptee val


@pytest.fixture(scope="module")
def overlapping(small_catalog, tmp_path_factory) -> tuple[Path, list[str]]:
    """An import whose toptee val split also lists shirt val images, and whose toptee val
    captions pair toptee images with them (as the release's shirt/toptee overlap does)."""
    base = tmp_path_factory.mktemp("galleries")
    root = base / "release"
    export_fashioniq_release(small_catalog, root, pairs_per_split=40, seed=3, progress=False)

    def load(name: str):
        return json.loads((root / name).read_text())

    def save(name: str, data) -> None:
        (root / name).write_text(json.dumps(data))

    shared = load("image_splits/split.shirt.val.json")[:SHARED]
    toptee = load("image_splits/split.toptee.val.json")
    save("image_splits/split.toptee.val.json", [*toptee, *shared])
    caps = load("captions/cap.toptee.val.json")
    for k, image in enumerate(shared):
        caps.append({"target": image, "candidate": toptee[k], "captions": ["is a shirt", "has a collar"]})
    save("captions/cap.toptee.val.json", caps)
    out = base / "catalog"
    write_import(
        plan_fashioniq(root, splits=("train", "val")),
        out,
        extractor=import_extractor("attribute-net"),
        progress=False,
    )
    return out, shared


def test_a_category_env_holds_every_image_its_split_files_list(overlapping):
    path, shared = overlapping
    catalog = open_catalog(path)
    rows = np.array([int(np.flatnonzero(catalog.ids == x)[0]) for x in shared])
    shirt = catalog.category_names.index("shirt")
    assert (np.asarray(catalog.categories)[rows] == shirt).all()  # listed under shirt first
    toptee = gym.make(ENV, catalog=str(path), category="toptee").unwrapped
    shirts = gym.make(ENV, catalog=str(path), category="shirt").unwrapped
    assert toptee.gallery.in_play(rows).all() and shirts.gallery.in_play(rows).all()
    own = np.flatnonzero(np.asarray(catalog.categories) == catalog.category_names.index("toptee"))
    assert np.array_equal(toptee.gallery.rows, np.union1d(own, rows))
    # Every toptee val pair can start, the ones with shared images too.
    captions = HumanCaptions.load(path).select("val", "toptee")
    targets, candidates = captions.rows(catalog)
    assert toptee.gallery.in_play(targets).all() and toptee.gallery.in_play(candidates).all()
    starts = gym.make(ENV, catalog=str(path), category="toptee", start="annotated", start_split="val")
    pairs = set(zip(targets.tolist(), candidates.tolist(), strict=True))
    assert len(starts.unwrapped.start_pairs[0]) == len(pairs)


@pytest.mark.parametrize("category", ["dress", "shirt", "toptee", None])
def test_split_keeps_the_official_gallery_of_each_category(overlapping, category):
    path, _ = overlapping
    catalog = open_catalog(path)
    captions = HumanCaptions.load(path)
    env = gym.make(ENV, catalog=str(path), category=category, split="val").unwrapped
    names = [category] if category else ["dress", "shirt", "toptee"]
    gallery = np.unique(np.concatenate([captions.gallery_rows(catalog, c, "val") for c in names]))
    assert np.array_equal(env.gallery.rows, gallery)  # the single-shot protocol's gallery
    # Annotated starts default to the env's split; every val pair of the category is in play.
    starts = gym.make(ENV, catalog=str(path), category=category, split="val", start="annotated").unwrapped
    assert starts.config.start_split is None
    targets, candidates = captions.select("val", category).rows(catalog)
    assert len(starts.start_pairs[0]) == len(set(zip(targets.tolist(), candidates.tolist(), strict=True)))
    _, info = starts.reset(seed=0)
    assert starts.row_of_index(info["shown"]) in set(candidates.tolist())
    # A pickled env keeps its split.
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(env)).gallery.rows, gallery)
    # The vector env takes it too.
    envs = gym.make_vec(
        ENV,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        catalog=str(path),
        category=category,
        split="val",
    )
    assert np.array_equal(envs.unwrapped.gallery.rows, gallery)
    envs.close()


def test_splits_and_categories_elsewhere_are_what_they_were(overlapping, small_catalog_path):
    catalog = open_catalog(small_catalog_path)
    env = gym.make(ENV, catalog=str(small_catalog_path), category="shirt").unwrapped
    shirt = catalog.category_names.index("shirt")
    assert np.array_equal(env.gallery.rows, np.flatnonzero(np.asarray(catalog.categories) == shirt))
    cases = [
        (
            {"catalog": str(small_catalog_path), "split": "val"},
            r"split='val' keeps the items of one image split.*fiq-gym catalog import",
        ),
        ({"catalog": str(overlapping[0]), "split": "test"}, r"no image split 'test'.*'dress.train'"),
        (
            {"catalog": str(overlapping[0]), "category": "dress", "split": "eval"},
            r"no image split 'eval' of 'dress'",
        ),
        ({"catalog": str(overlapping[0]), "split": ""}, r"split must be an image split's name"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            gym.make(ENV, **kwargs)
        assert "\n" not in str(caught.value)
    # Annotated starts of another split than the env's: no pair in play, named.
    with pytest.raises(ValueError, match=r"no annotated pair of start_split='train' has both items in play"):
        gym.make(ENV, catalog=str(overlapping[0]), split="val", start="annotated", start_split="train")


def test_a_split_env_from_annotated_starts_passes_the_env_checkers(overlapping):
    import warnings

    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(
        ENV,
        catalog=str(overlapping[0]),
        category="toptee",
        split="val",
        user="dataset",
        user_kwargs={"fallback": "template"},
        start="annotated",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
