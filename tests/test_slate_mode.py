"""The ``slate`` action mode: K items a turn, the shopper picks one and captions it."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from fiq_gym.action_modes import CANDIDATE_KEYS, SLATE_KEYS, SlateMode
from fiq_gym.agents.random_agent import RandomSlateAgent
from fiq_gym.envs.inner import inner_env, step_outcome
from fiq_gym.errors import FallbackWarning

ENV_ID = "fiq_gym/FashionIQ-v3"


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


def _env(path, **kwargs):
    return gym.make(ENV_ID, catalog=str(path), **{"action_mode": "slate", **kwargs})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=4, max_size=4), min_size=1, max_size=5))
def test_first_positions_mark_each_item_once_at_its_earliest_position(rows):
    slates = np.array(rows)
    first = SlateMode.first_positions(slates)
    for slate, mask in zip(slates, first, strict=True):
        want = [slate[i] not in slate[:i] for i in range(len(slate))]
        assert mask.tolist() == want


SHORTLIST_SLATE = {"action_mode": "shortlist_slate", "shortlist": "random", "shortlist_size": 8}


@pytest.mark.parametrize("mode", ["slate", "shortlist_slate"])
def test_slate_envs_pass_both_checkers_and_document_their_spaces(small_catalog_path, quiet, mode):
    kwargs = SHORTLIST_SLATE if mode == "shortlist_slate" else {}
    env = _env(small_catalog_path, slate_size=3, **kwargs)
    n = 8 if mode == "shortlist_slate" else inner_env(env).num_items
    assert env.action_space == gym.spaces.MultiDiscrete(np.full(3, n))
    assert set(SLATE_KEYS) <= set(env.observation_space.spaces)
    assert (mode == "shortlist_slate") == (set(CANDIDATE_KEYS) <= set(env.observation_space.spaces))
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    env.close()


def test_a_shortlist_slate_shows_candidates_and_never_proposes_a_shown_item_again(small_catalog_path, quiet):
    env = _env(small_catalog_path, slate_size=3, **SHORTLIST_SLATE)
    _, info = env.reset(seed=3)
    shown = {int(info["shown"])}
    for _ in range(4):
        assert not shown & set(info["candidates"].tolist())
        slots = np.array([2, 5, 2])  # a repeated slot counts once
        candidates = info["candidates"]
        _, _, terminated, _, info = env.step(slots)
        assert info["slate"].tolist() == [candidates[2], candidates[5], -1]
        assert info["shown"] == candidates[slots][info["slate_pick"]]
        shown |= {int(candidates[2]), int(candidates[5])}
        if terminated:
            break
    env.reset(seed=3)
    with pytest.raises(ValueError, match="candidate slot 8 is out of range"):
        env.step(np.array([0, 1, 8]))
    with pytest.raises(ValueError, match="slate_size must be from 2 to shortlist_size=8"):
        _env(small_catalog_path, slate_size=9, **SHORTLIST_SLATE)
    env.close()


def test_the_shopper_picks_by_its_rule_and_captions_the_pick(small_catalog_path, quiet):
    env = _env(small_catalog_path, slate_size=4)
    inner = inner_env(env)
    engine = inner._dialog  # white-box: the target, to check the rules against the truth
    obs, info = env.reset(seed=5)
    assert info["slate"].tolist() == [info["shown"], -1, -1, -1] and info["slate_pick"] == 0
    assert obs["slate_mask"].tolist() == [1, 0, 0, 0]
    target = int(engine.target[0])
    rows = inner.gallery.rows
    others = [i for i in range(inner.num_items) if i != target and i != info["shown"]][:3]
    slate = np.array([others[0], others[1], others[0], others[2]])  # a repeat at position 2
    want_pick = int(inner.user.pick(rows[[target]], rows[slate][None])[0])
    obs, reward, terminated, _, info = env.step(slate)
    assert info["slate_pick"] == want_pick != 2 and info["shown"] == slate[want_pick]
    assert info["slate"].tolist() == [others[0], others[1], -1, others[2]]
    assert obs["slate_mask"].tolist() == [1, 1, 0, 1] and obs["slate_pick"][0] == want_pick
    # the caption, the shown features and the rank are about the picked item
    d = inner.gallery.features.shape[1]
    np.testing.assert_array_equal(obs["shown_features"], inner.gallery.features[info["shown"]])
    np.testing.assert_array_equal(
        obs["history_features"].reshape(-1, d)[1], inner.gallery.features[info["shown"]]
    )
    assert info["rank"] == engine.ranker.similar_ranks(np.array([info["shown"]]), np.array([target]))[0]
    assert not terminated and not info["is_success"]
    # the target anywhere in the slate: found, the dialog won and the turns left paid
    obs, reward, terminated, _, info = env.step(np.array([others[1], others[2], target, target]))
    assert info["is_success"] and terminated and info["shown"] == target and info["slate_pick"] == 2
    assert info["rank"] == 0 and reward == pytest.approx(1.0 + (inner.config.max_turns - 2))
    env.close()


def test_actions_are_checked_with_a_message_that_names_the_space(small_catalog_path, quiet):
    env = _env(small_catalog_path, slate_size=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"integer slate of item indices of shape \(3,\)"):
        env.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="out of range"):
        env.step(np.array([1, 2, 10_000]))
    with pytest.raises(ValueError, match="slate_size must be"):
        _env(small_catalog_path, slate_size=1)
    with pytest.raises(ValueError, match="slate_size must be from 2"):
        _env(small_catalog_path, slate_size=inner_env(env).num_items)
    env.close()


@pytest.mark.parametrize("mode", ["slate", "shortlist_slate"])
def test_vector_env_equals_single_envs_and_a_pickle_resumes(small_catalog_path, quiet, mode):
    seeds = [3, 4, 5]
    kwargs = SHORTLIST_SLATE if mode == "shortlist_slate" else {"action_mode": "slate"}
    venv = gym.make_vec(
        ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", catalog=str(small_catalog_path), **kwargs
    )
    singles = [gym.make(ENV_ID, catalog=str(small_catalog_path), **kwargs) for _ in seeds]
    vobs, vinfo = venv.reset(seed=seeds)
    for k, (env, s) in enumerate(zip(singles, seeds, strict=True)):
        obs, info = env.reset(seed=s)
        for key in obs:
            np.testing.assert_array_equal(vobs[key][k], obs[key])
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.integers(singles[0].action_space.nvec[0], size=(3, 4))
        vobs, vreward, vterm, _, vinfo = venv.step(actions)
        for k, env in enumerate(singles):
            obs, reward, terminated, _, info = env.step(actions[k])
            for key in obs:
                np.testing.assert_array_equal(vobs[key][k], obs[key])
            assert (
                vreward[k] == pytest.approx(reward)
                and vterm[k] == terminated
                and vinfo["slate_pick"][k] == info["slate_pick"]
            )
            if terminated:
                env.reset(seed=seeds[k])
        if vterm.any():
            break
    env = singles[0].unwrapped
    env.reset(seed=9)
    env.step(np.array([0, 1, 2, 3]))
    copy = pickle.loads(pickle.dumps(env))
    a = np.array([4, 5, 6, 7])
    assert step_outcome(env, a) == step_outcome(copy, a)
    first, second = env.step(a), copy.step(a)
    for key in first[0]:
        np.testing.assert_array_equal(first[0][key], second[0][key])
    assert first[1:4] == second[1:4] and first[4]["slate"].tolist() == second[4]["slate"].tolist()
    venv.close()


def test_the_sealed_harness_and_sb3_run_the_slate_mode(small_catalog_path, quiet):
    from stable_baselines3 import PPO

    from fiq_gym.envs.evaluation import evaluate
    from fiq_gym.envs.sb3 import SB3VecEnvAdapter

    venv = gym.make_vec(
        ENV_ID,
        num_envs=4,
        vectorization_mode="vector_entry_point",
        catalog=str(small_catalog_path),
        action_mode="slate",
    )
    agent = RandomSlateAgent.for_env(venv, seed=0)
    result = evaluate(agent, venv, episodes=16, seed=0)
    assert result.ranks.shape == (16, inner_env(venv).config.max_turns + 1)
    # found exactly where the rank first reaches 0 after turn 0
    for e in range(16):
        zero = np.flatnonzero(result.ranks[e, 1:] == 0)
        assert result.success_turn[e] == (zero[0] + 1 if len(zero) else -1)
    model = PPO(
        "MultiInputPolicy", SB3VecEnvAdapter(inner_env(venv)), n_steps=8, batch_size=16, n_epochs=1, seed=0
    )
    model.learn(32)
    actions, _ = model.predict(venv.reset(seed=0)[0])
    assert actions.shape == (4, 4)
    venv.close()


def test_posterior_slates_read_the_picks_and_beat_random_slates(small_catalog_path, quiet):
    from fiq_gym.agents.slate_posterior import PosteriorSlateAgent, posterior_slate_agent
    from fiq_gym.envs.evaluation import evaluate

    venv = gym.make_vec(
        ENV_ID,
        num_envs=8,
        vectorization_mode="vector_entry_point",
        catalog=str(small_catalog_path),
        action_mode="slate",
        side_info="labels",
    )
    results = {}
    for name, agent in [
        ("random", RandomSlateAgent.for_env(venv, seed=0)),
        ("top", posterior_slate_agent(venv, "top", beliefs="labels")),
        ("partition", posterior_slate_agent(venv, "partition", beliefs="labels")),
    ]:
        results[name] = evaluate(agent, venv, episodes=48, seed=1, name=name)
    found = {k: float((r.success_turn > 0).mean()) for k, r in results.items()}
    # reading the captions and picks exactly finds nearly every target of a 300-item catalog
    assert found["top"] >= 0.9 and found["partition"] >= 0.9 and found["random"] < 0.5
    with pytest.raises(ValueError, match="action_mode='slate'"):
        posterior_slate_agent(gym.make(ENV_ID, catalog=str(small_catalog_path)), beliefs="labels")
    with pytest.raises(ValueError, match="policy must be one of"):
        PosteriorSlateAgent(None, [], None, 4, 5, policy="best")  # type: ignore[arg-type]
    venv.close()


def test_top_scores_slate_shows_the_best_items_no_slate_showed_before():
    from fiq_gym.agents.slate import TopScoresSlateAgent

    class FixedScores:
        def act(self, observation, info):
            return np.tile(np.array([0.5, 0.9, 0.9, 0.1, 0.7, 0.3]), (2, 1))

    agent = TopScoresSlateAgent(FixedScores(), slate_size=2)
    info = {"dialog_turn": np.array([0, 1]), "slate": np.array([[3, -1], [1, 4]])}
    actions = agent.act({}, info)
    # dialog 0: its reset item 3 excluded, 1 and 2 tie (lower index first); dialog 1: 1, 4 shown
    assert actions.tolist() == [[1, 2], [2, 0]]
    info = {"dialog_turn": np.array([1, 0]), "slate": np.array([[1, 2], [5, -1]])}
    assert agent.act({}, info).tolist() == [[4, 0], [1, 2]]  # dialog 1 is new: only 5 excluded


def test_the_slates_benchmark_trains_evaluates_and_writes_its_report(small_catalog_path, quiet, tmp_path):
    import json

    from fiq_gym.benchmarks.slates import main, supervised_rounds

    assert supervised_rounds(20_000, 5) == 125 and supervised_rounds(10, 5) == 1
    argv = [
        "--catalog", str(small_catalog_path), "--beliefs", "labels", "--shortlist", "random",
        "--episodes", "16", "--seeds", "0", "--timesteps", "320", "--shortlist-size", "16",
        "--no-progress", "--engines", "sb3", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "slates.json").read_text())
    names = set(data["runs"])
    assert names == {
        "random-slate",
        "greedy-slate",
        "posterior-top",
        "posterior-partition",
        "supervised-top-k",
        "ppo-slate",
    }
    assert all(len(run["success_turn"][0]) == 16 for run in data["runs"].values())
    text = (tmp_path / "slates.md").read_text()
    assert (
        "| ppo-slate - supervised-top-k |" in text and "Machine:" in text and "\n* ``greedy-slate``" in text
    )


def test_the_full_preset_runs_the_slate_section_and_publishes_it(tmp_path, monkeypatch):
    """``fiq-gym bench --full`` ends with the slate section: the preset's seeds, the run folder,
    the bench command named in the report, copies in the published folder; ``--no-slates``
    and the other presets skip it."""
    from fiq_gym.benchmarks import dialog, slates

    calls = []

    def fake_main(argv, *, command=None):
        calls.append((argv, command))
        out = Path(argv[argv.index("--out") + 1])
        (out / "slates.md").write_text("# Slates\n")
        (out / "slates.json").write_text("{}\n")
        return 0

    monkeypatch.setattr(slates, "main", fake_main)
    assert dialog.PRESETS["full"].slate_section and not dialog.PRESETS["quick"].slate_section
    args = dialog.build_parser().parse_args(["--full", "--catalog", "/data/cat"])
    assert args.slates and not dialog.build_parser().parse_args(["--full", "--no-slates"]).slates
    run, published = tmp_path / "run", tmp_path / "published"
    run.mkdir(), published.mkdir()
    written = dialog._slate_section(args, (0, 1, 2), run, published, "fiq-gym bench --full --publish")
    argv, command = calls[0]
    assert argv[:4] == ["--seeds", "0", "1", "2"] and argv[argv.index("--catalog") + 1] == "/data/cat"
    assert command == "fiq-gym bench --full --publish"
    assert (published / "slates.md").read_text() == "# Slates\n" and published / "slates.json" in written
