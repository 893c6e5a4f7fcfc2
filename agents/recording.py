"""Record an agent's dialogs as a Minari dataset (``fiq-gym record``).

Resolves what ``--agent`` names (``random``, ``greedy`` or a checkpoint directory written by
``fiq-gym train``) into an agent and the single env it plays, then hands both to
:func:`fiq_gym.envs.offline.record_dataset`. The recording itself lives in the envs layer;
this module only knows the agents.

What the built-in agents are, per action mode (each is an agent with a ``builtin`` builder in
:mod:`fiq_gym.agents.registry`, where another one is added):

* ``random``: ``index`` a uniform item not shown yet (:class:`~fiq_gym.agents.RandomAgent`);
  ``shortlist`` a uniform valid candidate; ``query`` / ``scores`` uniform samples of the
  action box (:class:`~fiq_gym.agents.random_agent.UniformBoxAgent`).
* ``greedy``: the first stage's best item not shown yet (:mod:`fiq_gym.agents.greedy`):
  ``shortlist`` the best-scored candidate (the benchmark's ``shortlist-greedy``), ``index`` that
  item's index, ``scores`` the first stage's scores, ``query`` that item's features.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents import registry
from fiq_gym.agents.loading import load_agent
from fiq_gym.envs.evaluation import RetrievalAgent
from fiq_gym.envs.offline import RecordedDataset, default_dataset_id, default_datasets_root, record_dataset
from fiq_gym.envs.registration import DEFAULT_MAX_TURNS
from fiq_gym.errors import CheckpointError

# BUILTIN_AGENTS comes from the module __getattr__ below: it follows the registry
__all__ = ["BUILTIN_AGENTS", "DEFAULT_ENV_ID", "Recording", "make_recording", "record"]  # noqa: F822


def __getattr__(name: str) -> Any:
    # BUILTIN_AGENTS: the agents ``--agent`` names without a checkpoint, as registered now
    if name == "BUILTIN_AGENTS":
        return registry.builtin_agents()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The action modes the built-in agents play (the slate modes are recorded from checkpoints).
BUILTIN_MODES = ("index", "query", "scores", "shortlist")
DEFAULT_ENV_ID = "fiq_gym/FashionIQ-v3"
#: The built-in agents' default action mode: the one off-the-shelf (and offline) agents learn in.
DEFAULT_ACTION_MODE = "shortlist"
_SHORTLIST_OPTIONS = ("shortlist", "shortlist_size", "explore")


@dataclass
class Recording:
    """An agent and the single env it plays, ready for :func:`record_dataset`.

    Attributes:
        env: the env (``gym.make``); the caller closes it.
        agent: the batched agent.
        name: the agent's short name for dataset ids (``random``, ``greedy``, ``supervised``...).
        env_id: the registered id the env was made from.
        action_mode: the env's action mode.
        description: one line for the dataset's metadata.
    """

    env: gym.Env
    agent: RetrievalAgent
    name: str
    env_id: str
    action_mode: str
    description: str


def _checked_shortlist_options(action_mode: str, options: dict[str, Any]) -> dict[str, Any]:
    given = {k: v for k, v in options.items() if v is not None}
    if given and action_mode != "shortlist":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(
            f"{flags} apply to the shortlist action mode, but this recording uses {action_mode!r}; "
            "drop them or pass --action-mode shortlist"
        )
    return given


def make_recording(
    agent: str | os.PathLike,
    *,
    env_id: str | None = None,
    catalog: str | None = None,
    user: str | None = None,
    action_mode: str | None = None,
    max_turns: int | None = None,
    reward: str | None = None,
    shortlist: str | None = None,
    shortlist_size: int | None = None,
    explore: float | None = None,
    seed: int = 0,
) -> Recording:
    """The agent ``agent`` names and its env.

    ``agent`` is ``"random"``, ``"greedy"`` (see the module docstring) or a checkpoint
    directory (the ``checkpoint/`` folder of ``fiq-gym train AGENT --out RUN``), loaded as
    ``fiq-gym eval`` loads it. Options left None take the checkpoint's training settings, or
    for the built-in agents the env's defaults (``action_mode`` ``"shortlist"``). ``shortlist``
    names the first stage: the env's in ``shortlist`` mode, and the one the greedy agent runs
    in the other modes.

    Raises:
        FileNotFoundError: ``agent`` is neither built in nor an existing path.
        CheckpointError: the checkpoint is damaged, or speaks another action mode.
        ValueError: an option that does not apply, or a first stage that does not fit.
    """
    shortlist_options = {"shortlist": shortlist, "shortlist_size": shortlist_size, "explore": explore}
    builtin = registry.builtin_agents()
    if str(agent) in builtin:
        name = str(agent)
        mode = action_mode or DEFAULT_ACTION_MODE
        if mode not in BUILTIN_MODES:
            raise ValueError(
                f"the built-in agents play the {', '.join(BUILTIN_MODES)} action modes, not {mode!r}; "
                "record a checkpoint trained on it (--agent RUN/checkpoint) or choose one of those"
            )
        env_id = env_id or DEFAULT_ENV_ID
        kwargs: dict[str, Any] = {
            k: v
            for k, v in {"catalog": catalog, "user": user, "max_turns": max_turns, "reward": reward}.items()
            if v is not None
        }
        if mode == "shortlist":
            kwargs.update(_checked_shortlist_options(mode, shortlist_options))
        else:
            # The greedy agent runs the first stage itself outside the shortlist mode.
            _checked_shortlist_options(mode, {"shortlist_size": shortlist_size, "explore": explore})
            if shortlist is not None and name == "random":
                _checked_shortlist_options(mode, {"shortlist": shortlist})
        env = gym.make(env_id, action_mode=mode, max_episode_steps=max_turns or DEFAULT_MAX_TURNS, **kwargs)
        try:
            chosen = registry.resolve(registry.get(name).builtin)(env, shortlist or "retriever", seed)
        except BaseException:
            env.close()
            raise
        return Recording(env, chosen, name, env_id, mode, f"{name} agent ({mode} action mode)")

    path = Path(agent).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"--agent {str(agent)!r} is neither {' nor '.join(builtin)} nor an existing path; pass one of "
            f"those or the checkpoint/ folder of a run written by `fiq-gym train AGENT --out RUN`"
        )
    loaded = load_agent(path)
    if action_mode is not None and action_mode != loaded.action_mode:
        raise CheckpointError(
            f"{path} speaks action_mode={loaded.action_mode!r}, not {action_mode!r}; drop --action-mode "
            f"or pass --action-mode {loaded.action_mode}"
        )
    if env_id is not None:
        loaded = dataclasses.replace(loaded, env_id=env_id)
    overrides: dict[str, Any] = _checked_shortlist_options(loaded.action_mode, shortlist_options)
    if reward is not None:
        overrides["reward"] = reward
    env = loaded.make_env(catalog=catalog, user=user, max_turns=max_turns, **overrides)
    try:
        chosen = loaded.make_agent(env)
    except BaseException:
        env.close()
        raise
    description = f"{loaded.name} agent from {path} ({loaded.action_mode} action mode)"
    return Recording(env, chosen, loaded.name, loaded.env_id, loaded.action_mode, description)


def record(
    agent: str | os.PathLike,
    *,
    episodes: int,
    out: str | os.PathLike | None = None,
    dataset_id: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **env_options: Any,
) -> RecordedDataset:
    """Record ``episodes`` dialogs of ``agent`` (see :func:`make_recording`, which takes
    ``env_options``) into the Minari datasets root ``out`` (default: ``$MINARI_DATASETS_PATH``,
    else ``~/.minari/datasets``) under ``dataset_id`` (default
    ``<env id>/<agent>-<action mode>-v0``). ``seed`` seeds the episodes and the agent."""
    recording = make_recording(agent, seed=seed, **env_options)
    try:
        return record_dataset(
            recording.env,
            recording.agent,
            root=out if out is not None else default_datasets_root(),
            dataset_id=dataset_id
            or default_dataset_id(recording.env_id, recording.name, recording.action_mode),
            episodes=episodes,
            seed=seed,
            overwrite=overwrite,
            algorithm_name=recording.name,
            description=f"fiq-gym dialogs of the {recording.description}, seed {seed}",
            progress=progress,
        )
    finally:
        recording.env.close()
