"""A damaged catalog manifest (or an array it describes wrongly) fails at open with one
CatalogError naming the file, the field and the fix (issue 35): never a raw traceback, never a
catalog that opens and reads wrong.

Before the manifest had a schema, every case below either opened (and read wrong: category
names "d", "r", "e", an ordered type that is not, descriptions decoded eight bytes a character),
failed then or later with a raw TypeError, AttributeError, KeyError or UnicodeDecodeError, or
failed with a message that did not name the field at fault.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fiq_gym.catalog.storage import open_catalog, write_catalog_arrays
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.cli import main
from fiq_gym.errors import CatalogError

FIX = "rebuild it (`fiq-gym catalog build"

Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def lazy_catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalog whose images are rendered from stored shades and offsets."""
    from fiq_gym.catalog.synthetic import build_synthetic_catalog

    path = tmp_path_factory.mktemp("catalogs") / "lazy"
    build_synthetic_catalog(path, size=40, seed=7, image_size=32, progress=False, images="lazy")
    return path


# --- ways to damage a catalog directory ---------------------------------------------------------


def _manifest(change: Callable[[dict[str, Any]], None]) -> Damage:
    def damage(directory: Path) -> None:
        manifest = json.loads((directory / "manifest.json").read_text())
        change(manifest)
        (directory / "manifest.json").write_text(json.dumps(manifest))

    return damage


def _set(*keys: str | int, value: Any) -> Damage:
    """Set the manifest field at ``keys`` (e.g. ``"arrays", "ids", "shape"``) to ``value``."""

    def change(manifest: dict[str, Any]) -> None:
        parent: Any = manifest
        for key in keys[:-1]:
            parent = parent[key]
        parent[keys[-1]] = value

    return _manifest(change)


