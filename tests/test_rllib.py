"""Ray RLlib scale-out (issue 17): the env side (registration, the native vector env,
seeding without duplicated streams, the autoreset check, no bootstrap at max_turns), the
shortlist RLModule, `fiq-gym train rllib-ppo` and its checkpoint in the harness.

Tests that need Ray are skipped, with the install command as the reason, when the ``rllib``
extra is absent; the rest run everywhere."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import uuid
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from process_census import marked_processes

import fiq_gym  # noqa: F401
from fiq_gym.agents.shortlist import ShortlistExtractor
from fiq_gym.envs.rllib import RLlibVectorEnv, check_autoreset_mode, make_rllib_env, runner_seeds
from fiq_gym.envs.vector import FashionIQVectorEnv

# Ray RLlib scale-out: CI runs these with the rllib extra (`pytest -m "rllib or env_contract"`).
pytestmark = pytest.mark.rllib

K = 8
ENV_ID = "fiq_gym/FashionIQ-v3"

try:
    import ray  # noqa: F401
    from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason='Ray RLlib is not installed (the rllib extra: pip install -e ".[rllib]")'
)


def _env_config(path) -> dict:
    # The shipped first stage does not fit a 300-item catalog without features: a random one.
    return {"catalog": str(path), "action_mode": "shortlist", "shortlist_size": K, "shortlist": "random"}


def _streams(envs) -> list[tuple]:
    """Each sub-env's generator state: equal states mean the same episode stream."""
    return [tuple(rng.bit_generator.state["state"].values()) for rng in envs.unwrapped.np_random_generators]


# --- the env side (no Ray needed) ------------------------------------------------------------


def test_runner_seeds_are_distinct_deterministic_and_checked():
    # Keyed by (runner seed, sub-env): 4 runners of one run.
    seeds = [s for runner in range(4) for s in runner_seeds(runner, 8)]
    assert len(set(seeds)) == 32
    # Keyed by (run seed, runner, sub-env): 4 runners in each of 3 runs whose seeds are 1 apart.
    keyed = [s for run in range(3) for w in range(4) for s in runner_seeds(run, 8, worker_index=w)]
    assert len(set(keyed)) == 96
    assert runner_seeds(3, 8) == runner_seeds(3, 8)
    assert runner_seeds(3, 8, worker_index=1) == runner_seeds(3, 8, worker_index=1)
    with pytest.raises(ValueError, match="non-negative integer"):
        runner_seeds(-1, 2)


def test_runners_seeded_one_apart_share_no_stream(small_catalog_path):
    """RLlib seeds runner w with seed + w. Gymnasium's reading (sub-env k: s + k) repeats
    runner 1's sub-env 1 as runner 2's sub-env 0; the RLlib env repeats nothing."""
    config = {**_env_config(small_catalog_path), "num_envs": 3}
    plain = [
        gym.make_vec(
            ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", **_env_config(small_catalog_path)
        )
        for _ in range(2)
    ]
    for w, envs in enumerate(plain):
        envs.reset(seed=10 + w)
    assert _streams(plain[0])[1] == _streams(plain[1])[0]  # the defect this module fixes
    rllib = [make_rllib_env(ENV_ID, config) for _ in range(2)]
    for w, envs in enumerate(rllib):
        assert isinstance(envs, RLlibVectorEnv) and isinstance(envs.unwrapped, FashionIQVectorEnv)
        envs.reset(seed=10 + w)
    states = _streams(rllib[0]) + _streams(rllib[1])
    assert len(set(states)) == 6
    # Deterministic: the same runner seed gives the same streams.
    again = make_rllib_env(ENV_ID, config)
    again.reset(seed=10)
    assert _streams(again) == _streams(rllib[0])
    for envs in [*plain, *rllib, again]:
        envs.close()


