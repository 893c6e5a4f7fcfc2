"""The captioner's fast decoding gives bit for bit what the module-based decoding gave.

``RelativeCaptionerModel.generate`` runs a plain-tensor stepper (``_Stepper``) and index-based
cache compaction instead of the layers' modules and boolean masks (issue 22, speed). Published
benchmark numbers use this shopper, so its captions must not change: the reference below is
the decoding loop as it was before (greedy, sampling and beam search over the modules), and
every strategy is compared with it over many random pairs, seeds and settings, on the shipped
checkpoint and on small random models of other shapes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.users.base import CaptionBatch
from fiq_gym.users.transformer import RelativeCaptionerConfig, RelativeCaptionerModel
from fiq_gym.users.transformer.modeling_relative_captioner import COMPACT_FRACTION, _Stepper
from fiq_gym.users.transformer.user import DEFAULT_CHECKPOINT, load_captioner

# --- the reference: the decoding loop before the fast path, verbatim but for names ----------


def _ref_keep_rows(cache, keep, filled):
    k, v, cross_k, cross_v = cache
    n = int(keep.sum())
    new_k, new_v = k.new_empty((n, *k.shape[1:])), v.new_empty((n, *v.shape[1:]))
    new_k[:, :, :filled] = k[keep, :, :filled]
    new_v[:, :, :filled] = v[keep, :, :filled]
    return new_k, new_v, cross_k[keep], cross_v[keep]


def _ref_sample(logits, u, temperature, top_k, top_p):
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    if top_k > 0:
        sorted_p[:, top_k:] = 0.0
    if top_p < 1.0:
        before = sorted_p.cumsum(dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    cdf = sorted_p.cumsum(dim=-1)
    target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    pick = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[1] - 1)
    return order.gather(1, pick).squeeze(1)


def _ref_decode(model, memory, length, strategy, uniforms, temperature, top_k, top_p):
    cfg = model.config
    b = memory.shape[0]
    out = torch.full((b, length), cfg.pad_token_id, dtype=torch.long)
    tokens = torch.full((b,), cfg.bos_token_id, dtype=torch.long)
    live = torch.arange(b)
    ended = torch.zeros(b, dtype=torch.bool)
    caches = model._start(memory, length)
    banned = model._banned()
    for t in range(length):
        logits = model._step(tokens, t, caches)
        logits[:, banned] = -torch.inf
        if strategy == "greedy":
            tokens = logits.argmax(dim=-1)
        else:
            tokens = _ref_sample(logits, uniforms[live, t], temperature, top_k, top_p)
        tokens = tokens.masked_fill(ended, cfg.pad_token_id)
        out[live, t] = tokens
        ended |= tokens == cfg.eos_token_id
        n_ended = int(ended.sum())
        if n_ended == len(live):
            break
        if n_ended >= COMPACT_FRACTION * len(live):
            keep = ~ended
            live, tokens, ended = live[keep], tokens[keep], ended[keep]
            caches = [_ref_keep_rows(cache, keep, t + 1) for cache in caches]
    return out


def _ref_beam_search(model, memory, length, k, alpha):
    cfg = model.config
    b = memory.shape[0]
    memory = memory.repeat_interleave(k, dim=0)
    caches = model._start(memory, length)
    v = cfg.vocab_size
    banned = model._banned()
    eos, pad = cfg.eos_token_id, cfg.pad_token_id
    seqs = torch.full((b * k, length), pad, dtype=torch.long)
    scores = torch.full((b, k), -torch.inf)
    scores[:, 0] = 0.0
    pool_scores = torch.full((b, k), -torch.inf)
    pool_seqs = torch.full((b, k, length), pad, dtype=torch.long)
    tokens = torch.full((b * k,), cfg.bos_token_id, dtype=torch.long)
    base = (torch.arange(b) * k)[:, None]
    done = torch.zeros(b, dtype=torch.bool)
    for t in range(length):
        logits = model._step(tokens, t, caches).float()
        logits[:, banned] = -torch.inf
        logp = torch.log_softmax(logits, dim=-1)
        cand = (scores.reshape(-1, 1) + logp).reshape(b, k * v)
        top_scores, top_idx = cand.topk(2 * k, dim=1)
        beam, word = top_idx // v, top_idx % v
        src = (base + beam).reshape(-1)
        ended = (word == eos) & torch.isfinite(top_scores) & ~done[:, None]
        norm = (top_scores / float(t + 1) ** alpha).masked_fill(~ended, -torch.inf)
        ended_seqs = seqs[src].reshape(b, 2 * k, length).clone()
        ended_seqs[:, :, t] = eos
        all_scores = torch.cat([pool_scores, norm], dim=1)
        all_seqs = torch.cat([pool_seqs, ended_seqs], dim=1)
        pool_scores, keep = all_scores.topk(k, dim=1)
        pool_seqs = all_seqs.gather(1, keep[:, :, None].expand(-1, -1, length))
        live_scores = top_scores.masked_fill(word == eos, -torch.inf)
        live_scores, pick = live_scores.topk(k, dim=1)
        chosen = src.reshape(b, 2 * k).gather(1, pick).reshape(-1)
        tokens = word.gather(1, pick).reshape(-1)
        seqs = seqs[chosen]
        seqs[:, t] = tokens
        for cache in caches:
            cache[0].copy_(cache[0][chosen])
            cache[1].copy_(cache[1][chosen])
        scores = live_scores
        bound = scores.max(dim=1).values / float(length) ** alpha
        done |= torch.isfinite(pool_scores[:, -1]) & (bound <= pool_scores[:, -1])
        if bool(done.all()):
            break
    cut = (scores / float(length) ** alpha).masked_fill(done[:, None], -torch.inf)
    all_scores = torch.cat([pool_scores, cut], dim=1)
    all_seqs = torch.cat([pool_seqs, seqs.reshape(b, k, length)], dim=1)
    best = all_scores.argmax(dim=1)
    return all_seqs[torch.arange(b), best]


@torch.inference_mode()
def _reference_generate(model, inputs, strategy, length=None, uniforms=None, **kw):
    length = length or model.config.max_caption_length
    memory = model.encode(**inputs)
    if strategy == "beam":
        return _ref_beam_search(
            model, memory, length, kw.get("num_beams", 4), float(kw.get("length_penalty", 1.0))
        )
    return _ref_decode(
        model,
        memory,
        length,
        strategy,
        uniforms,
        float(kw.get("temperature", 1.0)),
        int(kw.get("top_k", 0)),
        float(kw.get("top_p", 1.0)),
    )


# --- models and inputs ------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread, as the shopper decodes (and much faster on a busy machine)."""
    from fiq_gym.utils.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shipped():
    model, _ = load_captioner(DEFAULT_CHECKPOINT)
    return model


