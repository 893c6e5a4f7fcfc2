"""Trained agents on disk: what each checkpoint kind is, how to load it, how to resume it.

:func:`load_agent` is the one reader of agent checkpoints. It works out the checkpoint's
kind (a dialog retriever: supervised, policy gradient, policy improvement, single-shot; an
SB3 PPO model in ``query`` or ``shortlist`` mode; an SB3 DQN model on the shortlist; an
RLlib PPO algorithm checkpoint, whose RLModule it reads without a Ray cluster; or the torch
policy of a single-file trainer: CleanRL-style PPO, recurrent REINFORCE, behaviour cloning),
the action mode it speaks, the environment it was trained on and the
tokenizer it reads captions with, and returns a :class:`LoadedAgent` that builds that
environment and a fitted :class:`~fiq_gym.envs.evaluation.RetrievalAgent` for it. ``fiq-gym
eval``, ``fiq-gym play`` and ``fiq-gym bench`` all load through it. The formats it reads, and how,
are the registered agents' (:func:`fiq_gym.agents.registry.checkpoint_kinds`).

The retriever trainers share :func:`start_retriever_run` and :func:`save_retriever_run`, so
``--resume``, ``--overwrite`` and ``--init`` mean the same in each (the rule itself is
:func:`fiq_gym.checkpoint.prepare_run`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import stable_baselines3
import torch

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents import registry
from fiq_gym.agents.ppo import PPOAgent
from fiq_gym.agents.registry import CheckpointKind
from fiq_gym.agents.retriever import (
    RetrieverAgent,
    RetrieverConfig,
    RetrieverNet,
    check_catalog,
    check_fits,
    load_checkpoint,
    save_checkpoint,
)
from fiq_gym.agents.shortlist import SB3ShortlistAgent
from fiq_gym.checkpoint import (
    BEHAVIOUR_CLONING_FORMAT,
    CLEANRL_PPO_FORMAT,
    DQN_FORMAT,
    PPO_FORMAT,
    RECURRENT_REINFORCE_FORMAT,
    RLLIB_PPO_FORMAT,
    PolicyConfig,
    config_fields,
    load_policy_weights,
    prepare_run,
    read_config,
    read_training_state,
)
from fiq_gym.default_catalog import resolve_catalog
from fiq_gym.dialog_engine import ACTION_MODES as ENV_ACTION_MODES
from fiq_gym.dialog_engine import CANDIDATE_KEYS, CORE_OBSERVATION_KEYS, TURN_LIMIT
from fiq_gym.envs.configurations import apply_configuration
from fiq_gym.envs.evaluation import RetrievalAgent, training_evaluation_seed
from fiq_gym.envs.inner import inner_env
from fiq_gym.envs.registration import EARLIER_RELEASE, EARLIER_VERSION, env_id_for, successor_env_id
from fiq_gym.errors import CheckpointError
from fiq_gym.starts import START_MODES, start_kwargs
from fiq_gym.text import CaptionTokenizer, WordTokenizer
from fiq_gym.users.registry import tokenizer_for
from fiq_gym.utils.arguments import absolute_catalog

__all__ = [
    "ACTION_MODES",  # noqa: F822  (module __getattr__: follows the registry)
    "BEHAVIOUR_CLONING_FORMAT",
    "CLEANRL_PPO_FORMAT",
    "DQN_FORMAT",
    "PPO_FORMAT",
    "RECURRENT_REINFORCE_FORMAT",
    "RLLIB_PPO_FORMAT",
    "LoadedAgent",
    "load_agent",
    "save_retriever_run",
    "start_retriever_run",
]


def __getattr__(name: str) -> Any:
    # ACTION_MODES follows the registry, agents registered later included
    if name == "ACTION_MODES":
        return action_modes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def action_modes() -> dict[str, str]:
    """The action mode each registered agent speaks (``ACTION_MODES``): a benchmark agent's
    in the benchmark, a trainer's its checkpoints' default (:mod:`fiq_gym.agents.registry`)."""
    modes = {}
    for record in registry.records():
        if record.bench is not None:
            modes[record.name] = record.bench.action_mode
        elif record.checkpoint is not None:
            modes[record.name] = record.checkpoint.action_mode
    return modes


def _kind_of(kind: str) -> CheckpointKind:
    """The registered checkpoint kind named ``kind`` (:attr:`LoadedAgent.kind`)."""
    for registered in registry.checkpoint_kinds().values():
        if registered.kind == kind:
            return registered
    raise CheckpointError(
        f"no registered agent writes checkpoints of kind {kind!r} (fiq_gym.agents.registry)"
    )


# Env arguments of the shortlist modes a checkpoint's args may carry, by mode.
_SHORTLIST_ARGS = {
    "shortlist": ("shortlist_size", "shortlist", "explore"),
    "shortlist_slate": ("shortlist_size", "shortlist", "explore", "slate_size"),
}


@dataclass(frozen=True)
class _TrainingSettings:
    """The training arguments :func:`load_agent` reads from a checkpoint's ``config.json``
    (``args``), typed and ranged: a hand-edited or damaged value is named in one line instead
    of failing later inside the env. Trainers' other arguments are theirs to read."""

    env_id: str | None = None
    catalog: str | None = None
    user: str = "template"
    max_turns: int = 5
    action_mode: str | None = None
    shortlist_size: int | None = None
    shortlist: str | None = None
    explore: float | None = None
    slate_size: int | None = None
    start: str | None = None
    start_split: str | None = None
    seed: int | None = None
    eval_episodes: int | None = None
    #: the evaluation set's seed, where a trainer lets it differ from 10000 + ``seed``
    eval_seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("seed", "eval_seed"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0, got {value}")
        # 0: the run skipped its evaluation (behaviour cloning's --eval-episodes 0)
        if self.eval_episodes is not None and self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be at least 0, got {self.eval_episodes}")
        if self.max_turns < 1 or self.max_turns > TURN_LIMIT:
            raise ValueError(f"max_turns must be from 1 to {TURN_LIMIT}, got {self.max_turns}")
        if self.action_mode is not None and self.action_mode not in ENV_ACTION_MODES:
            raise ValueError(f"action_mode must be one of {list(ENV_ACTION_MODES)}, got {self.action_mode!r}")
        if self.shortlist_size is not None and self.shortlist_size < 1:
            raise ValueError(f"shortlist_size must be at least 1, got {self.shortlist_size}")
        if self.slate_size is not None and self.slate_size < 2:
            raise ValueError(f"slate_size must be at least 2, got {self.slate_size}")
        if self.explore is not None and not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"explore must be a fraction in [0, 1], got {self.explore}")
        if self.start is not None and self.start not in START_MODES:
            raise ValueError(f"start must be one of {list(START_MODES)}, got {self.start!r}")
        for name in ("env_id", "user", "shortlist", "start_split"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} must not be empty")


