"""Image features: the attribute network, its training, extraction into catalogs, HF encoders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fiq_gym.catalog import AttributeType, AttributeVocabulary, Catalog
from fiq_gym.catalog.storage import (
    MANIFEST,
    open_catalog,
    save_catalog,
    update_catalog_arrays,
    write_catalog_arrays,
)
from fiq_gym.catalog.synthetic import build_synthetic_catalog
from fiq_gym.cli import main
from fiq_gym.errors import CatalogError
from fiq_gym.features.extract import extract_features
from fiq_gym.features.model import (
    DEFAULT_CHECKPOINT,
    AttributeNet,
    CheckpointError,
    NetworkConfig,
    check_fits,
    head_specs,
    load_checkpoint,
)
from fiq_gym.features.train import TrainArgs, evaluate, heldout_split, train
from fiq_gym.gallery import gallery_of
from fiq_gym.utils.threads import torch_threads

# Small and fast: one thread, narrow layers, no progress bars.
TINY = {"channels": (16, 32, 64, 64), "feature_dim": 32, "threads": 1, "progress": False}


def _tiny_args(catalog: Path, out: Path, **overrides) -> TrainArgs:
    fields = {"epochs": 2, "batch_size": 32, "tensorboard": False, **TINY, **overrides}
    return TrainArgs(catalog=str(catalog), out=str(out), **fields)


def _copy(catalog: Path, tmp_path: Path) -> Path:
    """A private copy, because extraction writes into the catalog directory."""
    return Path(shutil.copytree(catalog, tmp_path / catalog.name))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def learn_catalogs(tmp_path_factory):
    """Training and separate test catalogs at 32x32 px, small enough to learn in seconds."""
    root = tmp_path_factory.mktemp("features")
    train_path, test_path = root / "train", root / "test"
    build_synthetic_catalog(train_path, size=400, seed=21, image_size=32, progress=False, workers=1)
    build_synthetic_catalog(test_path, size=300, seed=22, image_size=32, progress=False, workers=1)
    return train_path, test_path


@pytest.fixture(scope="module")
def trained(learn_catalogs, tmp_path_factory):
    """A short training run (with TensorBoard) on the 400-item catalog; its output directory."""
    out = tmp_path_factory.mktemp("run") / "ckpt"
    args = _tiny_args(
        learn_catalogs[0], out, epochs=8, batch_size=16, learning_rate=3e-3, patience=100, tensorboard=True
    )
    result = train(args)
    return out, result


# --- the network ------------------------------------------------------------------------------


def test_network_shapes_dtypes_and_probabilities(small_catalog):
    torch.manual_seed(0)
    vocab = small_catalog.vocabulary
    config = NetworkConfig(image_size=(48, 48), heads=head_specs(vocab, small_catalog.labels), feature_dim=24)
    network = AttributeNet(config).eval()
    images = torch.from_numpy(np.array(small_catalog.images[:5]))
    features, logits = network(images)
    assert features.shape == (5, 24) and features.dtype == torch.float32
    assert logits.shape == (5, vocab.size) and logits.dtype == torch.float32
    probs = network.probabilities(logits)
    assert torch.all((probs >= 0) & (probs <= 1))
    for t in vocab.types:  # one softmax per single-label type
        torch.testing.assert_close(probs[:, vocab.slice(t.name)].sum(dim=1), torch.ones(5))


def test_head_specs_tell_single_from_multi_label_types():
    vocab = AttributeVocabulary(
        (AttributeType("color", ("red", "blue")), AttributeType("tag", ("a", "b", "c")))
    )
    labels = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=np.uint8)
    heads = head_specs(vocab, labels, chunk=1)  # the 2-positive row sits in a later chunk
    assert [(h.name, h.size, h.multilabel) for h in heads] == [("color", 2, False), ("tag", 3, True)]
    config = NetworkConfig(image_size=(32, 32), heads=heads, feature_dim=8, channels=(8, 8, 8, 8))
    probs = AttributeNet(config).probabilities(torch.zeros(2, 5))
    # softmax over the colour values, an independent sigmoid per tag value
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5]] * 2))
    probs = AttributeNet(config).probabilities(torch.tensor([[2.0, 0.0, 2.0, 0.0, 0.0]]))
    assert probs[0, 0] + probs[0, 1] == pytest.approx(1.0) and probs[0, 2] + probs[0, 3] > 1.0


def test_heldout_split_is_seeded_disjoint_and_complete():
    train_rows, heldout = heldout_split(1000, 0.1, 10_000, seed=3)
    assert len(heldout) == 100 and len(train_rows) == 900
    assert np.array_equal(np.union1d(train_rows, heldout), np.arange(1000))
    again = heldout_split(1000, 0.1, 10_000, seed=3)
    assert np.array_equal(again[1], heldout)
    assert not np.array_equal(heldout_split(1000, 0.1, 10_000, seed=4)[1], heldout)
    assert len(heldout_split(1000, 0.5, 30, seed=0)[1]) == 30
    with pytest.raises(ValueError, match="between 0 and 1"):
        heldout_split(10, 1.0, 10, seed=0)


# --- training ---------------------------------------------------------------------------------


def test_short_training_beats_chance_by_a_wide_margin(trained, learn_catalogs):
    out, result = trained
    test_catalog = open_catalog(learn_catalogs[1])
    evaluation = evaluate(load_checkpoint(out).network, test_catalog)
    vocab = test_catalog.vocabulary
    chance = {  # always guessing the test catalog's most common value
        t.name: test_catalog.labels[:, vocab.slice(t.name)].sum(axis=0).max() / len(test_catalog)
        for t in vocab.types
    }
    gains = {name: evaluation.accuracy[name] - chance[name] for name in chance}
    # Garment shape is learned first: sleeves, length and fit far above chance, and on average
    # every type well above it, on items the network never saw.
    for name in ("sleeve", "length", "fit"):
        assert gains[name] > 0.3, (name, evaluation.accuracy, chance)
    assert np.mean(list(gains.values())) > 0.2, (evaluation.accuracy, chance)
    assert result.epochs_run == 8 and 1 <= result.best_epoch <= 8
    assert set(result.heldout.accuracy) == {*vocab.type_names, "category"}
    # The category head (on by default) learns the category from the image, so the features
    # carry it: a dress's flared skirt and waist seam are plain even at 32 px.
    majority = np.bincount(test_catalog.categories).max() / len(test_catalog)
    assert evaluation.accuracy["category"] > majority + 0.2, (evaluation.accuracy, majority)


def test_category_head_is_saved_with_its_names_and_predicts_codes(trained, learn_catalogs):
    out, _ = trained
    checkpoint = load_checkpoint(out)
    catalog = open_catalog(learn_catalogs[1])
    assert checkpoint.config.categories == catalog.category_names
    assert json.loads((out / "config.json").read_text())["architecture"]["categories"] == list(
        catalog.category_names
    )
    with torch.no_grad():
        features, _ = checkpoint.network(torch.from_numpy(np.array(catalog.images[:50])))
        logits = checkpoint.network.category_logits(features)
    assert logits.shape == (50, len(catalog.category_names))


def test_no_category_head_when_asked_or_for_one_category(learn_catalogs, tmp_path):
    off = train(_tiny_args(learn_catalogs[0], tmp_path / "off", epochs=1, category_head=False))
    network = load_checkpoint(off.checkpoint).network
    assert network.category_head is None and "category" not in off.heldout.accuracy
    with pytest.raises(CheckpointError, match="no category head.*retrain"):
        network.category_logits(torch.zeros(2, network.config.feature_dim))
    # A checkpoint written before the category head existed has no "categories" entry.
    config = json.loads((off.checkpoint / "config.json").read_text())
    del config["architecture"]["categories"]
    (off.checkpoint / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(off.checkpoint).config.categories == ()

    dresses = open_catalog(learn_catalogs[0]).by_category("dress")
    save_catalog(dresses, tmp_path / "dresses")
    one = train(_tiny_args(tmp_path / "dresses", tmp_path / "one", epochs=1))
    assert load_checkpoint(one.checkpoint).network.category_head is None


def test_checkpoint_is_safetensors_plus_json_config(trained):
    out, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "fiq-gym-attribute-net"
    assert config["feature_dim"] == 32 and config["image_size"] == [32, 32]
    assert config["vocabulary"] == open_catalog(config["training"]["catalog"]["path"]).vocabulary.to_json()
    assert config["architecture"]["channels"] == [16, 32, 64, 64]
    assert config["training"]["args"]["epochs"] == 8 and "torch" in config["versions"]
    assert config["training"]["epochs_run"] == 8 and config["training"]["total_seconds"] > 0
    assert set(config["training"]["heldout_accuracy"]) == {t["name"] for t in config["vocabulary"]} | {
        "category"
    }
    assert sorted(_weights(out)) == sorted(load_checkpoint(out).network.state_dict())
    assert not list(out.glob("*.tmp-*")), "atomic writes leave no temporary files behind"


def test_tensorboard_logs_loss_and_per_type_accuracy(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = trained
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/train", "losses/heldout", "heldout_accuracy/color", "heldout_accuracy/fit"} <= tags
    assert [e.step for e in events.Scalars("losses/heldout")] == list(range(1, 9))


def test_training_is_deterministic_on_cpu(learn_catalogs, tmp_path):
    a = train(_tiny_args(learn_catalogs[0], tmp_path / "a"))
    b = train(_tiny_args(learn_catalogs[0], tmp_path / "b"))
    c = train(_tiny_args(learn_catalogs[0], tmp_path / "c", seed=1))
    wa, wb, wc = (_weights(r.checkpoint) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.heldout == b.heldout


def test_resume_gives_the_uninterrupted_result(learn_catalogs, tmp_path):
    whole = train(_tiny_args(learn_catalogs[0], tmp_path / "whole", epochs=3, patience=10))

    class Interrupt(Exception):
        pass

    def stop_after_first(report):
        if report.epoch == 1:
            raise Interrupt

    args = _tiny_args(learn_catalogs[0], tmp_path / "cut", epochs=3, patience=10)
    with pytest.raises(Interrupt):
        train(args, on_epoch_end=stop_after_first)
    state = json.loads((tmp_path / "cut" / "train_state" / "state.json").read_text())
    assert state["record"]["state"]["epoch"] == 1
    with pytest.raises(FileExistsError, match="--resume"):
        train(args)
    args.resume = True
    resumed = train(args)
    assert resumed.epochs_run == 3
    wa, wb = _weights(whole.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.heldout == whole.heldout and resumed.best_epoch == whole.best_epoch
    # Resuming a finished run changes nothing.
    assert train(args).heldout == whole.heldout


def test_resume_refuses_changed_arguments_or_missing_state(learn_catalogs, tmp_path):
    train(_tiny_args(learn_catalogs[0], tmp_path / "run", epochs=1))
    with pytest.raises(CheckpointError, match=r"feature_dim=32 \(now 16\)"):
        train(_tiny_args(learn_catalogs[0], tmp_path / "run", epochs=2, feature_dim=16, resume=True))
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(_tiny_args(learn_catalogs[0], tmp_path / "empty", resume=True))
    # --overwrite starts afresh in the same directory
    again = train(_tiny_args(learn_catalogs[0], tmp_path / "run", epochs=1, overwrite=True))
    assert again.epochs_run == 1


def test_training_without_images_fails_clearly(small_catalog, tmp_path):
    save_catalog(small_catalog.with_arrays(images=None), tmp_path / "no-images")
    with pytest.raises(CatalogError, match="has no images"):
        train(_tiny_args(tmp_path / "no-images", tmp_path / "out"))
    with pytest.raises(CatalogError, match="does not exist"):
        train(_tiny_args(tmp_path / "nowhere", tmp_path / "out"))


# --- extraction -------------------------------------------------------------------------------


def test_extract_writes_arrays_the_environment_uses(trained, learn_catalogs, tmp_path):
    out, _ = trained
    path = _copy(learn_catalogs[1], tmp_path)
    assert gallery_of(open_catalog(path)).feature_source == "thumbnails"
    result = extract_features(path, checkpoint=out, batch_size=64, threads=1, progress=False)
    catalog = open_catalog(path)
    assert result.feature_dim == 32 and result.num_attributes == catalog.vocabulary.size
    assert catalog.features.shape == (300, 32) and catalog.features.dtype == np.float32
    assert catalog.attribute_scores.shape == (300, catalog.vocabulary.size)
    assert catalog.attribute_scores.dtype == np.float32
    for t in catalog.vocabulary.types:
        np.testing.assert_allclose(
            catalog.attribute_scores[:, catalog.vocabulary.slice(t.name)].sum(1), 1, atol=1e-5
        )
    network = load_checkpoint(out).network
    with torch.inference_mode():
        features, logits = network(torch.from_numpy(np.array(catalog.images[100:140])))
    # Extraction ran one thread on batches of 64, this forward pass the caller's threads on 40
    # rows: convolution kernels differ in the last bits by thread count and CPU model (up to
    # ~1e-5 absolute on outputs of this size, near-zero ones included); rows or weights of
    # another network move them by far more.
    np.testing.assert_allclose(catalog.features[100:140], features.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        catalog.attribute_scores[100:140], network.probabilities(logits), rtol=1e-5, atol=1e-5
    )
    tables = gallery_of(catalog)
    assert tables.feature_source == "catalog" and tables.side_info_source == "predicted"
    assert tables.feature_dim == 32
    assert catalog.provenance["features"]["encoder"] == "attribute-net"
    assert not catalog.provenance["features"]["shipped"]


def test_extract_reads_one_batch_at_a_time_and_replaces_atomically(learn_catalogs, tmp_path):
    path = _copy(learn_catalogs[1], tmp_path)
    seen: list[int] = []

    class CountingEncoder:
        predicts_attributes = False

        def __init__(self, dim: int) -> None:
            self.dim = dim

        def encode(self, images):
            seen.append(len(images))
            return np.asarray(images, dtype=np.float32).reshape(len(images), -1)[:, : self.dim], None

        def provenance(self):
            return {"encoder": "counting"}

    extract_features(path, encoder=CountingEncoder(6), batch_size=64, progress=False)
    assert max(seen) == 64 and sum(seen) == 300  # never more than one batch of images at a time
    first = json.loads((path / MANIFEST).read_text())["arrays"]["features"]["file"]
    extract_features(path, encoder=CountingEncoder(9), batch_size=128, progress=False)
    catalog = open_catalog(path)
    assert catalog.features.shape == (300, 9)
    assert not (path / first).exists(), "the replaced features file is deleted"
    np.testing.assert_array_equal(catalog.features, catalog.images.reshape(300, -1)[:, :9].astype(np.float32))


def test_row_reader_reads_the_file_like_the_memory_map(small_catalog):
    from fiq_gym.features._rows import RowReader

    images = small_catalog.images
    rows = np.array([0, 1, 2, 7, 8, 150, 299, 3, 3])
    with RowReader(images) as reader:
        assert reader._fd is not None, "a whole-file memory map is read with pread"
        np.testing.assert_array_equal(reader.take(rows), images[rows])
        np.testing.assert_array_equal(reader.slice(290, 400), images[290:])
        assert reader.slice(0, 4).flags.writeable
    view = RowReader(images[10:20])  # a view's offset is its parent's: fall back to indexing
    assert view._fd is None
    np.testing.assert_array_equal(view.take(np.array([2, 0])), images[[12, 10]])
    in_memory = RowReader(np.asarray(images[:5]).copy())
    np.testing.assert_array_equal(in_memory.slice(1, 3), images[1:3])


def test_catalog_array_update_is_all_or_nothing(small_catalog_path, tmp_path):
    path = _copy(small_catalog_path, tmp_path)
    n, a = 300, open_catalog(path).vocabulary.size
    write_catalog_arrays(
        path, {"features": np.ones((n, 4), np.float32)}, provenance={"features": {"by": "test"}}
    )
    before = sorted(p.name for p in path.iterdir())
    with (
        pytest.raises(RuntimeError, match="boom"),
        update_catalog_arrays(path, {"features": (n, 8)}) as update,
    ):
        update.append("features", np.zeros((10, 8), np.float32))
        raise RuntimeError("boom")
    with (
        pytest.raises(ValueError, match="wrote 10 rows, expected 300"),
        update_catalog_arrays(path, {"attribute_scores": (n, a)}) as update,
    ):
        update.append("attribute_scores", np.zeros((10, a), np.float32))
    assert sorted(p.name for p in path.iterdir()) == before, "a failed update leaves no files behind"
    catalog = open_catalog(path)
    assert catalog.features.shape == (n, 4) and catalog.attribute_scores is None
    assert catalog.provenance["features"] == {"by": "test"}
    with pytest.raises(CatalogError, match=rf"must have shape \({n}, {a}\)"):
        write_catalog_arrays(path, {"attribute_scores": np.zeros((n, a + 1), np.float32)})
    with pytest.raises(ValueError, match="only"):
        write_catalog_arrays(path, {"images": np.zeros((n, 2), np.float32)})
    write_catalog_arrays(path, {"features": None}, provenance={"features": None})
    catalog = open_catalog(path)
    assert catalog.features is None and "features" not in catalog.provenance
    manifest = json.loads((path / MANIFEST).read_text())
    assert all((path / entry["file"]).is_file() for entry in manifest["arrays"].values())
    assert not [p for p in path.iterdir() if p.name.startswith("features")]


def test_extract_errors_name_the_problem(trained, small_catalog, small_catalog_path, tmp_path):
    out, _ = trained
    with pytest.raises(CatalogError, match="does not exist"):
        extract_features(tmp_path / "nowhere", checkpoint=out, progress=False)
    save_catalog(small_catalog.with_arrays(images=None), tmp_path / "no-images")
    with pytest.raises(CatalogError, match="has no images"):
        extract_features(tmp_path / "no-images", checkpoint=out, progress=False)
    # trained at 32x32, the small catalog is 48x48
    with pytest.raises(CheckpointError, match=r"image size 32x32 vs the catalog's 48x48.*features train"):
        extract_features(small_catalog_path, checkpoint=out, progress=False)
    with pytest.raises(CheckpointError, match="is not a feature checkpoint"):
        extract_features(small_catalog_path, checkpoint=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        extract_features(small_catalog_path, checkpoint=tmp_path / "none", progress=False)


def test_checkpoint_vocabulary_mismatch_is_named(trained):
    out, _ = trained
    vocab = AttributeVocabulary((AttributeType("color", ("red", "blue")),))
    catalog = Catalog(
        ids=np.array(["a", "b"]),
        categories=np.zeros(2, np.int16),
        category_names=("dress",),
        vocabulary=vocab,
        labels=np.array([[1, 0], [0, 1]], np.uint8),
        descriptions=["x", "y"],
        images=np.zeros((2, 32, 32, 3), np.uint8),
    )
    with pytest.raises(
        CheckpointError, match=r"attribute types \[.*'neckline', 'fit'\] vs the catalog's \['color'\]"
    ):
        check_fits(load_checkpoint(out), catalog)


# --- Hugging Face encoders --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hf_encoder_writes_pooled_features_and_keeps_scores(tiny_vit, learn_catalogs, tmp_path):
    path = _copy(learn_catalogs[1], tmp_path)
    n, a = 300, open_catalog(path).vocabulary.size
    scores = np.full((n, a), 0.25, np.float32)
    write_catalog_arrays(path, {"attribute_scores": scores})
    result = extract_features(path, encoder=f"hf:{tiny_vit}", batch_size=100, threads=1, progress=False)
    catalog = open_catalog(path)
    assert result.num_attributes == 0 and result.feature_dim == 32
    assert catalog.features.shape == (n, 32) and catalog.features.dtype == np.float32
    assert np.isfinite(catalog.features).all() and catalog.features.std(axis=0).mean() > 0
    np.testing.assert_array_equal(catalog.attribute_scores, scores)  # kept, not replaced
    assert catalog.provenance["features"]["encoder"] == "hf"
    assert catalog.provenance["features"]["pooling"] == "pooler_output"
    assert gallery_of(catalog).feature_source == "catalog"


def test_hf_encoder_averages_hidden_states_when_the_model_has_no_pooler(tiny_vit):
    from types import SimpleNamespace

    from transformers.modeling_outputs import BaseModelOutput

    from fiq_gym.features.hf_encoder import HFImageEncoder

    hidden = {"tokens": torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)}

    class NoPooler:
        dtype = torch.float32
        config = SimpleNamespace(model_type="no-pooler")

        def __call__(self, pixel_values):
            assert pixel_values.shape == (2, 3, 32, 32)  # the processor resized the images
            return BaseModelOutput(last_hidden_state=hidden["tokens"])

    encoder = HFImageEncoder(tiny_vit)
    encoder.model = NoPooler()
    images = np.zeros((2, 48, 48, 3), np.uint8)
    features, scores = encoder.encode(images)
    np.testing.assert_allclose(features, hidden["tokens"].mean(dim=1).numpy())
    assert scores is None and encoder.provenance()["pooling"] == "mean of last_hidden_state"
    hidden["tokens"] = torch.ones(2, 5, 3, 3)  # a convolutional model's (B, C, H, W) map
    assert encoder.encode(images)[0].shape == (2, 5)


def test_hf_encoder_errors(tmp_path, small_catalog_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no Hugging Face model"):
        extract_features(small_catalog_path, encoder=f"hf:{tmp_path / 'empty'}", progress=False)
    with pytest.raises(CheckpointError, match="no such directory"):
        extract_features(small_catalog_path, encoder=f"hf:{tmp_path / 'missing'}", progress=False)
    with pytest.raises(ValueError, match="hf:/path"):
        extract_features(small_catalog_path, encoder="timm:resnet", progress=False)
    with pytest.raises(ValueError, match="not both"):
        extract_features(small_catalog_path, encoder=f"hf:{tmp_path}", checkpoint=tmp_path, progress=False)
    assert not (small_catalog_path / "features.npy").exists()


# --- the shipped network and the default catalog -----------------------------------------------


def test_shipped_network_is_small_and_fits_the_synthetic_catalogs():
    files = sorted(p.name for p in DEFAULT_CHECKPOINT.iterdir() if not p.name.startswith("."))
    assert files == ["config.json", "model.safetensors"]
    assert sum((DEFAULT_CHECKPOINT / f).stat().st_size for f in files) < 4 << 20
    checkpoint = load_checkpoint()
    record = checkpoint.record["training"]
    assert record["catalog"]["provenance"]["seed"] != 0, "the default catalog (seed 0) must be held out"
    assert checkpoint.config.feature_dim == 45 and checkpoint.config.image_size == (64, 64)


def test_shipped_network_is_accurate_on_unseen_items(tmp_path):
    catalog = build_synthetic_catalog(tmp_path / "unseen", size=400, seed=0, progress=False, workers=1)
    with torch_threads(1):
        evaluation = evaluate(load_checkpoint().network, catalog)
    assert min(evaluation.accuracy.values()) >= 0.95, evaluation.accuracy


def test_default_catalog_gets_shipped_features_on_first_build(monkeypatch, tmp_path):
    from fiq_gym.default_catalog import default_catalog_path, load_default_catalog
    from fiq_gym.features.default_network import needs_default_features

    monkeypatch.setenv("FIQ_GYM_CACHE", str(tmp_path / "cache"))
    with torch_threads(1):
        catalog = load_default_catalog(size=300, seed=5, progress=False)
        assert torch.get_num_threads() == 1, "extraction must restore the caller's thread count"
    assert catalog.features is not None and catalog.features.shape == (300, 45)
    assert catalog.attribute_scores is not None
    assert catalog.provenance["features"]["shipped"]
    assert gallery_of(catalog).feature_source == "catalog"
    path = default_catalog_path(size=300, seed=5)
    assert not needs_default_features(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary build folders left"
    # A cached catalog without features (from `fiq-gym catalog build`) gets them when loaded.
    write_catalog_arrays(path, {"features": None, "attribute_scores": None}, provenance={"features": None})
    assert needs_default_features(path)
    again = load_default_catalog(size=300, seed=5, progress=False)
    np.testing.assert_array_equal(again.features, catalog.features)
    # The shipped network does not fit other image sizes: those catalogs keep thumbnails.
    small = load_default_catalog(size=300, seed=5, image_size=48, progress=False)
    assert small.features is None


def test_every_extraction_path_encodes_on_one_thread_whatever_the_callers_count(
    trained, learn_catalogs, monkeypatch, tmp_path
):
    """On some CPUs (an Intel Xeon of this project's kind) a convolution's last bits depend on
    torch's thread count, so the default catalog differed with the machine's cores. Every path
    now encodes with exactly one intra-op thread, whatever the caller set: the library call on
    stored and on lazy images, the CLI, and the default catalog's first build; the caller's
    count is restored. The same features follow whatever the caller's count (here 1 vs 2,
    equal by construction now: one kernel, one thread, the same batches)."""
    from fiq_gym.default_catalog import load_default_catalog
    from fiq_gym.features.extract import AttributeNetEncoder

    counts: list[int] = []
    encode = AttributeNetEncoder.encode

    def spy(self, images):
        counts.append(torch.get_num_threads())
        return encode(self, images)

    monkeypatch.setattr(AttributeNetEncoder, "encode", spy)
    out, _ = trained
    stored = {n: _copy(learn_catalogs[1], tmp_path / f"t{n}") for n in (1, 2)}
    for n, path in stored.items():
        with torch_threads(n):
            extract_features(path, checkpoint=out, batch_size=64, progress=False)
            assert torch.get_num_threads() == n
    np.testing.assert_array_equal(open_catalog(stored[1]).features, open_catalog(stored[2]).features)
    assert open_catalog(stored[2]).provenance["features"]["torch_threads"] == 1
    lazy = tmp_path / "lazy"
    build_synthetic_catalog(lazy, size=300, seed=22, image_size=32, progress=False, images="lazy")
    monkeypatch.setenv("FIQ_GYM_CACHE", str(tmp_path / "cache"))
    with torch_threads(2):
        for path in (
            lambda: extract_features(lazy, checkpoint=out, batch_size=64, progress=False, workers=2),
            lambda: main(["features", "extract", str(lazy), "--checkpoint", str(out), "--no-progress"]),
            lambda: load_default_catalog(size=300, seed=5, progress=False),
        ):
            before = len(counts)
            path()
            assert len(counts) > before and torch.get_num_threads() == 2
    assert len(counts) == 5 + 5 + 5 + 2 + 2 and set(counts) == {1}, counts


# --- command line -----------------------------------------------------------------------------


def test_cli_train_and_extract(learn_catalogs, tmp_path, capsys):
    path = _copy(learn_catalogs[1], tmp_path)
    out = tmp_path / "ckpt"
    args = ["--epochs", "1", "--batch-size", "64", "--feature-dim", "16", "--channels", "8", "16", "16", "16"]
    code = main(["features", "train", str(path), "--out", str(out), *args, "--threads", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "neckline" in printed and f"features extract {path}" in printed
    assert (out / "model.safetensors").is_file() and (out / "tensorboard").is_dir()
    code = main(
        ["features", "extract", str(path), "--checkpoint", str(out), "--threads", "1", "--no-progress"]
    )
    assert code == 0 and "wrote features (300 x 16)" in capsys.readouterr().out
    assert open_catalog(path).features.shape == (300, 16)
    code = main(["features", "extract", str(tmp_path / "nowhere"), "--no-progress"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_feature_commands_load_no_torch_until_run():
    code = (
        "import argparse, sys; from fiq_gym.cli.features import add_commands; import fiq_gym.features; "
        "add_commands(argparse.ArgumentParser().add_subparsers()); print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'transformers', 'tensorboard')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", "`fiq-gym --help` must not pay for importing torch"


def test_features_benchmark_writes_its_table(tmp_path):
    command = ["-m", "fiq_gym.benchmarks.features", "--size", "300", "--threads", "1", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "features.md").read_text()
    assert "| color |" in table and "Machine:" in table and "items/s" in table
    assert "| category (head) | 3 |" in table  # the shipped network has a category head
    assert "Revision: " in table and "Libraries: " in table


def test_loading_networks_leaves_the_callers_torch_generator_alone(small_catalog_path, tmp_path):
    """A trainer seeds torch, then its env builds the default catalog (feature extraction) or
    loads the learned shopper. Neither may advance the seeded generator, or a fresh cache and
    a warm one would initialise the trainer's own network differently (they once did: the
    quick benchmark gave R@10 0.684 on a fresh cache and 0.632 on a warm one)."""
    from fiq_gym.features.extract import extract_features
    from fiq_gym.users.transformer.user import load_captioner

    path = _copy(small_catalog_path, tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    extract_features(path, features_only=True, progress=False)
    load_captioner(None)
    assert torch.equal(before, torch.get_rng_state())


def test_a_killed_feature_update_leaves_nothing_the_next_one_keeps(small_catalog_path, tmp_path):
    """kill -9 during `features extract` leaves a temporary file, or a finished array file the
    manifest never named (issue 35); the next update of the catalog removes both and keeps
    every file the manifest names."""
    import subprocess
    import sys

    path = _copy(small_catalog_path, tmp_path)
    n = 300
    write_catalog_arrays(path, {"features": np.ones((n, 4), np.float32)})
    # a real writer killed mid-update: it blocks inside the update, then gets SIGKILL
    script = (
        "import sys, time, numpy as np\n"
        "from fiq_gym.catalog.storage import update_catalog_arrays\n"
        f"with update_catalog_arrays({str(path)!r}, {{'features': ({n}, 8)}}) as u:\n"
        "    u.append('features', np.zeros((10, 8), np.float32))\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait()
    assert list(path.glob(".*.npy.tmp-update")), "the killed writer left its temporary file"
    (path / "features-0badf00d.npy").write_bytes(b"put in place, never named by the manifest")
    named = set(json.loads((path / MANIFEST).read_text())["arrays"]["features"]["file"].split())
    write_catalog_arrays(path, {"attribute_scores": None})  # any later update
    assert not list(path.glob(".*.npy.tmp-update")) and not (path / "features-0badf00d.npy").exists()
    assert named <= {p.name for p in path.iterdir()}
    assert open_catalog(path).features.shape == (n, 4)
