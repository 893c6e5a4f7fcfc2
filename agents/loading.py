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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import gymnasium as gym
import stable_baselines3
import torch

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.action_modes import mode_class
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
from fiq_gym.dialog_engine import CANDIDATE_KEYS, CORE_OBSERVATION_KEYS
from fiq_gym.env_config import EnvConfig, trainer_env_kwargs
from fiq_gym.envs.configurations import apply_configuration
from fiq_gym.envs.evaluation import RetrievalAgent, training_evaluation_seed
from fiq_gym.envs.inner import inner_env
from fiq_gym.envs.registration import EARLIER_RELEASE, EARLIER_VERSION, env_id_for, successor_env_id
from fiq_gym.errors import CheckpointError
from fiq_gym.text import CaptionTokenizer, WordTokenizer
from fiq_gym.users.registry import tokenizer_for
from fiq_gym.utils.arguments import absolute_catalog

__all__ = [
    "ACTION_MODES",  # noqa: F822  (module __getattr__: follows the registry)
    "BEHAVIOUR_CLONING_FORMAT",
    "CLEANRL_PPO_FORMAT",
    "DQN_FORMAT",
    "NOT_REPLAYED",
    "PPO_FORMAT",
    "RECURRENT_REINFORCE_FORMAT",
    "RLLIB_PPO_FORMAT",
    "LoadedAgent",
    "TrainingEnvArguments",
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


#: The env arguments a checkpoint's ``args`` may hold that its agent's env is not given back,
#: though its trainer's env got them: ``reward`` and ``success_bonus`` are the trainer's
#: learning signal, which no agent reads (the evaluation harness hides rewards, and every
#: reward's return is the same score), and whoever plays a loaded agent chooses them
#: (``fiq-gym record --reward``); ``expose_target`` and ``lookahead`` are training-only opt-ins
#: that the evaluation harness refuses; ``render_mode`` is the viewer's choice; ``tokenizer`` is
#: no JSON value (:meth:`LoadedAgent.env_kwargs` works it out).
NOT_REPLAYED = frozenset(
    {"reward", "success_bonus", "expose_target", "lookahead", "render_mode", "tokenizer"}
)

# The names behind the earlier attributes LoadedAgent.shortlist and LoadedAgent.start.
_FIRST_STAGE_NAMES = ("shortlist_size", "shortlist", "explore", "slate_size")
_START_NAMES = ("start", "start_split")


class TrainingEnvArguments(Mapping[str, Any]):
    """The env arguments an agent was trained with, as its checkpoint records them: a read-only
    mapping from :class:`~fiq_gym.env_config.EnvConfig` field names to values, checked by
    ``EnvConfig``'s rules when made (``ValueError`` or ``TypeError`` in one line).

    ``catalog``, ``user``, ``action_mode`` and ``max_turns`` are always there (the env's
    defaults where the checkpoint has none); any other argument only if the checkpoint records
    it. The catalog is the path as stored (made absolute when that path exists), which may be
    relative in a checkpoint of an older fiq-gym.
    """

    # Not an EnvConfig itself: an EnvConfig holds a value for every argument, while a checkpoint
    # records some and leaves the others to its env id (FashionIQDress-v3 fixes the category,
    # FashionIQTerse-v3 the configuration) and to the env's defaults. Passing a whole EnvConfig
    # would replace the id's; LoadedAgent.env_config is the whole config, read over the id's.
    __slots__ = ("_arguments",)

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        values = dict(arguments)
        EnvConfig.from_kwargs(**values)  # the env's own checks and messages; the config is not kept
        self._arguments = values

    def __getitem__(self, name: str) -> Any:
        return self._arguments[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arguments)

    def __len__(self) -> int:
        return len(self._arguments)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._arguments!r})"

    def replace(self, **arguments: Any) -> TrainingEnvArguments:
        """These arguments with ``arguments`` set (checked again)."""
        return TrainingEnvArguments({**self._arguments, **arguments})


@dataclass(frozen=True)
class _TrainingSettings:
    """The training arguments :func:`load_agent` reads from a checkpoint's ``config.json``
    (``args``), typed and ranged: a hand-edited or damaged value is named in one line instead
    of failing later inside the env. Trainers' other arguments are theirs to read.

    The env arguments here are those checkpoints have recorded so far, listed for their JSON
    types; their values are checked by ``EnvConfig``'s rules. An env argument a trainer starts
    to record needs no field here to reach the agent's env (:func:`_training_env_arguments`)."""

    env_id: str | None = None
    catalog: str | None = None
    user: str = "template"
    max_turns: int = EnvConfig.max_turns
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
        for name in ("env_id", "user", "shortlist"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} must not be empty")
        # Every recorded value, whether or not its action mode reads it (a damaged file is named
        # either way); the first stage's, whose rule depends on the mode, is the record's to check.
        EnvConfig.from_kwargs(
            **{
                name: getattr(self, name)
                for name in EnvConfig.names()
                if hasattr(self, name) and name != "shortlist" and getattr(self, name) is not None
            }
        )


