"""The CleanRL-style recurrent reference agent: it runs on the public API, logs its curve,
and its evaluation wrapper restarts its memory for every new dialog."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import torch

from fiq_gym.agents.recurrent_reinforce import Args, RecurrentPolicy, RecurrentQueryAgent, train
from fiq_gym.checkpoint import PolicyConfig
from fiq_gym.errors import FallbackWarning


def test_trains_a_few_updates_and_writes_its_curve(small_catalog_path, tmp_path):
    args = Args(
        catalog=str(small_catalog_path),
        num_envs=16,
        updates=4,
        minutes=5.0,
        eval_every_seconds=1e9,  # one evaluation at the start, one at the end
        eval_episodes=20,
        out=str(tmp_path / "run"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        _policy, curve = train(args, progress=False)
    assert [p["update"] for p in curve] == [0, 4]
    assert all(0.0 <= p["R@10"] <= 1.0 for p in curve)
    with open(tmp_path / "run" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
    assert [int(row["env_steps"]) for row in rows] == [0, 4 * 16 * 5]  # updates x dialogs x turns
    assert any((tmp_path / "run" / "tb").iterdir()), "TensorBoard scalars"


def test_agent_clears_memory_where_a_new_dialog_starts():
    policy = RecurrentPolicy(
        PolicyConfig(vocab_size=10, feature_dim=3, attribute_dim=2, embed_dim=4, hidden=8)
    )
    agent = RecurrentQueryAgent(policy)
    obs = {
        "caption": np.array([[2, 3, 0], [4, 0, 0]]),
        "shown_features": np.zeros((2, 3), np.float32),
        "shown_attributes": np.zeros((2, 2), np.float32),
        "turn": np.array([[0], [0]]),
    }
    agent.reset(obs, {}, np.ones(2, dtype=bool))
    first = agent.act(obs, {})
    agent.act({**obs, "turn": np.array([[1], [1]])}, {})  # memory now differs from a fresh start
    again = agent.act(obs, {})  # turn 0 in both rows: new dialogs
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert first.shape == (2, 3) and first.dtype == np.float32
    assert torch.all(agent.hidden.abs() > 0)