def _random_model(seed: int, layers: int, heads: int, d: int, use_attributes: bool) -> RelativeCaptionerModel:
    torch.manual_seed(seed)
    config = RelativeCaptionerConfig(
        vocab_size=23,
        feature_dim=7,
        attribute_type_names=["a", "b"],
        attribute_group_sizes=[2, 3],
        attribute_names=["a:x", "a:y", "b:x", "b:y", "b:z"],
        use_attributes=use_attributes,
        d_model=d,
        num_heads=heads,
        ffn_dim=2 * d,
        num_decoder_layers=layers,
        num_encoder_layers=1,
        max_caption_length=9,
    )
    model = RelativeCaptionerModel(config).eval()
    with torch.no_grad():  # sharper distributions than the 0.02-std initialisation gives
        model.embed_tokens.weight.mul_(15)
    return model


def _inputs(model: RelativeCaptionerModel, b: int, seed: int) -> dict[str, torch.Tensor]:
    """Random unit-norm features and per-group attribute distributions, like the catalog's."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    target = torch.nn.functional.normalize(torch.randn(b, cfg.feature_dim, generator=g), dim=1)
    shown = torch.nn.functional.normalize(torch.randn(b, cfg.feature_dim, generator=g), dim=1)
    x = {"target_features": target, "shown_features": shown}
    if cfg.use_attributes:
        for key in ("target_attributes", "shown_attributes"):
            parts = [
                torch.softmax(3 * torch.randn(b, n, generator=g), dim=1) for n in cfg.attribute_group_sizes
            ]
            x[key] = torch.cat(parts, dim=1)
    return x


class _Recording:
    """Wraps a stepper and keeps every step's logits (a copy, before banning and sampling)."""

    def __init__(self, stepper) -> None:
        self.stepper, self.logits = stepper, []

    def _step(self, tokens, t, caches):
        logits = self.stepper._step(tokens, t, caches)
        self.logits.append(logits.clone())
        return logits


