"""The vector env's fast paths play exactly what the plain ones play (issue 38, item 5)."""

from __future__ import annotations

import numpy as np
import pytest

from fiq_gym.dialog_engine import DialogBatch
from fiq_gym.envs.vector import FashionIQVectorEnv
from fiq_gym.users.template import TemplateNoise, TemplateUser


def _play(path, monkeypatch: pytest.MonkeyPatch, batched: bool, **kwargs) -> tuple[list, int]:
    """Transitions of 8 sub-envs over 40 steps, and how many steps restarted some sub-envs
    while stepping the others."""
    if not batched:
        monkeypatch.setattr(DialogBatch, "batches_restarts", property(lambda self: False))
    envs = FashionIQVectorEnv(8, catalog=path, expose_target=True, **kwargs)
    out: list = [envs.reset(seed=5)]
    envs.action_space.seed(9)
    mixed = 0
    for t in range(40):
        ending = envs._autoreset.copy()
        mixed += bool(ending.any() and not ending.all())
        actions = envs.action_space.sample()
        k = t % 8  # one sub-env a step shows its target, so dialogs end at different turns
        target = out[-1][-1]["target"][k]
        if actions.ndim == 1:
            actions[k] = target
        else:
            actions[k, target] = 1.0
        out.append(envs.step(actions))
    monkeypatch.undo()
    return out, mixed


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        x, y = np.asarray(a), np.asarray(b)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tolist() == y.tolist()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_turns": 3},
        {"max_turns": 2, "user_kwargs": {"noise": TemplateNoise(omit=0.3, wrong_color=0.3, drop_word=0.2)}},
        {"max_turns": 3, "action_mode": "scores"},
    ],
)
def test_restarts_captioned_with_steps_play_as_two_calls(small_catalog_path, monkeypatch, kwargs) -> None:
    # Sub-envs restarted in a step are captioned in one shopper call with those stepped: the
    # same draws, ranks, observations and infos as a reset call and a step call.
    fast, mixed = _play(small_catalog_path, monkeypatch, True, **kwargs)
    plain, _ = _play(small_catalog_path, monkeypatch, False, **kwargs)
    assert mixed > 0
    _same(fast, plain)


def test_template_token_ids_are_the_tokenizers(small_catalog) -> None:
    # The template shopper's own token ids (from its phrases' cached ids) are what its
    # tokenizer gives the caption texts.
    rng = np.random.default_rng(0)
    for kwargs in ({}, {"max_differences": 5}, {"noise": TemplateNoise(omit=0.4, wrong_color=0.5)}):
        user = TemplateUser(small_catalog, **kwargs)
        n = len(small_catalog)
        targets, shown = rng.integers(0, n, 400), rng.integers(0, n, 400)
        shown[:20] = targets[:20]
        batch = user.describe(targets, shown, rng)
        assert batch.word_ids is not None
        for length in (32, 4):
            ids, lengths = batch.encode(user.tokenizer, length)
            want_ids, want_lengths = user.tokenizer.encode_batch(batch.texts, length)
            _same((ids, lengths), (want_ids, want_lengths))
