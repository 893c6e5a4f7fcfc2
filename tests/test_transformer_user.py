"""The transformer shopper: model, tokenizer, decoding, training, environments, errors."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import fiq_gym  # noqa: F401
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.vocabulary import AttributeType, AttributeVocabulary
from fiq_gym.cli import main as cli_main
from fiq_gym.envs import FashionIQEnv, FashionIQVectorEnv
from fiq_gym.errors import CheckpointError
from fiq_gym.text import CaptionTokenizer, split_words
from fiq_gym.users.transformer import (
    CaptionerTokenizer,
    CheckpointMismatchError,
    RelativeCaptionerConfig,
    RelativeCaptionerModel,
    TrainArgs,
    TransformerUser,
    build_caption_tokenizer,
    train_captioner,
)
from fiq_gym.users.transformer.data import split_items
from fiq_gym.users.transformer.user import DEFAULT_CHECKPOINT
from fiq_gym.utils.threads import torch_threads

TINY = dict(
    train_pairs=300,
    val_pairs=40,
    captions_per_pair=2,
    d_model=32,
    num_heads=2,
    ffn_dim=64,
    num_decoder_layers=1,
    epochs=2,
    batch_size=64,
    warmup_steps=5,
    bleu_pairs=16,
    threads=1,
    progress=False,
)


@pytest.fixture(scope="module")
def checkpoint(small_catalog_path, tmp_path_factory):
    """A tiny captioner trained for two epochs on the small catalog."""
    out = tmp_path_factory.mktemp("captioner") / "model"
    train_captioner(TrainArgs(catalog=str(small_catalog_path), out=str(out), **TINY))
    return out


@pytest.fixture(scope="module")
def user(small_catalog, checkpoint):
    return TransformerUser(small_catalog, checkpoint=checkpoint)


def _pairs(n: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(n, size=count)
    return targets, (targets + 1 + rng.integers(n - 1, size=count)) % n


# --- tokenizer -------------------------------------------------------------------------------

_TEXT = st.lists(
    st.sampled_from([*"abcXYZ019 -',.!?é\t\n\x1c\u00a0", "v-neck", "don't", "  ", "İ"]), max_size=30
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=_TEXT)
def test_tokenizer_pre_tokenization_agrees_with_split_words(text):
    tok = _word_tokenizer()
    words = split_words(text)
    pieces = [p for p, _ in tok.hf.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text.lower())]
    assert pieces == words
    ids = tok.encode(text)  # via split_words in Python
    assert tok.hf(text, add_special_tokens=False)["input_ids"] == ids  # via the Rust tokenizer
    known = [i for i in ids if i != tok.unk_id]  # decoding drops <unk>
    assert tok.encode(tok.decode(ids)) == known


def _word_tokenizer() -> CaptionerTokenizer:
    return CaptionerTokenizer(build_caption_tokenizer(["is red, and has long sleeves", "is red"], ["v-neck"]))


def test_tokenizer_ids_and_caption_tokenizer_protocol(tmp_path):
    tok = _word_tokenizer()
    assert isinstance(tok, CaptionTokenizer)
    assert tok.words[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert tok.words[4:6] == ("is", "red")  # most frequent first
    assert "v-neck" in tok.words
    ids, lengths = tok.encode_batch(["Is RED, v-neck zebra", ""], max_length=4)
    unk = tok.unk_id
    np.testing.assert_array_equal(
        ids,
        [
            [tok.words.index("is"), tok.words.index("red"), tok.words.index(","), tok.words.index("v-neck")],
            [0, 0, 0, 0],
        ],
    )
    assert lengths.tolist() == [4, 0]
    assert tok.encode("zebra") == [unk]
    assert tok.decode([*tok.encode("is red, has long sleeves"), tok.eos_id, 5]) == "is red, has long sleeves"
    # the HF tokenizer round-trips through save_pretrained / from_pretrained
    tok.hf.save_pretrained(tmp_path)
    from transformers import PreTrainedTokenizerFast

    again = CaptionerTokenizer(PreTrainedTokenizerFast.from_pretrained(str(tmp_path)))
    assert again.words == tok.words
    assert again.hf("is red")["input_ids"] == [*tok.encode("is red"), tok.eos_id]


# --- model and decoding ------------------------------------------------------------------------


def _tiny_model(vocab_size: int = 12, use_attributes: bool = True, seed: int = 0) -> RelativeCaptionerModel:
    torch.manual_seed(seed)
    config = RelativeCaptionerConfig(
        vocab_size=vocab_size,
        feature_dim=6,
        attribute_type_names=["a", "b"],
        attribute_group_sizes=[2, 3],
        attribute_names=["a:x", "a:y", "b:x", "b:y", "b:z"],
        use_attributes=use_attributes,
        d_model=16,
        num_heads=2,
        ffn_dim=32,
        max_caption_length=6,
    )
    model = RelativeCaptionerModel(config).eval()
    with torch.no_grad():  # sharper distributions than the 0.02-std initialisation gives
        model.embed_tokens.weight.mul_(20)
    return model


def _inputs(b: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "target_features": torch.randn(b, 6, generator=g),
        "shown_features": torch.randn(b, 6, generator=g),
        "target_attributes": torch.rand(b, 5, generator=g),
        "shown_attributes": torch.rand(b, 5, generator=g),
    }


def test_kv_cache_decoding_matches_the_full_forward_pass():
    model = _tiny_model()
    x = _inputs(8)
    ids = model.generate(**x, strategy="greedy")
    logits = model(**x, input_ids=model.shift_right(ids)).logits
    logits[:, :, model._banned()] = -torch.inf
    best = logits.argmax(dim=-1)
    for row, want in zip(ids.tolist(), best.tolist(), strict=True):
        n = row.index(2) + 1 if 2 in row else len(row)  # up to and including <eos>
        assert row[:n] == want[:n]


@torch.no_grad()
def _sequence_logprobs(model, x, rows: list[list[int]]) -> list[float]:
    """Log-probability of each caption (teacher forcing, banned tokens masked as in decoding)."""
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    inputs = {k: v[:1].expand(len(rows), -1) for k, v in x.items()}
    logits = model(**inputs, input_ids=model.shift_right(ids)).logits.double()
    logits[:, :, model._banned()] = -math.inf
    logp = torch.log_softmax(logits, dim=-1).gather(2, ids[:, :, None])[:, :, 0]
    return [float(logp[i, : len(row)].sum()) for i, row in enumerate(rows)]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_with_enough_beams_finds_the_best_caption(alpha):
    """With more beams than prefixes, beam search is exhaustive: compare to brute force."""
    model = _tiny_model(vocab_size=7)  # 3 words + <eos> can follow each prefix
    x = _inputs(1, seed=3)
    length = 3
    candidates = [[*words, 2] for n in range(length) for words in itertools.product([4, 5, 6], repeat=n)]
    candidates += [list(words) for words in itertools.product([4, 5, 6], repeat=length)]  # cut at the limit
    scores = [
        lp / len(c) ** alpha
        for lp, c in zip(_sequence_logprobs(model, x, candidates), candidates, strict=True)
    ]
    best = candidates[int(np.argmax(scores))]
    ids = model.generate(**x, strategy="beam", num_beams=64, length_penalty=alpha, max_new_tokens=length)
    got = [t for t in ids[0].tolist() if t != 0]
    assert got == best


def test_one_beam_is_greedy_and_sampling_depends_only_on_the_row():
    model = _tiny_model()
    x = _inputs(6)
    greedy = model.generate(**x, strategy="greedy")
    assert torch.equal(model.generate(**x, strategy="beam", num_beams=1), greedy)
    u = torch.rand(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    both = model.generate(**x, strategy="sample", uniforms=u, top_p=0.9, top_k=5)
    for i in range(6):
        one = model.generate(
            **{k: v[i : i + 1] for k, v in x.items()},
            strategy="sample",
            uniforms=u[i : i + 1],
            top_p=0.9,
            top_k=5,
        )
        assert torch.equal(one[0], both[i])
    # a uniform near 0 picks the most likely word: sampling then agrees with greedy's first word
    first = model.generate(**x, strategy="sample", uniforms=torch.zeros(6, 6, dtype=torch.float64))
    assert torch.equal(first[:, 0], greedy[:, 0])
    with pytest.raises(ValueError, match="uniforms of shape"):
        model.generate(**x, strategy="sample")
    with pytest.raises(ValueError, match="strategy must be one of"):
        model.generate(**x, strategy="topk")


def test_model_without_attributes_ignores_them():
    model = _tiny_model(use_attributes=False)
    x = _inputs(4)
    a = model.generate(x["target_features"], x["shown_features"], strategy="greedy")
    b = model.generate(**x, strategy="greedy")
    assert torch.equal(a, b)
    assert model.config.num_memory_tokens == 3


def test_save_load_round_trip_gives_identical_captions(user, small_catalog, checkpoint, tmp_path):
    user.model.save_pretrained(tmp_path)
    user.tokenizer.hf.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    again = TransformerUser(small_catalog, checkpoint=tmp_path)
    for a, b in zip(user.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    from transformers import AutoModel, AutoTokenizer

    assert isinstance(AutoModel.from_pretrained(str(tmp_path)), RelativeCaptionerModel)
    assert AutoTokenizer.from_pretrained(str(tmp_path)).get_vocab() == user.tokenizer.hf.get_vocab()
    targets, shown = _pairs(len(small_catalog), 32)
    for decoding in ("sample", "greedy", "beam"):
        ua, ub = user.with_decoding(decoding), again.with_decoding(decoding)
        ta = ua.describe(targets, shown, np.random.default_rng(5)).texts
        tb = ub.describe(targets, shown, np.random.default_rng(5)).texts
        assert ta == tb


# --- the user ---------------------------------------------------------------------------------


def test_decoding_is_deterministic_under_a_seed(user, small_catalog):
    targets, shown = _pairs(len(small_catalog), 48)
    a = user.describe(targets, shown, np.random.default_rng(1)).texts
    b = user.describe(targets, shown, np.random.default_rng(1)).texts
    c = user.describe(targets, shown, np.random.default_rng(2)).texts
    assert a == b
    assert a != c
    assert all(isinstance(t, str) for t in a)


def test_same_pair_differs_when_sampling_and_agrees_when_greedy(user):
    targets, shown = np.full(24, 3), np.full(24, 17)
    sampled = user.describe(targets, shown, np.random.default_rng(0)).texts
    assert len(set(sampled)) > 1
    greedy = user.with_decoding("greedy").describe(targets, shown, np.random.default_rng(0)).texts
    assert len(set(greedy)) == 1
    beam = user.with_decoding({"strategy": "beam", "num_beams": 3}).describe(
        targets, shown, np.random.default_rng(0)
    )
    assert len(set(beam.texts)) == 1


def test_per_pair_generators_make_each_caption_depend_on_its_own(user, small_catalog):
    targets, shown = _pairs(len(small_catalog), 6)
    rngs = [np.random.default_rng(100 + i) for i in range(6)]
    batch = user.describe(targets, shown, rngs).texts
    for i in range(6):
        alone = user.describe(targets[i : i + 1], shown[i : i + 1], [np.random.default_rng(100 + i)]).texts
        assert alone == [batch[i]]
    # each generator advanced by one caption's worth of uniforms, whatever the caption length
    fresh = np.random.default_rng(100)
    fresh.random(user.max_new_tokens)
    assert rngs[0].random() == fresh.random()


def test_difference_records_judge_the_claims(user, small_catalog):
    from fiq_gym.users.caption_metrics import DifferenceOracle

    oracle = DifferenceOracle(small_catalog)
    targets, shown = _pairs(len(small_catalog), 64, seed=9)
    batch = user.describe(targets, shown, np.random.default_rng(0))
    seen = 0
    for text, records, t, s in zip(batch.texts, batch.differences, targets, shown, strict=True):
        assert [d.claim for d in records] == oracle.parse_in_order(text)
        truth = oracle.truth(t, s)
        for d in records:
            seen += 1
            assert d.is_faithful == bool(truth.is_correct(d.claim))
    assert seen > 0


def test_model_reads_the_environment_tables(user, small_catalog):
    from fiq_gym.gallery import gallery_of

    tables = gallery_of(small_catalog)
    inputs = user.model_inputs(np.array([4, 5]), np.array([6, 7]))
    np.testing.assert_array_equal(inputs["target_features"].numpy(), tables.features[[4, 5]])
    np.testing.assert_array_equal(inputs["shown_attributes"].numpy(), tables.side_info[[6, 7]])
    assert user.config.feature_dim == tables.feature_dim
    assert user.config.num_attributes == tables.side_info.shape[1]


# --- training -------------------------------------------------------------------------------


def test_a_few_training_steps_lower_the_loss(small_catalog, checkpoint):
    """The trained checkpoint's validation loss beats the same model untrained."""
    from fiq_gym.users.transformer.data import template_dataset
    from fiq_gym.users.transformer.train import _encode, _Inputs

    trained = RelativeCaptionerModel.from_pretrained(str(checkpoint)).eval()
    torch.manual_seed(0)
    untrained = RelativeCaptionerModel(trained.config).eval()
    tok = TransformerUser(small_catalog, checkpoint=checkpoint).tokenizer
    data = template_dataset(small_catalog, train_pairs=10, val_pairs=40, captions_per_pair=2, seed=0)
    targets, shown, labels = _encode(list(data.val), tok, trained.config.max_caption_length)
    x = _Inputs(small_catalog, True)(targets, shown)
    with torch.no_grad():
        before = float(untrained(**x, labels=labels).loss)
        after = float(trained(**x, labels=labels).loss)
    assert after < before - 0.3
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert metrics["val_loss"] == pytest.approx(after, rel=1e-4)