def test_the_run_seed_keeps_runs_of_nearby_seeds_apart(small_catalog_path):
    """Keyed by the runner seed alone, runner 2 of a run seeded 10 and runner 1 of a run
    seeded 11 (both handed 12 by RLlib) would play the same dialogs; with the run's seed in
    env_config they do not, and runner w, sub-env k plays SeedSequence((seed, w, k))."""
    streams = {}
    for run_seed, w in ((10, 2), (11, 1)):
        for keyed in (False, True):
            extra = {"seed": run_seed} if keyed else {}
            envs = make_rllib_env(ENV_ID, {**_env_config(small_catalog_path), "num_envs": 3, **extra})
            envs.reset(seed=run_seed + w)
            streams[run_seed, keyed] = _streams(envs)
            expected = runner_seeds(run_seed, 3, worker_index=w) if keyed else runner_seeds(run_seed + w, 3)
            reference = gym.make_vec(
                ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", **_env_config(small_catalog_path)
            )
            reference.reset(seed=expected)
            assert _streams(envs) == _streams(reference)
            for e in (envs, reference):
                e.close()
    assert streams[10, False] == streams[11, False]
    assert not set(streams[10, True]) & set(streams[11, True])


@needs_ray
def test_sync_mode_envs_share_no_stream(small_catalog_path):
    """RLlib's sync mode hands sub-env k of runner w the seed seed + w + k: every pair gets a
    stream of its own, with the run's seed the same one the native vector env gives it."""
    from ray.rllib.env.env_context import EnvContext

    for keyed in (False, True):
        config = {**_env_config(small_catalog_path), **({"seed": 10} if keyed else {})}
        states = {}
        for w in (1, 2):
            for k in range(3):
                env = make_rllib_env(ENV_ID, EnvContext(config, worker_index=w))
                env.reset(seed=10 + w + k)
                states[w, k] = tuple(env.unwrapped.np_random.bit_generator.state["state"].values())
                env.close()
        assert len(set(states.values())) == 6
        if keyed:
            for w in (1, 2):
                envs = make_rllib_env(ENV_ID, {**config, "num_envs": 3})
                envs.reset(seed=10 + w)
                assert _streams(envs) == [states[w, k] for k in range(3)]
                envs.close()


def test_end_at_max_turns_is_terminal_unless_asked(small_catalog_path):
    for bootstrap in (False, True):
        envs = make_rllib_env(
            ENV_ID, {**_env_config(small_catalog_path), "num_envs": 4, "bootstrap_truncated": bootstrap}
        )
        envs.reset(seed=0)
        ends = []
        for _ in range(5):
            _, _, terminated, truncated, _ = envs.step(np.zeros(4, dtype=np.int64))
            ends.append((terminated.copy(), truncated.copy()))
        envs.close()
        terminated, truncated = ends[-1]
        # Every dialog has ended after max_turns = 5 steps.
        assert (terminated | truncated).all()
        if bootstrap:
            assert truncated.any()  # Gymnasium's reading: some dialogs ran out of turns
        else:
            assert not any(t.any() for _, t in ends)


def test_sync_mode_env_plays_max_turns(small_catalog_path):
    """A dialog that does not find its target lasts max_turns, not the registered 5."""
    env = make_rllib_env(ENV_ID, {**_env_config(small_catalog_path), "max_turns": 7})
    lengths = []
    for seed in range(4):
        env.reset(seed=seed)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(0)
        if not info["is_success"]:
            lengths.append(int(info["dialog_turn"]))
    env.close()
    assert lengths and set(lengths) == {7}


def test_autoreset_mode_other_than_next_step_is_refused(small_catalog_path):
    with pytest.raises(ValueError, match="NEXT_STEP"):
        make_rllib_env(
            ENV_ID, {**_env_config(small_catalog_path), "num_envs": 2, "autoreset_mode": "disabled"}
        )
    envs = gym.make_vec(
        ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **_env_config(small_catalog_path)
    )
    check_autoreset_mode(envs)  # the default passes
    envs.close()


