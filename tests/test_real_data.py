"""Real-data path: Fashion IQ / Shoes import, validation reports, human captions, DatasetUser.

The fixtures are release folders the tests write themselves in the exact release formats
(from a small synthetic catalog), then damage on purpose.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.catalog.captions import CAPTIONS_FILE, HumanCaptions
from fiq_gym.catalog.fashioniq import plan_fashioniq
from fiq_gym.catalog.importing import REPORT_FILE, load_feature_file, write_import
from fiq_gym.catalog.shoes import plan_shoes
from fiq_gym.catalog.storage import open_catalog
from fiq_gym.cli import main as cli
from fiq_gym.errors import DatasetError
from fiq_gym.features.extract import import_extractor
from fiq_gym.users import DatasetUser, TemplateUser, UnannotatedPairError
from fiq_gym.users.dataset import SAME_CAPTION, join_captions
from fiq_gym.users.release_export import export_fashioniq_release, export_shoes_release

UNICODE_CAPTION = "is more “café-au-lait”, 50% longer — ñandú print! (no sleeves?)"


@pytest.fixture(scope="module")
def fiq_release(small_catalog, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("releases") / "fashioniq"
    export_fashioniq_release(small_catalog, root, pairs_per_split=40, seed=1, progress=False)
    return root


@pytest.fixture
def damaged_release(fiq_release, tmp_path) -> tuple[Path, dict]:
    """The release with one of every problem the importer must count, in dress/val."""
    root = tmp_path / "fiq"
    shutil.copytree(fiq_release, root)
    caps_file = root / "captions" / "cap.dress.val.json"
    caps = json.loads(caps_file.read_text())
    split = json.loads((root / "image_splits" / "split.dress.val.json").read_text())
    # A missing image: delete the file of an item that some entry uses as its candidate.
    gone = caps[0]["candidate"]
    (root / "images" / f"{gone}.png").unlink()
    uses_gone = sum(1 for e in caps if gone in (e["target"], e["candidate"]))
    caps.append(caps[1])  # duplicate entry
    caps.append("not an object")  # malformed
    caps.append({"target": split[0], "captions": ["no candidate"]})  # malformed: no candidate
    caps.append({"target": split[0], "candidate": split[1], "captions": ["", 7]})  # both captions bad
    caps.append({"target": "B0NOTINSPLIT", "candidate": split[1], "captions": ["x", "y"]})
    caps.append({"target": split[2], "candidate": split[3], "captions": [UNICODE_CAPTION, "is  shorter."]})
    caps.append({"target": split[4], "candidate": split[4], "captions": ["is the same", "same"]})  # itself
    caps_file.write_text(json.dumps(caps, ensure_ascii=False), encoding="utf-8")
    return root, {"gone": gone, "uses_gone": uses_gone}


# --- Fashion IQ ----------------------------------------------------------------------------
def test_fashioniq_import_round_trip(fiq_release, small_catalog, tmp_path):
    plan = plan_fashioniq(fiq_release, splits=("train", "val", "test"))
    assert plan.report.total == 0
    result = write_import(plan, tmp_path / "cat", progress=False)
    catalog = open_catalog(result.path)
    assert len(catalog) == len(small_catalog)
    assert catalog.category_names == ("dress", "shirt", "toptee")
    # Images are the exported PNGs, decoded back (48 px source, stored at 64 px).
    assert catalog.images.shape[1:] == (64, 64, 3)
    captions = HumanCaptions.load(result.path)
    assert set(captions.splits) == {"train", "val", "test"}
    test_entries = captions.select("test").entries
    assert test_entries and all(e.target is None for e in test_entries)
    assert all(e.target is not None for e in captions.select(["train", "val"]).entries)
    assert all(len(e.captions) == 2 for e in captions.entries)
    report = json.loads((result.path / REPORT_FILE).read_text())
    assert report["skipped"] == {}


def test_fashioniq_validation_counts_every_problem(damaged_release, tmp_path):
    root, facts = damaged_release
    plan = plan_fashioniq(root, categories=("dress",), splits=("val",))
    counts = plan.report.counts
    assert counts["image file not found"] == 1
    assert counts["duplicate caption entry"] == 1
    assert counts["malformed entry (not a JSON object)"] == 1
    assert counts["malformed entry (no candidate ASIN)"] == 1
    assert counts["malformed entry (every caption empty or not a string)"] == 1
    assert counts["caption entry compares an image with itself (target = candidate)"] == 1
    missing = counts["caption entry names an image missing from the split (or its file)"]
    assert missing == 1 + facts["uses_gone"]
    result = write_import(plan, tmp_path / "cat", progress=False)
    catalog = open_catalog(result.path)
    assert facts["gone"] not in set(catalog.ids.tolist())
    captions = HumanCaptions.load(result.path)
    texts = [c for e in captions.entries for c in e.captions]
    assert UNICODE_CAPTION in texts and "is shorter." in texts  # whitespace collapsed, text kept
    saved = json.loads((result.path / REPORT_FILE).read_text())
    assert saved["skipped"]["image file not found"] == 1
    assert sum(saved["skipped"].values()) == plan.report.total


@pytest.fixture
def overlapping_release(fiq_release, tmp_path) -> tuple[Path, dict]:
    """The real release's two quirks: a shirt val image also listed in toptee train (with a
    toptee train caption entry that uses it), and an entry with one empty caption of two."""
    root = tmp_path / "fiq"
    shutil.copytree(fiq_release, root)

    def load(name: str):
        return json.loads((root / name).read_text())

    def save(name: str, data) -> None:
        (root / name).write_text(json.dumps(data))

    shirt_val = load("image_splits/split.shirt.val.json")
    toptee_train = load("image_splits/split.toptee.train.json")
    shared = shirt_val[0]
    save("image_splits/split.toptee.train.json", [*toptee_train, shared])
    caps = load("captions/cap.toptee.train.json")
    caps.append({"target": shared, "candidate": toptee_train[0], "captions": ["is a shirt", "has buttons"]})
    caps.append({"target": toptee_train[1], "candidate": shared, "captions": ["is a tee", "no buttons"]})
    save("captions/cap.toptee.train.json", caps)
    dress = load("captions/cap.dress.val.json")
    dress[0]["captions"] = ["", "  is   longer "]
    save("captions/cap.dress.val.json", dress)
    entries = {"shirt.val": len(load("captions/cap.shirt.val.json")), "toptee.train": len(caps)}
    return root, {"shared": shared, "entries": entries, "half_empty": dress[0]}


def test_fashioniq_keeps_images_listed_in_several_splits_and_half_empty_entries(
    overlapping_release, tmp_path
):
    root, facts = overlapping_release
    shared = facts["shared"]
    plan = plan_fashioniq(root, splits=("train", "val"))
    assert plan.report.total == 0, plan.report.summary()  # no entry is skipped
    assert [item.id for item in plan.items].count(shared) == 1, "one catalog item"
    assert any("listed in more than one image split" in n and "1 images" in n for n in plan.report.notes)
    assert plan.report.dropped_captions == {"empty or non-string caption": 1}
    result = write_import(plan, tmp_path / "cat", progress=False)
    catalog = open_catalog(result.path)
    captions = HumanCaptions.load(result.path)
    row = int(np.flatnonzero(catalog.ids == shared)[0])
    # The item is in both galleries, and every entry of both splits is there.
    assert row in captions.gallery_rows(catalog, "shirt", "val")
    assert row in captions.gallery_rows(catalog, "toptee", "train")
    for key, count in facts["entries"].items():
        category, split = key.split(".")
        assert len(captions.select(split, category).entries) == count, key
    half = facts["half_empty"]
    kept = [
        e
        for e in captions.select("val", "dress").entries
        if (e.target, e.candidate) == (half["target"], half["candidate"])
    ]
    assert [e.captions for e in kept] == [("is longer",)]
    saved = json.loads((result.path / REPORT_FILE).read_text())
    assert saved["skipped"] == {} and saved["dropped_captions"] == {"empty or non-string caption": 1}


def test_fashioniq_strict_names_file_and_entry(damaged_release):
    root, _ = damaged_release
    with pytest.raises(DatasetError, match=r"images.*\.jpg\|\.png|cap\.dress\.val\.json: entry \d+"):
        plan_fashioniq(root, categories=("dress",), splits=("val",), strict=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "captions" / "cap.dress.val.json").write_text("[{"),
            r"cap\.dress\.val\.json is not valid JSON \(line 1",
        ),
        (lambda r: (r / "captions" / "cap.dress.val.json").unlink(), r"cap\.dress\.val\.json does not exist"),
        (
            lambda r: (r / "image_splits" / "split.dress.val.json").write_text('{"a": 1}'),
            r"holds a JSON dict, expected a list",
        ),
        (lambda r: shutil.rmtree(r / "images"), r"no image folder .*--images"),
    ],
)
def test_fashioniq_broken_files_are_errors_that_name_them(fiq_release, tmp_path, damage, message):
    root = tmp_path / "fiq"
    shutil.copytree(fiq_release, root)
    damage(root)
    with pytest.raises(DatasetError, match=message):
        plan_fashioniq(root, categories=("dress",), splits=("val",))


def test_unknown_category_or_split_is_an_error(fiq_release):
    with pytest.raises(DatasetError, match="Fashion IQ has"):
        plan_fashioniq(fiq_release, categories=("shoe",))
    with pytest.raises(DatasetError, match="Fashion IQ has"):
        plan_fashioniq(fiq_release, splits=("dev",))


def test_imported_catalog_passes_env_checkers(fiq_release, tmp_path):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    path = write_import(
        plan_fashioniq(fiq_release),
        tmp_path / "cat",
        extractor=import_extractor("attribute-net"),
        progress=False,
    ).path
    assert open_catalog(path).feature_dim == 45  # the shipped attribute network's features
    for action_mode in ("index", "query", "scores"):
        env = gym.make(
            "fiq_gym/FashionIQ-v3",
            catalog=str(path),
            user="dataset",
            user_kwargs={"fallback": "template"},
            action_mode=action_mode,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped)
        env.close()


def test_dataset_env_replays_human_captions_on_annotated_pairs(fiq_release, tmp_path):
    path = write_import(
        plan_fashioniq(fiq_release),
        tmp_path / "cat",
        extractor=import_extractor("attribute-net"),
        progress=False,
    ).path
    catalog = open_catalog(path)
    captions = HumanCaptions.load(path).select("val")
    targets, candidates = captions.rows(catalog)
    env = gym.make(
        "fiq_gym/FashionIQ-v3",
        catalog=str(path),
        user="dataset",
        user_kwargs={"split": "val", "mode": "joined"},
    )
    _, info = env.reset(seed=0, options={"target": int(targets[0]), "shown": int(candidates[0])})
    assert info["caption_text"] == join_captions(captions.entries[0].captions)
    # Without a fallback, an unannotated pair is a clear error, not a made-up caption.
    with pytest.raises(UnannotatedPairError, match="fallback="):
        env.reset(seed=1)


# --- Shoes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shoes_release(small_catalog, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("releases") / "shoes"
    export_shoes_release(small_catalog, root, pairs=120, seed=2, progress=False)
    return root


def test_shoes_import_finds_images_in_subfolders(shoes_release, tmp_path):
    assert any(p.parent.name != "images" for p in (shoes_release / "images").rglob("*.jpg"))
    plan = plan_shoes(shoes_release)
    assert plan.report.total == 0
    result = write_import(plan, tmp_path / "shoes", progress=False)
    catalog = open_catalog(result.path)
    assert catalog.category_names == ("shoes",)
    captions = HumanCaptions.load(result.path)
    assert set(captions.splits) == {"train", "eval"}
    assert all(len(e.captions) == 1 for e in captions.entries)


def test_shoes_validation(shoes_release, tmp_path):
    root = tmp_path / "shoes"
    shutil.copytree(shoes_release, root)
    train = (root / "train_im_names.txt").read_text().split()
    evals = (root / "eval_im_names.txt").read_text().split()
    entries = json.loads((root / "relative_captions_shoes.json").read_text())
    next(root.rglob(train[0])).unlink()  # a listed image without its file
    entries += [
        {"ImageName": train[1], "ReferenceImageName": evals[0], "RelativeCaption": "spans splits"},
        {"ImageName": "img_unknown.jpg", "ReferenceImageName": train[1], "RelativeCaption": "not listed"},
        {"ImageName": train[1], "ReferenceImageName": train[2], "RelativeCaption": "   "},
        {"ReferenceImageName": train[2], "RelativeCaption": "no target"},
        {"ImageName": train[1], "ReferenceImageName": train[2], "RelativeCaption": UNICODE_CAPTION},
        {"ImageName": train[3], "ReferenceImageName": train[3], "RelativeCaption": "itself"},
    ]
    (root / "relative_captions_shoes.json").write_text(
        json.dumps(entries, ensure_ascii=False), encoding="utf-8"
    )
    # a byte-order mark before the first name (an editor's UTF-8 save) is not part of the name:
    # read as one, it made a second "image file not found" (counted exactly below)
    names = root / "eval_im_names.txt"
    names.write_bytes(b"\xef\xbb\xbf" + names.read_bytes())
    plan = plan_shoes(root)
    c = plan.report.counts
    assert c["image file not found"] == 1
    assert c["caption entry's images lie in different splits"] == 1
    assert c["caption entry names an image missing from the split lists"] == 1
    assert c["empty or non-string caption"] == 1
    assert c["malformed entry (ImageName / ReferenceImageName missing)"] == 1
    assert c["caption entry compares an image with itself (target = candidate)"] == 1
    assert any(UNICODE_CAPTION in e.captions for e, _, _ in plan.entries)
    with pytest.raises(DatasetError, match=r"relative_captions_shoes\.json: entry \d+|image file not found"):
        plan_shoes(root, strict=True)


# --- features and labels -------------------------------------------------------------------
def test_features_from_npy_and_pt_files(fiq_release, tmp_path):
    import torch

    plan = plan_fashioniq(fiq_release, categories=("dress",))
    ids = [item.id for item in plan.items]
    matrix = np.random.default_rng(0).normal(size=(len(ids), 12)).astype(np.float32)
    # The .npy file covers all but the last item: that item is dropped and counted.
    np.save(tmp_path / "f.npy", matrix[:-1])
    (tmp_path / "f.txt").write_text("\n".join(ids[:-1]) + "\n")
    result = write_import(
        plan, tmp_path / "a", features=tmp_path / "f.npy", feature_ids=tmp_path / "f.txt", progress=False
    )
    assert result.report.counts["no row in the feature file"] == 1
    catalog = open_catalog(result.path)
    assert len(catalog) == len(ids) - 1
    np.testing.assert_array_equal(catalog.features, matrix[:-1])
    # A .pt dict {id: tensor}, rows in another order, aligns by id.
    order = np.random.default_rng(1).permutation(len(ids))
    torch.save({ids[i]: torch.from_numpy(matrix[i]) for i in order}, tmp_path / "f.pt")
    plan = plan_fashioniq(fiq_release, categories=("dress",))
    catalog = open_catalog(
        write_import(plan, tmp_path / "b", features=tmp_path / "f.pt", progress=False).path
    )
    np.testing.assert_array_equal(catalog.features, matrix)


def test_bad_feature_files_are_clear_errors_and_write_nothing(fiq_release, tmp_path):
    plan = plan_fashioniq(fiq_release, categories=("dress",))
    np.save(tmp_path / "f.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DatasetError, match="--feature-ids"):
        write_import(plan, tmp_path / "out", features=tmp_path / "f.npy", progress=False)
    (tmp_path / "ids.json").write_text('["a", "b"]')
    with pytest.raises(DatasetError, match="3 feature rows but 2 ids"):
        load_feature_file(tmp_path / "f.npy", tmp_path / "ids.json")
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 0.0]], dtype=np.float32))
    (tmp_path / "one.json").write_text('["a"]')
    with pytest.raises(DatasetError, match="row 0 .* not finite"):
        load_feature_file(tmp_path / "nan.npy", tmp_path / "one.json")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no staging leftovers


def test_attribute_labels_become_the_vocabulary(fiq_release, tmp_path):
    plan = plan_fashioniq(fiq_release, categories=("dress",))
    ids = [item.id for item in plan.items]
    labels = {ids[0]: {"color": "red", "texture": ["lace", "floral"]}, ids[1]: ["maxi"]}
    (tmp_path / "attrs.json").write_text(json.dumps(labels))
    result = write_import(plan, tmp_path / "cat", attributes=tmp_path / "attrs.json", progress=False)
    catalog = open_catalog(result.path)
    assert catalog.vocabulary.type_names == ("attribute", "color", "texture")
    assert catalog.item(0).attributes["color"] == "red"
    assert catalog.labels[0].sum() == 3 and catalog.labels[1].sum() == 1 and catalog.labels[2:].sum() == 0
    assert any("no attribute labels" in n for n in result.report.notes)


def test_imported_catalogs_warn_only_about_what_a_command_can_fix(fiq_release, tmp_path):
    """An import without --attributes has no attribute columns (A = 0): nothing is missing,
    so no warning; one with labels but no predictions names the commands that predict them."""
    from fiq_gym.errors import FallbackWarning
    from fiq_gym.gallery import _warned

    plan = plan_fashioniq(fiq_release, categories=("dress",))
    bare = write_import(
        plan, tmp_path / "bare", extractor=import_extractor("attribute-net"), progress=False
    ).path
    _warned.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        env = gym.make("fiq_gym/FashionIQ-v3", catalog=str(bare))
    assert env.observation_space["shown_attributes"].shape == (0,)
    plan = plan_fashioniq(fiq_release, categories=("dress",))
    (tmp_path / "attrs.json").write_text(json.dumps({plan.items[0].id: {"color": "red"}}))
    labelled = write_import(
        plan,
        tmp_path / "labelled",
        extractor=import_extractor("attribute-net"),
        attributes=tmp_path / "attrs.json",
        progress=False,
    ).path
    with pytest.warns(
        FallbackWarning, match=r"no predicted attribute scores.*fiq-gym features train CATALOG"
    ):
        gym.make("fiq_gym/FashionIQ-v3", catalog=str(labelled))


# --- DatasetUser -----------------------------------------------------------------------------
def test_dataset_user_modes_fallback_and_determinism(small_catalog):
    pairs = [(1, 2, "is red"), (1, 2, "is darker."), (3, 4, UNICODE_CAPTION)]
    user = DatasetUser(small_catalog, pairs)
    seen = {user.describe(np.array([1]), np.array([2]), np.random.default_rng(s)).texts[0] for s in range(20)}
    assert seen == {"is red", "is darker."}
    assert user.describe_one(3, 4, np.random.default_rng(0)) == UNICODE_CAPTION
    assert user.describe_one(5, 5, np.random.default_rng(0)) == SAME_CAPTION
    joined = DatasetUser(small_catalog, pairs, mode="joined")
    assert joined.describe_one(1, 2, np.random.default_rng(0)) == "is red and is darker"
    with pytest.raises(UnannotatedPairError, match=r"row 7.*fallback="):
        user.describe(np.array([1, 7]), np.array([2, 8]), np.random.default_rng(0))
    with_fallback = DatasetUser(small_catalog, pairs, fallback=TemplateUser(small_catalog))
    rngs = lambda: [np.random.default_rng([9, i]) for i in range(3)]  # noqa: E731
    t, s = np.array([1, 7, 3]), np.array([2, 8, 4])
    first = with_fallback.describe(t, s, rngs()).texts
    assert first == with_fallback.describe(t, s, rngs()).texts  # per-pair generators: reproducible
    assert first[2] == UNICODE_CAPTION and first[1] not in {"is red", "is darker."}
    assert with_fallback.replayed == 4 and with_fallback.answered == 6
    # "is the same" (the target shown) is no human caption: answered, not replayed.
    assert with_fallback.describe_one(3, 3, np.random.default_rng(0)) == SAME_CAPTION
    assert with_fallback.replayed == 4 and with_fallback.answered == 7
    # Every token of a replayed caption, accents and punctuation included, is in the vocabulary.
    tokenizer = with_fallback.tokenizer
    assert tokenizer.unk_id not in tokenizer.encode(UNICODE_CAPTION)


def test_human_share_counters_are_each_envs_own(imported_train_val):
    catalog = open_catalog(imported_train_val)
    targets, candidates = HumanCaptions.load(imported_train_val).select("val").rows(catalog)
    kwargs = {"user": "dataset", "user_kwargs": {"split": "val", "fallback": "template"}}
    first, second = (
        gym.make("fiq_gym/FashionIQ-v3", catalog=str(imported_train_val), **kwargs) for _ in range(2)
    )
    first.reset(seed=0, options={"target": int(targets[0]), "shown": int(candidates[0])})
    assert (first.unwrapped.user.replayed, first.unwrapped.user.answered) == (1, 1)
    assert (second.unwrapped.user.replayed, second.unwrapped.user.answered) == (0, 0)
    # One shopper's captions and tokenizer, shared rather than copied.
    assert first.unwrapped.user._captions is second.unwrapped.user._captions
    assert first.unwrapped.user.tokenizer is second.unwrapped.user.tokenizer


def test_dataset_vocabulary_comes_from_the_training_split(fiq_release, tmp_path):
    """Envs replaying val and train read the same token ids; a word only the evaluation split
    uses does not shape the observation space (it reads as <unk>)."""
    root = tmp_path / "fiq"
    shutil.copytree(fiq_release, root)
    file = root / "captions" / "cap.dress.val.json"
    caps = json.loads(file.read_text())
    caps[0]["captions"] = ["is zanzibarish", "is zanzibarish too"]
    file.write_text(json.dumps(caps))
    path = write_import(plan_fashioniq(root, splits=("train", "val")), tmp_path / "cat", progress=False).path
    catalog = open_catalog(path)
    train_words = {
        w for e in HumanCaptions.load(path).select("train").entries for c in e.captions for w in c.split()
    }
    envs = {
        split: gym.make(
            "fiq_gym/FashionIQ-v3", catalog=str(path), user="dataset", user_kwargs={"split": split}
        )
        for split in ("train", "val")
    }
    tokenizers = {split: env.unwrapped.tokenizer for split, env in envs.items()}
    assert tokenizers["train"].words == tokenizers["val"].words
    assert "zanzibarish" not in tokenizers["val"].words and "zanzibarish" not in train_words
    row = {x: i for i, x in enumerate(catalog.ids.tolist())}
    inner = envs["val"].unwrapped
    options = {
        "target": inner.index_of_row(row[caps[0]["target"]]),
        "shown": inner.index_of_row(row[caps[0]["candidate"]]),
    }
    obs, info = envs["val"].reset(seed=0, options=options)
    assert "zanzibarish" in info["caption_text"]  # the human text is replayed as it is
    assert tokenizers["val"].unk_id in obs["caption"][: int(obs["caption_length"][0])]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([], "at least one annotated pair"),
        ([(0, 10_000, "x")], "out of range"),
        ([(0, 1, "  ")], "empty or non-string caption"),
    ],
)
def test_dataset_user_rejects_bad_pairs(small_catalog, pairs, message):
    with pytest.raises(ValueError, match=message):
        DatasetUser(small_catalog, pairs)


# --- scale and CLI ---------------------------------------------------------------------------
def test_fifty_thousand_pair_file_loads(tmp_path, small_catalog):
    """A caption file of the real release's size plans (parses, validates, indexes) in one pass."""
    root = tmp_path / "big"
    export_fashioniq_release(small_catalog, root, pairs_per_split=10, seed=0, progress=False)
    split = json.loads((root / "image_splits" / "split.dress.train.json").read_text())
    rng = np.random.default_rng(0)
    pick = rng.integers(len(split), size=(60_000, 2))
    pick = pick[pick[:, 0] != pick[:, 1]][:50_000]  # a self-pair is dropped on import (SELF_PAIR)
    entries = [
        {"target": split[a], "candidate": split[b], "captions": [f"is darker {k}", f"has longer sleeves {k}"]}
        for k, (a, b) in enumerate(pick.tolist())
    ]
    (root / "captions" / "cap.dress.train.json").write_text(json.dumps(entries))
    plan = plan_fashioniq(root, categories=("dress",), splits=("train",))
    assert len(plan.entries) == 50_000
    user_pairs = [(0, 1, c) for e, _, _ in plan.entries[:10] for c in e.captions]
    assert DatasetUser(small_catalog, user_pairs).num_pairs == 1


