"""The language-model shopper (``user="lm:DIR"``): loading, prompts, cleaning, determinism,
batch independence, the env checkers, vector = single, errors, faithfulness.

The model is a randomly initialised one-layer GPT-2 with a word-level tokenizer, both built
here and saved with ``save_pretrained``: it tests the plumbing, not caption quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import fiq_gym  # noqa: F401
from fiq_gym.envs import FashionIQEnv, FashionIQVectorEnv
from fiq_gym.errors import CheckpointError
from fiq_gym.text import WordTokenizer, split_words
from fiq_gym.users import LanguageModelUser, TemplateUser
from fiq_gym.users.caption_metrics import DifferenceOracle, faithfulness
from fiq_gym.users.language_model import DEFAULT_PROMPT, LMDecoding, clean_generation
from fiq_gym.users.registry import make_user


@pytest.fixture(scope="module")
def greedy(small_catalog, tiny_lm):
    return make_user(f"lm:{tiny_lm}", small_catalog)


@pytest.fixture(scope="module")
def sampling(small_catalog, tiny_lm):
    return make_user(f"lm:{tiny_lm}", small_catalog, decoding="sample")


def _rngs(seeds):
    return [np.random.default_rng(s) for s in seeds]


# Pairs whose prompts differ in length, so a batch of them is left-padded.
TARGETS = np.array([0, 3, 7, 12, 20])
SHOWN = np.array([5, 9, 1, 30, 2])


# --- cleaning and prompts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "caption"),
    [
        (" is darker and has longer sleeves. It is nice.", "is darker and has longer sleeves"),
        ("Feedback: the wanted garment Is RED, with a V-neck!\nShown garment: ...", "is red, with a v-neck"),
        ('\n\n  "is a dress with a floral print"  \n', "is a dress with a floral print"),
        ("Answer: 'has no sleeves'", "has no sleeves"),
        ("is 3.5 inches longer", "is 3.5 inches longer"),
        ("...\n", ""),
        ("", ""),
    ],
)
def test_generated_text_is_cleaned_into_a_relative_caption(raw, caption):
    assert clean_generation(raw) == caption


def test_cleaned_captions_are_capped_in_words():
    assert clean_generation("is " + "very " * 40 + "dark", max_words=5) == "is very very very very"


def test_prompt_shows_both_items_descriptions_and_attributes(greedy, small_catalog):
    prompt = greedy.prompt_for(0, 5)
    assert prompt.startswith(DEFAULT_PROMPT.split("{")[0])
    assert prompt.endswith("Feedback: the wanted garment")
    shown_line, target_line = prompt.splitlines()[-3:-1]
    for line, row in ((target_line, 0), (shown_line, 5)):
        item = small_catalog.item(row)
        assert small_catalog.descriptions[row] in line
        assert f"category: {item.category}" in line
        for name, value in item.attributes.items():
            assert f"{name}: {value}" in line


def test_a_custom_prompt_and_bad_prompts(small_catalog, tiny_lm):
    user = make_user(
        f"lm:{tiny_lm}",
        small_catalog,
        prompt="old: {shown_description}\nnew: {target_attributes}\nit",
        decoding={"strategy": "greedy", "max_new_tokens": 4},
    )
    assert user.prompt_for(0, 5) == (
        f"old: {small_catalog.descriptions[5]}\nnew: {user.item_attributes(0)}\nit"
    )
    assert user.decoding == LMDecoding(max_new_tokens=4)
    with pytest.raises(ValueError, match=r"unknown fields \['garment'\]"):
        LanguageModelUser(small_catalog, tiny_lm, prompt="{target} vs {garment}")
    with pytest.raises(ValueError, match="never shows the shown item"):
        LanguageModelUser(small_catalog, tiny_lm, prompt="I want {target}")
    with pytest.raises(ValueError, match="decoding strategy must be 'greedy' or 'sample'"):
        LanguageModelUser(small_catalog, tiny_lm, decoding="beam")


def test_the_tokenizer_pads_on_the_left_and_gets_a_pad_token(greedy):
    tok = greedy.lm_tokenizer
    assert tok.padding_side == "left"
    assert tok.pad_token == "<eos>"  # the saved tokenizer has none
    batch = tok([greedy.prompt_for(0, 5), "short"], padding=True)
    assert batch["attention_mask"][1][0] == 0 and batch["attention_mask"][1][-1] == 1


# --- determinism and batching -------------------------------------------------------------


@pytest.mark.parametrize("user_fixture", ["greedy", "sampling"])
def test_batches_of_one_and_of_five_give_the_same_captions(user_fixture, request, small_catalog, tiny_lm):
    user = request.getfixturevalue(user_fixture)
    lengths = {
        len(user.lm_tokenizer(user.prompt_for(t, s))["input_ids"])
        for t, s in zip(TARGETS, SHOWN, strict=True)
    }
    assert len(lengths) > 1, "the pairs must need padding"
    seeds = range(100, 105)
    together = user.describe(TARGETS, SHOWN, _rngs(seeds)).texts
    alone = [
        user.describe(TARGETS[i : i + 1], SHOWN[i : i + 1], _rngs([s])).texts[0] for i, s in enumerate(seeds)
    ]
    assert together == alone
    assert len(set(together)) == len(together) and all(together)
    twos = LanguageModelUser(small_catalog, tiny_lm, decoding=user.decoding, batch_size=2)
    assert twos.describe(TARGETS, SHOWN, _rngs(seeds)).texts == together


def test_sampling_is_reproducible_under_seeds_and_each_caption_uses_its_own_generator(sampling):
    first = sampling.describe(TARGETS, SHOWN, _rngs(range(5))).texts
    assert sampling.describe(TARGETS, SHOWN, _rngs(range(5))).texts == first
    changed = sampling.describe(TARGETS, SHOWN, _rngs([99, 1, 2, 3, 4])).texts
    assert changed[0] != first[0] and changed[1:] == first[1:]
    # one generator for the whole batch works too, and is reproducible
    one = sampling.describe(TARGETS, SHOWN, np.random.default_rng(5)).texts
    assert sampling.describe(TARGETS, SHOWN, np.random.default_rng(5)).texts == one
    # the same pair gets varied captions under different seeds
    pair = [sampling.describe_one(0, 5, np.random.default_rng(s)) for s in range(4)]
    assert len(set(pair)) > 1


def test_greedy_draws_nothing_and_sampling_leaves_torch_random_state_alone(greedy, sampling):
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    a = greedy.describe(TARGETS, SHOWN, rng).texts
    assert rng.bit_generator.state == state
    assert greedy.describe(TARGETS, SHOWN, np.random.default_rng(4)).texts == a
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    sampling.describe(TARGETS, SHOWN, _rngs(range(5)))
    assert torch.equal(torch.rand(3), expected)


def test_captions_record_their_claims_judged_against_the_catalog(greedy, small_catalog):
    batch = greedy.describe(np.arange(40), np.arange(40, 80), np.random.default_rng(0))
    oracle = DifferenceOracle(small_catalog)
    assert len(batch) == 40 and any(batch.differences)
    for text, records, t, s in zip(batch.texts, batch.differences, range(40), range(40, 80), strict=True):
        assert [d.claim for d in records] == oracle.parse_in_order(text)
        truth = oracle.truth(t, s)
        for d in records:
            if d.target:
                assert d.is_faithful == bool(truth.is_correct(d.claim))


def test_faithfulness_of_the_tiny_model_is_measurable(greedy, sampling, small_catalog):
    """The existing metric scores the LM shopper's captions like any shopper's. A random
    model's claims are mostly wrong: this checks the plumbing, not the quality."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, len(small_catalog), 60)
    shown = rng.integers(0, len(small_catalog), 60)
    oracle = DifferenceOracle(small_catalog)
    for user in (greedy, sampling):
        batch = user.describe(targets, shown, _rngs(range(60)))
        score = faithfulness(batch.texts, targets, shown, oracle)
        records = [d for r in batch.differences for d in r if d.target]
        assert score.claims == len(records) > 0
        assert score.correct == sum(d.is_faithful for d in records)
        assert score.precision < 0.5  # random weights: if this fails, the test model is not random
    template = TemplateUser(small_catalog).describe(targets, shown, rng).texts
    assert faithfulness(template, targets, shown, oracle).precision == 1.0


