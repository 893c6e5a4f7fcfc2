"""The agent registry (issue 38, item 3): every list of agents derives from it, and adding an
agent is one file plus one registration.

The toy agent below is such a file: a linear query policy with a trainer (``Args``, ``train``,
``main``), a torch network and a batched agent. Registered once, it is a ``fiq-gym train``
choice, ``load_agent`` reads its checkpoints, ``fiq-gym record`` plays it without one, and
``fiq-gym bench`` trains, evaluates and reports it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fiq_gym.agents import registry
from fiq_gym.agents.registry import AgentRecord, BenchRole, CheckpointKind

TOY_AGENT = '''
"""A toy agent in one file: a linear query policy, written untrained."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.utils.arguments import parse_dataclass_args
from fiq_gym.checkpoint import PolicyConfig, save_policy

FORMAT = "fiq-gym-toy-query"


@dataclass
class Args:
    env_id: str = "fiq_gym/FashionIQ-v3"
    catalog: str | None = None
    user: str = "template"
    seed: int = 0
    max_turns: int = 5
    threads: int = 1
    timesteps: int = 0
    eval_episodes: int = 0
    out: str = "runs/toy"
    overwrite: bool = False


class Net(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.feature_dim, config.feature_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(features))


class Agent:
    def __init__(self, net: Net) -> None:
        self.net = net

    def reset(self, observation, info, mask) -> None:
        pass

    def act(self, observation, info) -> np.ndarray:
        rows = len(np.atleast_1d(info["shown"]))
        features = torch.as_tensor(np.asarray(observation["shown_features"]), dtype=torch.float32)
        with torch.no_grad():
            return self.net(features.reshape(rows, -1)).numpy()


def untrained(env, first_stage, seed):
    torch.manual_seed(seed)
    space = getattr(env, "single_observation_space", env.observation_space)
    return Agent(Net(PolicyConfig.for_space(space)))


def train(args: Args, progress: bool = True) -> Path:
    envs = gym.make_vec(
        args.env_id, num_envs=1, vectorization_mode="vector_entry_point", catalog=args.catalog,
        user=args.user, action_mode="query", max_turns=args.max_turns,
    )
    try:
        config = PolicyConfig.for_space(envs.single_observation_space)
    finally:
        envs.close()
    torch.manual_seed(args.seed)
    directory = Path(args.out) / "checkpoint"
    save_policy(Net(config), config, directory, format=FORMAT, agent="toy", args=dataclasses.asdict(args))
    return directory


def main(argv=None, prog=None) -> None:
    train(parse_dataclass_args(Args, argv, "a toy agent", prog=prog), progress=False)
