"""Bad inputs get one line naming the file or option and the fix (exit code 2 on the command
line), never a traceback, and leave nothing half-written; corrupt catalogs fail at open."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fiq_gym.catalog.storage import open_catalog
from fiq_gym.cli import main
from fiq_gym.errors import CatalogError

# /sys refuses new files even to root, so this is a non-writable output on any Linux box.
UNWRITABLE = Path("/sys/fiq-gym-test")


def _fails_in_one_line(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # Progress bars (transformers' "Loading weights") are not messages.
    lines = [line for line in err.strip().splitlines() if "it/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("fiq-gym: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux /sys")
def test_non_writable_outputs_are_one_line_errors(
    capsys, small_catalog_path, small_agent_checkpoint, tmp_path
):
    out = UNWRITABLE / "catalog"
    _fails_in_one_line(
        capsys, ["catalog", "build", "--size", "40", "--out", str(out)], str(out), "permission"
    )
    sheet = UNWRITABLE / "sheet.png"
    _fails_in_one_line(capsys, ["catalog", "show", str(small_catalog_path), "--out", str(sheet)], str(sheet))
    release = tmp_path / "release"
    assert main(["catalog", "export", "fashioniq", str(release), "--catalog", str(small_catalog_path)]) == 0
    capsys.readouterr()
    _fails_in_one_line(
        capsys,
        [
            "catalog",
            "import",
            "fashioniq",
            str(release),
            "--out",
            str(out),
            "--encoder",
            "none",
            "--no-progress",
        ],
        str(UNWRITABLE),
    )
    metrics = UNWRITABLE / "metrics.json"
    _fails_in_one_line(
        capsys, ["eval", str(small_agent_checkpoint), "--episodes", "4", "--out", str(metrics)], str(metrics)
    )


def test_an_output_path_through_a_file_or_onto_a_directory(capsys, small_catalog_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = _fails_in_one_line(
        capsys, ["catalog", "build", "--size", "40", "--out", str(blocker / "cat")], "not a directory"
    )
    assert str(blocker / "cat") in line
    line = _fails_in_one_line(
        capsys,
        ["catalog", "show", str(small_catalog_path), "--out", str(tmp_path)],
        str(tmp_path),
        "directory",
    )
    assert ".tmp-" not in line, "the error names the user's path, not our temporary file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], "nothing half-written is left"


def test_unreadable_catalog_is_a_one_line_error(capsys, small_catalog_path, monkeypatch):
    # Permission bits do not stop root (tests may run as root), so refuse the read itself.
    manifest = small_catalog_path / "manifest.json"
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == manifest:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    _fails_in_one_line(
        capsys, ["catalog", "show", str(small_catalog_path), "--out", "x.png"], str(manifest), "permission"
    )


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["catalog", "build", "--image-size", "100000"], "--image-size: must be an integer from 32 to 1024"),
        (["catalog", "build", "--seed", "-1"], "--seed: must be a non-negative integer, got -1"),
        (["catalog", "build", "--size", "0"], "--size: must be an integer at least 1"),
        (["demo", "--seed", "-1"], "--seed: must be a non-negative integer"),
        (["train", "supervised", "--seed", "-1"], "--seed: must be a non-negative integer"),
        (["features", "train", "CATALOG", "--seed", "-1"], "--seed: must be a non-negative integer"),
        (["user", "train", "--seed", "-1"], "--seed: must be a non-negative integer"),
        (["catalog", "import", "fashioniq", "ROOT", "--image-size", "100000"], "--image-size"),
    ],
)
def test_out_of_range_options_are_named_at_parse_time(capsys, argv, option):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_builders_check_their_arguments_before_writing(tmp_path):
    from fiq_gym.catalog.synthetic import build_synthetic_catalog

    with pytest.raises(ValueError, match="image_size must be from 32 .* to 1024 pixels, got 100000"):
        build_synthetic_catalog(tmp_path / "huge", size=10, image_size=100_000)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        build_synthetic_catalog(tmp_path / "neg", size=10, seed=-1)
    assert not list(tmp_path.iterdir())


# --- environment arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_turns": True}, r"max_turns must be an integer from 1 to 1000, got True"),
        ({"max_turns": 10**8}, r"max_turns must be an integer from 1 to 1000, got 100000000"),
        ({"success_bonus": "x"}, r"success_bonus must be a number, got 'x'"),
    ],
)
def test_env_arguments_are_named(small_catalog_path, kwargs, message):
    from fiq_gym.envs import FashionIQEnv
    from fiq_gym.envs.vector import FashionIQVectorEnv

    with pytest.raises(ValueError, match=message):
        FashionIQEnv(catalog=small_catalog_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        FashionIQVectorEnv(2, catalog=small_catalog_path, **kwargs)


def test_vector_reset_seed_is_named(small_catalog_path):
    from fiq_gym.envs.vector import FashionIQVectorEnv

    venv = FashionIQVectorEnv(2, catalog=small_catalog_path)
    for bad in (1.5, -1, True, [1, 2.5], [1], "7"):
        with pytest.raises(ValueError, match=r"reset\(seed=\.\.\.\) takes a non-negative integer"):
            venv.reset(seed=bad)
    venv.reset(seed=[3, None])  # still fine: one seed per sub-env, None for unseeded
    venv.reset(seed=np.int64(4))


# --- corrupt catalogs fail at open, naming the file -----------------------------------------


@pytest.fixture
def catalog_copy(small_catalog_path, tmp_path):
    dst = tmp_path / "cat"
    shutil.copytree(small_catalog_path, dst)
    return dst


def _rewrite(path: Path, change) -> None:
    arr = np.load(path)
    change(arr)
    np.save(path, arr)


def _edit_manifest(directory: Path, change) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _add_features(directory: Path, value: float) -> Path:
    from fiq_gym.catalog.storage import write_catalog_arrays

    n = len(open_catalog(directory))
    features = np.ones((n, 8), dtype=np.float32)
    features[5, 3] = value
    write_catalog_arrays(directory, {"features": features})
    entry = json.loads((directory / "manifest.json").read_text())["arrays"]["features"]
    return directory / entry["file"]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_features_fail_at_open(catalog_copy, value):
    file = _add_features(catalog_copy, value)
    with pytest.raises(CatalogError, match=rf"{file.name} holds NaN or infinite values.*features extract"):
        open_catalog(catalog_copy)


def test_backward_description_offsets_fail_at_open(catalog_copy):
    def swap(offsets):
        offsets[3], offsets[4] = offsets[4], offsets[3]  # same total: only the order is wrong

    _rewrite(catalog_copy / "description_offsets.npy", swap)
    with pytest.raises(CatalogError, match=r"description_offsets\.npy is not an increasing list"):
        open_catalog(catalog_copy)


def test_label_values_beyond_multi_hot_fail_at_open(catalog_copy):
    _rewrite(catalog_copy / "labels.npy", lambda labels: labels.__setitem__((7, 2), 255))
    with pytest.raises(CatalogError, match=r"labels\.npy holds the value 255.*0 or 1"):
        open_catalog(catalog_copy)


@pytest.mark.parametrize("file", ["../outside.npy", "/etc/passwd", "sub/ids.npy", ".."])
def test_manifest_files_outside_the_directory_fail_at_open(catalog_copy, file):
    shutil.copy(catalog_copy / "ids.npy", catalog_copy.parent / "outside.npy")
    _edit_manifest(catalog_copy, lambda m: m["arrays"]["ids"].__setitem__("file", file))
    with pytest.raises(CatalogError, match=r"array 'ids' names the file .* not a file inside the catalog"):
        open_catalog(catalog_copy)


def test_features_into_a_read_only_catalog_is_a_one_line_error(
    capsys, small_catalog_path, tiny_vit, monkeypatch
):
    import builtins

    import fiq_gym.catalog.storage as storage

    def refuse(file, *args, **kwargs):  # root ignores permission bits: refuse the write itself
        if Path(file).name == storage.LOCK_FILE:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(storage, "open", refuse, raising=False)
    before = sorted(p.name for p in small_catalog_path.iterdir())
    _fails_in_one_line(
        capsys,
        ["features", "extract", str(small_catalog_path), "--encoder", f"hf:{tiny_vit}", "--no-progress"],
        f"cannot write into the catalog directory {small_catalog_path}",
        "copy it somewhere writable",
    )
    assert sorted(p.name for p in small_catalog_path.iterdir()) == before