def test_extractor_reads_token_ids_as_it_reads_one_hot(small_catalog_path):
    """RLlib hands the caption over as ids, SB3 one-hot: the same features either way."""
    envs = gym.make_vec(
        ENV_ID, num_envs=6, vectorization_mode="vector_entry_point", **_env_config(small_catalog_path)
    )
    obs, _ = envs.reset(seed=3)
    obs, *_ = envs.step(np.ones(6, dtype=np.int64))
    space = envs.single_observation_space
    torch.manual_seed(0)
    extractor = ShortlistExtractor(space, embed_dim=16, hidden=32)
    vocab = int(space["caption"].nvec[0])
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(obs["caption"]), vocab).float().view(6, -1)
    sb3 = {k: torch.as_tensor(v).float() for k, v in obs.items()} | {"caption": one_hot}
    raw = {k: torch.as_tensor(v) for k, v in obs.items()}
    with torch.no_grad():
        torch.testing.assert_close(extractor.forward_ids(raw), extractor(sb3))
    envs.close()


def _hide_ray(monkeypatch) -> None:
    """Imports of ray (and of the modules that need it) fail, as if it were not installed."""
    for name in list(sys.modules):
        if name in ("ray", "fiq_gym.agents.rllib_ppo", "fiq_gym.agents.rllib_modules") or name.startswith(
            "ray."
        ):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)


def test_train_without_ray_names_the_install(monkeypatch, capsys):
    from fiq_gym.cli import main

    _hide_ray(monkeypatch)
    assert main(["train", "rllib-ppo", "--iterations", "1"]) == 2
    assert 'pip install -e ".[rllib]"' in capsys.readouterr().err


# --- RLlib (needs Ray) --------------------------------------------------------------------------


def _args(path, **overrides):
    from fiq_gym.agents.rllib_ppo import Args

    base = {
        "catalog": str(path),
        "shortlist": "random",
        "shortlist_size": K,
        "envs_per_runner": 3,
        "train_batch_size": 60,
        "minibatch_size": 30,
        "num_epochs": 1,
        "embed_dim": 16,
        "hidden": 32,
        "eval_episodes": 16,
        "seed": 5,
    }
    return Args(**{**base, **overrides})


def _first_observations(runner, episodes: int) -> set[tuple]:
    """(shown item, caption ids) of each sampled episode's first observation."""
    return {
        (int(e.get_infos(0)["shown"]), tuple(e.get_observations(0)["caption"].tolist()))
        for e in runner.sample(num_episodes=episodes, explore=True)
    }


@needs_ray
def test_env_runner_samples_the_native_vector_env_without_a_cluster(small_catalog_path):
    import ray
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from fiq_gym.agents.rllib_ppo import build_config

    config = build_config(_args(small_catalog_path, num_env_runners=2))
    runner = SingleAgentEnvRunner(config=config, worker_index=1)
    try:
        assert isinstance(runner.env.unwrapped, FashionIQVectorEnv)
        assert runner.num_envs == 3
        episodes = runner.sample(num_episodes=3, explore=True)
        assert len(episodes) >= 3
        assert all(e.is_done and len(e) <= 5 for e in episodes)
        assert not ray.is_initialized()
    finally:
        runner.stop()


@needs_ray
def test_two_runners_sample_different_episode_streams(small_catalog_path):
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from fiq_gym.agents.rllib_ppo import build_config

    config = build_config(_args(small_catalog_path, num_env_runners=2))
    runners = [SingleAgentEnvRunner(config=config, worker_index=w) for w in (1, 2)]
    try:
        first = [_first_observations(r, 6) for r in runners]
    finally:
        for r in runners:
            r.stop()
    assert len(first[0]) >= 6 and len(first[1]) >= 6
    assert not first[0] & first[1]