def _assert_same(model, x, strategy, length=None, uniforms=None, **kw):
    """Same ids, and bit for bit the same logits at every step of the decoding (a last-bit
    difference seldom changes a word, so the ids alone would be a weak check)."""
    fast = _Recording(model._stepper())
    ref = _Recording(SimpleNamespace(_step=model._step))  # the modules' step, bound before patching
    model._stepper = lambda: fast  # instance attribute, removed below
    try:
        got = model.generate(**x, strategy=strategy, max_new_tokens=length, uniforms=uniforms, **kw)
    finally:
        del model._stepper
    model._step = ref._step
    try:
        want = _reference_generate(model, x, strategy, length, uniforms, **kw)
    finally:
        del model._step
    assert got.dtype == want.dtype and torch.equal(got, want), (strategy, kw)
    assert len(fast.logits) == len(ref.logits) > 0
    for a, b in zip(fast.logits, ref.logits, strict=True):
        assert a.shape == b.shape and torch.equal(a, b), (strategy, kw)
    return got


# --- the stepper alone: bit-identical logits and caches ---------------------------------------


@pytest.mark.parametrize("case", [(0, 1, 2, 16, True), (1, 2, 4, 32, False), (2, 3, 1, 8, True)])
def test_stepper_logits_and_caches_equal_the_modules(case):
    model = _random_model(*case)
    x = _inputs(model, 11, seed=case[0])
    with torch.inference_mode():
        memory = model.encode(**x)
        ref_caches, fast_caches = model._start(memory, 9), model._start(memory, 9)
        stepper = _Stepper(model)
        tokens = torch.full((11,), model.config.bos_token_id)
        g = torch.Generator().manual_seed(case[0])
        for t in range(9):
            want = model._step(tokens, t, ref_caches)
            got = stepper._step(tokens, t, fast_caches)
            assert torch.equal(got, want)
            for a, b in zip(ref_caches, fast_caches, strict=True):
                assert torch.equal(a[0][:, :, : t + 1], b[0][:, :, : t + 1])
                assert torch.equal(a[1][:, :, : t + 1], b[1][:, :, : t + 1])
            tokens = torch.randint(4, model.config.vocab_size, (11,), generator=g)


def test_stepper_logits_equal_the_modules_on_the_shipped_checkpoint(shipped):
    x = _inputs(shipped, 64, seed=5)
    with torch.inference_mode():
        memory = shipped.encode(**x)
        ref_caches, fast_caches = shipped._start(memory, 32), shipped._start(memory, 32)
        stepper = _Stepper(shipped)
        tokens = torch.full((64,), shipped.config.bos_token_id)
        for t in range(32):
            want = shipped._step(tokens, t, ref_caches)
            assert torch.equal(stepper._step(tokens, t, fast_caches), want)
            tokens = want.argmax(dim=-1)


# --- whole decoding: every strategy, many pairs and seeds --------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 17, 64, 200])
def test_shipped_checkpoint_greedy_and_beam_equal_the_reference(shipped, batch):
    for seed in range(3):
        x = _inputs(shipped, batch, seed=100 * batch + seed)
        _assert_same(shipped, x, "greedy")
        _assert_same(shipped, x, "greedy", length=7)
    x = _inputs(shipped, min(batch, 24), seed=batch)
    _assert_same(shipped, x, "beam", num_beams=4, length_penalty=1.0)
    _assert_same(shipped, x, "beam", num_beams=2, length_penalty=0.0, length=12)
    _assert_same(shipped, x, "beam", num_beams=1)