def _array(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Damage:
    """Rewrite ``{name}.npy`` and its manifest entry consistently, so that only the values (or
    their type) are wrong, not the agreement between the file and the manifest."""

    def damage(directory: Path) -> None:
        arr = change(np.load(directory / f"{name}.npy"))
        np.save(directory / f"{name}.npy", arr)
        entry = {"dtype": np.lib.format.dtype_to_descr(arr.dtype), "shape": list(arr.shape)}
        _manifest(lambda m: m["arrays"][name].update(entry))(directory)

    return damage


def _put(index: Any, value: Any) -> Callable[[np.ndarray], np.ndarray]:
    def change(arr: np.ndarray) -> np.ndarray:
        arr[index] = value
        return arr

    return change


def _vocabulary(change: Callable[[list[dict[str, Any]]], None]) -> Damage:
    return _manifest(lambda m: change(m["vocabulary"]))


def _character_across_descriptions(directory: Path) -> None:
    # The blob stays valid UTF-8 ("é" as C3 A9), but the offset between descriptions 0 and 1
    # falls between the character's two bytes: each half fails to decode on its own.
    blob = np.load(directory / "descriptions_utf8.npy")
    cut = int(np.load(directory / "description_offsets.npy")[1])
    blob[cut - 1], blob[cut] = 0xC3, 0xA9
    np.save(directory / "descriptions_utf8.npy", blob)


SMALL, LAZY = "small_catalog_path", "lazy_catalog_path"

# (catalog to damage, damage, what the one line must say: the file, the field, the problem)
CASES = [
    # -- the manifest as a whole
    pytest.param(
        SMALL,
        lambda d: (d / "manifest.json").write_text("[1, 2]"),
        r"manifest\.json holds \[1, 2\], not a JSON object",
        id="manifest-is-a-list",
    ),
    pytest.param(
        SMALL,
        _set("format_version", value="1"),
        r'format_version must be an integer, got "1"',
        id="version-string",
    ),
    pytest.param(
        SMALL,
        _set("format_version", value=True),
        r"format_version must be an integer, got true",
        id="version-bool",
    ),
    # -- counts: strings, nulls and bools where integers belong
    pytest.param(
        SMALL,
        _set("num_items", value="300"),
        r'num_items must be a non-negative integer, got "300"',
        id="count-string",
    ),
    pytest.param(
        SMALL,
        _set("num_items", value=None),
        r"num_items must be a non-negative integer, got null",
        id="count-null",
    ),
    pytest.param(
        SMALL,
        _set("num_items", value=True),
        r"num_items must be a non-negative integer, got true",
        id="count-bool",
    ),
    # -- category names
    pytest.param(
        SMALL,
        _set("category_names", value="dress"),
        r'category_names must be a list of strings, got "dress"',
        id="categories-string",
    ),
    pytest.param(
        SMALL,
        _set("category_names", value=["dress", "dress", "toptee"]),
        r'category_names lists "dress" twice',
        id="categories-duplicate",
    ),
    pytest.param(
        SMALL,
        _set("category_names", value=[1, 2, 3]),
        r"category_names\[0\] must be a string, got 1",
        id="categories-numbers",
    ),
    pytest.param(
        SMALL,
        _set("category_names", value=["dress", "shirt", "\ud800"]),
        r"category_names\[2\] is not valid Unicode text",
        id="categories-lone-surrogate",
    ),
    # -- the attribute vocabulary
    pytest.param(
        SMALL,
        _vocabulary(lambda v: v[1].__setitem__("values", "solid")),
        r'vocabulary\[1\]\.values must be a list of strings, got "solid"',
        id="vocabulary-values-string",
    ),
    pytest.param(
        SMALL,
        _vocabulary(lambda v: v[0].__setitem__("ordered", "false")),
        r'vocabulary\[0\]\.ordered must be true or false, got "false"',
        id="vocabulary-ordered-string",
    ),
    pytest.param(
        SMALL,
        _vocabulary(lambda v: v[1].__setitem__("name", v[0]["name"])),
        r'vocabulary lists two entries named "color"',
        id="vocabulary-duplicate-type",
    ),
    pytest.param(
        SMALL,
        _vocabulary(lambda v: v[2].__setitem__("name", 5)),
        r"vocabulary\[2\]\.name must be a string, got 5",
        id="vocabulary-name-number",
    ),
    # -- the array index
    pytest.param(SMALL, _set("arrays", value=[]), r"arrays must be an object, got \[\]", id="arrays-list"),
    pytest.param(
        SMALL,
        _set("arrays", "ids", value="ids.npy"),
        r'arrays\.ids must be an object, got "ids\.npy"',
        id="entry-string",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "ids", "shape", value="abc"),
        r'arrays\.ids\.shape must be a list of integers, got "abc"',
        id="shape-string",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "ids", "shape", value=[-300]),
        r"arrays\.ids\.shape\[0\] must be a non-negative integer, got -300",
        id="shape-negative",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "ids", "shape", value=[300.0]),
        r"arrays\.ids\.shape\[0\] must be a non-negative integer, got 300\.0",
        id="shape-float",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "labels", "shape", value=[300, True]),
        r"arrays\.labels\.shape\[1\] must be a non-negative integer, got true",
        id="shape-bool",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "ids", "dtype", value=5),
        r"arrays\.ids\.dtype must be a string, got 5",
        id="dtype-number",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "ids", "dtype", value="zz"),
        r'arrays\.ids\.dtype must be a numpy dtype .*got "zz"',
        id="dtype-unknown",
    ),
    pytest.param(
        SMALL,
        _set("arrays", "ids", "file", value=7),
        r"arrays\.ids\.file must be a string, got 7",
        id="file-number",
    ),
    # -- provenance
    pytest.param(
        SMALL,
        _set("provenance", value="synthetic"),
        r'provenance must be an object, got "synthetic"',
        id="provenance-string",
    ),
    pytest.param(
        SMALL, _set("provenance", value=None), r"provenance must be an object, got null", id="provenance-null"
    ),
    pytest.param(
        LAZY,
        _set("provenance", "image_size", value="32"),
        r'provenance\.image_size must be an integer from 32 to 1024, got "32"',
        id="lazy-image-size-string",
    ),
    pytest.param(
        LAZY,
        _manifest(lambda m: m["provenance"].pop("image_size")),
        r"provenance lacks the required key 'image_size'",
        id="lazy-image-size-missing",
    ),
    # -- arrays whose type or values would read wrong
    pytest.param(
        SMALL,
        _array("descriptions_utf8", lambda a: a.astype(np.int64)),
        r'arrays\.descriptions_utf8\.dtype must be uint8, got "<i8"',
        id="description-blob-int64",
    ),
    pytest.param(
        SMALL,
        _array("description_offsets", lambda a: a.astype(np.float64)),
        r"arrays\.description_offsets\.dtype must be a signed integer type",
        id="description-offsets-float",
    ),
    pytest.param(
        SMALL,
        _array("ids", lambda a: a.reshape(-1, 1)),
        r"arrays\.ids\.shape must have 1 dimension, got \[300, 1\]",
        id="ids-2d",
    ),
    pytest.param(
        SMALL,
        _array("descriptions_utf8", _put(5, 0xFF)),
        r"descriptions_utf8\.npy is not UTF-8 text \(byte 5: invalid start byte\)",
        id="description-blob-not-utf8",
    ),
    pytest.param(
        SMALL,
        _character_across_descriptions,
        r"description_offsets\.npy cuts a description inside a UTF-8 character",
        id="description-offset-inside-character",
    ),
    pytest.param(
        LAZY,
        _array("shades", _put(3, np.nan)),
        r"shades\.npy holds the shade nan, but shades lie in \[-1, 1\]",
        id="shade-nan",
    ),
    pytest.param(
        LAZY,
        _array("shades", _put(3, 5.0)),
        r"shades\.npy holds the shade 5\.0, but shades lie in \[-1, 1\]",
        id="shade-range",
    ),
    pytest.param(
        LAZY,
        _array("shades", lambda a: a.astype(np.int64)),
        r'arrays\.shades\.dtype must be float64, got "<i8"',
        id="shade-int",
    ),
]


