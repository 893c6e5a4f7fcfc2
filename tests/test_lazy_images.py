"""Catalogs without stored images: every image rendered on demand equals the stored build's,
opening renders nothing, features, rendering, contact sheets and play work, real catalogs
refuse to be lazy."""

from __future__ import annotations

import http.client
import json
import pickle

import numpy as np
import pytest

from fiq_gym.catalog.lazy_images import LazyImages
from fiq_gym.catalog.sheet import contact_sheet
from fiq_gym.catalog.storage import MANIFEST, open_catalog, save_catalog
from fiq_gym.catalog.synthetic import build_synthetic_catalog
from fiq_gym.cli import main
from fiq_gym.errors import CatalogError


@pytest.fixture(scope="module")
def lazy_path(tmp_path_factory):
    """The session's small catalog (300 items, seed 7, 48x48) built again without images."""
    path = tmp_path_factory.mktemp("lazy") / "small-lazy"
    build_synthetic_catalog(path, size=300, seed=7, image_size=48, progress=False, images="lazy")
    return path


def test_every_lazy_image_equals_the_stored_build(lazy_path, small_catalog):
    lazy = open_catalog(lazy_path)
    assert isinstance(lazy.images, LazyImages) and not (lazy_path / "images.npy").exists()
    assert lazy.images.shape == small_catalog.images.shape and lazy.images.dtype == np.uint8
    np.testing.assert_array_equal(lazy.images[:], np.asarray(small_catalog.images))
    np.testing.assert_array_equal(lazy.images[-1], small_catalog.images[-1])
    np.testing.assert_array_equal(lazy.images[np.array([5, 2])], small_catalog.images[np.array([5, 2])])
    np.testing.assert_array_equal(lazy.images[3, :, :, 0], small_catalog.images[3, :, :, 0])
    np.testing.assert_array_equal(lazy.images[2:9:3, 4], small_catalog.images[2:9:3, 4])
    for field in ("ids", "categories", "labels", "primary_rgb"):
        np.testing.assert_array_equal(getattr(lazy, field), getattr(small_catalog, field), err_msg=field)
    assert list(lazy.descriptions) == list(small_catalog.descriptions)
    with pytest.raises(IndexError):
        lazy.images[300]
    assert sum(f.stat().st_size for f in lazy_path.iterdir()) < small_catalog.images.nbytes // 10
    assert "rendered on demand" in repr(lazy)


def test_opening_a_lazy_catalog_renders_nothing(lazy_path, monkeypatch):
    import fiq_gym.catalog.lazy_images as lazy_images

    calls = []
    real = lazy_images.render_garment

    def counting(spec, size):
        calls.append(spec)
        return real(spec, size)

    monkeypatch.setattr(lazy_images, "render_garment", counting)
    catalog = open_catalog(lazy_path)
    repr(catalog), len(catalog.images), catalog.image_size, catalog.subset(np.arange(100))
    assert calls == []
    assert catalog.item(4).image.shape == (48, 48, 3)
    assert len(calls) == 1


def test_lazy_catalogs_pickle_subset_and_save_without_rendering(lazy_path, small_catalog, tmp_path):
    lazy = open_catalog(lazy_path)
    data = pickle.dumps(lazy)
    assert len(data) < 2000, "an opened lazy catalog pickles as its path"
    assert isinstance(pickle.loads(data).images, LazyImages)
    rows = np.array([7, 3, 250])
    part = lazy.subset(rows)
    assert isinstance(part.images, LazyImages)
    np.testing.assert_array_equal(part.images[:], small_catalog.images[rows])
    saved = open_catalog(save_catalog(part, tmp_path / "part"))
    assert not (tmp_path / "part" / "images.npy").exists()
    assert isinstance(saved.images, LazyImages)
    np.testing.assert_array_equal(saved.images[:], small_catalog.images[rows])


def test_features_of_a_lazy_build_equal_the_stored_build_s(tmp_path):
    """64x64 (the shipped network's size), three batches of 256: rendered in worker processes
    by the CLI build and here in one process, both equal to the features of stored images."""
    from fiq_gym.features.extract import extract_features

    stored = tmp_path / "stored"
    build_synthetic_catalog(stored, size=600, seed=2, image_size=64, progress=False)
    extract_features(stored, progress=False)
    assert (
        main(
            [
                "catalog",
                "build",
                "--size",
                "600",
                "--seed",
                "2",
                "--images",
                "lazy",
                "--out",
                str(tmp_path / "lazy"),
            ]
        )
        == 0
    )
    serial = tmp_path / "serial"
    build_synthetic_catalog(serial, size=600, seed=2, image_size=64, progress=False, images="lazy")
    extract_features(serial, progress=False, workers=1)
    want = open_catalog(stored)
    for path in (tmp_path / "lazy", serial):
        got = open_catalog(path)
        assert isinstance(got.images, LazyImages)
        np.testing.assert_array_equal(got.features, want.features)
        np.testing.assert_array_equal(got.attribute_scores, want.attribute_scores)


@pytest.mark.filterwarnings("ignore::fiq_gym.errors.FallbackWarning")  # the small catalog has no features
def test_render_contact_sheet_and_play_work_on_a_lazy_catalog(
    lazy_path, small_catalog, small_catalog_path, small_agent_checkpoint, tmp_path
):
    from fiq_gym.envs import FashionIQEnv
    from fiq_gym.play.agent import load_play_agent
    from fiq_gym.play.images import garment_image, png_bytes
    from fiq_gym.play.server import PlayServer

    lazy = open_catalog(lazy_path)
    sheet = contact_sheet(lazy, np.arange(0, 300, 37))
    np.testing.assert_array_equal(
        np.asarray(sheet), np.asarray(contact_sheet(small_catalog, np.arange(0, 300, 37)))
    )
    assert main(["catalog", "show", str(lazy_path), "--out", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").read_bytes()[:4] == b"\x89PNG"

    frames = []
    for path in (lazy_path, small_catalog_path):
        env = FashionIQEnv(catalog=path, render_mode="rgb_array")
        env.reset(seed=3)
        env.step(5)
        frames.append(env.render())
    np.testing.assert_array_equal(frames[0], frames[1])

    agent = load_play_agent(small_agent_checkpoint, catalog=lazy_path)
    with PlayServer(agent, port=0, seed=0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(
            "POST",
            "/api/sessions",
            body=json.dumps({"mode": "human", "target": 11}),
            headers={"Content-Type": "application/json"},
        )
        state = json.loads(conn.getresponse().read())
        row = state["shown"]["row"]
        conn.request("GET", f"/api/images/{row}.png")
        png = conn.getresponse().read()
        conn.close()
    assert png == png_bytes(garment_image(small_catalog, row))


def test_real_catalogs_cannot_be_lazy(lazy_path, tmp_path, capsys):
    assert main(["catalog", "import", "fashioniq", str(tmp_path), "--images", "lazy"]) == 2
    assert "imported catalogs cannot be lazy" in capsys.readouterr().err

    import shutil

    for change, message in (
        ({"source": "fashioniq"}, "only synthetic catalogs can render"),
        ({"generator_version": 1}, "rebuild it"),
    ):
        copy = tmp_path / f"copy-{len(message)}"
        shutil.copytree(lazy_path, copy)
        manifest = json.loads((copy / MANIFEST).read_text())
        manifest["provenance"].update(change)
        (copy / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(CatalogError, match=message):
            open_catalog(copy)
    with pytest.raises(ValueError, match="images must be one of"):
        build_synthetic_catalog(tmp_path / "x", size=10, images="maybe")
