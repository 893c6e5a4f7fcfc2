"""Offline datasets: dialogs played by an agent, written as a Minari dataset.

Offline-RL libraries read datasets in Minari, the Farama standard, so the dialogs an agent
plays are recorded in its format: per episode the observations (one more than the steps:
the reset's first), the actions, rewards, terminations, truncations and the env's full
``info`` of every step (caption text, shown item, turn, rank, percentile, success, and in
``shortlist`` mode the candidates' item indices). :func:`record_dataset` drives a single
Gymnasium env with a batched :class:`~fiq_gym.envs.evaluation.RetrievalAgent` at batch size 1,
handing the agent what the evaluation harness would (observations and
:func:`~fiq_gym.envs.evaluation.public_info`), so a dataset records the agent's evaluated behaviour.

Where datasets go: a Minari *datasets root* (what ``MINARI_DATASETS_PATH`` points at; Minari's
default is ``~/.minari/datasets``) holds each dataset at ``ROOT/<dataset id>/data``. A dataset
is written into a hidden temporary directory beside its final place and renamed into it when
complete (:func:`fiq_gym.utils.atomic.atomic_directory`): a killed recording leaves no dataset under
the final name, and an existing dataset is never replaced unless asked.

The storage is Minari's ``arrow`` format (pyarrow): it keeps the caption text as strings
(``episode.infos["caption_text"]`` reads back as a numpy array of ``str``), where the HDF5
format would return bytes.

Minari is an optional dependency: ``pip install -e ".[offline]"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

try:
    import minari
    import pyarrow  # noqa: F401  (Minari's arrow storage; imported here to fail early)
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.dataset.minari_storage import MinariStorage
    from minari.namespace import NAMESPACE_METADATA_FILENAME
except ImportError as e:  # pragma: no cover - exercised in a subprocess by tests/test_minari.py
    raise ModuleNotFoundError(
        f"Minari datasets need the offline extra ({e.name or 'minari'} is not installed); "
        'install it with pip install -e ".[offline]"',
        name=e.name,
    ) from None

from fiq_gym import __version__
from fiq_gym.envs.evaluation import PUBLIC_INFO_KEYS, PublicInfo, RetrievalAgent
from fiq_gym.utils.arguments import absolute_path
from fiq_gym.utils.atomic import atomic_directory, atomic_write_json, recover_directory
from fiq_gym.utils.links import REPOSITORY

__all__ = [
    "DATA_FORMAT",
    "RecordedDataset",
    "dataset_path",
    "default_datasets_root",
    "episode_seeds",
    "open_dataset",
    "record_dataset",
]

#: Minari's storage format for fiq-gym datasets (strings stay strings).
DATA_FORMAT = "arrow"
_SEED_STREAM = 0x4D494E41  # "MINA": episode seeds never coincide with the env's own draws


@dataclass(frozen=True)
class RecordedDataset:
    """A dataset :func:`record_dataset` wrote: its id, where it is, and its size."""

    dataset_id: str
    root: Path
    episodes: int
    steps: int

    @property
    def path(self) -> Path:
        """``ROOT/<dataset id>``: the directory Minari calls the dataset's path."""
        return dataset_path(self.root, self.dataset_id)

    def load(self) -> minari.MinariDataset:
        """The dataset as Minari reads it (the same as ``minari.load_dataset(id)`` with
        ``MINARI_DATASETS_PATH`` set to :attr:`root`)."""
        return minari.MinariDataset(self.path / "data")