def _damaged(request: pytest.FixtureRequest, tmp_path: Path, source: str, damage: Damage) -> Path:
    path = tmp_path / "catalog"
    shutil.copytree(request.getfixturevalue(source), path)
    damage(path)
    return path


@pytest.mark.parametrize(("source", "damage", "message"), CASES)
def test_damage_fails_at_open_naming_file_field_and_fix(request, tmp_path, source, damage, message):
    path = _damaged(request, tmp_path, source, damage)
    with pytest.raises(CatalogError, match=message) as raised:
        open_catalog(path)
    assert str(path) in str(raised.value) and FIX in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("source", "damage", "message"), CASES)
def test_damage_is_one_line_on_the_command_line(capsys, request, tmp_path, source, damage, message):
    path = _damaged(request, tmp_path, source, damage)
    code = main(["catalog", "show", str(path), "--out", str(tmp_path / "sheet.png")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fiq-gym: error: "), err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "sheet.png").exists()


def test_updating_a_damaged_catalog_names_the_field(small_catalog_path, tmp_path):
    # Feature extraction rewrites the manifest it read: a damaged one must not get that far.
    path = tmp_path / "catalog"
    shutil.copytree(small_catalog_path, path)
    _set("provenance", value=None)(path)
    with pytest.raises(CatalogError, match=r"manifest\.json: provenance must be an object, got null"):
        write_catalog_arrays(path, {"features": np.ones((300, 4), dtype=np.float32)})
    assert sorted(p.name for p in path.iterdir() if p.name.startswith("features")) == []


def test_vocabulary_from_json_converts_nothing():
    # The feature network's config is read through the same method as catalog manifests.
    good = [{"name": "fit", "values": ["fitted", "loose"], "ordered": True}]
    assert AttributeVocabulary.from_json(good).types[0].ordered is True
    for bad, message in (
        ([{"name": "fit", "values": "loose"}], r"'fit': values must be a list of strings"),
        ([{"name": "fit", "values": ["a"], "ordered": "false"}], r"'fit': ordered must be true or false"),
        ([{"name": 5, "values": ["a"]}], r"attribute type 0: name must be a string"),
        ([{"values": ["a"]}], r"attribute type 0: name must be a string, got None"),
        (["fit"], r"attribute type 0 must be an object"),
        ({"name": "fit"}, r"a vocabulary is a list of attribute types, got dict"),
    ):
        with pytest.raises(ValueError, match=message):
            AttributeVocabulary.from_json(bad)


# --- unreadable files are a permission problem, not corruption ---------------------------------


def test_unreadable_manifest_says_permission_denied(small_catalog_path, monkeypatch):
    # Permission bits do not stop root (tests may run as root), so refuse the read itself.
    manifest = small_catalog_path / "manifest.json"
    real = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == manifest:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(CatalogError, match=r"manifest\.json cannot be read: permission denied; .*chmod"):
        open_catalog(small_catalog_path)


def test_unreadable_array_says_permission_denied_not_corrupt(small_catalog_path, monkeypatch):
    labels = small_catalog_path / "labels.npy"
    real = builtins.open

    def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike) and Path(file) == labels:
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(
        CatalogError, match=r"labels\.npy cannot be read: permission denied; .*chmod"
    ) as raised:
        open_catalog(small_catalog_path)
    assert "corrupt" not in str(raised.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits")
@pytest.mark.parametrize("name", ["manifest.json", "labels.npy"])
def test_chmod_000_says_permission_denied(small_catalog_path, tmp_path, name):
    path = tmp_path / "catalog"
    shutil.copytree(small_catalog_path, path)
    (path / name).chmod(0)
    with pytest.raises(CatalogError, match=rf"{name} cannot be read: permission denied"):
        open_catalog(path)