# --- environments -------------------------------------------------------------------------


def test_env_with_the_lm_user_passes_both_checkers(small_catalog_path, tiny_lm):
    env = gym.make("fiq_gym/FashionIQ-v3", user=f"lm:{tiny_lm}", catalog=small_catalog_path)
    assert isinstance(env.unwrapped.user, LanguageModelUser)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(FashionIQEnv(catalog=small_catalog_path, user=f"lm:{tiny_lm}"), warn=True)
    obs, info = env.reset(seed=0)
    tokenizer = env.unwrapped.tokenizer
    assert tokenizer is env.unwrapped.user.tokenizer and isinstance(tokenizer, WordTokenizer)
    known = set(tokenizer.words)
    n = int(obs["caption_length"][0])
    expected = [w if w in known else "<unk>" for w in split_words(info["caption_text"])]
    assert tokenizer.decode(obs["caption"][:n]).split(" ") == expected[: len(obs["caption"])]
    env.close()


def test_the_observation_vocabulary_extends_the_template_shoppers(greedy, small_catalog):
    template = TemplateUser(small_catalog).tokenizer.words
    words = greedy.tokenizer.words
    assert words[: len(template)] == template  # same ids for the template's words
    description_words = {w for d in small_catalog.descriptions for w in split_words(d)}
    assert set(words) == set(template) | description_words


