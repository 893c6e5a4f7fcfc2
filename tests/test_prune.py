"""Features without dead dimensions: pruning the attribute network, narrowing the models that
read its features, the shipped files, and catalogs built with features by default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fiq_gym.catalog.synthetic import build_synthetic_catalog
from fiq_gym.cli import main as cli
from fiq_gym.features.model import (
    DEFAULT_CHECKPOINT,
    AttributeNet,
    NetworkConfig,
    head_specs,
    load_checkpoint,
    save_checkpoint,
)
from fiq_gym.features.prune import prune_checkpoint


@pytest.fixture(scope="module")
def catalog64(tmp_path_factory):
    path = tmp_path_factory.mktemp("c64") / "catalog"
    return build_synthetic_catalog(path, size=120, seed=3, image_size=64, progress=False, workers=1)


def _net_with_dead_units(catalog, dead):
    torch.manual_seed(0)
    config = NetworkConfig(
        image_size=(64, 64),
        heads=head_specs(catalog.vocabulary, catalog.labels),
        feature_dim=16,
        categories=catalog.category_names,
    )
    net = AttributeNet(config).eval()
    with torch.no_grad():
        net.embed.bias[list(dead)] = -1e6  # these units never fire
    return net


def test_prune_drops_dead_units_and_keeps_every_output(catalog64, tmp_path):
    dead = [1, 4, 5, 11]
    net = _net_with_dead_units(catalog64, dead)
    save_checkpoint(tmp_path / "full", net, catalog64.vocabulary)
    result = prune_checkpoint(tmp_path / "full", [catalog64.provenance["path"]], tmp_path / "pruned")
    assert result.feature_dim_before == 16 and set(result.kept).isdisjoint(dead)
    assert len(result.kept) <= 12
    pruned = load_checkpoint(tmp_path / "pruned")
    assert pruned.config.feature_dim == len(result.kept)
    assert pruned.record["training"]["pruned"]["kept_units"] == list(result.kept)
    images = torch.from_numpy(np.array(catalog64.images))
    with torch.no_grad():
        f_old, logits_old = net(images)
        f_new, logits_new = pruned.network(images)
    # A product with fewer output units runs other kernel blockings, whose last bits differ by
    # CPU model (up to 2e-6 here, too near the default rtol of 1.3e-6); a unit dropped or
    # misplaced moves features by far more than 1e-5.
    torch.testing.assert_close(f_new, f_old[:, list(result.kept)], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_new, logits_old, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the category head loses the same input columns
        torch.testing.assert_close(
            pruned.network.category_logits(f_new), net.category_logits(f_old), rtol=1e-5, atol=1e-5
        )
    assert pruned.config.categories == catalog64.category_names
    assert (f_new != 0).any(dim=0).all(), "every kept unit fires on these images"


def test_prune_refuses_bad_arguments(catalog64, tmp_path):
    with pytest.raises(ValueError, match="at least one catalog"):
        prune_checkpoint(None, [], tmp_path / "x")
    with pytest.raises(ValueError, match=r"min_active must lie in \[0, 1\)"):
        prune_checkpoint(None, [catalog64.provenance["path"]], tmp_path / "x", min_active=1.0)


def test_shipped_network_is_pruned_and_says_how():
    record = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    pruned = record["training"]["pruned"]
    assert record["feature_dim"] == len(pruned["kept_units"]) == 45
    assert pruned["feature_dim_before"] == 128


def test_narrowed_captioner_gives_the_same_outputs(tmp_path):
    from fiq_gym.users.transformer.narrow import narrow_captioner
    from fiq_gym.users.transformer.user import load_captioner

    model, _ = load_captioner()
    d = model.config.feature_dim
    keep = [i for i in range(d) if i not in (3, 17)]
    out = narrow_captioner(None, keep, tmp_path / "narrow", feature_weights="abc")
    narrow, _ = load_captioner(out)
    assert narrow.config.feature_dim == d - 2 and narrow.config.feature_weights == "abc"
    torch.manual_seed(1)
    t, s = torch.randn(4, d), torch.randn(4, d)
    t[:, [3, 17]] = 0.0  # the dropped inputs were zero on every image
    s[:, [3, 17]] = 0.0
    a = torch.rand(4, sum(model.config.attribute_group_sizes))
    b = torch.rand(4, sum(model.config.attribute_group_sizes))
    with torch.no_grad():
        # products over 2 fewer inputs (zeros): other kernel blockings, last bits may differ by CPU
        torch.testing.assert_close(
            narrow.encode(t[:, keep], s[:, keep], a, b), model.encode(t, s, a, b), rtol=1e-5, atol=1e-5
        )


def test_catalog_build_extracts_features_by_default(tmp_path, capsys):
    assert cli(["catalog", "build", "--size", "40", "--out", str(tmp_path / "with")]) == 0
    assert "feature_dim=45" in capsys.readouterr().out
    assert cli(["catalog", "build", "--size", "40", "--out", str(tmp_path / "without"), "--no-features"]) == 0
    assert "feature_dim=none" in capsys.readouterr().out
    assert (
        cli(["catalog", "build", "--size", "40", "--image-size", "48", "--out", str(tmp_path / "small")]) == 0
    )
    captured = capsys.readouterr()
    assert "feature_dim=none" in captured.out and "fiq-gym features train" in captured.err


def test_default_catalog_cache_is_keyed_by_the_shipped_network():
    from fiq_gym.default_catalog import default_catalog_path

    sha = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())["weights_sha256"]
    assert default_catalog_path().name.endswith(f"-f{sha[:12]}")
