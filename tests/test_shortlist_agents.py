"""Agents on the shortlist: the baselines, the equivariant extractor, SB3 PPO and DQN."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fiq_gym  # noqa: F401
from fiq_gym.agents.loading import load_agent
from fiq_gym.agents.shortlist import (
    ShortlistActorCriticPolicy,
    ShortlistExtractor,
    ShortlistGreedyAgent,
    ShortlistRandomAgent,
)
from fiq_gym.envs.evaluation import evaluate

K = 8


def _envs(path, num_envs=16, **kwargs):
    return gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        catalog=path,
        action_mode="shortlist",
        shortlist_size=K,
        explore=0.5,
        **kwargs,
    )


def _final(result):
    return result.per_turn()[-1]


def test_baselines_run_through_the_evaluation_harness(featured_catalog_path):
    envs = _envs(featured_catalog_path)
    greedy = _final(evaluate(ShortlistGreedyAgent(), envs, episodes=64, seed=1, name="shortlist-greedy"))
    rand = _final(evaluate(ShortlistRandomAgent(0), envs, episodes=64, seed=1, name="shortlist-random"))
    # The shipped first stage's best candidate beats a random one by far on this catalog.
    assert greedy["success_rate"] > rand["success_rate"] + 0.2
    envs.close()


def test_greedy_picks_the_best_valid_slot():
    obs = {"candidate_scores": np.array([[0.1, 0.9, 0.5]]), "candidate_mask": np.array([[1, 0, 1]])}
    assert ShortlistGreedyAgent().act(obs, {}).tolist() == [2]
    picks = {int(ShortlistRandomAgent(s).act(obs, {})[0]) for s in range(30)}
    assert picks == {0, 2}


@settings(max_examples=10, deadline=None)
@given(perm_seed=st.integers(0, 10**6))
def test_extractor_is_permutation_equivariant(featured_catalog_path, perm_seed):
    env = gym.make(
        "fiq_gym/FashionIQ-v3", catalog=featured_catalog_path, action_mode="shortlist", shortlist_size=K
    )
    space = env.observation_space
    obs, _ = env.reset(seed=perm_seed % 97)
    torch.manual_seed(0)
    extractor = ShortlistExtractor(space)
    perm = np.random.default_rng(perm_seed).permutation(K)
    d, a = env.unwrapped.gallery.feature_dim, env.unwrapped.gallery.side_info.shape[1]
    permuted = dict(obs)
    permuted["candidate_features"] = obs["candidate_features"].reshape(K, d)[perm].reshape(-1)
    permuted["candidate_attributes"] = obs["candidate_attributes"].reshape(K, a)[perm].reshape(-1)
    permuted["candidate_scores"] = obs["candidate_scores"][perm]
    permuted["candidate_mask"] = obs["candidate_mask"][perm]
    from stable_baselines3.common.preprocessing import preprocess_obs

    def run(o):
        t = {k: torch.as_tensor(v)[None] for k, v in o.items()}
        with torch.no_grad():
            return extractor(preprocess_obs(t, space))[0]

    base, moved = run(obs), run(permuted)
    torch.testing.assert_close(moved[:K], base[:K][perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moved[K:], base[K:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("gain", "agree"), [(0.0, (0.0, 0.5)), (20.0, (0.9, 1.0))])
def test_first_stage_gain_sets_where_the_policy_starts(featured_catalog_path, gain, agree):
    """An untrained PPO shortlist policy starts near the greedy first stage with a large initial
    gain, and not with the default 0 (fraction of turns where its pick equals greedy's)."""
    from stable_baselines3 import PPO

    from fiq_gym.agents.shortlist import SB3ShortlistAgent
    from fiq_gym.envs.sb3 import make_sb3_vec_env

    vec = make_sb3_vec_env(
        "fiq_gym/FashionIQ-v3",
        num_envs=16,
        catalog=featured_catalog_path,
        action_mode="shortlist",
        shortlist_size=K,
    )
    model = PPO(
        ShortlistActorCriticPolicy,
        vec,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"first_stage_gain": gain}},
    )
    assert model.policy.pi_features_extractor.first_stage_gain.item() == gain
    envs = _envs(featured_catalog_path)
    obs, info = envs.reset(seed=0)
    policy, greedy, same = SB3ShortlistAgent(model), ShortlistGreedyAgent(), []
    for _ in range(4):
        picks = policy.act(obs, info)
        same.extend(picks == greedy.act(obs, info))
        obs, _, _, _, info = envs.step(picks)
    assert agree[0] <= np.mean(same) <= agree[1]
    envs.close()
    vec.close()