def test_cli_import_and_export(tmp_path, small_catalog_path, capsys):
    assert (
        cli(
            [
                "catalog",
                "export",
                "shoes",
                str(tmp_path / "rel"),
                "--catalog",
                str(small_catalog_path),
                "--pairs",
                "50",
            ]
        )
        == 0
    )
    code = cli(
        [
            "catalog",
            "import",
            "shoes",
            str(tmp_path / "rel"),
            "--out",
            str(tmp_path / "cat"),
            "--encoder",
            "none",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "caption entries" in out
    assert (tmp_path / "cat" / CAPTIONS_FILE).exists()
    # A wrong root is one line on stderr and exit code 2, and nothing is written.
    assert cli(["catalog", "import", "fashioniq", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_command_choices_match_the_loaders():
    from fiq_gym.catalog import fashioniq, shoes
    from fiq_gym.cli import catalog_import as commands

    assert commands.CATEGORIES == fashioniq.CATEGORIES
    assert commands.FIQ_SPLITS == fashioniq.SPLITS
    assert commands.SHOES_SPLITS == shoes.SPLITS


# --- learning from human captions ------------------------------------------------------------
@pytest.fixture(scope="module")
def imported_train_val(fiq_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imports") / "train-val"
    plan = plan_fashioniq(fiq_release, splits=("train", "val"))
    write_import(plan, out, extractor=import_extractor("attribute-net"), progress=False)
    return out


def test_human_captions_keep_each_splits_gallery(imported_train_val):
    catalog = open_catalog(imported_train_val)
    captions = HumanCaptions.load(imported_train_val)
    val = captions.gallery_rows(catalog, "dress", "val")
    train = captions.gallery_rows(catalog, "dress", "train")
    assert len(val) and len(train) and not set(val) & set(train)
    assert set(catalog.categories[val].tolist()) == {catalog.category_names.index("dress")}
    targets, _ = captions.select("val", "dress").rows(catalog)
    assert set(targets.tolist()) <= set(val.tolist())


@pytest.mark.parametrize("category", ["dress", "shirt", "toptee"])
def test_reset_options_start_the_annotated_pair_in_a_category_env(imported_train_val, category):
    """Reset options are indices in play; annotated pairs are catalog rows, converted with
    index_of_row (a category env's item i is not catalog row i)."""
    catalog = open_catalog(imported_train_val)
    captions = HumanCaptions.load(imported_train_val).select("val", category)
    targets, candidates = captions.rows(catalog)
    env = gym.make(
        "fiq_gym/FashionIQ-v3",
        catalog=str(imported_train_val),
        category=category,
        user="dataset",
        user_kwargs={"split": "val", "mode": "joined"},
    )
    inner = env.unwrapped
    if category != "dress":  # the catalog lists dress first: rows and indices differ here
        assert not np.array_equal(inner.gallery.rows, np.arange(inner.num_items))
    for k in range(3):
        t, c = int(targets[k]), int(candidates[k])
        options = {"target": inner.index_of_row(t), "shown": inner.index_of_row(c)}
        _, info = env.reset(seed=k, options=options)
        entry = captions.entries[k]
        same = [
            x
            for e in captions.entries
            if (e.target, e.candidate) == (entry.target, entry.candidate)
            for x in e.captions
        ]
        assert info["caption_text"] == join_captions(same)  # the pair's human captions, joined
        assert inner.row_of_index(info["shown"]) == c
        assert catalog.ids[inner.row_of_index(options["target"])] == captions.entries[k].target
    # Arrays convert element-wise and round-trip; in_play tells which rows can start.
    assert np.array_equal(inner.row_of_index(inner.index_of_row(targets)), targets)
    every = np.arange(len(catalog))
    assert np.array_equal(every[inner.gallery.in_play(every)], inner.gallery.rows)
    assert inner.gallery.in_play(int(targets[0])) is True
    # A row of another category is not in play: one line naming the row and the fix.
    other = int(np.flatnonzero(catalog.categories != catalog.category_names.index(category))[0])
    with pytest.raises(ValueError, match=rf"catalog row {other} is not in play.*category=None") as caught:
        inner.index_of_row(other)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="not in play"):
        inner.index_of_row(np.array([int(targets[0]), other]))
    with pytest.raises(ValueError, match="must be an integer"):
        inner.index_of_row(1.5)
    with pytest.raises(ValueError, match="not an index in play"):
        inner.row_of_index(inner.num_items)
    # Passing a catalog row as a reset option names the conversion when it is out of range.
    with pytest.raises(ValueError, match=r"index_of_row\(row\)"):
        env.reset(options={"target": len(catalog)})
    env.close()


def test_vector_env_reset_options_take_converted_rows(imported_train_val):
    catalog = open_catalog(imported_train_val)
    captions = HumanCaptions.load(imported_train_val).select("val", "shirt")
    targets, candidates = captions.rows(catalog)
    envs = gym.make_vec(
        "fiq_gym/FashionIQShirt-v3",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        catalog=str(imported_train_val),
        user="dataset",
        user_kwargs={"split": "val", "mode": "joined"},
    )
    options = {"target": envs.index_of_row(targets[:2]), "shown": envs.index_of_row(candidates[:2])}
    _, info = envs.reset(seed=0, options=options)
    for k, entry in enumerate(captions.entries[:2]):
        assert all(x in info["caption_text"][k] for x in entry.captions)
    assert np.array_equal(envs.row_of_index(info["shown"]), candidates[:2])
    envs.close()


@pytest.mark.slow
def test_single_shot_retriever_learns_and_benchmark_writes_reports(imported_train_val, tmp_path):
    from fiq_gym.agents.single_shot import Args, evaluate_single_shot, load_single_shot, train
    from fiq_gym.benchmarks import single_shot as bench

    # Evaluated on its own training split (about 80 images per category, so chance R@10 is
    # about 0.12): a retriever that reads the captions fits them far above chance.
    checkpoint, result = train(
        Args(
            catalog=str(imported_train_val),
            eval_split="train",
            steps=150,
            eval_every=150,
            out=str(tmp_path / "ss"),
            quiet=True,
        )
    )
    assert result.mean["R@10"] > 0.4
    net, tokenizer, meta = load_single_shot(checkpoint)
    catalog = open_catalog(imported_train_val)
    again = evaluate_single_shot(net, tokenizer, catalog, HumanCaptions.load(imported_train_val), "train")
    assert again.per_category == result.per_category  # the checkpoint reproduces the figures
    assert meta["agent"] == "single-shot"
    assert list((tmp_path / "ss" / "tb").glob("events.out.tfevents.*"))

    assert (
        bench.main(
            [
                "--catalog",
                str(imported_train_val),
                "--seeds",
                "0",
                "--steps",
                "5",
                "--out",
                str(tmp_path / "b"),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "b" / "single_shot.json").read_text())
    markdown = (tmp_path / "b" / "single_shot.md").read_text()
    chance = report["table"]["chance"]["mean"]["R@10"]
    assert "| chance | " in markdown and f"{chance:.3f}" in markdown
    for category, size in report["sizes"].items():
        assert report["table"]["chance"][category]["R@10"] == pytest.approx(
            min(10, size["gallery"]) / size["gallery"]
        )


@pytest.mark.parametrize("kind", ["fashioniq", "shoes"])
def test_shopper_captions_from_a_release_without_images(kind, fiq_release, shoes_release, tmp_path, capsys):
    """`fiq-gym user train --captions fashioniq:ROOT|shoes:ROOT` matches captions by id: the
    release's images are not needed (they may live elsewhere, or not be on this machine)."""
    from fiq_gym.users.transformer.data import human_dataset

    release = fiq_release if kind == "fashioniq" else shoes_release
    plan = plan_fashioniq(release, splits=("train", "val")) if kind == "fashioniq" else plan_shoes(release)
    catalog = open_catalog(write_import(plan, tmp_path / "cat", progress=False).path)
    root = tmp_path / "captions-only"
    shutil.copytree(release, root, ignore=shutil.ignore_patterns("*.png", "*.jpg"))
    assert not [p for p in root.rglob("*") if p.suffix in (".png", ".jpg")]
    from_release = human_dataset(catalog, f"{kind}:{root}")
    stored = human_dataset(catalog, "catalog")
    assert from_release.caption_source == "human" and from_release.train
    assert [(p.target, p.shown, p.caption) for p in from_release.train] == [
        (p.target, p.shown, p.caption) for p in stored.train
    ]
    assert "no problems found" in capsys.readouterr().out  # no image was looked for
    # A plan read without images is refused by the importer, naming the fix.
    reader = plan_fashioniq if kind == "fashioniq" else plan_shoes
    with pytest.raises(DatasetError, match="captions_only=True, without images"):
        write_import(reader(root, captions_only=True), tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_captioner_trains_on_human_captions_from_the_release(imported_train_val, fiq_release, tmp_path):
    from fiq_gym.users.transformer.data import human_dataset
    from fiq_gym.users.transformer.train import TrainArgs, train_captioner

    catalog = open_catalog(imported_train_val)
    from_release = human_dataset(catalog, f"fashioniq:{fiq_release}")
    stored = human_dataset(catalog, "catalog")
    assert from_release.caption_source == "human"
    assert [p.caption for p in from_release.train] == [p.caption for p in stored.train]
    assert {p.caption for p in stored.val} <= {
        c for e in HumanCaptions.load(imported_train_val).select("val").entries for c in e.captions
    }
    with pytest.raises(ValueError, match="template, catalog, fashioniq:ROOT or shoes:ROOT"):
        human_dataset(catalog, "coco:/x")
    result = train_captioner(
        TrainArgs(
            catalog=str(imported_train_val),
            captions="catalog",
            epochs=1,
            out=str(tmp_path / "cap"),
            threads=1,
            progress=False,
            bleu_pairs=20,
        )
    )
    config = json.loads((result.out / "config.json").read_text())
    assert config["caption_source"] == "human"
    env = gym.make(
        "fiq_gym/FashionIQ-v3",
        catalog=str(imported_train_val),
        user="transformer",
        user_kwargs={"checkpoint": str(result.out)},
    )
    _, info = env.reset(seed=0)
    # "transformer:DIR" (what the trainers' --user flag takes) is the same shopper.
    short = gym.make(
        "fiq_gym/FashionIQ-v3", catalog=str(imported_train_val), user=f"transformer:{result.out}"
    )
    assert short.reset(seed=0)[1]["caption_text"] == info["caption_text"]
    assert short.unwrapped.user is env.unwrapped.user


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_import_with_a_local_hugging_face_encoder(fiq_release, tiny_vit, tmp_path):
    plan = plan_fashioniq(fiq_release, categories=("shirt",))
    result = write_import(
        plan, tmp_path / "cat", extractor=import_extractor(f"hf:{tiny_vit}"), progress=False
    )
    catalog = open_catalog(result.path)
    assert catalog.feature_dim == 32  # the tiny ViT's hidden size
    assert catalog.attribute_scores is None  # a generic vision model predicts no attributes
    assert catalog.provenance["features"]["encoder"] == "hf"
    with pytest.raises(ValueError, match="--encoder must be"):
        import_extractor("clip")
    argv = [
        "catalog",
        "import",
        "fashioniq",
        str(fiq_release),
        "--out",
        str(tmp_path / "x"),
        "--encoder",
        "clip",
    ]
    assert cli(argv) == 2
    assert not (tmp_path / "x").exists()


# --- the challenge's test split ---------------------------------------------------------------
@pytest.fixture(scope="module")
def release_with_test_repeats(fiq_release, tmp_path_factory) -> tuple[Path, dict]:
    """The release with what the real test split has: entries that repeat an earlier one's
    candidate and captions (their hidden targets may differ), here one early and one last."""
    root = tmp_path_factory.mktemp("releases") / "fiq-test-repeats"
    shutil.copytree(fiq_release, root)
    file = root / "captions" / "cap.dress.test.json"
    caps = json.loads(file.read_text())
    assert caps and all("target" not in e for e in caps)
    caps.insert(2, dict(caps[0]))
    caps.append(dict(caps[1]))
    file.write_text(json.dumps(caps))
    entries = {
        c: json.loads((root / "captions" / f"cap.{c}.test.json").read_text())
        for c in ("dress", "shirt", "toptee")
    }
    return root, entries


@pytest.fixture(scope="module")
def imported_with_test(release_with_test_repeats, tmp_path_factory) -> Path:
    root, _ = release_with_test_repeats
    out = tmp_path_factory.mktemp("imports") / "train-val-test"
    plan = plan_fashioniq(root, splits=("train", "val", "test"))
    write_import(plan, out, extractor=import_extractor("attribute-net"), progress=False)
    return out


@pytest.fixture(scope="module")
def single_shot_checkpoint(imported_with_test, tmp_path_factory) -> Path:
    from fiq_gym.agents.single_shot import Args, train

    out = tmp_path_factory.mktemp("runs") / "single-shot"
    checkpoint, result = train(
        Args(catalog=str(imported_with_test), steps=40, eval_every=40, out=str(out), quiet=True)
    )
    assert result.split == "val"  # the default: val, named in the result, never test
    return checkpoint


def test_test_entries_are_all_kept_in_file_order(release_with_test_repeats, imported_with_test):
    _, released = release_with_test_repeats
    captions = HumanCaptions.load(imported_with_test)
    saved = json.loads((imported_with_test / REPORT_FILE).read_text())
    assert "duplicate caption entry" not in saved["skipped"]
    for category, entries in released.items():
        kept = captions.select("test", category).entries
        assert [(e.candidate, list(e.captions)) for e in kept] == [
            (e["candidate"], e["captions"]) for e in entries
        ]
        assert captions.source_entries[f"{category}.test"] == len(entries)
    # A repeated entry with a target is still one pair (the damaged-release test counts it).


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_single_shot_refuses_a_split_without_targets(imported_with_test, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "single-shot", "--catalog", str(imported_with_test), "--steps", "1", "--out", str(out)]
    assert cli([*base, "--eval-split", "test"]) == 2
    line = _one_error_line(capsys)
    assert "'test' split has no targets" in line and "fiq-gym predict" in line
    assert not out.exists()  # refused before training
    assert cli([*base, "--eval-split", "dev"]) == 2
    assert "no 'dev' captions" in _one_error_line(capsys)


def test_no_silent_fallback_to_the_test_split(
    release_with_test_repeats, imported_with_test, tmp_path, capsys
):
    from fiq_gym.benchmarks import single_shot as bench

    root, _ = release_with_test_repeats
    no_val = write_import(
        plan_fashioniq(root, splits=("train", "test")), tmp_path / "cat", progress=False
    ).path
    out = tmp_path / "run"
    assert cli(["train", "single-shot", "--catalog", str(no_val), "--steps", "1", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "no evaluation split with targets" in line and "--eval-split" in line
    assert not out.exists()
    # The benchmark: the same refusals, one line and exit code 2, no table of NaN.
    for catalog, extra in ((no_val, []), (imported_with_test, ["--eval-split", "test"])):
        argv = [
            "--catalog",
            str(catalog),
            "--seeds",
            "0",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "b"),
            *extra,
        ]
        assert bench.main([*argv, "--no-progress"]) == 2
        assert "python -m fiq_gym.benchmarks.single_shot: error:" in _one_error_line(capsys)
        assert not (tmp_path / "b" / "single_shot.md").exists()


def test_predict_writes_the_challenge_files(
    release_with_test_repeats, imported_with_test, single_shot_checkpoint, tmp_path, capsys
):
    from fiq_gym.agents.single_shot import PREDICTION_TOP, evaluate_single_shot, load_single_shot
    from fiq_gym.cli import predict

    assert predict._TOP == PREDICTION_TOP == 50
    root, released = release_with_test_repeats
    out = tmp_path / "predictions"
    assert cli(["predict", str(single_shot_checkpoint), "--out", str(out)]) == 0
    assert "every entry in file order" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        f"{c}.test.pred.json" for c in ("dress", "shirt", "toptee")
    ]
    for category, entries in released.items():
        written = json.loads((out / f"{category}.test.pred.json").read_text())
        assert [w["candidate"] for w in written] == [e["candidate"] for e in entries]  # every entry, in order
        gallery = json.loads((root / "image_splits" / f"split.{category}.test.json").read_text())
        for w in written:
            assert "target" not in w
            assert len(w["ranking"]) == min(50, len(gallery)) == len(set(w["ranking"]))
            assert set(w["ranking"]) <= set(gallery)
    # The rankings are the model's: on val, where targets are known, they give its recall.
    val_out = tmp_path / "val-predictions"
    assert cli(["predict", str(single_shot_checkpoint), "--split", "val", "--out", str(val_out)]) == 0
    net, tokenizer, _ = load_single_shot(single_shot_checkpoint)
    catalog = open_catalog(imported_with_test)
    scored = evaluate_single_shot(net, tokenizer, catalog, HumanCaptions.load(imported_with_test), "val")
    for category, figures in scored.per_category.items():
        written = json.loads((val_out / f"{category}.val.pred.json").read_text())
        hits = [w["target"] in w["ranking"][:10] for w in written]
        assert np.mean(hits) == pytest.approx(figures["R@10"])
    # Nothing is replaced without --overwrite, and --overwrite replaces predictions only.
    before = (out / "dress.test.pred.json").read_bytes()
    assert cli(["predict", str(single_shot_checkpoint), "--out", str(out)]) == 2
    assert "already exists" in _one_error_line(capsys)
    assert cli(["predict", str(single_shot_checkpoint), "--out", str(out), "--top", "3", "--overwrite"]) == 0
    assert len(json.loads((out / "dress.test.pred.json").read_text())[0]["ranking"]) == 3
    assert (out / "dress.test.pred.json").read_bytes() != before
    (out / "notes.txt").write_text("mine")
    assert cli(["predict", str(single_shot_checkpoint), "--out", str(out), "--overwrite"]) == 2
    assert "not prediction files (notes.txt)" in _one_error_line(capsys)
    assert (out / "notes.txt").read_text() == "mine"
    # An import made before the entry counts were recorded: predicted, and it says it cannot check.
    older = tmp_path / "older-import"
    shutil.copytree(imported_with_test, older)
    stored = json.loads((older / CAPTIONS_FILE).read_text())
    del stored["source_entries"]
    (older / CAPTIONS_FILE).write_text(json.dumps(stored))
    argv = ["predict", str(single_shot_checkpoint), "--catalog", str(older), "--out", str(tmp_path / "p2")]
    assert cli(argv) == 0
    assert "predates fiq-gym's count" in _one_error_line(capsys)
    assert len(json.loads((tmp_path / "p2" / "dress.test.pred.json").read_text())) == len(released["dress"])


def test_predict_refuses_an_import_that_lost_test_entries(release_with_test_repeats, tmp_path, capsys):
    from fiq_gym.agents.single_shot import Args, train

    root = tmp_path / "fiq"
    shutil.copytree(release_with_test_repeats[0], root)
    file = root / "captions" / "cap.shirt.test.json"
    caps = json.loads(file.read_text())
    file.write_text(json.dumps([*caps[:3], {"candidate": "B0NOTINSPLIT", "captions": ["x", "y"]}, *caps[3:]]))
    catalog = write_import(
        plan_fashioniq(root, splits=("train", "val", "test")), tmp_path / "cat", progress=False
    ).path
    checkpoint, _ = train(
        Args(catalog=str(catalog), steps=1, eval_every=1, out=str(tmp_path / "run"), quiet=True)
    )
    assert cli(["predict", str(checkpoint), "--out", str(tmp_path / "p")]) == 2
    line = _one_error_line(capsys)
    assert f"kept {len(caps)} of the {len(caps) + 1} entries of cap.shirt.test.json" in line
    assert "re-import" in line and not (tmp_path / "p").exists()
    # An import without the split names the import to make.
    no_test = write_import(
        plan_fashioniq(root, splits=("train", "val")), tmp_path / "cat2", progress=False
    ).path
    checkpoint, _ = train(
        Args(catalog=str(no_test), steps=1, eval_every=1, out=str(tmp_path / "run2"), quiet=True)
    )
    assert cli(["predict", str(checkpoint), "--out", str(tmp_path / "p")]) == 2
    assert "--split train val test" in _one_error_line(capsys)