def default_datasets_root() -> Path:
    """Minari's datasets root: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``, the
    place ``minari.load_dataset(id)`` looks without further arguments."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def check_dataset_id(dataset_id: str) -> str:
    """``dataset_id`` if Minari accepts it (``namespace/name-vN``); else ``ValueError``
    naming the form."""
    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise ValueError(
            f"{dataset_id!r} is not a Minari dataset id: use NAMESPACE/NAME-vN with letters, digits, "
            "'_' and '-' (e.g. fiq_gym/FashionIQ-v3/greedy-shortlist-v0)"
        ) from None
    return dataset_id


def dataset_path(root: str | os.PathLike, dataset_id: str) -> Path:
    """Where the dataset ``dataset_id`` lives under the datasets root ``root``."""
    return Path(root).expanduser() / check_dataset_id(dataset_id)


def open_dataset(dataset_id: str, root: str | os.PathLike | None = None) -> minari.MinariDataset:
    """Read a dataset from ``root`` (default :func:`default_datasets_root`), with an error
    that names the command writing one when it is missing."""
    root = Path(root).expanduser() if root is not None else default_datasets_root()
    data = dataset_path(root, dataset_id) / "data"
    if not data.is_dir():
        raise FileNotFoundError(
            f"no Minari dataset {dataset_id!r} under {root} (no {data}); record one with "
            f"`fiq-gym record --agent greedy --out {root} --dataset-id {dataset_id}`, or point at the "
            "root that holds it (--datasets-path, MINARI_DATASETS_PATH)"
        )
    return minari.MinariDataset(data)


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seed of each of ``episodes`` episodes of a recording seeded ``seed``.

    Every episode is reset with its own seed (kept in Minari's per-episode metadata), so any
    one episode can be replayed alone with ``env.reset(seed=...)``; the seeds are drawn from a
    stream of their own, so recordings with seeds 0 and 1 share no episode."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    rng = np.random.default_rng([_SEED_STREAM, int(seed)])
    return [int(s) for s in rng.integers(0, 2**63 - 1, size=episodes)]


def _batched(observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[None] for k, v in observation.items()}


def _public(info: dict[str, Any]) -> PublicInfo:
    """A single env's info as the harness hands it to agents: the public keys, batch of one."""
    out = PublicInfo()
    for key in PUBLIC_INFO_KEYS:
        if key in info:
            value = info[key]
            out[key] = np.array([value], dtype=object if isinstance(value, str) else None)
    return out


def _action(agent_output: Any, space: gym.Space) -> Any:
    """Row 0 of a batched agent's actions, in the action space's dtype."""
    action = np.asarray(agent_output)
    if action.ndim == 0 or action.shape[0] != 1:
        raise ValueError(
            f"the agent must return a batch of one action (shape (1, ...)) for one dialog, got shape {action.shape}"
        )
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(action[0])
    return np.asarray(action[0], dtype=space.dtype)


def play_episode(env: gym.Env, agent: RetrievalAgent, seed: int, episode_id: int) -> EpisodeBuffer:
    """One dialog of ``agent`` on ``env``, reset with ``seed``, as a Minari episode buffer."""
    obs, info = env.reset(seed=seed)
    keys = list(info)
    agent.reset(_batched(obs), _public(info), np.ones(1, dtype=bool))
    # Copies: an env may reuse its observation buffers from one step to the next.
    observations: dict[str, list[np.ndarray]] = {k: [np.array(v, copy=True)] for k, v in obs.items()}
    infos: dict[str, list[Any]] = {k: [v] for k, v in info.items()}
    actions: list[Any] = []
    rewards: list[float] = []
    terminations: list[bool] = []
    truncations: list[bool] = []
    done = False
    while not done:
        action = _action(agent.act(_batched(obs), _public(info)), env.action_space)
        obs, reward, terminated, truncated, info = env.step(action)
        if list(info) != keys:
            raise ValueError(
                f"the env's info keys changed within an episode ({keys} at reset, {list(info)} now); "
                "Minari stores one column per key, so every step must have the same keys"
            )
        for k, v in obs.items():
            observations[k].append(np.array(v, copy=True))
        for k, v in info.items():
            infos[k].append(v)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        done = terminated or truncated
    return EpisodeBuffer(
        id=episode_id,
        seed=seed,
        observations={k: np.stack(v) for k, v in observations.items()},
        actions=actions,
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        infos={k: (np.stack(v) if isinstance(v[0], np.ndarray) else v) for k, v in infos.items()},
    )


def _spec_json_ok(spec: gym.envs.registration.EnvSpec | None) -> bool:
    if spec is None:
        return False
    try:
        spec.to_json()
    except (TypeError, ValueError):
        return False
    return True


def _write_namespaces(root: Path, dataset_id: str, description: str) -> None:
    """Minari's namespace files (``namespace_metadata.json``) in each namespace directory of
    ``dataset_id`` that has none, so ``minari list local`` groups the datasets."""
    namespace = parse_dataset_id(dataset_id)[0]
    if namespace is None:
        return
    parts = namespace.split("/")
    for depth in range(1, len(parts) + 1):
        file = root.joinpath(*parts[:depth], NAMESPACE_METADATA_FILENAME)
        if not file.exists():
            atomic_write_json(file, {"description": description} if depth == 1 else {})