@needs_ray
def test_index_module_masks_shown_items_and_refuses_big_catalogs(small_catalog_path, monkeypatch):
    from ray.rllib.core.columns import Columns

    from fiq_gym.agents import rllib_ppo
    from fiq_gym.agents.rllib_modules import RLlibAgent

    args = _args(small_catalog_path, action_mode="index")
    envs = gym.make_vec(
        ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", **rllib_ppo.env_config_of(args)
    )
    spec = rllib_ppo.module_spec(args)
    spec.observation_space, spec.action_space = envs.single_observation_space, envs.single_action_space
    module = spec.build()
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        obs, *_ = envs.step(envs.action_space.sample())
    shown = obs["shown_mask"] > 0
    assert shown.sum(1).min() >= 1
    batch = {Columns.OBS: {k: torch.as_tensor(v) for k, v in obs.items()}}
    with torch.no_grad():
        logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].numpy()
    assert logits.shape == (4, 300)
    assert (logits[shown] == -1e4).all() and (logits[~shown] > -1e3).all()
    actions = RLlibAgent(module).act(obs, {})
    assert not shown[np.arange(4), actions].any()
    envs.close()
    monkeypatch.setattr(rllib_ppo, "MAX_INDEX_ITEMS", 100)
    with pytest.raises(ValueError, match="at most 100 items; this one has 300"):
        rllib_ppo.module_spec(args)