'''

TOY = AgentRecord(
    "toy",
    "a toy linear query policy (tests/test_agent_registry.py)",
    trainer="toy_agent",
    checkpoint=CheckpointKind(
        "fiq-gym-toy-query", "toy", "query", "policy", network="toy_agent:Net", agent="toy_agent:Agent"
    ),
    builtin="toy_agent:untrained",
    bench=BenchRole("query", "trained", budget="ppo_timesteps"),
)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy agent's one file, importable, and its one registration (removed afterwards)."""
    folder = tmp_path / "toy_module"
    folder.mkdir()
    (folder / "toy_agent.py").write_text(textwrap.dedent(TOY_AGENT), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    registry.register(TOY)
    yield TOY
    registry.unregister("toy")
    sys.modules.pop("toy_agent", None)


def test_a_registered_agent_is_trained_loaded_recorded_and_benchmarked(
    toy, tmp_path, small_catalog_path, capsys
):
    from fiq_gym.agents.loading import load_agent
    from fiq_gym.benchmarks import dialog
    from fiq_gym.cli import TRAINERS, build_parser
    from fiq_gym.cli import main as cli_main
    from fiq_gym.envs.evaluation import evaluate

    # fiq-gym train: a choice of the parser, run through the trainer's main
    assert TRAINERS["toy"] == "toy_agent"
    assert build_parser().parse_args(["train", "toy"]).agent == "toy"
    out = tmp_path / "run"
    assert (
        cli_main(
            ["train", "toy", "--catalog", str(small_catalog_path), "--out", str(out), "--max-turns", "3"]
        )
        == 0
    )

    # load_agent: its format, kind, action mode and loader come from the registration
    loaded = load_agent(out / "checkpoint")
    assert (loaded.kind, loaded.action_mode, loaded.max_turns) == ("toy", "query", 3)
    envs = loaded.make_envs(4)
    try:
        agent = loaded.make_agent(envs)
        result = evaluate(agent, envs, 8, seed=0, sealed=False)
    finally:
        envs.close()
    assert result.ranks.shape == (8, 4)

    # fiq-gym record: a built-in agent (named in --agent's help with its one line)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["record", "--help"])
    recording_help = " ".join(capsys.readouterr().out.split())
    assert "random, greedy, toy, or a checkpoint directory" in recording_help
    assert f"toy: {TOY.help}" in recording_help
    assert build_parser().parse_args(["record", "--agent", "toy"]).agent == "toy"

    # fiq-gym bench: an agent of the list, trained on its preset budget, evaluated and reported
    assert "toy" in dialog.AGENTS and dialog.AGENTS[-1] == "toy"
    assert dialog.build_parser().parse_args(["--agents", "toy"]).agents == ["toy"]
    result = dialog.run_benchmark(
        dialog.PRESETS["tiny"],
        tmp_path / "bench",
        catalog=str(small_catalog_path),
        agents=("random", "toy"),
        max_turns=3,
        progress=False,
        isolation="none",
    )
    assert [r.agent for r in result.records] == ["random", "toy"]
    budget = result.budgets[("toy", "template", 0)]
    assert budget.env_steps == dialog.PRESETS["tiny"].ppo_timesteps and budget.starts_from == "scratch"
    assert (
        tmp_path / "bench" / "runs" / "template" / "seed0" / "toy" / "checkpoint" / "config.json"
    ).is_file()
    assert "| toy | 3 |" in dialog.to_markdown(result)


def test_a_registered_builtin_agent_is_recorded(toy, small_catalog_path):
    pytest.importorskip("minari")
    from fiq_gym.agents.recording import BUILTIN_AGENTS, make_recording

    assert BUILTIN_AGENTS == ("random", "greedy", "toy")
    recording = make_recording("toy", catalog=str(small_catalog_path), action_mode="query", max_turns=2)
    try:
        observation, info = recording.env.reset(seed=0)
        recording.agent.reset(observation, info, mask=[True])
        action = recording.agent.act(observation, info)
        recording.env.step(action[0])
    finally:
        recording.env.close()
    assert recording.name == "toy" and recording.action_mode == "query"


def test_unregistered_it_is_gone(toy):
    import fiq_gym.cli
    from fiq_gym.benchmarks import dialog

    assert "toy" in fiq_gym.cli.TRAINERS and "toy" in dialog.AGENTS
    registry.unregister("toy")
    try:
        assert "toy" not in fiq_gym.cli.TRAINERS and "toy" not in dialog.AGENTS
        assert "fiq-gym-toy-query" not in registry.checkpoint_kinds()
    finally:
        registry.register(TOY)


def test_the_registry_holds_the_agents_as_before():
    """The lists each part of fiq-gym kept before the registry, derived from it unchanged."""
    from fiq_gym.agents.loading import ACTION_MODES
    from fiq_gym.benchmarks.dialog import AGENTS, CONTROLS, REFERENCES, SHORTLIST_AGENTS, UNTRAINED
    from fiq_gym.checkpoint_formats import (
        BEHAVIOUR_CLONING_FORMAT,
        CLEANRL_PPO_FORMAT,
        DQN_FORMAT,
        PPO_FORMAT,
        RECURRENT_REINFORCE_FORMAT,
        RETRIEVER_FORMAT,
        RLLIB_PPO_FORMAT,
    )
    from fiq_gym.cli import TRAINERS

    assert TRAINERS == {
        "supervised": "fiq_gym.agents.supervised",
        "policy-gradient": "fiq_gym.agents.policy_gradient",
        "policy-improvement": "fiq_gym.agents.policy_improvement",
        "ppo": "fiq_gym.agents.ppo",
        "dqn": "fiq_gym.agents.dqn",
        "cleanrl-ppo-shortlist": "fiq_gym.agents.cleanrl_ppo_shortlist",
        "single-shot": "fiq_gym.agents.single_shot",
        "recurrent-reinforce": "fiq_gym.agents.recurrent_reinforce",
        "rllib-ppo": "fiq_gym.agents.rllib_ppo",
        "behaviour-cloning": "fiq_gym.agents.behaviour_cloning",
    }
    kinds = {f: (k.kind, k.action_mode) for f, k in registry.checkpoint_kinds().items()}
    assert kinds == {
        RETRIEVER_FORMAT: ("retriever", "scores"),
        PPO_FORMAT: ("ppo", "query"),
        DQN_FORMAT: ("dqn", "shortlist"),
        RLLIB_PPO_FORMAT: ("rllib-ppo", "shortlist"),
        CLEANRL_PPO_FORMAT: ("cleanrl-ppo-shortlist", "shortlist"),
        RECURRENT_REINFORCE_FORMAT: ("recurrent-reinforce", "query"),
        BEHAVIOUR_CLONING_FORMAT: ("behaviour-cloning", "shortlist"),
    }
    assert [k.kind for k in registry.checkpoint_kinds().values() if k.loader == "policy"] == [
        "cleanrl-ppo-shortlist",
        "recurrent-reinforce",
        "behaviour-cloning",
    ]
    assert registry.builtin_agents() == ("random", "greedy")
    assert AGENTS == (
        "random",
        "supervised",
        "control-pg",
        "policy-gradient",
        "control-pi",
        "policy-improvement",
        "ppo",
        "shortlist-random",
        "shortlist-greedy",
        "ppo-shortlist",
        "dqn-shortlist",
        "posterior-map",
        "posterior-lookahead",
    )
    assert REFERENCES == ("posterior-map", "posterior-lookahead")
    assert UNTRAINED == (
        "random",
        "shortlist-random",
        "shortlist-greedy",
        "posterior-map",
        "posterior-lookahead",
    )
    assert SHORTLIST_AGENTS == ("shortlist-random", "shortlist-greedy", "ppo-shortlist", "dqn-shortlist")
    assert CONTROLS == {"policy-gradient": "control-pg", "policy-improvement": "control-pi"}
    before = {
        "random": "index",
        "supervised": "scores",
        "policy-gradient": "scores",
        "policy-improvement": "scores",
        "single-shot": "scores",
        "ppo": "query",
        "shortlist-greedy": "shortlist",
        "shortlist-random": "shortlist",
        "ppo-shortlist": "shortlist",
        "dqn-shortlist": "shortlist",
        "posterior-map": "index",
        "posterior-lookahead": "index",
    }
    assert {name: ACTION_MODES[name] for name in before} == before


def test_registration_refuses_clashes():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(AgentRecord("ppo", "another ppo", trainer="x"))
    clash = CheckpointKind("fiq-gym-ppo", "mine", "query", "sb3", model="PPO")
    with pytest.raises(ValueError, match="is 'ppo'.s, read another way"):
        registry.register(AgentRecord("mine", "mine", trainer="x", checkpoint=clash))
    with pytest.raises(ValueError, match="not registered"):
        registry.register(
            AgentRecord(
                "mine",
                "mine",
                bench=BenchRole("query", "trained", trained_by="nobody", budget="ppo_timesteps"),
            )
        )
    with pytest.raises(ValueError, match="needs make"):
        BenchRole("index", "untrained")
    with pytest.raises(ValueError, match="loader must be one of"):
        CheckpointKind("f", "k", "query", "pickle")
    assert "mine" not in {r.name for r in registry.records()}
    with pytest.raises(KeyError, match="no agent named 'mine'"):
        registry.get("mine")


def test_listing_agents_loads_no_agent_code():
    """``fiq-gym --help`` stays instant: the CLI's parser and the registry import neither torch
    nor any agent module."""
    code = (
        "import sys; from fiq_gym.cli import build_parser; build_parser(); "
        "from fiq_gym.agents import registry; registry.trainers(); registry.checkpoint_kinds(); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3') "
        "or (m.startswith('fiq_gym.agents.') and m not in ('fiq_gym.agents.registry', 'fiq_gym.agents.random_agent'))); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
