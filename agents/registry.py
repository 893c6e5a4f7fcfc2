"""Every agent fiq-gym knows, registered once.

One :class:`AgentRecord` per agent says all that the rest of fiq-gym needs to know about it,
and everything that lists agents derives from the records:

* ``fiq-gym train NAME``: the records with a :attr:`~AgentRecord.trainer` (:func:`trainers`);
* :func:`~fiq_gym.agents.loading.load_agent`: the :class:`CheckpointKind` of each format
  (:func:`checkpoint_kinds`): what its ``config.json``'s ``format`` is, how the model is read
  and which action mode it speaks;
* ``fiq-gym record --agent NAME``: the records with a :attr:`~AgentRecord.builtin` agent
  (:func:`builtin_agents`), which need no checkpoint;
* ``fiq-gym bench``: the records with a :class:`BenchRole` (:func:`bench_agents`), in
  registration order (the order of the report's rows).

Adding an agent is its own module plus one :func:`register` call: for the agents shipped with
fiq-gym, one entry of :data:`_BUILT_IN` below. The records name modules and classes as
``"module:qualname"`` strings (or hold callables that import what they need when called), so
importing this module loads no agent code: ``fiq-gym --help`` stays instant, and no agent
module depends on the registry (nor the registry on one) at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fiq_gym.checkpoint_formats import (
    BEHAVIOUR_CLONING_FORMAT,
    CLEANRL_PPO_FORMAT,
    DQN_FORMAT,
    PPO_FORMAT,
    RECURRENT_REINFORCE_FORMAT,
    RETRIEVER_FORMAT,
    RLLIB_PPO_FORMAT,
)

__all__ = [
    "BENCH_ROLES",
    "LOADERS",
    "AgentRecord",
    "BenchRole",
    "CheckpointKind",
    "Target",
    "bench_agents",
    "builtin_agents",
    "checkpoint_kinds",
    "get",
    "records",
    "register",
    "resolve",
    "trainers",
    "unregister",
]

#: What a record names to build something: a callable, or ``"package.module:qualname"``
#: (``qualname`` may be dotted, ``"module:Class.classmethod"``), imported when first used.
Target = str | Callable[..., Any]

#: How :func:`~fiq_gym.agents.loading.load_agent` reads a checkpoint's model:
#: ``retriever`` a :class:`~fiq_gym.retriever.RetrieverNet`; ``sb3`` a Stable-Baselines3
#: ``model.zip``; ``rllib`` an RLlib algorithm checkpoint's RLModule (the ``rllib`` extra);
#: ``policy`` a single-file trainer's torch policy (``model.safetensors``, its sizes a
#: :class:`~fiq_gym.checkpoint.PolicyConfig`).
LOADERS = ("retriever", "sb3", "rllib", "policy")
#: An agent's part in ``fiq-gym bench``: ``untrained`` plays as built (random, the first
#: stage's greedy choice); ``reference`` an untrained ceiling (the Bayesian reader), skipped on
#: catalogs its readout does not fit; ``trained`` trained by the benchmark; ``control`` the
#: supervised retriever continued with the budget of the agent it controls.
BENCH_ROLES = ("untrained", "reference", "trained", "control")


def resolve(target: Target | None) -> Any:
    """The object ``target`` names (a callable is returned as it is); None, a record's field
    left empty, raises ``ValueError``."""
    if target is None:
        raise ValueError("this agent does not say how to build it")
    if not isinstance(target, str):
        return target
    module, sep, qualname = target.partition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"{target!r} names no object: write 'package.module:name'")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


@dataclass(frozen=True)
class CheckpointKind:
    """How :func:`~fiq_gym.agents.loading.load_agent` reads one checkpoint format.

    Attributes:
        format: the ``format`` of the checkpoint's ``config.json`` (never changes: checkpoints
            on disk carry it; :mod:`fiq_gym.checkpoint_formats`).
        kind: :attr:`LoadedAgent.kind <fiq_gym.agents.loading.LoadedAgent>`, e.g. ``"ppo"``.
        action_mode: the action mode its checkpoints speak.
        loader: how its model is read, one of :data:`LOADERS`.
        mode_from_args: the checkpoint's training ``args`` may name another action mode (PPO
            trains in several), which then wins over ``action_mode``.
        model: ``sb3``: the Stable-Baselines3 class that loads ``model.zip`` (``"PPO"``).
        network: ``policy``: the torch module, built from the checkpoint's
            :class:`~fiq_gym.checkpoint.PolicyConfig`.
        agent: ``policy``: the batched :class:`~fiq_gym.envs.evaluation.RetrievalAgent`, built from
            the network.
        extra: ``policy``: the optional extra its module needs and the packages that bring it,
            named in the error when they are missing (``("offline", ("minari", "pyarrow"))``).
    """

    format: str
    kind: str
    action_mode: str
    loader: str
    mode_from_args: bool = False
    model: str | None = None
    network: Target | None = None
    agent: Target | None = None
    extra: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {list(LOADERS)}, got {self.loader!r}")
        if self.loader == "sb3" and not self.model:
            raise ValueError(
                f"the sb3 checkpoint kind {self.kind!r} needs model (its stable_baselines3 class)"
            )
        if self.loader == "policy" and (self.network is None or self.agent is None):
            raise ValueError(f"the policy checkpoint kind {self.kind!r} needs network and agent")


@dataclass(frozen=True)
class BenchRole:
    """An agent's part in ``fiq-gym bench`` (:mod:`fiq_gym.benchmarks.dialog`).

    Attributes:
        action_mode: the action mode it plays.
        role: one of :data:`BENCH_ROLES`.
        make: ``untrained`` and ``reference``: builds it, ``make(envs, seed)`` ->
            :class:`~fiq_gym.envs.evaluation.RetrievalAgent`.
        trained_by: ``trained`` and ``control``: the registered agent whose trainer trains it
            (None: its own; a control: the supervised retriever's).
        budget: ``trained``: the benchmark preset's field with its budget, rounds for trainers
            whose ``Args`` count rounds, else env steps (``"pg_rounds"``,
            ``"shortlist_timesteps"``). A control takes the budget of the agent it controls.
        starts_from_supervised: ``trained``: continues the benchmark's supervised retriever
            (``--init``) instead of starting from scratch; a control always does.
        controls: ``control``: the agent whose budget it gets.
        args: trainer arguments of its own beyond the benchmark's common ones, given its budget
            (``{"learning_rate": 3e-5}``; PPO's rollout length from its steps).
        run_dir: its folder in the benchmark's run directory (default: its name with ``_`` for
            ``-``); also the training cache's key, so it never changes.
    """

    action_mode: str
    role: str
    make: Target | None = None
    trained_by: str | None = None
    budget: str | None = None
    starts_from_supervised: bool = False
    controls: str | None = None
    args: Callable[[int], Mapping[str, Any]] | None = None
    run_dir: str | None = None

    def __post_init__(self) -> None:
        if self.role not in BENCH_ROLES:
            raise ValueError(f"role must be one of {list(BENCH_ROLES)}, got {self.role!r}")
        if self.role in ("untrained", "reference") and self.make is None:
            raise ValueError(f"an {self.role} benchmark agent needs make (how to build it)")
        if self.role == "trained" and not self.budget:
            raise ValueError("a trained benchmark agent needs budget (the preset field with its budget)")
        if self.role == "control" and not self.controls:
            raise ValueError("a control needs controls (the agent whose budget it gets)")

    @property
    def trained(self) -> bool:
        return self.role in ("trained", "control")

    def trainer_args(self, budget: int) -> dict[str, Any]:
        """Its own trainer arguments for ``budget`` (see ``args``)."""
        return dict(self.args(budget)) if self.args is not None else {}


@dataclass(frozen=True)
class AgentRecord:
    """One agent: the name it goes by and what each part of fiq-gym does with it.

    Attributes:
        name: its name everywhere: ``fiq-gym train NAME``, ``fiq-gym record --agent NAME``,
            ``fiq-gym bench --agents NAME``.
        help: one line on what it is (``fiq-gym record --help`` shows a built-in agent's).
        trainer: the module of ``fiq-gym train NAME``: its ``main(argv, prog=)`` runs the
            command; the benchmark builds its ``Args`` and calls ``train(args, progress=)``.
        checkpoint: how its checkpoints are read (trainers only).
        builtin: an agent that needs no checkpoint, for ``fiq-gym record``:
            ``builtin(env, first_stage, seed)`` -> :class:`~fiq_gym.envs.evaluation.RetrievalAgent`
            for the env's action mode (``first_stage``: the ``--shortlist`` spec).
        bench: its part in ``fiq-gym bench``, if any.
    """

    name: str
    help: str
    trainer: str | None = None
    checkpoint: CheckpointKind | None = None
    builtin: Target | None = None
    bench: BenchRole | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or " " in self.name:
            raise ValueError(f"an agent name is one word, got {self.name!r}")
        if not self.help:
            raise ValueError(f"agent {self.name!r} needs help (one line on what it is)")
        if self.checkpoint is not None and self.trainer is None:
            raise ValueError(f"agent {self.name!r} has a checkpoint format but no trainer to write it")


_RECORDS: dict[str, AgentRecord] = {}


def register(record: AgentRecord, *, replace: bool = False) -> AgentRecord:
    """Add ``record`` (``replace=True``: in place of the agent of that name); returns it.

    Raises:
        ValueError: its name is taken (without ``replace``), its checkpoint format is another
            agent's with other loading rules, or its bench role names an unknown agent.
    """
    if record.name in _RECORDS and not replace:
        raise ValueError(
            f"an agent named {record.name!r} is already registered; pass replace=True to replace it"
        )
    if record.checkpoint is not None:
        for other in _RECORDS.values():
            same = other.checkpoint is not None and other.checkpoint.format == record.checkpoint.format
            if same and other.name != record.name and other.checkpoint != record.checkpoint:
                raise ValueError(
                    f"checkpoint format {record.checkpoint.format!r} is {other.name!r}'s, read another way; "
                    "give the agent a format of its own"
                )
    bench = record.bench
    if bench is not None:
        # (the agent a control controls may come later: the report's order puts controls first)
        if (
            bench.trained_by is not None
            and bench.trained_by != record.name
            and bench.trained_by not in _RECORDS
        ):
            raise ValueError(
                f"agent {record.name!r} is trained by {bench.trained_by!r}, which is not registered (yet)"
            )
        if bench.trained and bench.trained_by is None and record.trainer is None:
            raise ValueError(f"agent {record.name!r} is trained by the benchmark but has no trainer")
    _RECORDS[record.name] = record
    return record


def unregister(name: str) -> AgentRecord:
    """Remove agent ``name``; returns its record (``KeyError`` if there is none)."""
    return _RECORDS.pop(name)


def get(name: str) -> AgentRecord:
    """The record of agent ``name``."""
    try:
        return _RECORDS[name]
    except KeyError:
        raise KeyError(f"no agent named {name!r}; registered: {sorted(_RECORDS)}") from None


def records() -> tuple[AgentRecord, ...]:
    """Every registered agent, in registration order."""
    return tuple(_RECORDS.values())


def trainers() -> dict[str, str]:
    """``fiq-gym train``'s agents: name -> trainer module."""
    return {r.name: r.trainer for r in _RECORDS.values() if r.trainer is not None}


def checkpoint_kinds() -> dict[str, CheckpointKind]:
    """The agent checkpoint formats :func:`~fiq_gym.agents.loading.load_agent` reads."""
    return {r.checkpoint.format: r.checkpoint for r in _RECORDS.values() if r.checkpoint is not None}


def builtin_agents() -> tuple[str, ...]:
    """The agents ``fiq-gym record --agent`` names without a checkpoint."""
    return tuple(r.name for r in _RECORDS.values() if r.builtin is not None)


def bench_agents() -> tuple[str, ...]:
    """``fiq-gym bench``'s agents, in the order of its reports."""
    return tuple(r.name for r in _RECORDS.values() if r.bench is not None)


# --- the agents shipped with fiq-gym --------------------------------------------------------------
# Builders import their agent's module when called, so listing agents imports none of them.


def _random_builtin(env: Any, first_stage: str, seed: int) -> Any:
    from fiq_gym.agents.random_agent import RandomAgent, UniformBoxAgent
    from fiq_gym.agents.shortlist import ShortlistRandomAgent
    from fiq_gym.envs.inner import inner_env

    mode = inner_env(env).config.action_mode
    if mode == "index":
        return RandomAgent.for_env(env, seed=seed)
    if mode == "shortlist":
        return ShortlistRandomAgent(seed=seed)
    return UniformBoxAgent(env.action_space, seed=seed)


def _greedy_builtin(env: Any, first_stage: str, seed: int) -> Any:
    from fiq_gym.agents.greedy import greedy_agent

    return greedy_agent(env, first_stage, seed=seed)


def _random(envs: Any, seed: int) -> Any:
    from fiq_gym.agents.random_agent import RandomAgent

    return RandomAgent.for_env(envs, seed=seed)


def _shortlist_random(envs: Any, seed: int) -> Any:
    from fiq_gym.agents.shortlist import ShortlistRandomAgent

    return ShortlistRandomAgent(seed=seed)


def _shortlist_greedy(envs: Any, seed: int) -> Any:
    from fiq_gym.agents.shortlist import ShortlistGreedyAgent

    return ShortlistGreedyAgent()


def _posterior(policy: str) -> Callable[[Any, int], Any]:
    def make(envs: Any, seed: int) -> Any:
        """The Bayesian reader; with a shopper that is not a template one (the learned shopper)
        it reads the captions by the noise-free template shopper's rules, which that one imitates."""
        from fiq_gym.agents.posterior import posterior_agent
        from fiq_gym.envs.inner import inner_env
        from fiq_gym.users.template import TemplateUser

        inner = inner_env(envs)
        rules = None if isinstance(inner.user, TemplateUser) else TemplateUser(inner.catalog)
        return posterior_agent(envs, policy, seed=seed, rules=rules)

    return make


def _fine_tuning_rate(budget: int) -> dict[str, Any]:
    return {"learning_rate": 3e-5}


def _continue_optimizer(budget: int) -> dict[str, Any]:
    # continue the supervised training (its Adam moments), do not restart it
    return {"init_optimizer": True}


def _ppo_rollouts(budget: int) -> dict[str, Any]:
    return {"n_steps": max(8, min(64, budget // 16))}


def _ppo_shortlist(budget: int) -> dict[str, Any]:
    # The trainer's defaults, which docs/agents.md recommends: no tuning on the benchmark.
    return {"action_mode": "shortlist", **_ppo_rollouts(budget)}


def _dqn_warmup(budget: int) -> dict[str, Any]:
    return {"learning_starts": min(1_000, budget // 4)}


_RETRIEVER = CheckpointKind(RETRIEVER_FORMAT, "retriever", "scores", "retriever")
_OFFLINE = ("offline", ("minari", "pyarrow"))

# Registration order is the benchmark's order of agents (the rows of its tables).
_BUILT_IN = (
    AgentRecord(
        "random",
        "index mode a uniform unseen item, shortlist a uniform candidate, query/scores uniform samples of "
        "the action box.",
        builtin=_random_builtin,
        bench=BenchRole("index", "untrained", make=_random),
    ),
    AgentRecord(
        "greedy",
        "the first stage's best unseen item (by default the supervised retriever shipped with the package): "
        "shortlist the best-scored candidate (the benchmark's shortlist-greedy), index that item, scores the "
        "first stage's scores, query that item's features",
        builtin=_greedy_builtin,
    ),
    AgentRecord(
        "supervised",
        "the supervised dialog retriever (the papers' pre-training), the shopper in the loop",
        trainer="fiq_gym.agents.supervised",
        checkpoint=_RETRIEVER,
        bench=BenchRole("scores", "trained", budget="supervised_rounds"),
    ),
    AgentRecord(
        "control-pg",
        "equal-budget control of policy-gradient: the supervised retriever continued with its rounds and seeds",
        bench=BenchRole(
            "scores", "control", trained_by="supervised", controls="policy-gradient", args=_continue_optimizer
        ),
    ),
    AgentRecord(
        "policy-gradient",
        "the dialog retriever fine-tuned by policy gradient (REINFORCE with a baseline)",
        trainer="fiq_gym.agents.policy_gradient",
        checkpoint=_RETRIEVER,
        bench=BenchRole(
            "scores", "trained", budget="pg_rounds", starts_from_supervised=True, args=_fine_tuning_rate
        ),
    ),
    AgentRecord(
        "control-pi",
        "equal-budget control of policy-improvement: the supervised retriever continued with its rounds and "
        "seeds",
        bench=BenchRole(
            "scores",
            "control",
            trained_by="supervised",
            controls="policy-improvement",
            args=_continue_optimizer,
        ),
    ),
    AgentRecord(
        "policy-improvement",
        "the dialog retriever fine-tuned by model-based policy improvement (Guo et al., NeurIPS 2018)",
        trainer="fiq_gym.agents.policy_improvement",
        checkpoint=_RETRIEVER,
        bench=BenchRole("scores", "trained", budget="mbpi_rounds", starts_from_supervised=True),
    ),
    AgentRecord(
        "ppo",
        "Stable-Baselines3 PPO on the native vector env (query mode; --action-mode shortlist on the shortlist)",
        trainer="fiq_gym.agents.ppo",
        checkpoint=CheckpointKind(PPO_FORMAT, "ppo", "query", "sb3", mode_from_args=True, model="PPO"),
        bench=BenchRole("query", "trained", budget="ppo_timesteps", args=_ppo_rollouts),
    ),
    AgentRecord(
        "shortlist-random",
        "a uniform candidate of the env's shortlist",
        bench=BenchRole("shortlist", "untrained", make=_shortlist_random),
    ),
    AgentRecord(
        "shortlist-greedy",
        "the first stage's best-scored candidate of the env's shortlist",
        bench=BenchRole("shortlist", "untrained", make=_shortlist_greedy),
    ),
    AgentRecord(
        "ppo-shortlist",
        "Stable-Baselines3 PPO choosing among the shortlist's candidates (fiq-gym train ppo --action-mode "
        "shortlist)",
        bench=BenchRole(
            "shortlist", "trained", trained_by="ppo", budget="shortlist_timesteps", args=_ppo_shortlist
        ),
    ),
    AgentRecord(
        "dqn",
        "Stable-Baselines3 DQN on the shortlist: a Q-value per candidate from one shared network",
        trainer="fiq_gym.agents.dqn",
        checkpoint=CheckpointKind(DQN_FORMAT, "dqn", "shortlist", "sb3", model="DQN"),
    ),
    AgentRecord(
        "dqn-shortlist",
        "Stable-Baselines3 DQN on the shortlist (fiq-gym train dqn)",
        bench=BenchRole(
            "shortlist", "trained", trained_by="dqn", budget="shortlist_timesteps", args=_dqn_warmup
        ),
    ),
    AgentRecord(
        "posterior-map",
        "the Bayesian reader of the shopper's captions, showing the most probable item",
        bench=BenchRole("index", "reference", make=_posterior("map")),
    ),
    AgentRecord(
        "posterior-lookahead",
        "the Bayesian reader of the shopper's captions, planning one step ahead",
        bench=BenchRole("index", "reference", make=_posterior("lookahead")),
    ),
    AgentRecord(
        "cleanrl-ppo-shortlist",
        "a CleanRL-style single-file PPO on the shortlist, on the public API only",
        trainer="fiq_gym.agents.cleanrl_ppo_shortlist",
        checkpoint=CheckpointKind(
            CLEANRL_PPO_FORMAT,
            "cleanrl-ppo-shortlist",
            "shortlist",
            "policy",
            network="fiq_gym.agents.cleanrl_ppo_shortlist:Agent",
            agent="fiq_gym.agents.cleanrl_ppo_shortlist:Policy",
        ),
    ),
    AgentRecord(
        "single-shot",
        "single-shot retrieval from human captions (the Fashion IQ challenge protocol)",
        trainer="fiq_gym.agents.single_shot",
        checkpoint=_RETRIEVER,
    ),
    AgentRecord(
        "recurrent-reinforce",
        "a recurrent REINFORCE retriever in one file, on the public API only",
        trainer="fiq_gym.agents.recurrent_reinforce",
        checkpoint=CheckpointKind(
            RECURRENT_REINFORCE_FORMAT,
            "recurrent-reinforce",
            "query",
            "policy",
            network="fiq_gym.agents.recurrent_reinforce:RecurrentPolicy",
            agent="fiq_gym.agents.recurrent_reinforce:RecurrentQueryAgent",
        ),
    ),
    AgentRecord(
        "rllib-ppo",
        "Ray RLlib PPO on the shortlist, sampled by many env runners (the rllib extra)",
        trainer="fiq_gym.agents.rllib_ppo",
        checkpoint=CheckpointKind(RLLIB_PPO_FORMAT, "rllib-ppo", "shortlist", "rllib", mode_from_args=True),
    ),
    AgentRecord(
        "behaviour-cloning",
        "behaviour cloning from a Minari dataset that fiq-gym record wrote (the offline extra)",
        trainer="fiq_gym.agents.behaviour_cloning",
        checkpoint=CheckpointKind(
            BEHAVIOUR_CLONING_FORMAT,
            "behaviour-cloning",
            "shortlist",
            "policy",
            network="fiq_gym.agents.behaviour_cloning:SlotPolicy",
            agent="fiq_gym.agents.behaviour_cloning:BCAgent",
            extra=_OFFLINE,
        ),
    ),
)

for _record in _BUILT_IN:
    register(_record)
del _record
