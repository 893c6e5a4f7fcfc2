"""Named configurations (catalog spec + shopper settings) and the ids registered for them."""

from __future__ import annotations

import gymnasium as gym
import pytest

import fiq_gym  # noqa: F401
from fiq_gym.default_catalog import parse_synthetic_spec, resolve_catalog
from fiq_gym.envs import ENV_IDS, FashionIQVectorEnv
from fiq_gym.envs.configurations import CONFIGURATIONS, apply_configuration
from fiq_gym.users import TemplateNoise


def test_synthetic_specs_parse_and_typos_are_named():
    assert parse_synthetic_spec("synthetic:100000") == (100_000, 0)
    assert parse_synthetic_spec("synthetic:100_000:3") == (100_000, 3)
    assert parse_synthetic_spec("/data/catalog") is None
    for bad in ("synthetic:", "synthetic:10k", "synthetic:1:2:3", "synthetic:1", "synthetic:50:-1"):
        with pytest.raises(ValueError, match="synthetic:SIZE"):
            parse_synthetic_spec(bad)


def test_a_spec_builds_that_synthetic_catalog_once_and_reuses_it():
    first = resolve_catalog("synthetic:300:5")
    assert len(first) == 300 and first.features is not None
    assert resolve_catalog("synthetic:300:5") is first  # opened once per process
    assert len(resolve_catalog("synthetic:301:5")) == 301


def test_configurations_fill_in_only_what_the_caller_left_at_its_default():
    assert apply_configuration("100k", None, "template", None) == ("synthetic:100000", None)
    assert apply_configuration("100k", "/my/catalog", "template", None) == ("/my/catalog", None)
    catalog, kwargs = apply_configuration("terse", None, "template", None)
    assert catalog is None and kwargs["max_differences"] == 1
    # An explicit shopper or explicit shopper settings win.
    assert apply_configuration("terse", None, "transformer", None) == (None, None)
    assert apply_configuration("terse", None, "template", {"max_differences": 2}) == (
        None,
        {"max_differences": 2},
    )
    with pytest.raises(ValueError, match="unknown configuration 'hard'; choose one of"):
        apply_configuration("hard", None, "template", None)


@pytest.mark.parametrize(("env_id", "name"), [("fiq_gym/FashionIQTerse-v3", "terse")])
def test_a_configuration_id_plays_its_shopper(env_id, name, small_catalog_path):
    env = gym.make(env_id, catalog=small_catalog_path)
    user = env.unwrapped.user
    spec = CONFIGURATIONS[name].template
    assert user.max_differences == spec["max_differences"] == 1
    assert user.noise == TemplateNoise(**spec["noise"])
    env.close()
    # The same configuration by name on the base id, and in the native vector env.
    venv = gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        catalog=small_catalog_path,
        configuration=name,
    )
    assert isinstance(venv.unwrapped, FashionIQVectorEnv)
    assert venv.unwrapped.user.max_differences == 1 and venv.unwrapped.configuration == name
    venv.close()


def test_every_configuration_id_names_a_known_configuration():
    named = {kwargs["configuration"] for kwargs in ENV_IDS.values() if "configuration" in kwargs}
    assert named and named <= set(CONFIGURATIONS)


def test_a_pickled_env_keeps_its_configuration(small_catalog_path):
    import pickle

    env = gym.make("fiq_gym/FashionIQTerse-v3", catalog=small_catalog_path).unwrapped
    env.reset(seed=3)
    copy = pickle.loads(pickle.dumps(env))
    assert copy.configuration == "terse" and copy.user.max_differences == 1
    env.close()
    copy.close()


def test_hard_but_learnable_means_low_at_the_end_and_rising_every_turn():
    from fiq_gym.benchmarks.configurations import is_hard

    assert is_hard([0.05, 0.1, 0.2, 0.3, 0.45], below=0.5)
    assert not is_hard([0.05, 0.1, 0.2, 0.3, 0.55], below=0.5)  # solved
    assert not is_hard([0.05, 0.1, 0.1, 0.3, 0.45], below=0.5)  # a turn that did not help
    assert not is_hard([0.05, 0.1, 0.2, 0.3, 0.25], below=0.5)


@pytest.mark.slow
def test_configuration_measurement_writes_its_table(tmp_path):
    """The script behind configurations.md, tiny: every agent on two configurations, a verdict
    per configuration, the command in the file."""
    from fiq_gym.benchmarks import configurations

    configurations.main(
        ["--configurations", "default", "terse", "--rounds", "2", "--episodes", "8", "--out", str(tmp_path)]
    )
    text = (tmp_path / "configurations.md").read_text()
    for name in ("default", "terse"):
        for agent in ("random", "greedy", "supervised"):
            assert f"| {name} | {agent} |" in text
    assert "| terse | `fiq_gym/FashionIQTerse-v3` |" in text
    assert text.count("**") >= 4  # a verdict for each configuration (plus the definition)
    assert "--rounds 2 --episodes 8" in text