@pytest.mark.parametrize("decoding", ["greedy", "sample"])
def test_vector_sub_env_k_matches_a_single_env(small_catalog_path, tiny_lm, decoding):
    kwargs = {"catalog": small_catalog_path, "user": f"lm:{tiny_lm}", "max_turns": 2}
    kwargs["user_kwargs"] = {"decoding": decoding}
    n, seed = 4, 21
    venv = FashionIQVectorEnv(n, **kwargs)
    singles = [FashionIQEnv(**kwargs) for _ in range(n)]
    assert venv.user is singles[0].user  # one model in memory
    vobs, vinfo = venv.reset(seed=seed)
    for k, env in enumerate(singles):
        obs, info = env.reset(seed=seed + k)
        assert vinfo["caption_text"][k] == info["caption_text"]
        np.testing.assert_array_equal(vobs["caption"][k], obs["caption"])
    rng = np.random.default_rng(0)
    needs_reset = np.zeros(n, dtype=bool)
    resets = 0
    for _ in range(6):  # with max_turns=2, covers autoresets
        actions = rng.integers(0, venv.num_items, size=n)
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions)
        for k, env in enumerate(singles):
            if needs_reset[k]:
                obs, info = env.reset()
                rew, term, trunc = 0.0, False, False
            else:
                obs, rew, term, trunc, info = env.step(int(actions[k]))
            assert vinfo["caption_text"][k] == info["caption_text"]
            for key in obs:
                np.testing.assert_array_equal(vobs[key][k], obs[key], err_msg=key)
            assert vrew[k] == pytest.approx(rew)
            assert (vterm[k], vtrunc[k]) == (term, trunc)
        resets += int(needs_reset.sum())
        needs_reset = vterm | vtrunc
    assert resets >= n


def test_a_template_env_never_imports_the_lm_shopper(small_catalog_path):
    code = (
        "import sys, gymnasium as gym, fiq_gym, warnings; warnings.simplefilter('ignore'); "
        f"env = gym.make('fiq_gym/FashionIQ-v3', catalog={str(small_catalog_path)!r}); env.reset(seed=0); "
        "print('fiq_gym.users.language_model' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- names and errors ---------------------------------------------------------------------


def test_make_user_names_the_lm_shopper(small_catalog, tiny_lm, greedy):
    assert isinstance(greedy, LanguageModelUser) and greedy.decoding.strategy == "greedy"
    assert make_user(f"lm:{tiny_lm}", small_catalog) is greedy  # shared per settings
    assert make_user("lm", small_catalog, model_dir=str(tiny_lm)) is greedy
    with pytest.raises(ValueError, match=r"user='lm' needs the directory.*user='lm:DIR'"):
        make_user("lm", small_catalog)
    with pytest.raises(ValueError, match="drop user_kwargs\\['model_dir'\\]"):
        make_user(f"lm:{tiny_lm}", small_catalog, model_dir=str(tiny_lm))


def test_a_missing_or_incomplete_directory_names_what_is_missing_and_the_fix(
    small_catalog, tiny_lm, tmp_path
):
    with pytest.raises(
        CheckpointError, match=r"no such directory.*save_pretrained.*huggingface-cli download"
    ):
        make_user(f"lm:{tmp_path / 'nowhere'}", small_catalog)
    with pytest.raises(CheckpointError, match=r"holds no model \(no config.json\).*save_pretrained"):
        LanguageModelUser(small_catalog, tmp_path)
    (tmp_path / "config.json").write_text((tiny_lm / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"no weights.*model.safetensors.*save_pretrained"):
        LanguageModelUser(small_catalog, tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tiny_lm / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"no tokenizer.*save_pretrained\(DIR\)"):
        LanguageModelUser(small_catalog, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not weights")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text((tiny_lm / name).read_text())
    with pytest.raises(CheckpointError, match="the weights do not load"):
        LanguageModelUser(small_catalog, tmp_path)


def test_models_transformers_cannot_run_as_a_shopper_are_named(small_catalog, tiny_lm, tiny_vit, tmp_path):
    import shutil

    vision = tmp_path / "vit"
    shutil.copytree(tiny_vit, vision)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_lm / name, vision / name)
    with pytest.raises(CheckpointError, match=r"'vit' model is not a causal language model"):
        LanguageModelUser(small_catalog, vision)
    # an encoder whose causal-LM head is not in the directory: its weights would be random
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(bert)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_lm / name, bert / name)
    with pytest.raises(CheckpointError, match=r"weights are not in the directory.*would be random"):
        LanguageModelUser(small_catalog, bert)
    future = tmp_path / "future"
    future.mkdir()
    config = json.loads((tiny_lm / "config.json").read_text())
    config["model_type"] = "gpt-from-the-future"
    (future / "config.json").write_text(json.dumps(config))
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_lm / name, future / name)
    with pytest.raises(
        CheckpointError, match=r"cannot read this model's config.*pip install -U transformers"
    ):
        LanguageModelUser(small_catalog, future)


def test_a_prompt_longer_than_the_models_context_is_refused(small_catalog, tiny_lm):
    user = LanguageModelUser(
        small_catalog, tiny_lm, prompt="{target} " * 20 + "{shown}", decoding={"max_new_tokens": 8}
    )
    with pytest.raises(ValueError, match=r"exceeds the model's context of 512 tokens; shorten the prompt"):
        user.describe_one(0, 5, np.random.default_rng(0))