def record_dataset(
    env: gym.Env,
    agent: RetrievalAgent,
    *,
    root: str | os.PathLike,
    dataset_id: str,
    episodes: int,
    seed: int = 0,
    overwrite: bool = False,
    algorithm_name: str | None = None,
    description: str | None = None,
    progress: bool = True,
    on_episode: Callable[[int], None] | None = None,
) -> RecordedDataset:
    """Play ``episodes`` dialogs of ``agent`` on ``env`` and write them as a Minari dataset.

    Args:
        env: a single (not vector) env, e.g. ``gym.make("fiq_gym/FashionIQ-v3", ...)``. Its
            spec, when JSON-serialisable, goes into the dataset so that
            ``dataset.recover_environment()`` rebuilds it.
        agent: a batched retrieval agent for ``env``; it sees observations and the public info
            only, as in evaluation.
        root: the Minari datasets root; the dataset goes to ``root/dataset_id``.
        dataset_id: Minari id, ``NAMESPACE/NAME-vN``.
        episodes: dialogs to record.
        seed: seeds the episodes (see :func:`episode_seeds`); the same seed, env and agent give
            the same dataset.
        overwrite: replace an existing dataset of that id (atomically); without it an
            existing one is refused with ``FileExistsError`` before anything is played.
        algorithm_name, description: Minari metadata.
        progress: a progress bar over episodes (tqdm, on stderr).
        on_episode: called with the number of episodes written so far after each one (for
            progress reports of one's own).

    Raises:
        FileExistsError: the dataset exists and ``overwrite`` is false.
        ValueError: the env has the training-only ``expose_target`` opt-in (its info would
            put the target into the dataset), or the dataset id is malformed.
    """
    from tqdm.auto import tqdm

    # Minari resolves relative paths against its own idea of the datasets root: give it ours.
    root = Path(absolute_path(root))
    target = dataset_path(root, dataset_id)
    if getattr(getattr(env.unwrapped, "config", None), "expose_target", False):
        raise ValueError(
            "record_dataset refuses an env with expose_target=True: its info holds the target, which "
            "would end up in the dataset; make the env without it"
        )
    recover_directory(target)  # a replacement that died may have set the old dataset aside
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"a Minari dataset {dataset_id!r} already exists at {target}; choose another --dataset-id "
            "(e.g. a higher -vN) or --out, delete it, or replace it with --overwrite (overwrite=True)"
        )
    seeds = episode_seeds(seed, episodes)
    spec = env.spec if _spec_json_ok(env.spec) else None
    steps = 0
    with atomic_directory(target, overwrite=overwrite) as tmp:
        storage = MinariStorage.new(
            tmp / "data",
            observation_space=env.observation_space,
            action_space=env.action_space,
            env_spec=spec,
            data_format=DATA_FORMAT,
        )
        # Minari's storages recompute the dataset's size (a walk over all its files) after every
        # episode they write, which makes a recording quadratic in its episodes (minutes for
        # a few thousand); the size is computed once, at the end, instead.
        dataset_size = storage.get_size
        storage.get_size = lambda: 0.0
        storage.update_metadata(
            {
                "dataset_id": dataset_id,
                "minari_version": minari.__version__,
                "algorithm_name": algorithm_name or type(agent).__name__,
                "author": {"fiq-gym"},
                "code_permalink": REPOSITORY,
                "description": description or f"dialogs of {type(agent).__name__} recorded with fiq-gym",
                "requirements": [f"fiq-gym=={__version__}"],
                "fiq_gym": {"version": __version__, "seed": int(seed), "episodes": int(episodes)},
            }
        )
        with tqdm(total=episodes, desc="recording dialogs", unit="episode", disable=not progress) as bar:
            for i, episode_seed in enumerate(seeds):
                buffer = play_episode(env, agent, episode_seed, i)
                storage.update_episodes([buffer])
                steps += len(buffer)
                bar.update()
                if on_episode is not None:
                    on_episode(i + 1)
        storage.get_size = dataset_size
        storage.update_metadata({"dataset_size": dataset_size()})
    _write_namespaces(root, dataset_id, "offline datasets recorded with fiq-gym (`fiq-gym record`)")
    return RecordedDataset(dataset_id, root, episodes, steps)


_SLUG = re.compile(r"[^A-Za-z0-9_]+")


def dataset_slug(text: str) -> str:
    """``text`` as a piece of a dataset name: letters, digits and '_', other runs as '-'."""
    return _SLUG.sub("-", text.strip().lower()).strip("-") or "agent"


def default_dataset_id(env_id: str, agent: str, action_mode: str, version: int = 0) -> str:
    """``<env id>/<agent>-<action mode>-v<version>``, e.g.
    ``fiq_gym/FashionIQ-v3/greedy-shortlist-v0``: the env id (with its version) is the
    namespace, so datasets of one configuration sit together."""
    return check_dataset_id(f"{env_id}/{dataset_slug(agent)}-{dataset_slug(action_mode)}-v{version}")