def test_first_stage_gain_reaches_the_saved_checkpoint_and_is_refused_outside_the_shortlist(
    featured_catalog_path, tmp_path
):
    from fiq_gym.agents.ppo import Args, train

    args = Args(action_mode="shortlist", n_steps=8, batch_size=32, n_epochs=1, first_stage_gain=4.0)
    args.catalog, args.num_envs, args.timesteps = str(featured_catalog_path), 4, 32
    args.shortlist_size, args.eval_episodes, args.out = K, 4, str(tmp_path / "ppo")
    train(args, progress=False)
    loaded = load_agent(tmp_path / "ppo" / "checkpoint")
    envs = loaded.make_envs(2)
    gain = loaded.make_agent(envs).model.policy.pi_features_extractor.first_stage_gain
    envs.close()
    assert abs(gain.item() - 4.0) < 0.1  # one update of 32 steps moves it by about the learning rate
    query = Args(first_stage_gain=1.0, catalog=str(featured_catalog_path), out=str(tmp_path / "query"))
    with pytest.raises(ValueError, match="applies to the shortlist's first stage.*--action-mode shortlist"):
        train(query, progress=False)
    assert not (tmp_path / "query").exists()


def test_policies_refuse_other_action_modes(featured_catalog_path):
    env = gym.make("fiq_gym/FashionIQ-v3", catalog=featured_catalog_path)
    with pytest.raises(ValueError, match="needs action_mode='shortlist'"):
        ShortlistActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3)


@pytest.mark.parametrize("agent", ["ppo", "ppo-slate", "dqn"])
def test_trained_checkpoints_load_and_evaluate(agent, featured_catalog_path, tmp_path):
    mode = "shortlist_slate" if agent == "ppo-slate" else "shortlist"
    if agent.startswith("ppo"):
        from fiq_gym.agents.ppo import Args, train

        args = Args(action_mode=mode, n_steps=8, batch_size=32, n_epochs=1, slate_size=3)
    else:
        from fiq_gym.agents.dqn import Args, train

        args = Args(learning_starts=32, buffer_size=256)
    args.catalog, args.num_envs, args.timesteps = str(featured_catalog_path), 4, 64
    args.shortlist_size, args.eval_episodes, args.out = K, 8, str(tmp_path / agent)
    train(args, progress=False)
    loaded = load_agent(tmp_path / agent / "checkpoint")
    assert loaded.action_mode == mode and loaded.kind == agent.removesuffix("-slate")
    envs = loaded.make_envs(4)
    assert envs.unwrapped.config.shortlist_size == K
    if mode == "shortlist_slate":
        assert envs.unwrapped.config.slate_size == 3
        assert loaded.make_agent(envs).act(*envs.reset(seed=0)).shape == (4, 3)
    result = evaluate(loaded.make_agent(envs), envs, episodes=8, seed=0)
    assert result.ranks.shape == (8, 6)
    envs.close()


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_sb3_agents_learn_to_beat_random_in_the_shortlist(agent, featured_catalog_path, tmp_path):
    """A learning test with a fixed seed: after a short training on the 300-item catalog, the
    policy succeeds more often than a random candidate (at turn 5, same 256 dialogs)."""
    if agent == "ppo":
        from fiq_gym.agents.ppo import Args, train

        args = Args(action_mode="shortlist", n_steps=32, batch_size=256, learning_rate=1e-3, ent_coef=0.01)
    else:
        from fiq_gym.agents.dqn import Args, train

        args = Args(learning_starts=500, buffer_size=20_000)
    args.catalog, args.num_envs, args.timesteps, args.seed = str(featured_catalog_path), 16, 20_000, 0
    args.shortlist_size, args.explore, args.eval_episodes = K, 0.5, 256
    args.out = str(tmp_path / agent)
    _, trained = train(args, progress=False)
    envs = _envs(featured_catalog_path, num_envs=64)
    rand = evaluate(ShortlistRandomAgent(0), envs, episodes=256, seed=10_000, name="shortlist-random")
    print(agent, _final(trained), _final(rand))
    assert _final(trained)["success_rate"] > _final(rand)["success_rate"] + 0.15


def test_sealed_harness_gives_shortlist_agents_the_candidates(featured_catalog_path):
    seen = {}

    class Records(ShortlistGreedyAgent):
        def act(self, observation, info):
            seen.update(observation=set(observation), info=set(info))
            return super().act(observation, info)

    envs = _envs(featured_catalog_path, num_envs=8)
    sealed = evaluate(Records(), envs, episodes=16, seed=3)
    unsealed = evaluate(ShortlistGreedyAgent(), envs, episodes=16, seed=3, sealed=False)
    np.testing.assert_array_equal(sealed.ranks, unsealed.ranks)
    assert {"candidate_features", "candidate_scores", "candidate_mask"} <= seen["observation"]
    assert "candidates" in seen["info"] and not {"rank", "percentile"} & seen["info"]
    envs.close()