SAMPLING = [
    dict(temperature=1.0, top_k=0, top_p=0.95),  # the shopper's default
    dict(temperature=1.0, top_k=0, top_p=1.0),
    dict(temperature=0.7, top_k=5, top_p=0.9),
    dict(temperature=1.5, top_k=0, top_p=0.5),
    dict(temperature=1.0, top_k=1, top_p=1.0),
]


@pytest.mark.parametrize("sampling", SAMPLING)
def test_shipped_checkpoint_sampling_equals_the_reference(shipped, sampling):
    for seed in range(12):
        b = [1, 2, 5, 31, 64, 150][seed % 6]
        x = _inputs(shipped, b, seed=1000 + seed)
        u = torch.from_numpy(np.random.default_rng(seed).random((b, 32)))
        ids = _assert_same(shipped, x, "sample", uniforms=u, **sampling)
        assert (ids[:, 0] != shipped.config.pad_token_id).all()
    # a shorter limit, uniforms of that width
    x = _inputs(shipped, 40, seed=7)
    u = torch.from_numpy(np.random.default_rng(7).random((40, 10)))
    _assert_same(shipped, x, "sample", length=10, uniforms=u, **sampling)


@pytest.mark.parametrize(
    "case", [(0, 1, 2, 16, True), (1, 2, 4, 32, False), (2, 3, 1, 8, True), (3, 2, 2, 12, True)]
)
def test_random_models_equal_the_reference_for_every_strategy(case):
    model = _random_model(*case)
    for seed in range(6):
        b = [1, 4, 9, 33, 64, 100][seed]
        x = _inputs(model, b, seed=seed)
        _assert_same(model, x, "greedy")
        u = torch.from_numpy(np.random.default_rng(seed).random((b, 9)))
        for sampling in SAMPLING:
            _assert_same(model, x, "sample", uniforms=u, **sampling)
        _assert_same(model, x, "beam", num_beams=3, length_penalty=1.0)
        _assert_same(model, x, "beam", num_beams=5, length_penalty=0.0, length=5)


def test_training_mode_decodes_through_the_modules():
    """In training mode (attention dropout on) decoding uses the modules, as before."""
    model = _random_model(0, 1, 2, 16, True)
    x = _inputs(model, 5, seed=0)
    assert isinstance(model._stepper(), _Stepper)
    model.train()
    try:
        assert model._stepper() is model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            got = model.generate(**x, strategy="greedy")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            want = _reference_generate(model, x, "greedy")
        assert torch.equal(got, want)
    finally:
        model.eval()


# --- observation ids without the text round trip -----------------------------------------------


def _shipped_tokenizer():
    return load_captioner(DEFAULT_CHECKPOINT)[1]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_word_ids_equal_encoding_the_decoded_text(data):
    """``word_ids`` gives what ``encode_batch(decode_batch(rows))`` gives, for any rows: words,
    punctuation, ``<eos>`` anywhere, other special tokens (skipped by decode) anywhere."""
    tok = _TOKENIZER
    assert tok.words_round_trip
    v = tok.vocab_size
    width = data.draw(st.integers(1, 12))
    rows = data.draw(
        st.lists(
            st.lists(
                st.one_of(st.integers(0, v - 1), st.sampled_from(_PUNCTUATION)),
                min_size=width,
                max_size=width,
            ),
            min_size=1,
            max_size=6,
        )
    )
    rows = np.array(rows, dtype=np.int64)
    ids, lengths = tok.word_ids(rows)
    for max_length in (1, 5, width, 40):
        want_ids, want_lengths = tok.encode_batch(tok.decode_batch(rows.tolist()), max_length)
        batch = CaptionBatch(tok.decode_batch(rows.tolist()), [()] * len(rows), ids, lengths, tok)
        got_ids, got_lengths = batch.encode(tok, max_length)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_lengths, want_lengths)
        assert got_ids.dtype == want_ids.dtype and got_lengths.dtype == want_lengths.dtype