_FIX = "pass the checkpoint/ folder of a run written by `fiq-gym train AGENT --out RUN`"


@dataclass
class LoadedAgent:
    """A trained agent read from disk, with the environment settings it was trained for.

    Attributes:
        path: the checkpoint directory.
        kind: ``"retriever"`` (a :class:`~fiq_gym.agents.retriever.RetrieverNet`), ``"ppo"``
            or ``"dqn"`` (SB3 models), ``"rllib-ppo"`` (an RLlib RLModule), or a single-file
            trainer's torch policy: ``"cleanrl-ppo-shortlist"``, ``"recurrent-reinforce"``,
            ``"behaviour-cloning"``.
        name: the training algorithm as recorded ("supervised", "policy gradient", "PPO"...).
        action_mode: the env action mode the agent speaks.
        env_id: the registered id it was trained on (it fixes the category).
        catalog: the catalog directory it was trained on (None: the default catalog).
        user: the shopper it was trained with (its tokenizer numbers the words it learned).
        max_turns: turns per dialog in training.
        own_tokenizer: the checkpoint's own ``tokenizer.json``, for agents that learned their
            words from human captions (``fiq-gym train single-shot``); else None.
        model: the network, SB3 model, RLModule or torch policy.
        config: the checkpoint's ``config.json``.
    """

    path: Path
    kind: str
    name: str
    action_mode: str
    env_id: str
    catalog: str | None
    user: str
    max_turns: int
    own_tokenizer: CaptionTokenizer | None
    model: Any = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    #: shortlist mode: the env's shortlist arguments in training (K, first stage, explore).
    shortlist: dict[str, Any] = field(default_factory=dict)
    #: ``start="annotated"``: the env's start arguments in training (``start``, ``start_split``).
    start: dict[str, Any] = field(default_factory=dict)
    #: the observation keys it reads, when not the env's default (an RLlib index-mode module
    #: also reads ``shown_mask``).
    observation_keys: tuple[str, ...] | None = None
    #: ``(seed, episodes)`` of the set its trainer evaluated it on (seed
    #: :func:`~fiq_gym.envs.evaluation.training_evaluation_seed` of the run's seed, its
    #: ``eval_episodes``), the default set of ``fiq-gym eval``; None when not recorded.
    training_evaluation: tuple[int, int] | None = None

    def make_envs(
        self,
        num_envs: int,
        *,
        catalog: Any = None,
        user: str | None = None,
        max_turns: int | None = None,
        **kwargs: Any,
    ) -> gym.vector.VectorEnv:
        """The native vector env this agent was trained on; ``catalog``, ``user`` and
        ``max_turns`` override the training settings. Captions are always tokenized as in
        training (a trained agent's word embeddings are indexed by its tokenizer's ids, and
        the shoppers number words differently)."""
        return gym.make_vec(
            self.env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            **self.env_kwargs(catalog=catalog, user=user, max_turns=max_turns, **kwargs),
        )

    def make_env(
        self,
        *,
        catalog: Any = None,
        user: str | None = None,
        max_turns: int | None = None,
        **kwargs: Any,
    ) -> gym.Env:
        """The single env this agent was trained on (``gym.make``), with the overrides of
        :meth:`make_envs`; ``max_episode_steps`` follows ``max_turns``."""
        env_kwargs = self.env_kwargs(catalog=catalog, user=user, max_turns=max_turns, **kwargs)
        return gym.make(self.env_id, max_episode_steps=env_kwargs["max_turns"], **env_kwargs)

    def env_kwargs(
        self,
        *,
        catalog: Any = None,
        user: str | None = None,
        max_turns: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The env arguments of :meth:`make_envs` and :meth:`make_env`: the training settings
        with the overrides given; ``tokenizer`` is None (the shopper's own) unless the agent
        reads captions with another one."""
        user = user or self.user
        if catalog is None and self.catalog and absolute_catalog(self.catalog) != self.catalog:
            raise CheckpointError(
                f"{self.path}/config.json names its catalog by the relative path {self.catalog!r}, which is "
                f"not found from {Path.cwd()}: run from the directory it was trained in, or pass the catalog's "
                "location (--catalog DIR; catalog=DIR in Python)"
            )
        tokenizer = self.own_tokenizer
        if tokenizer is None and user != self.user:
            tokenizer = self.training_tokenizer(catalog)
        return {
            "catalog": catalog if catalog is not None else self.catalog,
            "user": user,
            "action_mode": self.action_mode,
            "max_turns": max_turns or self.max_turns,
            "tokenizer": tokenizer,
            **self.shortlist,
            **self.start,
            **({"observation_keys": self.observation_keys} if self.observation_keys else {}),
            **kwargs,
        }

    def training_tokenizer(self, catalog: Any = None) -> CaptionTokenizer:
        """The tokenizer the agent read captions with in training."""
        if self.own_tokenizer is not None:
            return self.own_tokenizer
        # The tokenizer of the training env's shopper on its catalog (the id's configuration
        # names the catalog when none is given), without building that env or shopper.
        configuration = gym.spec(self.env_id).kwargs.get("configuration", "default")
        given = catalog if catalog is not None else self.catalog
        resolved, _ = apply_configuration(configuration, given, self.user, None)
        return tokenizer_for(self.user, resolve_catalog(resolved))

    def make_agent(self, env: gym.Env | gym.vector.VectorEnv) -> RetrievalAgent:
        """A fresh batched agent (its own dialog state) for ``env``; raises
        :class:`~fiq_gym.errors.CheckpointError` naming the mismatch if it does not fit."""
        inner = inner_env(env)
        mode = inner.config.action_mode
        if mode != self.action_mode:
            raise CheckpointError(
                f"{self.path} speaks action_mode={self.action_mode!r}, but the env uses {mode!r}; "
                f"make the env with action_mode={self.action_mode!r} (LoadedAgent.make_envs does)"
            )
        loader = _kind_of(self.kind).loader
        if loader in ("sb3", "rllib"):
            space = getattr(inner, "single_observation_space", inner.observation_space)
            if self.model.observation_space != space:
                raise CheckpointError(
                    f"the {self.kind.upper()} checkpoint {self.path} does not fit this environment: its observation "
                    "space differs (feature size, attribute count, caption vocabulary or shortlist size); use "
                    "the catalog, shopper and shortlist_size it was trained with, or retrain it"
                )
            if loader == "rllib":
                from fiq_gym.agents.rllib_modules import RLlibAgent

                return RLlibAgent(self.model)
            if self.action_mode in _SHORTLIST_ARGS:
                return SB3ShortlistAgent(self.model)
            return PPOAgent(self.model)
        if loader == "policy":
            space = getattr(inner, "single_observation_space", inner.observation_space)
            _check_policy_fits(self.model.config, space, self.path)
            return _policy_parts(_kind_of(self.kind), self.path).agent(self.model)
        try:
            check_fits(self.model.config, inner.gallery, inner.tokenizer.vocab_size)
            check_catalog(self.config, inner.catalog, self.path)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        return RetrieverAgent(self.model, inner.gallery)


#: the observation keys an RLlib module reads, by action mode (its env's ``observation_keys``)
RLLIB_OBSERVATION_KEYS = {
    "shortlist": (*CORE_OBSERVATION_KEYS, *CANDIDATE_KEYS),
    # The slate's own keys (what the shopper picked from the last slate) are left out: the
    # module scores candidates from the caption, the shown (picked) item and the turn.
    "shortlist_slate": (*CORE_OBSERVATION_KEYS, *CANDIDATE_KEYS),
    # The module masks items already shown (the env would show them again, for nothing).
    "index": (*CORE_OBSERVATION_KEYS, "shown_mask"),
}


def load_agent(path: str | os.PathLike, *, load_model: bool = True) -> LoadedAgent:
    """Read a checkpoint written by ``fiq-gym train AGENT`` (its ``checkpoint/`` folder).

    ``load_model=False`` reads only its settings (``config.json``, ``tokenizer.json``): enough
    for :meth:`LoadedAgent.env_kwargs`, without running any of the model's loading code (an
    evaluator that runs the agent in another process never loads an untrusted model itself).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: not an agent checkpoint, or damaged (the message names the file), or
            trained on an env version this fiq-gym no longer has (-v1, -v0: the message names
            the -v3 id to retrain on).
    """
    path = Path(path).expanduser()
    kinds = registry.checkpoint_kinds()
    config = read_config(path, formats=set(kinds), what="an agent checkpoint", fix=_FIX)
    found = kinds[config["format"]]
    kind, mode = found.kind, found.action_mode
    args = config.get("args")
    if args is None:
        args = {}
    settings = config_fields(
        _TrainingSettings, args, path / "config.json", what="training arguments", known_only=False
    )
    if found.mode_from_args:
        mode = settings.action_mode or mode
    # Every trainer that plays dialogs records its env id; checkpoints without one (single-shot
    # retrievers, trained on human captions, not in an env) play the default id.
    env_id = settings.env_id or env_id_for("default")
    successor = successor_env_id(env_id)
    if successor is not None:
        raise CheckpointError(
            f"{path}/config.json says the agent was trained on {env_id}, {EARLIER_VERSION}: it would act on "
            f"inputs it never saw. Retrain it on {successor} (fiq-gym train AGENT --env-id {successor} ...), "
            f"or use it with {EARLIER_RELEASE}"
        )
    try:
        gym.spec(env_id)
    except gym.error.Error:
        raise CheckpointError(
            f"{path}/config.json names env {env_id!r}, which is not registered in this fiq-gym; "
            "use the fiq-gym version that trained it"
        ) from None
    own = path / "tokenizer.json"
    tokenizer = WordTokenizer.from_json(own.read_text(encoding="utf-8")) if own.is_file() else None
    if not load_model:
        model: Any = None
    elif found.loader == "sb3":
        if not (path / "model.zip").is_file():
            raise CheckpointError(
                f"{path} has no model.zip: the {kind.upper()} checkpoint is incomplete; {_FIX}"
            )
        model = getattr(stable_baselines3, str(found.model)).load(path / "model.zip", device="cpu")
    elif found.loader == "rllib":
        model = _load_rllib_module(path)
    elif found.loader == "policy":
        model = _load_policy(path, found, config)
    else:
        model, config = load_checkpoint(path)
    return LoadedAgent(
        path=path,
        kind=kind,
        name=str(config.get("agent", kind)),
        action_mode=mode,
        env_id=env_id,
        catalog=_stored_catalog(settings.catalog),
        user=settings.user,
        max_turns=settings.max_turns,
        own_tokenizer=tokenizer,
        model=model,
        config=config,
        shortlist={k: getattr(settings, k) for k in _SHORTLIST_ARGS.get(mode, ()) if k in args},
        start=start_kwargs(settings),
        training_evaluation=_training_evaluation(settings),
        observation_keys=(
            None
            if found.loader != "rllib"
            else RLLIB_OBSERVATION_KEYS.get(mode)
            if model is None
            else tuple(model.observation_space.spaces)
        ),
    )


def _training_evaluation(settings: _TrainingSettings) -> tuple[int, int] | None:
    """``(seed, episodes)`` of the set the run's trainer evaluated it on, if recorded."""
    if not settings.eval_episodes:
        return None
    if settings.eval_seed is not None:
        return settings.eval_seed, settings.eval_episodes
    if settings.seed is not None:
        return training_evaluation_seed(settings.seed), settings.eval_episodes
    return None


def _stored_catalog(catalog: str | None) -> str | None:
    """The catalog a checkpoint names, absolute when it can be. Checkpoints store it absolute;
    one written by an older fiq-gym may hold the relative path it was given, which means
    something only from the directory it was trained in (:meth:`LoadedAgent.env_kwargs` says
    so if it is used from elsewhere)."""
    if not catalog:
        return None
    absolute = absolute_catalog(catalog)
    return absolute if absolute == catalog or Path(absolute).exists() else catalog


def _load_rllib_module(path: Path) -> Any:
    """The RLModule of an RLlib checkpoint; the ``rllib`` extra is imported only here."""
    try:
        from fiq_gym.agents.rllib_modules import load_rl_module
    except ImportError as e:
        raise CheckpointError(
            f"{path} is an RLlib checkpoint, and reading it needs Ray RLlib ({e}); "
            'install it with pip install -e ".[rllib]"'
        ) from None
    return load_rl_module(path / "algorithm")


@dataclass(frozen=True)
class _PolicyParts:
    """What a single-file trainer's checkpoint is read into: its network, built from a
    :class:`~fiq_gym.checkpoint.PolicyConfig`, and its batched agent."""

    network: Callable[[PolicyConfig], torch.nn.Module]
    agent: Callable[[Any], RetrievalAgent]


def _policy_parts(kind: CheckpointKind, path: Path) -> _PolicyParts:
    """The network and agent classes of a torch-policy kind (its registered ``network`` and
    ``agent``), imported when first needed (the behaviour-cloning file needs the ``offline``
    extra: its missing packages are named with the extra that brings them)."""
    try:
        return _PolicyParts(registry.resolve(kind.network), registry.resolve(kind.agent))
    except ModuleNotFoundError as e:
        if kind.extra is None or e.name not in kind.extra[1]:
            raise
        extra = kind.extra[0]
        raise CheckpointError(
            f"{path} is a {kind.kind} checkpoint, and reading it needs the {extra} extra "
            f'({e.name} is not installed); install it with pip install -e ".[{extra}]"'
        ) from None


def _load_policy(path: Path, kind: CheckpointKind, config: dict[str, Any]) -> torch.nn.Module:
    """A single-file trainer's torch policy: its network rebuilt from ``config.json``'s sizes,
    with the weights of ``model.safetensors``."""
    retrain = f"`fiq-gym train {kind.kind}`"
    sizes = config_fields(PolicyConfig, config.get("config"), path / "config.json", retrain=retrain)
    network = _policy_parts(kind, path).network(sizes)
    load_policy_weights(network, path, fix=f"retrain it with {retrain}")
    return network.eval()


def _check_policy_fits(config: PolicyConfig, space: gym.spaces.Space, path: Path) -> None:
    """Refuse an env whose observations differ in size from those the policy learned on."""
    env = PolicyConfig.for_space(space, embed_dim=config.embed_dim, hidden=config.hidden)
    differ = [
        f"{f.name} {getattr(config, f.name)} (the env's: {getattr(env, f.name)})"
        for f in dataclasses.fields(PolicyConfig)
        if getattr(config, f.name) != getattr(env, f.name)
    ]
    if differ:
        raise CheckpointError(
            f"the checkpoint {path} does not fit this environment: its policy reads {', '.join(differ)}; use "
            "the catalog, shopper and shortlist_size it was trained with, or retrain it"
        )


# --- resuming retriever runs ----------------------------------------------------------------------


def start_retriever_run(
    args: Any, envs: gym.vector.VectorEnv
) -> tuple[RetrieverNet, torch.optim.Optimizer, int, dict[str, Any]]:
    """The network, its Adam optimizer, the first round to play and the saved counters.

    Applies the run-directory rule to ``args.out`` (``args.resume`` continues
    ``out/checkpoint``; ``args.overwrite`` replaces the run; neither refuses an existing
    one); a new run starts from ``args.init`` (a retriever checkpoint) if given, with its
    optimizer state too when ``args.init_optimizer``, else from fresh weights sized for
    ``envs``.
    """
    inner = inner_env(envs)
    checkpoint = Path(args.out) / "checkpoint"
    resuming = prepare_run(
        args.out,
        resume=args.resume,
        overwrite=getattr(args, "overwrite", False),
        state=checkpoint,
        kind="retriever",
    )
    source = checkpoint if resuming else args.init
    if source:
        net, meta = load_checkpoint(source)
        check_catalog(meta, inner.catalog, source)
    else:
        net = RetrieverNet(RetrieverConfig.for_env(envs, embed_dim=args.embed_dim))
    check_fits(net.config, inner.gallery, inner.tokenizer.vocab_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    if not resuming:
        if args.init and getattr(args, "init_optimizer", False):
            # Continue the --init run's optimisation (Adam's moments) instead of restarting it:
            # a fresh Adam's first steps move every weight by about the learning rate.
            read_training_state(args.init, optimizer=optimizer, rng=False)
            for group in optimizer.param_groups:
                group["lr"] = args.learning_rate
        return net, optimizer, 0, {}
    record, _ = read_training_state(checkpoint, optimizer=optimizer, rng=False)
    return net, optimizer, int(record["round"]), record


def save_retriever_run(
    args: Any,
    envs: gym.vector.VectorEnv,
    net: RetrieverNet,
    optimizer: torch.optim.Optimizer,
    rounds_done: int,
    *,
    agent: str,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``args.out/checkpoint``: the model, the arguments, the catalog's fingerprint and
    the state :func:`start_retriever_run` resumes from."""
    return save_checkpoint(
        Path(args.out) / "checkpoint",
        net,
        args=dataclasses.asdict(args),
        agent=agent,
        optimizer=optimizer,
        state={"round": rounds_done, **(extra_state or {})},
        catalog=inner_env(envs).catalog,
    )