def test_resumed_training_equals_uninterrupted(small_catalog_path, tmp_path):
    args = dict(TINY, catalog=str(small_catalog_path), train_pairs=120, epochs=2)
    whole = train_captioner(TrainArgs(out=str(tmp_path / "whole"), **args))
    assert whole.finished and whole.epochs_run == 2
    first = train_captioner(TrainArgs(out=str(tmp_path / "split"), stop_after=1, **args))
    assert not first.finished and first.epochs_run == 1
    with pytest.raises(FileExistsError, match="--resume"):
        train_captioner(TrainArgs(out=str(tmp_path / "split"), **args))
    with pytest.raises(ValueError, match="different settings.*d_model"):
        train_captioner(TrainArgs(out=str(tmp_path / "split"), **{**args, "d_model": 64}), resume=True)
    second = train_captioner(TrainArgs(out=str(tmp_path / "split"), **args), resume=True)
    assert second.finished and second.epochs_run == 2
    for name in ("whole", "split"):
        assert (tmp_path / f"{name}-training" / "tensorboard").is_dir()
    a = load_file(str(tmp_path / "whole-training" / "last" / "state.safetensors"))
    b = load_file(str(tmp_path / "split-training" / "last" / "state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("model.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert second.best_val_loss == whole.best_val_loss


def test_training_refuses_to_replace_a_model_or_resume_nothing(small_catalog_path, tmp_path):
    args = dict(TINY, catalog=str(small_catalog_path), train_pairs=60, epochs=1)
    out = tmp_path / "model"
    train_captioner(TrainArgs(out=str(out), **args))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        train_captioner(TrainArgs(out=str(out), **{**args, "seed": 1}))
    assert (out / "model.safetensors").read_bytes() == before  # nothing replaced
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_captioner(TrainArgs(out=str(tmp_path / "new"), **args), resume=True)
    again = train_captioner(TrainArgs(out=str(out), **{**args, "seed": 1}), overwrite=True)
    assert again.finished and (out / "model.safetensors").read_bytes() != before


def test_item_split_is_disjoint_and_deterministic():
    a, b = split_items(1000, seed=3), split_items(1000, seed=3)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    everything = np.concatenate([a.train, a.val, a.test])
    assert len(np.unique(everything)) == 1000 and len(a.val) == len(a.test) == 100


def test_cli_trains_and_captions(small_catalog_path, tmp_path, capsys):
    out = tmp_path / "cli-model"
    code = cli_main(
        [
            "user", "train", "--catalog", str(small_catalog_path), "--out", str(out), "--epochs", "1",
            "--train-pairs", "100", "--val-pairs", "20", "--captions-per-pair", "2", "--d-model", "32",
            "--num-heads", "2", "--ffn-dim", "64", "--num-decoder-layers", "1", "--threads", "1",
            "--noise-omit", "0.2", "--noise-wrong-color", "0.1", "--no-use-attributes", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((out / "training_args.json").read_text())
    assert (
        saved["noise_omit"] == 0.2 and saved["noise_wrong_color"] == 0.1 and saved["use_attributes"] is False
    )
    assert "finished after 1 epochs" in capsys.readouterr().out
    assert (
        cli_main(
            [
                "user",
                "caption",
                "--checkpoint",
                str(out),
                "--catalog",
                str(small_catalog_path),
                "--count",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("model:") == 2 and printed.count("template:") == 2
    assert cli_main(["user", "train", "--out", str(out), "--overwrite", "--noise-omit", "1.5"]) == 2


def test_importing_users_and_the_cli_does_not_import_torch():
    code = (
        "import sys, fiq_gym.users, fiq_gym.users.transformer, fiq_gym.cli; fiq_gym.cli.build_parser(); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- environments -----------------------------------------------------------------------------


def test_env_with_the_transformer_user_passes_both_checkers(small_catalog_path, checkpoint):
    kwargs = {"checkpoint": str(checkpoint)}
    env = gym.make("fiq_gym/FashionIQ-v3", catalog=small_catalog_path, user="transformer", user_kwargs=kwargs)
    assert isinstance(env.unwrapped.user, TransformerUser)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(FashionIQEnv(catalog=small_catalog_path, user="transformer", user_kwargs=kwargs), warn=True)
    obs, info = env.reset(seed=0)
    tok = env.unwrapped.tokenizer
    assert tok is env.unwrapped.user.tokenizer
    n = int(obs["caption_length"][0])
    assert split_words(tok.decode(obs["caption"][:n])) == split_words(info["caption_text"])
    # environments of one catalog and checkpoint share one user (one model in memory)
    other = FashionIQEnv(
        catalog=small_catalog_path, user="transformer", user_kwargs={"checkpoint": checkpoint}
    )
    assert other.user is env.unwrapped.user
    env.close()


@pytest.mark.parametrize("decoding", ["sample", "greedy"])
def test_vector_sub_env_k_matches_a_single_env(small_catalog_path, checkpoint, decoding):
    kwargs = {"checkpoint": str(checkpoint), "decoding": decoding}
    n, seed = 4, 21
    venv = FashionIQVectorEnv(
        n, catalog=small_catalog_path, user="transformer", user_kwargs=kwargs, max_turns=2
    )
    singles = [
        FashionIQEnv(catalog=small_catalog_path, user="transformer", user_kwargs=kwargs, max_turns=2)
        for _ in range(n)
    ]
    assert all(env.user is venv.user for env in singles)  # one shopper: the spies below see every call
    calls: list[int] = []
    original = venv.user._describe

    def spy(targets, shown, rng):
        calls.append(len(targets))
        return original(targets, shown, rng)

    decoded: list[tuple] = []  # (inputs, uniforms, ids) of every model call
    decode = venv.user.generate_from_inputs

    def recording(inputs, uniforms, length):
        ids = decode(inputs, uniforms, length)
        decoded.append((inputs, uniforms, ids))
        return ids

    venv.user._describe = spy
    venv.user.generate_from_inputs = recording
    try:
        vobs, vinfo = venv.reset(seed=seed)
        assert calls == [n]  # one batched call for all sub-envs
        batched = decoded[-1]
        for k, env in enumerate(singles):
            obs, info = env.reset(seed=seed + k)
            if _same_words(venv.user, batched, k, decoded[-1]):
                assert vinfo["caption_text"][k] == info["caption_text"]
                np.testing.assert_array_equal(vobs["caption"][k], obs["caption"])
        rng = np.random.default_rng(0)
        needs_reset = np.zeros(n, dtype=bool)
        for _ in range(6):  # with max_turns=2, covers autoresets
            actions = rng.integers(0, venv.num_items, size=n)
            calls.clear()
            vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions)
            assert calls == [n]
            batched = decoded[-1]
            for k, env in enumerate(singles):
                if needs_reset[k]:
                    obs, info = env.reset()
                    rew, term, trunc = 0.0, False, False
                else:
                    obs, rew, term, trunc, info = env.step(int(actions[k]))
                if _same_words(venv.user, batched, k, decoded[-1]):
                    assert vinfo["caption_text"][k] == info["caption_text"]
                    np.testing.assert_array_equal(vobs["caption"][k], obs["caption"])
                assert vrew[k] == pytest.approx(rew)
                assert (vterm[k], vtrunc[k]) == (term, trunc)
            needs_reset = vterm | vtrunc
    finally:
        del venv.user._describe  # the instance attributes; the shared user is unchanged
        del venv.user.generate_from_inputs


def _same_words(user, batched, k, single) -> bool:
    """Row ``k`` of the vector env's batched model call against a single env's batch of one:
    the same inputs and sampling uniforms bit for bit, and the same words; except that a
    sampled word may differ where a sampling point (or nucleus mass) 1e-4 away draws the
    batched word. Returns whether the words are the same.

    A batch of four runs products of other shapes than a batch of one, whose last bits differ
    (and differ by CPU model and thread count): greedy words, decided by logit margins above
    0.1 here, cannot change; a sampled word can, where its sampling point lies that close to
    a boundary between two words of the distribution (measured: a relative change of 3e-6 in
    the logits changed a word in about a third of the runs of this test)."""
    (b_inputs, b_uniforms, b_ids), (s_inputs, s_uniforms, s_ids) = batched, single
    assert b_inputs.keys() == s_inputs.keys() and len(s_ids) == 1
    for key in s_inputs:
        assert torch.equal(b_inputs[key][k], s_inputs[key][0]), key
    assert (b_uniforms is None) == (s_uniforms is None)
    if s_uniforms is not None:
        assert torch.equal(b_uniforms[k], s_uniforms[0])  # the sub-env's own stream
    if torch.equal(b_ids[k], s_ids[0]):
        return True
    t = int((b_ids[k] != s_ids[0]).nonzero()[0, 0])
    assert s_uniforms is not None, f"greedy sub-env {k}: word {t} differs ({b_ids[k]} vs {s_ids[0]})"
    d, word = user.decoding, b_ids[k, t]
    for du, dp in ((-1e-4, 0.0), (1e-4, 0.0), (0.0, -1e-4), (0.0, 1e-4)):
        u = s_uniforms.clone()
        u[0, t] = (u[0, t] + du).clamp(0.0, 1.0)
        with torch_threads(user.threads):
            ids = user.model.generate(
                **s_inputs,
                strategy="sample",
                max_new_tokens=s_ids.shape[1],
                uniforms=u,
                temperature=d.temperature,
                top_k=d.top_k,
                top_p=min(1.0, d.top_p + dp),
            )
        if ids[0, t] == word:
            return False
    raise AssertionError(
        f"sampled sub-env {k}: word {t} differs ({b_ids[k]} vs {s_ids[0]}) beyond what rounding explains"
    )


# --- mismatched checkpoints -------------------------------------------------------------------


def test_checkpoint_with_other_feature_size_fails_with_a_fix(small_catalog, checkpoint):
    n = len(small_catalog)
    other = dataclasses.replace(
        small_catalog, features=np.random.default_rng(0).random((n, 16), dtype=np.float32)
    )
    with pytest.raises(CheckpointMismatchError, match=r"feature size mismatch.*16-dim.*fiq-gym user train"):
        TransformerUser(other, checkpoint=checkpoint)


def test_checkpoint_with_other_attributes_or_words_fails_with_a_fix(small_catalog, checkpoint, tmp_path):
    renamed = AttributeVocabulary(
        tuple(
            AttributeType(t.name, tuple("crimson" if v == "red" else v for v in t.values), t.ordered)
            for t in small_catalog.vocabulary.types
        )
    )
    other: Catalog = dataclasses.replace(small_catalog, vocabulary=renamed)
    with pytest.raises(
        CheckpointMismatchError, match=r"attribute vocabulary mismatch.*'color:red'.*'color:crimson'"
    ):
        TransformerUser(other, checkpoint=checkpoint)
    # a model that ignores attributes still cannot say "crimson"
    model = RelativeCaptionerModel.from_pretrained(str(checkpoint))
    model.config.use_attributes = False
    blind = RelativeCaptionerModel(model.config)
    blind.save_pretrained(tmp_path / "blind")
    TransformerUser(small_catalog, checkpoint=checkpoint).tokenizer.hf.save_pretrained(tmp_path / "blind")
    with pytest.raises(CheckpointMismatchError, match=r"word vocabulary mismatch.*crimson"):
        TransformerUser(other, checkpoint=tmp_path / "blind")
    with pytest.raises(FileNotFoundError, match="no captioner checkpoint"):
        TransformerUser(small_catalog, checkpoint=tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="decoding strategy"):
        TransformerUser(small_catalog, checkpoint=checkpoint, decoding="nucleus")


@pytest.mark.slow
def test_user_name_loads_the_shipped_checkpoint_on_the_default_catalog():
    """``user="transformer"`` without kwargs: the checkpoint inside the package."""
    assert (DEFAULT_CHECKPOINT / "model.safetensors").is_file(), "the shipped checkpoint is missing"
    env = gym.make("fiq_gym/FashionIQ-v3", user="transformer")
    user = env.unwrapped.user
    assert isinstance(user, TransformerUser) and user.checkpoint == DEFAULT_CHECKPOINT
    obs, info = env.reset(seed=0)
    assert info["caption_text"] and obs["caption_length"][0] > 0
    # a trained shopper says mostly true things about the pair it describes
    catalog = env.unwrapped.catalog
    targets, shown = _pairs(len(catalog), 200, seed=4)
    batch = user.with_decoding("greedy").describe(targets, shown, np.random.default_rng(0))
    records = [d for r in batch.differences for d in r]
    assert len(records) >= 200
    assert np.mean([d.is_faithful for d in records]) > 0.7
    # colours and patterns are in the features and the attribute scores: nearly always right
    # (shirt vs top is not; see benchmarks/results/captioning.md)
    readable = [d.is_faithful for d in records if d.type in ("color", "pattern")]
    assert len(readable) >= 50 and np.mean(readable) > 0.9
    env.close()


def test_features_from_other_weights_warn(small_catalog, checkpoint, tmp_path):
    """Same feature size, different extracting network: loads, with a warning that says so."""
    import shutil

    shutil.copytree(checkpoint, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["feature_weights"] = "a" * 64
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    n, dim = len(small_catalog), RelativeCaptionerConfig.from_pretrained(str(checkpoint)).feature_dim
    other = dataclasses.replace(
        small_catalog,
        features=np.random.default_rng(0).random((n, dim), dtype=np.float32),
        provenance={**small_catalog.provenance, "features": {"weights_sha256": "b" * 64}},
    )
    with pytest.warns(UserWarning, match="another network"):
        TransformerUser(other, checkpoint=tmp_path / "ckpt")


def test_throughput_rows_for_the_transformer_user(small_catalog, checkpoint):
    from fiq_gym.benchmarks.throughput import TRANSFORMER_SETTINGS, measure_transformer, to_markdown
    from fiq_gym.users.transformer.modeling_relative_captioner import caption_flops

    rows = measure_transformer(
        small_catalog, num_envs=4, min_seconds=0.0, user_kwargs={"checkpoint": str(checkpoint)}
    )
    assert [m.setting for m in rows] == list(TRANSFORMER_SETTINGS)
    assert all(m.steps_per_second > 0 and m.num_envs == 4 for m in rows)
    text = to_markdown(rows, "python -m fiq_gym.benchmarks.throughput --users transformer")
    assert "(d) native vector env / single envs" in text and "(e) batched decoder" in text
    assert "(f) env step / its parts" in text and "(g) `describe` / the captioner's FLOP limit" in text
    flops = next(m.steps_per_second for m in rows if m.setting == "transformer-caption-flops")
    config = TransformerUser(small_catalog, checkpoint=checkpoint).config
    assert flops >= caption_flops(config, [1])  # at least one token per caption


def test_any_caption_pairs_can_train_a_captioner(small_catalog, tmp_path):
    """The data interface the real-data loaders will use: (target, shown, caption) triples."""
    from fiq_gym.users.transformer.data import CaptionDataset, CaptionPair

    rng = np.random.default_rng(0)
    words = ["Make it REDDER!", "needs a longer skirt, please", "more sparkly; less boring"]
    pairs = [
        CaptionPair(int(t), int(s), words[int(t) % 3])
        for t, s in rng.integers(0, 300, size=(96, 2))
        if t != s
    ]
    data = CaptionDataset(small_catalog, train=pairs[:80], val=pairs[80:], caption_source="human")
    out = tmp_path / "human"
    result = train_captioner(TrainArgs(out=str(out), **{**TINY, "epochs": 1}), dataset=data)
    assert result.finished
    user = TransformerUser(small_catalog, checkpoint=out)  # no template-word check for human captions
    assert user.config.caption_source == "human"
    assert "sparkly" in user.tokenizer.words and "boring" in user.tokenizer.words
    texts = user.describe(np.array([1, 2]), np.array([3, 4]), np.random.default_rng(0)).texts
    assert all("<unk>" not in t for t in texts)


def test_captioning_benchmark_end_to_end(checkpoint, tmp_path):
    from fiq_gym.benchmarks.captioning import main

    ckpt = str(checkpoint)
    args = ["--checkpoint", ckpt, "--no-attributes-checkpoint", ckpt, "--pairs", "24", "--references", "2"]
    main([*args, "--threads", "1", "--out", str(tmp_path)])
    table = (tmp_path / "captioning.md").read_text()
    for row in (
        "transformer + attributes, greedy",
        "nearest-neighbour caption",
        "template shopper (ceiling)",
    ):
        assert f"| {row} |" in table
    assert "## Do attributes help?" in table
    assert "## Targets: faithfulness precision >= 0.95 with recall >= 0.3" in table
    assert "- transformer + attributes, greedy: precision **" in table
    assert "Command: `" in table and "Revision: " in table
    rows = json.loads((tmp_path / "captioning.json").read_text())
    template = next(r for r in rows if r["name"].startswith("template"))
    assert template["precision"] == 1.0 and 0 < template["recall"] < 1


def test_captioning_benchmark_trains_its_no_attributes_twin_once(checkpoint, tmp_path):
    """With no --no-attributes-checkpoint, the benchmark trains the twin in a fresh work
    directory, and a second run reuses the finished one instead of training again."""
    from fiq_gym.benchmarks.captioning import _no_attributes_checkpoint

    args = json.loads((checkpoint / "training_args.json").read_text())
    args = {k: v for k, v in args.items() if k != "threads"}
    twin = _no_attributes_checkpoint(args, tmp_path / "work", threads=1)
    assert json.loads((twin / "config.json").read_text())["use_attributes"] is False
    weights = (twin / "model.safetensors").read_bytes()
    assert _no_attributes_checkpoint(args, tmp_path / "work", threads=1) == twin
    assert (twin / "model.safetensors").read_bytes() == weights