@needs_ray
def test_slate_module_ranks_positions_and_the_runner_samples_distinct_slates(small_catalog_path):
    """``shortlist_slate``: position j scores the candidates without the j best (K * M logits,
    as RLlib's MultiDiscrete distribution reads them); the greedy slate is the K best
    candidates, distinct, best first; an env runner samples MultiDiscrete slates with RLlib's
    own distribution and plays whole dialogs."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from fiq_gym.agents import rllib_ppo
    from fiq_gym.agents.rllib_modules import RLlibAgent

    slate = 3
    args = _args(small_catalog_path, action_mode="shortlist_slate", slate_size=slate)
    config = rllib_ppo.env_config_of(args)
    assert config["slate_size"] == slate and "slate_features" not in config["observation_keys"]
    envs = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", **config)
    assert envs.single_action_space == gym.spaces.MultiDiscrete([K] * slate)
    spec = rllib_ppo.module_spec(args)
    spec.observation_space, spec.action_space = envs.single_observation_space, envs.single_action_space
    module = spec.build()
    obs, _ = envs.reset(seed=0)
    batch = {Columns.OBS: {k: torch.as_tensor(v) for k, v in obs.items()}}
    with torch.no_grad():
        logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].view(4, slate, K)
    scores = logits[:, 0]
    order = torch.argsort(scores, dim=1, descending=True)
    for j in range(1, slate):
        left_out = logits[:, j].gather(1, order[:, :j])
        assert (left_out == -1e4).all()  # the j best are gone from position j
    actions = RLlibAgent(module).act(obs, {})
    assert actions.shape == (4, slate)
    np.testing.assert_array_equal(actions, order[:, :slate].numpy())
    envs.step(actions)
    envs.close()
    runner = SingleAgentEnvRunner(config=rllib_ppo.build_config(args), worker_index=1)
    try:
        episodes = runner.sample(num_episodes=3, explore=True)
        assert all(e.is_done and len(e) <= 5 for e in episodes)
        sampled = np.asarray(episodes[0].get_actions())
        assert sampled.shape[1:] == (slate,) and ((sampled >= 0) & (sampled < K)).all()
    finally:
        runner.stop()


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find processes")
def test_ppo_trains_saves_evaluates_and_leaves_no_ray_process(small_catalog_path, tmp_path, monkeypatch):
    """One local Ray instance: a 1-iteration PPO sampling in this process (0 runners), one in a
    runner process (the env id must resolve there), one in index mode, one on a slate, and a tiny scaling
    benchmark; each
    checkpoint evaluates through the sealed harness; afterwards no process started here is
    left."""
    from fiq_gym.agents.loading import load_agent
    from fiq_gym.agents.rllib_modules import RLlibAgent
    from fiq_gym.agents.rllib_ppo import ray_session, train
    from fiq_gym.benchmarks import rllib_scaling
    from fiq_gym.envs.evaluation import close_warm_evaluator, evaluate
    from fiq_gym.errors import CheckpointError

    marker = f"FIQ_GYM_RAY_TEST_{uuid.uuid4().hex}"
    monkeypatch.setenv(marker, "1")
    with ray_session(num_cpus=1) as started, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RLlib's own deprecation notices
        assert started
        results = {}
        for runners in (0, 1):
            args = _args(small_catalog_path, num_env_runners=runners, out=str(tmp_path / f"run{runners}"))
            results[runners] = train(args, progress=False)
        index_args = _args(small_catalog_path, action_mode="index", out=str(tmp_path / "index"))
        index_metrics, index_result = train(index_args, progress=False)
        slate_args = _args(
            small_catalog_path, action_mode="shortlist_slate", slate_size=3, out=str(tmp_path / "slate")
        )
        slate_metrics, slate_result = train(slate_args, progress=False)
        # The scaling benchmark, tiny, in the same Ray instance.
        table = rllib_scaling.run(
            runners=[0],
            modes=["vector_entry_point", "sync"],
            users=["template"],
            envs_per_runner=3,
            steps=15,
            iterations=1,
            train_batch_size=30,
            catalog=str(small_catalog_path),
            shortlist="random",
            out=tmp_path / "bench",
            command="python -m fiq_gym.benchmarks.rllib_scaling --runners 0",
        )
    for runners, (metrics, result) in results.items():
        assert metrics["charts/env_steps_sampled"] >= 60, runners
        for key in ("charts/episode_return_mean", "losses/policy_loss", "losses/value_loss"):
            assert math.isfinite(metrics[key]), (runners, key)
        assert result.ranks.shape[0] == 16
        assert (tmp_path / f"run{runners}" / "tb").is_dir()
    assert (tmp_path / "bench" / "rllib_scaling.md").read_text() == table
    assert "| random | template | vector_entry_point | 0 |" in table
    assert "| random | template | sync | 0 |" in table
    assert "native / sync sampling" in table and "--runners 0" in table
    assert math.isfinite(index_metrics["losses/policy_loss"]) and index_result.ranks.shape[0] == 16
    assert math.isfinite(slate_metrics["losses/policy_loss"]) and slate_result.ranks.shape[0] == 16
    # A slate checkpoint plays its mode again through load_agent (`fiq-gym eval`'s path).
    slate_agent = load_agent(tmp_path / "slate" / "checkpoint")
    assert slate_agent.action_mode == "shortlist_slate" and slate_agent.shortlist["slate_size"] == 3
    slate_envs = slate_agent.make_envs(16)
    slate_again = evaluate(slate_agent.make_agent(slate_envs), slate_envs, episodes=16, seed=10_005)
    slate_envs.close()
    np.testing.assert_array_equal(slate_again.success_turn, slate_result.success_turn)
    index_agent = load_agent(tmp_path / "index" / "checkpoint")
    assert index_agent.action_mode == "index" and "shown_mask" in index_agent.observation_keys
    # `fiq-gym eval`'s path: load_agent rebuilds the env, the sealed harness plays it.
    loaded = load_agent(tmp_path / "run1" / "checkpoint")
    assert loaded.kind == "rllib-ppo" and loaded.action_mode == "shortlist"
    envs = loaded.make_envs(16)
    agent = loaded.make_agent(envs)
    assert isinstance(agent, RLlibAgent)
    again = evaluate(agent, envs, episodes=16, seed=10_005)
    envs.close()
    np.testing.assert_array_equal(again.ranks, results[1][1].ranks)  # same dialogs, same agent
    # Without Ray, the checkpoint is still recognised, and the error names the install.
    _hide_ray(monkeypatch)
    with pytest.raises(CheckpointError, match=r'pip install -e "\.\[rllib\]"'):
        load_agent(tmp_path / "run1" / "checkpoint")
    monkeypatch.undo()
    # evaluate() keeps its sealed child warm for the next evaluation (it carries the marker
    # too): end it, so what is left below is Ray's.
    close_warm_evaluator()
    # Every Ray process this test started exits (Ray's shutdown waits for most; give the
    # rest a moment, then name what is left).
    for _ in range(120):
        left = marked_processes(marker)
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"


@needs_ray
@pytest.mark.slow
def test_learning_curve_benchmark_trains_both_engines_and_reads_their_events(small_catalog_path, tmp_path):
    """Both engines train on the same env, their TensorBoard events give the curves, both
    checkpoints are evaluated, and the table and plot are written."""
    from fiq_gym.benchmarks import rllib_learning_curve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = rllib_learning_curve.run(
            timesteps=2048,
            seed=0,
            eval_episodes=8,
            runners=0,
            out=tmp_path / "out",
            runs=tmp_path / "runs",
            command="python -m fiq_gym.benchmarks.rllib_learning_curve --timesteps 2048",
            catalog=str(small_catalog_path),
            shortlist="random",
        )
    assert (tmp_path / "out" / "rllib_learning_curve.md").read_text() == text
    assert (tmp_path / "out" / "rllib_learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sb3 = rllib_learning_curve.read_scalars(
        tmp_path / "runs" / "sb3-ppo" / "tb", "charts/episode_return_mean"
    )
    rllib = rllib_learning_curve.read_scalars(
        tmp_path / "runs" / "rllib-ppo" / "tb", "charts/env_steps_sampled"
    )
    assert [s for s, _ in sb3] == [1024, 2048]  # one reading per 1,024-step update
    assert len(rllib) == 2 and 1024 <= rllib[0][1] < rllib[1][1]  # RLlib may round a batch up
    assert all(step == sampled for step, sampled in rllib)  # both engines plot against env steps
    assert "| Stable-Baselines3 PPO | RLlib PPO (0 env runners) |" in text
    assert "| 2,048 |" in text and text.count("| 8 |") == 2  # both final evaluations, 8 dialogs
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        rllib_learning_curve.read_scalars(tmp_path / "out", "x")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find processes")
def test_train_joins_a_running_cluster_with_address_and_leaves_it_running(small_catalog_path, tmp_path):
    """`ray start --head`, then `fiq-gym train rllib-ppo --address HOST:PORT --num-env-runners 1`
    as docs/scaling.md says: the run trains on the cluster, writes and evaluates its
    checkpoint, and does not stop the cluster it only joined."""
    import subprocess

    marker = f"FIQ_GYM_RAY_CLUSTER_TEST_{uuid.uuid4().hex}"
    # Token authentication, as docs/scaling.md says: Ray >= 2.59 clusters use it, and a driver
    # joining an explicit address sends the token only in token mode.
    env = {**os.environ, marker: "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    address = f"127.0.0.1:{_free_port()}"
    # --block: the head runs in the foreground and takes every process it started down on
    # SIGTERM (`ray stop` would stop every Ray instance of the machine, other tests' too).
    head = [ray_cli, "start", "--head", f"--port={address.split(':')[1]}", "--num-cpus=2", "--block"]
    head += ["--include-dashboard=false", "--disable-usage-stats"]
    cluster = subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = [ray_cli, "status", f"--address={address}"]
        for _ in range(120):
            if subprocess.run(status, env=env, capture_output=True, timeout=60).returncode == 0:
                break
            assert cluster.poll() is None, "ray start --head exited"
            time.sleep(0.5)
        train = [sys.executable, "-m", "fiq_gym", "train", "rllib-ppo", "--address", address]
        train += ["--catalog", str(small_catalog_path), "--shortlist", "random", "--shortlist-size", str(K)]
        train += ["--num-env-runners", "1", "--envs-per-runner", "2", "--iterations", "1"]
        train += ["--train-batch-size", "40", "--minibatch-size", "20", "--num-epochs", "1"]
        train += [
            "--embed-dim",
            "16",
            "--hidden",
            "32",
            "--eval-episodes",
            "4",
            "--out",
            str(tmp_path / "run"),
        ]
        done = subprocess.run(train, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / "run" / "checkpoint" / "config.json").is_file()
        assert "R@10" in done.stdout  # the harness's table of the checkpoint
        still = subprocess.run(status, env=env, capture_output=True, text=True, timeout=120)
        assert still.returncode == 0, "the run stopped the cluster it joined: " + still.stderr[-2000:]
    finally:
        cluster.terminate()
        cluster.wait(timeout=120)
    for _ in range(120):
        left = marked_processes(marker)
        if not left:
            break
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    assert not left, f"cluster processes left after the head stopped: {left}"


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find processes")
def test_sigterm_during_training_leaves_no_ray_process(small_catalog_path, tmp_path):
    """`kill` on a training run (what a job scheduler does) leaves no process of the local Ray
    instance it started behind."""
    import signal
    import subprocess

    marker = f"FIQ_GYM_RAY_SIGTERM_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1", "RAY_USAGE_STATS_ENABLED": "0"}
    train = [sys.executable, "-m", "fiq_gym", "train", "rllib-ppo", "--iterations", "1000"]
    train += ["--catalog", str(small_catalog_path), "--shortlist", "random", "--shortlist-size", str(K)]
    train += ["--envs-per-runner", "2", "--train-batch-size", "40", "--minibatch-size", "20"]
    train += ["--embed-dim", "16", "--hidden", "32", "--out", str(tmp_path / "run")]
    run = subprocess.Popen(train, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):  # until it trains: its TensorBoard file has appeared
            if list((tmp_path / "run" / "tb").glob("events.out.tfevents.*")) or run.poll() is not None:
                break
            time.sleep(0.5)
        assert run.poll() is None, "the run ended before it could be stopped"
        time.sleep(2.0)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=120)  # its exit status is Ray's business (SystemExit, or an abort in shutdown)
    finally:
        if run.poll() is None:
            run.kill()
    for _ in range(60):
        left = marked_processes(marker)
        if not left:
            break
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left after SIGTERM: {left}"


@needs_ray
@pytest.mark.slow
def test_the_slates_benchmark_trains_rllib_ppo_beside_sb3(small_catalog_path, tmp_path):
    """The full preset's slate section with both engines: RLlib PPO trains on the shortlist
    slate, plays the same dialogs through the sealed harness and is compared with the control."""
    import json

    from fiq_gym.benchmarks.slates import main

    argv = [
        "--catalog", str(small_catalog_path), "--beliefs", "labels", "--shortlist", "random",
        "--episodes", "16", "--seeds", "0", "--timesteps", "512", "--shortlist-size", "16",
        "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RLlib's own deprecation notices
        assert main(argv) == 0
    data = json.loads((tmp_path / "slates.json").read_text())
    assert data["meta"]["engines"] == ["sb3", "rllib"]  # the default when Ray is installed
    assert len(data["runs"]["rllib-ppo-slate"]["success_turn"][0]) == 16
    assert len(data["train_seconds"]["rllib-ppo-slate"]) == 1
    text = (tmp_path / "slates.md").read_text()
    assert "| rllib-ppo-slate | `shortlist_slate` |" in text
    assert "| rllib-ppo-slate - supervised-top-k |" in text and "engines: sb3, rllib" in text
    import ray

    assert f", ray {ray.__version__}" in text.strip().splitlines()[-1]  # the libraries line names Ray
