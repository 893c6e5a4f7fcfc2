"""The catalog model, its on-disk format and the synthetic generator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.catalog import Catalog
from fiq_gym.catalog.model import FEATURES_TOLERANCE, sketch_differs, sketch_features
from fiq_gym.catalog.storage import FORMAT_VERSION, open_catalog, save_catalog
from fiq_gym.catalog.synthetic import build_synthetic_catalog
from fiq_gym.catalog.synthetic_spec import CATEGORIES, LENGTHS_BY_CATEGORY, SYNTHETIC_VOCABULARY
from fiq_gym.errors import CatalogError


def _assert_same(a: Catalog, b: Catalog) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.categories, b.categories)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.primary_rgb, b.primary_rgb)
    assert list(a.descriptions) == list(b.descriptions)
    assert a.vocabulary == b.vocabulary
    assert a.category_names == b.category_names


def test_round_trip_save_open(small_catalog, tmp_path):
    features = np.random.default_rng(0).normal(size=(len(small_catalog), 8)).astype(np.float32)
    with_features = small_catalog.with_arrays(features=features)
    save_catalog(with_features, tmp_path / "copy")
    reopened = open_catalog(tmp_path / "copy")
    _assert_same(with_features, reopened)
    np.testing.assert_array_equal(reopened.features, features)
    assert isinstance(reopened.images, np.memmap), "large arrays must be memory-mapped, not copied"


def test_open_is_lazy_memory_map(small_catalog_path):
    catalog = open_catalog(small_catalog_path)
    for name in ("images", "labels", "primary_rgb"):
        arr = getattr(catalog, name)
        assert isinstance(arr, np.memmap), name
        assert not arr.flags.writeable, f"{name} must be read-only"


def test_generator_is_deterministic(tmp_path):
    a = build_synthetic_catalog(tmp_path / "a", size=80, seed=3, image_size=32, progress=False)
    b = build_synthetic_catalog(tmp_path / "b", size=80, seed=3, image_size=32, progress=False)
    c = build_synthetic_catalog(tmp_path / "c", size=80, seed=4, image_size=32, progress=False)
    _assert_same(a, b)
    assert not np.array_equal(a.labels, c.labels)


def test_prefix_is_stable_across_sizes(tmp_path):
    """Chunked generation: the first items do not depend on how many are asked for."""
    small = build_synthetic_catalog(tmp_path / "s", size=50, seed=1, image_size=32, progress=False)
    large = build_synthetic_catalog(tmp_path / "l", size=120, seed=1, image_size=32, progress=False)
    np.testing.assert_array_equal(small.labels, large.labels[:50])
    np.testing.assert_array_equal(small.images, large.images[:50])


def test_every_attribute_value_appears(small_catalog):
    present = small_catalog.labels.any(axis=0)
    missing = [name for name, ok in zip(SYNTHETIC_VOCABULARY.column_names, present, strict=True) if not ok]
    assert not missing
    assert set(np.unique(small_catalog.categories)) == set(range(len(CATEGORIES)))


def test_attributes_are_one_per_type_and_lengths_fit_category(small_catalog):
    for t in SYNTHETIC_VOCABULARY.types:
        block = small_catalog.labels[:, SYNTHETIC_VOCABULARY.slice(t.name)]
        assert (block.sum(axis=1) == 1).all(), t.name
    for i in range(len(small_catalog)):
        item = small_catalog.item(i)
        assert item.attributes["length"] in LENGTHS_BY_CATEGORY[item.category]


def test_descriptions_read_like_shop_titles(small_catalog):
    for i in range(20):
        item = small_catalog.item(i)
        text = item.description
        assert text[0].isupper() and text.endswith((" fit", " fitted"))
        noun = {"dress": "dress", "shirt": "shirt", "toptee": ("top", "tee")}[item.category]
        assert any(n in text for n in (noun if isinstance(noun, tuple) else (noun,)))
        assert item.attributes["fit"] in text


def test_images_show_the_garment_colour(small_catalog):
    """The garment's own colour dominates the centre of the image (a cheap legibility check)."""
    images = np.asarray(small_catalog.images, dtype=np.float64)
    h, w = images.shape[1:3]
    centre = images[:, h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(len(images), -1, 3)
    solid = small_catalog.labels[:, SYNTHETIC_VOCABULARY.column("pattern", "solid")] == 1
    distance = np.abs(np.median(centre, axis=1) - small_catalog.primary_rgb.astype(np.float64)).max(axis=1)
    # Solid garments without a placket: the centre is exactly the garment colour.
    assert np.median(distance[solid]) < 12


def test_subset_keeps_fields_aligned(small_catalog):
    dresses = small_catalog.by_category("dress")
    assert len(dresses) > 0
    assert set(dresses.category_names[c] for c in np.unique(dresses.categories)) == {"dress"}
    rows = np.flatnonzero(small_catalog.categories == 0)
    np.testing.assert_array_equal(dresses.images, small_catalog.images[rows])
    assert dresses.descriptions[3] == small_catalog.descriptions[int(rows[3])]
    picked = small_catalog.select_ids([str(small_catalog.ids[5]), str(small_catalog.ids[2])])
    np.testing.assert_array_equal(picked.labels, small_catalog.labels[[5, 2]])
    with pytest.raises(KeyError, match="not in the catalog"):
        small_catalog.select_ids(["no-such-id"])
    with pytest.raises(ValueError, match="unknown category 'shoe'"):
        small_catalog.by_category("shoe")


# --- corrupt directories -------------------------------------------------------------------


@pytest.fixture
def catalog_copy(small_catalog_path, tmp_path):
    dst = tmp_path / "cat"
    shutil.copytree(small_catalog_path, dst)
    return dst


def test_missing_directory(tmp_path):
    with pytest.raises(CatalogError, match="does not exist.*fiq-gym catalog build"):
        open_catalog(tmp_path / "nowhere")


def test_missing_manifest(catalog_copy):
    (catalog_copy / "manifest.json").unlink()
    with pytest.raises(CatalogError, match="manifest.json is missing"):
        open_catalog(catalog_copy)


def test_corrupt_manifest_json(catalog_copy):
    (catalog_copy / "manifest.json").write_text('{"format": "fiq-gym-catalog",,}')
    with pytest.raises(CatalogError, match=r"manifest.json is not valid JSON \(line 1"):
        open_catalog(catalog_copy)


def test_wrong_format_version(catalog_copy):
    manifest = json.loads((catalog_copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (catalog_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CatalogError, match=f"format_version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"
    ):
        open_catalog(catalog_copy)


def test_missing_array_file(catalog_copy):
    (catalog_copy / "labels.npy").unlink()
    with pytest.raises(CatalogError, match=r"labels\.npy is missing"):
        open_catalog(catalog_copy)


def test_truncated_array_file(catalog_copy):
    path = catalog_copy / "images.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"images\.npy cannot be read.*truncated or corrupt"):
        open_catalog(catalog_copy)


def test_wrong_shape_array(catalog_copy):
    np.save(catalog_copy / "labels.npy", np.zeros((5, 3), dtype=np.uint8))
    with pytest.raises(CatalogError, match=r"labels\.npy has shape \(5, 3\), but the manifest says"):
        open_catalog(catalog_copy)


def test_wrong_dtype_array(catalog_copy):
    labels = np.load(catalog_copy / "labels.npy")
    np.save(catalog_copy / "labels.npy", labels.astype(np.int64))
    with pytest.raises(CatalogError, match=r"labels\.npy has dtype int64"):
        open_catalog(catalog_copy)


def test_inconsistent_manifest_count(catalog_copy):
    manifest = json.loads((catalog_copy / "manifest.json").read_text())
    manifest["num_items"] = 999
    (catalog_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="999 items"):
        open_catalog(catalog_copy)


def test_save_refuses_to_clobber_and_leaves_no_temp(small_catalog, tmp_path):
    save_catalog(small_catalog, tmp_path / "x")
    with pytest.raises(FileExistsError, match="already exists"):
        save_catalog(small_catalog, tmp_path / "x")
    save_catalog(small_catalog.subset(slice(0, 10)), tmp_path / "x", overwrite=True)
    assert len(open_catalog(tmp_path / "x")) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    import fiq_gym.catalog.synthetic as synthetic

    def boom(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(synthetic, "render_garment", boom)
    with pytest.raises(RuntimeError):
        build_synthetic_catalog(tmp_path / "broken", size=10, image_size=32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_build_and_show(tmp_path):
    out = tmp_path / "cli-cat"
    run = [sys.executable, "-m", "fiq_gym", "catalog"]
    done = subprocess.run(
        [*run, "build", "--size", "40", "--image-size", "32", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sheet = tmp_path / "sheet.png"
    done = subprocess.run(
        [*run, "show", str(out), "--out", str(sheet), "--count", "12"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A wrong path gets a one-line error naming the fix, not a traceback.
    done = subprocess.run([*run, "show", str(tmp_path / "nope")], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_build_works_from_a_script_read_on_stdin(tmp_path):
    """Spawned render workers cannot re-import a main program read from stdin; the build
    must notice and render in-process rather than die with BrokenProcessPool."""
    script = (
        "from fiq_gym.catalog.synthetic import build_synthetic_catalog\n"
        f"print(len(build_synthetic_catalog({str(tmp_path / 'c')!r}, size=1200, image_size=32, progress=False)))\n"
    )
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1200"


def test_catalog_differences_compare_fingerprints_and_full_hashes_alike(small_catalog):
    """One rule for "is this the catalog it was made on": checkpoints keep hash prefixes,
    play recordings whole hashes; both compare over what was recorded."""
    fingerprint = small_catalog.fingerprint()
    full = {"num_items": len(small_catalog), "ids_sha256": small_catalog.content_sha256("ids")}
    assert small_catalog.differences(fingerprint) == []
    assert small_catalog.differences(full) == []
    assert small_catalog.differences({}) == []
    wrong = {**full, "ids_sha256": "0" * 64, "num_items": len(small_catalog) + 1}
    assert small_catalog.differences(wrong) == [
        "a different number of items",
        "other items (or another order)",
    ]
    assert small_catalog.differences({"labels_sha256": "f" * 16}) == ["other attribute labels"]


# --- features compared within a tolerance, not bit for bit -------------------------------------


def _with_features(catalog, seed: int = 0, scale: float = 70.0):
    rng = np.random.default_rng(seed)
    features = (scale * rng.standard_normal((len(catalog), 6))).astype(np.float32)
    return catalog.with_arrays(features=features)


def _nudged(features: np.ndarray, relative: float, seed: int = 1) -> np.ndarray:
    """``features`` moved as another CPU model's kernels move them: by a few units in the last
    place, here up to ``relative`` of each value."""
    rng = np.random.default_rng(seed)
    return (features * (1 + relative * rng.uniform(-1, 1, features.shape))).astype(np.float32)


def test_the_same_features_from_another_cpu_are_the_same_catalog(small_catalog):
    """Checkpoints record a sketch of the features, compared within FEATURES_TOLERANCE: an
    Intel and an AMD build of one catalog differ in the last bits (max 6e-5 at an RMS of 70),
    which must pass; other features, other rows or one row moved by a few percent must not."""
    built = _with_features(small_catalog)
    recorded = built.fingerprint()
    assert set(recorded) == {"items", "ids_sha256", "labels_sha256", "features_sketch"}
    elsewhere = built.with_arrays(features=_nudged(built.features, 1e-6))
    assert not np.array_equal(elsewhere.features, built.features)
    assert elsewhere.differences(recorded) == []
    assert elsewhere.differences(json.loads(json.dumps(recorded))) == []  # as a checkpoint keeps it

    other_network = _with_features(small_catalog, seed=5)
    assert other_network.differences(recorded) == ["other image features"]
    shuffled = built.with_arrays(features=np.ascontiguousarray(built.features[::-1]))
    assert shuffled.differences(recorded) == ["other image features"]
    one_row = built.features.copy()
    one_row[17, 2] += 0.05 * recorded["features_sketch"]["rms"]
    assert built.with_arrays(features=one_row).differences(recorded) == ["other image features"]
    assert small_catalog.differences(recorded) == ["other image features"]  # no features at all


def test_a_hash_only_fingerprint_still_compares_the_bits(small_catalog):
    """Checkpoints written before the sketch record only ``features_sha256``: the same bits
    pass, any other bits are refused (re-saving the checkpoint records a sketch)."""
    built = _with_features(small_catalog)
    legacy = {"items": len(built), "features_sha256": built.content_sha256("features")[:16]}
    assert built.differences(legacy) == []
    elsewhere = built.with_arrays(features=_nudged(built.features, 1e-6))
    assert elsewhere.differences(legacy) == ["other image features"]
    # with a sketch beside it (the shipped checkpoints keep both), the sketch decides
    both = {**legacy, "features_sketch": built.features_sketch()}
    assert elsewhere.differences(both) == []


def test_a_damaged_sketch_differs(small_catalog):
    built = _with_features(small_catalog)
    sketch = built.features_sketch()
    for damaged in (
        {},
        {**sketch, "rows": "many"},
        {**sketch, "sums": sketch["sums"][:-1]},
        {**sketch, "rms": float("nan")},
        {**sketch, "rows": sketch["rows"] + 1},
    ):
        assert sketch_differs(damaged, sketch), damaged
    assert not sketch_differs(sketch, sketch)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(2, 400),
    columns=st.integers(1, 8),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_sketch_tolerance_property(rows, columns, scale, seed):
    """Last-bit noise (relative 1e-6, about 8 units in the last place of a float32) never
    changes the catalog; moving one value by 100x the tolerance always does."""
    rng = np.random.default_rng(seed)
    features = (scale * rng.standard_normal((rows, columns))).astype(np.float32)
    base = sketch_features(features)
    noisy = sketch_features(_nudged(features, 1e-6, seed + 1))
    assert not sketch_differs(base, noisy)
    moved = features.copy()
    row, column = int(rng.integers(rows)), int(rng.integers(columns))
    moved[row, column] += np.float32(100 * FEATURES_TOLERANCE * base["rms"] * np.sqrt(rows))
    changed = sketch_features(moved)
    assert sketch_differs(base, changed)


def test_an_opened_catalog_pickles_as_its_path_and_its_copies_as_their_arrays(small_catalog_path):
    """Opening a catalog records how to reopen it (so a vector env's workers map the same pages);
    a slice of it or a copy with new features is another catalog and must pickle its own arrays
    (before, a slice carried the path and came back as the whole catalog)."""
    import pickle

    opened = open_catalog(small_catalog_path)
    data = pickle.dumps(opened)
    assert len(data) < 2000
    again = pickle.loads(data)
    assert isinstance(again.labels, np.memmap) and len(again) == len(opened)
    part = opened.subset(slice(10, 20))
    back = pickle.loads(pickle.dumps(part))
    assert len(back) == 10 and list(back.ids) == list(opened.ids[10:20])
    features = np.ones((len(opened), 3), dtype=np.float32)
    assert pickle.loads(pickle.dumps(opened.with_arrays(features=features))).feature_dim == 3
    in_memory = open_catalog(small_catalog_path, mmap=False)
    assert in_memory.reopen is None and len(pickle.loads(pickle.dumps(in_memory))) == len(opened)


def test_catalog_build_publishes_only_a_catalog_with_its_features(tmp_path, monkeypatch):
    """Images and features are one atomic step (issue 35): a build that dies while extracting
    features leaves nothing at --out, and with --overwrite the old complete catalog stays."""
    import fiq_gym.features.default_network as default_network
    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.cli import main

    out = tmp_path / "catalog"
    assert main(["catalog", "build", "--size", "60", "--out", str(out)]) == 0
    before = open_catalog(out)
    assert before.features is not None

    def dies(*args, **kwargs):
        raise RuntimeError("killed while extracting features")

    monkeypatch.setattr(default_network, "attach_default_features", dies)
    with pytest.raises(RuntimeError, match="killed while extracting"):
        main(["catalog", "build", "--size", "80", "--seed", "3", "--out", str(out), "--overwrite"])
    after = open_catalog(out)
    assert len(after) == 60 and after.features is not None  # the old catalog, whole
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="killed while extracting"):
        main(["catalog", "build", "--size", "80", "--out", str(fresh)])
    assert not fresh.exists()  # no catalog without features
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fresh.tmp-")]  # cleaned up


def test_staging_files_of_killed_writers_are_reclaimed_and_live_ones_kept(tmp_path):
    """`catalog import` stages decoded images beside --out (125-914 MB on real data); killed,
    it used to leave them for good (issue 35). Its staging file is held with a lock, and the
    next import of the same --out removes those whose writer is dead, never a live one's."""
    import subprocess
    import sys

    from fiq_gym.utils.atomic import reclaim_staging, staging_file

    dead = tmp_path / ".cat.images-111.npy"
    script = (
        "import time\n"
        "from fiq_gym.utils.atomic import staging_file\n"
        f"with staging_file({str(dead)!r}) as p:\n"
        "    p.write_bytes(b'x' * 1000)\n"
        "    print('staged', flush=True)\n"
        "    time.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "staged"
    writer.kill()
    writer.wait()
    assert dead.exists()
    old = tmp_path / ".cat.images-222.npy"  # from a fiq-gym before the locks: no lock file
    old.write_bytes(b"y")
    other = tmp_path / ".other.images-333.npy"  # another --out's: not ours to touch
    other.write_bytes(b"z")
    with staging_file(tmp_path / ".cat.images-444.npy") as live:
        live.write_bytes(b"w")
        removed = reclaim_staging(tmp_path, ".cat.images-*.npy")
        assert sorted(p.name for p in removed) == [dead.name, old.name]
        assert live.exists() and other.exists()
    assert not live.exists() and not live.with_name(live.name + ".lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]