_T = TypeVar("_T")

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
        env_id: the registered id it was trained on (it fixes the category).
        env_arguments: the env arguments it was trained with, by ``EnvConfig`` name
            (:class:`TrainingEnvArguments`): every one its checkpoint records and the env reads in
            its action mode, but :data:`NOT_REPLAYED`. :meth:`env_kwargs`, :meth:`make_env` and
            :meth:`make_envs` build its env from them; :attr:`env_config` is the whole config.
        own_tokenizer: the checkpoint's own ``tokenizer.json``, for agents that learned their
            words from human captions (``fiq-gym train single-shot``); else None.
        model: the network, SB3 model, RLModule or torch policy.
        config: the checkpoint's ``config.json``.

    ``action_mode``, ``catalog`` (None: the default catalog), ``user``, ``max_turns``,
    ``shortlist``, ``start`` and ``observation_keys`` read ``env_arguments``.
    """

    path: Path
    kind: str
    name: str
    env_id: str
    env_arguments: TrainingEnvArguments
    own_tokenizer: CaptionTokenizer | None
    model: Any = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    #: ``(seed, episodes)`` of the set its trainer evaluated it on (seed
    #: :func:`~fiq_gym.envs.evaluation.training_evaluation_seed` of the run's seed, its
    #: ``eval_episodes``), the default set of ``fiq-gym eval``; None when not recorded.
    training_evaluation: tuple[int, int] | None = None

    # --- the training settings by their earlier names (read-only) -------------------------------
    @property
    def action_mode(self) -> str:
        """The env action mode the agent speaks."""
        mode: str = self.env_arguments["action_mode"]
        return mode

    @property
    def catalog(self) -> str | None:
        """The catalog directory it was trained on (None: the default catalog)."""
        catalog: str | None = self.env_arguments["catalog"]
        return catalog

    @property
    def user(self) -> str:
        """The shopper it was trained with (its tokenizer numbers the words it learned)."""
        user: str = self.env_arguments["user"]
        return user

    @property
    def max_turns(self) -> int:
        """Turns per dialog in training."""
        turns: int = self.env_arguments["max_turns"]
        return turns

    @property
    def shortlist(self) -> dict[str, Any]:
        """Shortlist modes: the env's first-stage arguments in training (K, first stage,
        explore; the slate's size in ``shortlist_slate``), those recorded."""
        return {k: self.env_arguments[k] for k in _FIRST_STAGE_NAMES if k in self.env_arguments}

    @property
    def start(self) -> dict[str, Any]:
        """``start="annotated"``: the env's start arguments in training (``start``,
        ``start_split``); else empty."""
        return {k: self.env_arguments[k] for k in _START_NAMES if k in self.env_arguments}

    @property
    def observation_keys(self) -> tuple[str, ...] | None:
        """The observation keys it reads, when not the env's default (an RLlib index-mode module
        also reads ``shown_mask``)."""
        keys = self.env_arguments.get("observation_keys")
        return None if keys is None else tuple(keys)

    @property
    def env_config(self) -> EnvConfig:
        """The whole config of the env it was trained on: :attr:`env_arguments` over the env
        id's fixed arguments and the env's defaults, with the tokenizer it reads captions with
        when that is its own (``make_env()`` makes an env of this config)."""
        fixed = gym.spec(self.env_id).kwargs
        return EnvConfig.from_kwargs(**{**fixed, **self.env_arguments, "tokenizer": self.own_tokenizer})

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
        """The env arguments of :meth:`make_envs` and :meth:`make_env`: :attr:`env_arguments`
        with the overrides given (``catalog``, ``user`` and ``max_turns`` when not None, any
        other env or vector-env argument by name); ``tokenizer`` is None (the shopper's own)
        unless the agent reads captions with another one."""
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
            **self.env_arguments,
            "catalog": catalog if catalog is not None else self.catalog,
            "user": user,
            "max_turns": max_turns or self.max_turns,
            "tokenizer": tokenizer,
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
            if mode_class(self.action_mode).uses_first_stage:
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
    env_arguments = _training_env_arguments(args, settings, mode, path)
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
    if found.loader == "rllib":
        # An RLlib module reads the keys of the env it was built for, which its trainer sets
        # without a flag (so its args do not record them): the module's own, or its mode's.
        keys = RLLIB_OBSERVATION_KEYS.get(mode) if model is None else tuple(model.observation_space.spaces)
        if keys:
            env_arguments = _checked(path, lambda: env_arguments.replace(observation_keys=keys))
    return LoadedAgent(
        path=path,
        kind=kind,
        name=str(config.get("agent", kind)),
        env_id=env_id,
        env_arguments=env_arguments,
        own_tokenizer=tokenizer,
        model=model,
        config=config,
        training_evaluation=_training_evaluation(settings),
    )


def _training_env_arguments(
    args: Mapping[str, Any], settings: _TrainingSettings, mode: str, path: Path
) -> TrainingEnvArguments:
    """The env arguments a checkpoint's ``args`` record, read by the rule its trainer's envs
    got them by (:func:`~fiq_gym.env_config.trainer_env_kwargs`: each ``EnvConfig`` field the
    args name, where ``mode`` reads it; the start's only for an annotated start), less
    :data:`NOT_REPLAYED`. So an env argument a trainer records reaches its loaded agents' envs
    without a change here. ``catalog``, ``user`` and ``max_turns`` are always given, as they
    always were: the typed settings' values, the catalog made absolute when it can be."""
    recorded = _checked(path, lambda: trainer_env_kwargs(SimpleNamespace(**args), action_mode=mode))
    replayed = {name: value for name, value in recorded.items() if name not in NOT_REPLAYED}
    return _checked(
        path,
        lambda: TrainingEnvArguments(
            {
                **replayed,
                "catalog": _stored_catalog(settings.catalog),
                "user": settings.user,
                "max_turns": settings.max_turns,
            }
        ),
    )


def _checked(path: Path, read: Callable[[], _T]) -> _T:
    """``read()``, its ``EnvConfig`` check failing as the message of a damaged checkpoint."""
    try:
        return read()
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path / 'config.json'}: invalid training arguments ({e}); restore the checkpoint, or retrain "
            "it with the `fiq-gym train` command that made it"
        ) from None


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
