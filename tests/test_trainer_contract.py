"""One contract for every `fiq-gym train AGENT` (issue 37, item 4).

Each trainer of the CLI's ``TRAINERS`` map, run from its ``main`` on a tiny budget, writes
``OUT/checkpoint`` that :func:`~fiq_gym.agents.loading.load_agent` reads and ``fiq-gym
eval`` plays, and logs ``charts/``, ``losses/`` and ``eval/`` TensorBoard tags against env
steps: its last evaluation sits at the env steps the run took (for the trainers that play no
env, the samples they read: behaviour cloning's recorded transitions, single-shot's queries).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fiq_gym.agents.loading import load_agent
from fiq_gym.cli import TRAINERS
from fiq_gym.cli import main as cli_main
from fiq_gym.errors import FallbackWarning


@dataclass
class Run:
    """A trainer's tiny run: its arguments (before ``--out``) and the env steps it takes
    (None: read from its own ``charts/env_steps_sampled``, for RLlib, which may round up)."""

    argv: list[str]
    env_steps: int | None


def _supervised(catalog: Path, _: Path) -> Run:
    # 2 rounds of 4 dialogs of 3 turns
    argv = ["--catalog", str(catalog), "--num-envs", "4", "--rounds", "2", "--max-turns", "3"]
    return Run(
        [*argv, "--eval-every", "2", "--eval-episodes", "4", "--embed-dim", "16", "--negatives", "8"], 24
    )


def _policy_gradient(catalog: Path, _: Path) -> Run:
    argv = ["--catalog", str(catalog), "--num-envs", "4", "--rounds", "2", "--max-turns", "3"]
    return Run([*argv, "--eval-every", "2", "--eval-episodes", "4", "--embed-dim", "16"], 24)


def _policy_improvement(catalog: Path, _: Path) -> Run:
    argv = ["--catalog", str(catalog), "--num-envs", "4", "--rounds", "2", "--max-turns", "3"]
    return Run(
        [
            *argv,
            "--eval-every",
            "2",
            "--eval-episodes",
            "4",
            "--embed-dim",
            "16",
            "--negatives",
            "8",
            "--candidates",
            "2",
        ],
        24,
    )


def _ppo(catalog: Path, _: Path) -> Run:
    # two rollouts of 4 sub-envs x 8 steps
    argv = ["--catalog", str(catalog), "--num-envs", "4", "--n-steps", "8", "--batch-size", "16"]
    return Run(
        [*argv, "--n-epochs", "1", "--timesteps", "64", "--max-turns", "3", "--eval-episodes", "4"], 64
    )


SHORTLIST = ["--shortlist", "random", "--shortlist-size", "4"]  # the catalog has no image features


def _dqn(catalog: Path, _: Path) -> Run:
    argv = ["--catalog", str(catalog), *SHORTLIST, "--num-envs", "4", "--timesteps", "64", "--max-turns", "3"]
    return Run(
        [*argv, "--learning-starts", "16", "--batch-size", "8", "--train-freq", "1", "--eval-episodes", "4"],
        64,
    )


def _cleanrl(catalog: Path, _: Path) -> Run:
    argv = ["--catalog", str(catalog), *SHORTLIST, "--num-envs", "4", "--num-steps", "8"]
    return Run([*argv, "--total-timesteps", "64", "--update-epochs", "1", "--eval-episodes", "4"], 64)


def _recurrent(catalog: Path, _: Path) -> Run:
    # 2 updates of 4 dialogs of the env's 5 turns; evaluated at the start and at the end
    argv = ["--catalog", str(catalog), "--num-envs", "4", "--updates", "2", "--eval-every-seconds", "1e9"]
    return Run([*argv, "--eval-episodes", "4", "--hidden", "8", "--embed-dim", "8"], 40)


def _rllib(catalog: Path, _: Path) -> Run:
    argv = ["--catalog", str(catalog), *SHORTLIST, "--num-env-runners", "0", "--envs-per-runner", "4"]
    argv += ["--timesteps", "32", "--train-batch-size", "32", "--minibatch-size", "16", "--num-epochs", "1"]
    return Run([*argv, "--max-turns", "3", "--eval-episodes", "4"], None)


def _single_shot(catalog: Path, tmp: Path) -> Run:
    from fiq_gym.catalog.fashioniq import plan_fashioniq
    from fiq_gym.catalog.importing import write_import
    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.users.release_export import export_fashioniq_release

    export_fashioniq_release(
        open_catalog(catalog), tmp / "release", pairs_per_split=20, seed=1, progress=False
    )
    write_import(plan_fashioniq(tmp / "release", splits=("train", "val")), tmp / "imported", progress=False)
    argv = ["--catalog", str(tmp / "imported"), "--steps", "2", "--eval-every", "2", "--batch-size", "8"]
    return Run([*argv, "--embed-dim", "16", "--quiet"], 2 * 8)  # queries read


def _behaviour_cloning(catalog: Path, tmp: Path) -> Run:
    from fiq_gym.agents.recording import record

    written = record(
        "greedy",
        episodes=6,
        out=tmp / "datasets",
        progress=False,
        catalog=str(catalog),
        action_mode="shortlist",
        shortlist="random",
        shortlist_size=4,
        max_turns=3,
    )
    argv = ["--dataset-id", written.dataset_id, "--datasets-path", str(tmp / "datasets"), "--epochs", "2"]
    argv += ["--batch-size", "8", "--eval-episodes", "4", "--num-envs", "4", "--no-sealed"]
    return Run(argv, 2 * written.steps)  # transitions read


RUNS: dict[str, Callable[[Path, Path], Run]] = {
    "supervised": _supervised,
    "policy-gradient": _policy_gradient,
    "policy-improvement": _policy_improvement,
    "ppo": _ppo,
    "dqn": _dqn,
    "cleanrl-ppo-shortlist": _cleanrl,
    "recurrent-reinforce": _recurrent,
    "rllib-ppo": _rllib,
    "single-shot": _single_shot,
    "behaviour-cloning": _behaviour_cloning,
}
NEEDS = {"rllib-ppo": "ray", "behaviour-cloning": "minari"}


def _scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard event files under ``out``: its (step, value)s."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(out.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            tags.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return {tag: sorted(points) for tag, points in tags.items()}


def test_every_trainer_has_a_run():
    assert set(RUNS) == set(TRAINERS), "a new trainer needs a tiny run here, and the contract"


@pytest.mark.parametrize("agent", sorted(TRAINERS))
def test_every_trainer_writes_a_loadable_checkpoint_and_logs_against_env_steps(
    agent, small_catalog_path, tmp_path, capsys
):
    if agent in NEEDS and importlib.util.find_spec(NEEDS[agent]) is None:
        pytest.skip(f"{agent} needs {NEEDS[agent]}")
    run = RUNS[agent](small_catalog_path, tmp_path)
    out = tmp_path / "run"
    trainer = importlib.import_module(TRAINERS[agent])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        trainer.main([*run.argv, "--out", str(out)], prog=f"fiq-gym train {agent}")

    loaded = load_agent(out / "checkpoint")
    assert loaded.model is not None
    assert cli_main(["eval", str(out / "checkpoint"), "--isolation", "none", "--episodes", "4"]) == 0
    assert "evaluation set: seed" in capsys.readouterr().out

    scalars = _scalars(out)
    for namespace in ("charts/", "losses/", "eval/"):
        assert any(tag.startswith(namespace) for tag in scalars), (namespace, sorted(scalars))
    steps = run.env_steps
    if steps is None:
        steps = int(scalars["charts/env_steps_sampled"][-1][1])
    last_eval = max(s for tag, points in scalars.items() if tag.startswith("eval/") for s, _ in points)
    assert last_eval == steps, sorted(scalars)
    # The x axis is env steps everywhere: nothing is logged beyond those the run took.
    assert max(s for points in scalars.values() for s, _ in points) == steps


def test_a_policy_checkpoint_is_checked_against_the_env_and_its_files(small_catalog_path, tmp_path):
    """A single-file trainer's checkpoint names a size that differs from the env's, and a
    damaged weights file, instead of failing inside the network."""
    import gymnasium as gym

    from fiq_gym.agents.cleanrl_ppo_shortlist import Agent, Policy
    from fiq_gym.checkpoint import CLEANRL_PPO_FORMAT, PolicyConfig, save_policy
    from fiq_gym.errors import CheckpointError

    settings = {
        "catalog": str(small_catalog_path),
        "shortlist": "random",
        "shortlist_size": 4,
        "max_turns": 3,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        envs = gym.make_vec(
            "fiq_gym/FashionIQ-v3",
            num_envs=2,
            vectorization_mode="vector_entry_point",
            action_mode="shortlist",
            **settings,
        )
        config = PolicyConfig.for_space(envs.single_observation_space)
        envs.close()
        path = tmp_path / "checkpoint"
        save_policy(
            Agent(config), config, path, format=CLEANRL_PPO_FORMAT, agent="CleanRL PPO", args=settings
        )
        loaded = load_agent(path)
        assert (loaded.kind, loaded.action_mode, loaded.shortlist["shortlist_size"]) == (
            "cleanrl-ppo-shortlist",
            "shortlist",
            4,
        )
        fits = loaded.make_envs(2)
        assert isinstance(loaded.make_agent(fits), Policy)
        fits.close()
        wider = loaded.make_envs(2, shortlist_size=6)
        with pytest.raises(CheckpointError, match=r"does not fit .*shortlist_size 4 \(the env's: 6\)"):
            loaded.make_agent(wider)
        wider.close()
    (path / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or not a safetensors file"):
        load_agent(path)