_TOKENIZER = _shipped_tokenizer()
_PUNCTUATION = [i for i, w in enumerate(_TOKENIZER.words) if not w.isalnum()]


def test_word_ids_are_used_only_for_their_own_tokenizer_and_refused_when_words_do_not_round_trip():
    from fiq_gym.users.transformer import CaptionerTokenizer, build_caption_tokenizer

    tok = _TOKENIZER
    rows = np.array([[5, 6, 2, 0], [7, 8, 9, 10]])
    ids, lengths = tok.word_ids(rows)
    texts = tok.decode_batch(rows.tolist())
    other = CaptionerTokenizer(build_caption_tokenizer(["a b c"], tok.words[4:]))
    batch = CaptionBatch(texts, [(), ()], ids + 1, lengths, tok)  # wrong ids: only read for tok
    np.testing.assert_array_equal(batch.encode(other, 6)[0], other.encode_batch(texts, 6)[0])
    assert not np.array_equal(batch.encode(tok, 6)[0], tok.encode_batch(texts, 6)[0])
    with pytest.raises(ValueError, match="max_length"):
        batch.encode(tok, 0)
    # a vocabulary word that splits into two is not one token: no shortcut
    odd = CaptionerTokenizer(build_caption_tokenizer(["is red"]))
    assert odd.words_round_trip
    odd._words_round_trip, odd._words[4] = None, "two words"
    assert not odd.words_round_trip


@pytest.mark.parametrize("decoding", ["sample", "greedy"])
def test_env_caption_ids_equal_tokenizing_the_caption_text(small_catalog_path, tiny_checkpoint, decoding):
    """The vector env's caption observations (taken from the generated ids) equal its
    tokenizer's ids of the caption texts, as the env computed them before."""
    from fiq_gym.envs import FashionIQVectorEnv

    checkpoint = tiny_checkpoint
    venv = FashionIQVectorEnv(
        6,
        catalog=small_catalog_path,
        user="transformer",
        user_kwargs={"checkpoint": str(checkpoint), "decoding": decoding},
        max_turns=3,
        caption_length=8,
    )
    assert venv.user.tokenizer.words_round_trip and venv.tokenizer is venv.user.tokenizer
    obs, info = venv.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        ids, lengths = venv.tokenizer.encode_batch(list(info["caption_text"]), 8)
        np.testing.assert_array_equal(obs["caption"], ids)
        np.testing.assert_array_equal(obs["caption_length"][:, 0], lengths)
        obs, _, _, _, info = venv.step(rng.integers(0, venv.num_items, size=6))
    venv.close()