def test_cleanrl_ppo_runs_on_the_public_api(featured_catalog_path, tmp_path):
    from fiq_gym.agents.cleanrl_ppo_shortlist import Args, train

    args = Args(catalog=str(featured_catalog_path), shortlist_size=K, num_envs=4, num_steps=8)
    args.total_timesteps, args.eval_episodes, args.out = 64, 8, str(tmp_path / "cleanrl")
    _, result = train(args, progress=False)
    assert result.ranks.shape == (8, 6)
    checkpoint = tmp_path / "cleanrl" / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file() and any((tmp_path / "cleanrl" / "tb").iterdir())
    assert load_agent(checkpoint).kind == "cleanrl-ppo-shortlist"


@pytest.mark.slow
def test_cleanrl_ppo_learns_to_beat_random_in_the_shortlist(featured_catalog_path, tmp_path):
    from fiq_gym.agents.cleanrl_ppo_shortlist import Args, train

    args = Args(catalog=str(featured_catalog_path), shortlist_size=K, explore=0.5, learning_rate=1e-3)
    args.total_timesteps, args.eval_episodes, args.out = 20_000, 256, str(tmp_path / "cleanrl")
    _, trained = train(args)
    envs = _envs(featured_catalog_path, num_envs=64)
    rand = evaluate(ShortlistRandomAgent(0), envs, episodes=256, seed=10_000, name="shortlist-random")
    print("cleanrl", _final(trained), _final(rand))
    assert _final(trained)["success_rate"] > _final(rand)["success_rate"] + 0.15


def test_recurrent_ppo_builds_trains_and_is_evaluated_with_its_memory(featured_catalog_path):
    """sb3-contrib's RecurrentPPO on the shortlist with the project's extractor (SB3's default
    one-hots the captions and stops on numpy's sizes); SB3ShortlistAgent carries its LSTM state
    from turn to turn and clears it where a dialog starts."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from fiq_gym.agents.sb3_state import SB3Predictor
    from fiq_gym.agents.shortlist import SB3ShortlistAgent
    from fiq_gym.envs.sb3 import make_sb3_vec_env

    env = make_sb3_vec_env(
        "fiq_gym/FashionIQ-v3",
        num_envs=4,
        catalog=str(featured_catalog_path),
        action_mode="shortlist",
        shortlist_size=K,
        shortlist="random",
    )
    model = sb3_contrib.RecurrentPPO(
        "MultiInputLstmPolicy",
        env,
        n_steps=8,
        batch_size=32,
        seed=0,
        policy_kwargs={"features_extractor_class": ShortlistExtractor},
    )
    model.learn(32)
    envs = _envs(featured_catalog_path, num_envs=4, shortlist="random")
    obs, _ = envs.reset(seed=3)
    keys = model.observation_space.spaces
    first = {k: obs[k] for k in keys}
    obs, *_ = envs.step(SB3ShortlistAgent(model).act(obs, {}))
    second = {k: obs[k] for k in keys}
    envs.close()

    def state_after(*observations, reset_between=False):
        predictor = SB3Predictor(model)
        predictor.reset(np.ones(4, dtype=bool))
        for observation in observations:
            if reset_between:
                predictor.reset(np.ones(4, dtype=bool))
            predictor.predict(observation)
        return np.concatenate([np.asarray(s).ravel() for s in predictor.state])

    remembered = state_after(first, second)
    assert np.array_equal(remembered, state_after(first, second))  # deterministic
    assert not np.allclose(remembered, state_after(first, second, reset_between=True))  # memory is carried
    assert np.allclose(state_after(second), state_after(first, second, reset_between=True))  # reset clears it
    result = evaluate(
        SB3ShortlistAgent(model),
        "fiq_gym/FashionIQ-v3",
        8,
        catalog=str(featured_catalog_path),
        action_mode="shortlist",
        shortlist_size=K,
        shortlist="random",
    )
    assert result.turns == 5


def test_the_slate_policy_fills_positions_best_first_without_repeats():
    """Position j of a shortlist slate scores the candidates without the j best: the most
    likely slate is the K best candidates, distinct, and gradients reach every score."""
    import torch

    from fiq_gym.agents.shortlist import _EMPTY, _RankedSlateScores

    scores = torch.tensor([[0.1, 0.9, -0.3, 0.5, 0.7]], requires_grad=True)
    logits = _RankedSlateScores(m=5, k=3)(torch.cat([scores, torch.zeros(1, 4)], 1)).view(1, 3, 5)
    assert logits.argmax(-1).tolist() == [[1, 4, 3]]
    assert (logits[0, 2, [1, 4]] == _EMPTY).all() and logits[0, 0, 2] == scores[0, 2]
    logits.logsumexp(-1).sum().backward()
    assert (scores.grad != 0).all()