@pytest.fixture(scope="module")
def tiny_checkpoint(small_catalog_path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny captioner trained for one epoch on the small catalog (once per module), under
    pytest's temporary folder so no run leaves it behind."""
    from fiq_gym.users.transformer import TrainArgs, train_captioner

    out = str(tmp_path_factory.mktemp("captioner") / "model")
    args = dict(train_pairs=200, val_pairs=20, captions_per_pair=1, d_model=16, num_heads=2, ffn_dim=32)
    args |= dict(num_decoder_layers=1, epochs=1, batch_size=64, warmup_steps=2, bleu_pairs=8)
    train_captioner(TrainArgs(catalog=str(small_catalog_path), out=out, threads=1, progress=False, **args))
    return out


# --- numpy BLAS on the shopper's thread count during env steps ---------------------------------


def _blas_thread_counts() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_products_and_ranks_agree_with_one_blas_thread_up_to_rounding():
    """What makes the BLAS limit safe for published numbers. On some CPUs float32 products do
    not depend on BLAS's thread count at all (the AVX-512 AMD EPYC that published the tables);
    on others they do in the last bits (OpenBLAS's Haswell kernels on an AVX2 AMD EPYC: from
    64 rows on, 3e-7 apart). Either way every product stays within the proven float32 error of
    a D-term dot product of unit vectors (D * 2**-24), so a rank can move only across items
    whose exact score lies that close to the target's: a tie in all but the last bits."""
    from fiq_gym.ranking import DenseRanker
    from fiq_gym.utils.threads import blas_threads

    rng = np.random.default_rng(0)
    d = 60
    bound = d * 2.0**-24  # |fl(q . f) - q . f| <= gamma_D |q| |f|, unit vectors (Higham 3.1)
    features = rng.standard_normal((5000, d)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    exact_scores = features.astype(np.float64) @ features.astype(np.float64).T
    ranker = DenseRanker(features)
    for b in (1, 2, 7, 64, 65, 256):
        shown, targets = rng.integers(0, 5000, b), rng.integers(0, 5000, b)
        history = np.full((b, 3), -1)
        queries = features[rng.integers(0, 5000, b)] + 0.01 * rng.standard_normal((b, d)).astype(np.float32)
        default = (
            features[shown] @ features.T,
            ranker.similar_ranks(shown, targets),
            ranker.query_ranks(queries, targets, history),
        )
        with blas_threads(1):
            assert all(n == 1 for n in _blas_thread_counts())
            one = (
                features[shown] @ features.T,
                ranker.similar_ranks(shown, targets),
                ranker.query_ranks(queries, targets, history),
            )
        np.testing.assert_allclose(default[0], one[0], rtol=0, atol=2 * bound)
        np.testing.assert_allclose(default[0], exact_scores[shown], rtol=0, atol=bound)
        # similar ranks: the target's rank among items by similarity to the shown one
        exact = exact_scores[shown]
        near_tie = np.abs(exact - exact[np.arange(b), targets][:, None]) <= 2 * bound
        np.testing.assert_array_less(np.abs(default[1] - one[1]), near_tie.sum(axis=1) + 1)
        query_exact = queries.astype(np.float64) @ features.astype(np.float64).T
        scale = 2 * d * 2.0**-24 * np.linalg.norm(queries, axis=1, keepdims=True)
        near_tie = np.abs(query_exact - query_exact[np.arange(b), targets][:, None]) <= scale
        np.testing.assert_array_less(np.abs(default[2][0] - one[2][0]), near_tie.sum(axis=1) + 1)
        np.testing.assert_array_equal(default[2][1], one[2][1])


def test_env_steps_run_blas_on_the_transformer_shoppers_threads(small_catalog_path, tiny_checkpoint):
    from fiq_gym.envs import FashionIQEnv

    before = _blas_thread_counts()
    env = FashionIQEnv(
        catalog=small_catalog_path,
        user="transformer",
        user_kwargs={"checkpoint": tiny_checkpoint},
    )
    assert env.unwrapped.user.blas_threads == 1
    seen: list[list[int]] = []
    ranker = env.unwrapped._dialog.ranker
    original = ranker.similar_ranks
    ranker.similar_ranks = lambda *a: (seen.append(_blas_thread_counts()), original(*a))[1]
    env.reset(seed=0)
    env.step(3)
    assert seen and all(counts and all(n == 1 for n in counts) for counts in seen)
    assert _blas_thread_counts() == before  # restored after each step
    env.close()


# --- FLOPs per caption ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", [(0, 1, 2, 16, True), (1, 2, 4, 32, False)])
def test_caption_flops_equal_torchs_flop_counter_on_one_caption(case, shipped):
    """``caption_flops`` counts what torch's FLOP counter counts (linear layers and attention
    products) when one caption is generated, whatever its length."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop

    from fiq_gym.users.transformer.modeling_relative_captioner import caption_flops

    def flash_cpu(query, key, value, *args, **kwargs):  # counted as torch counts GPU flash attention
        return sdpa_flop(query, key, value)

    cpu_flash = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: flash_cpu}
    for model in (_random_model(*case), shipped):
        for seed in range(3):
            x = _inputs(model, 1, seed=seed)
            with FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
                ids = model.generate(**x, strategy="greedy")
            row = ids[0].tolist()
            n = row.index(2) + 1 if 2 in row else len(row)
            assert caption_flops(model.config, [n]) == counter.get_total_flops()
    assert (
        caption_flops(shipped.config, [3, 5])
        == (caption_flops(shipped.config, [3]) + caption_flops(shipped.config, [5])) / 2
    )
