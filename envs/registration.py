"""Gymnasium registration of fiq-gym's environment ids.

Entry points are strings, so registering imports nothing heavy; ``import fiq_gym`` calls
:func:`register_envs`, and ``gym.make("fiq_gym:fiq_gym/FashionIQ-v2")`` works too.

The current version is ``-v3`` (:data:`ENV_IDS`). The ``-v2`` ids stay registered
(:data:`SUPPORTED_ENV_IDS`): they differ only in the end signal (``-v2`` reports a dialog's
end at ``max_turns`` as truncated; :mod:`fiq_gym.envs.version2`), so runs, checkpoints and
tables made on them still reproduce. Earlier versions are not registered: Gymnasium answers
an id of one (``fiq_gym/FashionIQ-v1``, ``-v0``) with its ``DeprecatedEnv`` error naming the
current id, and :func:`successor_env_id` tells fiq-gym's own readers (agent checkpoints,
datasets, pickled environments) which recorded ids are of such a version, so they refuse them
with the fix.
"""

from __future__ import annotations

import re

import gymnasium as gym

__all__ = [
    "DEFAULT_MAX_TURNS",
    "EARLIER_RELEASE",
    "EARLIER_VERSION",
    "ENV_IDS",
    "ENV_VERSION",
    "MAX_TURNS",
    "OLDEST_SUPPORTED_VERSION",
    "SUPPORTED_ENV_IDS",
    "env_id_for",
    "refuse_earlier_spec",
    "register_envs",
    "successor_env_id",
]

_ENTRY = "fiq_gym.envs.fashion_iq:FashionIQEnv"
_VECTOR_ENTRY = "fiq_gym.envs.vector:FashionIQVectorEnv"
# -v2: the same env with -v2's end signal (fiq_gym.envs.version2)
_V2_ENTRY = "fiq_gym.envs.version2:FashionIQEnvV2"
_V2_VECTOR_ENTRY = "fiq_gym.envs.version2:FashionIQVectorEnvV2"

# The current version (docs/rl.md, "ids and versions"); -v2 is registered beside it, earlier
# versions are not.
ENV_VERSION = 3
#: the oldest version still registered
OLDEST_SUPPORTED_VERSION = 2
# What an id of an earlier version is, and where it still plays (v0 and v1: the 0.1 releases), for
# the messages that refuse one.
EARLIER_VERSION = (
    f"an environment version this fiq-gym no longer has (it plays the -v{ENV_VERSION} and -v2 ids, whose shipped "
    "features, shopper and shortlist first stage differ)"
)
EARLIER_RELEASE = "fiq-gym 0.1.0 (pip install 'fiq-gym @ git+https://github.com/fiq-gym/fiq-gym@1aa6837', its last revision)"

#: The default dialog length (``EnvConfig``'s default ``max_turns``) and the registered
#: ``max_episode_steps``; the most turns an env accepts is ``fiq_gym.dialog_engine.TURN_LIMIT``.
DEFAULT_MAX_TURNS = 5
#: The earlier name of :data:`DEFAULT_MAX_TURNS` (kept importable).
MAX_TURNS = DEFAULT_MAX_TURNS

_CONFIGS = {
    "FashionIQ": {},
    "FashionIQDress": {"category": "dress"},
    "FashionIQShirt": {"category": "shirt"},
    "FashionIQToptee": {"category": "toptee"},
}

# The named configurations of fiq_gym.envs.configurations (catalog and shopper settings),
# chosen from measurements (benchmarks/results/configurations.md).
_CONFIGURATION_IDS = {
    "FashionIQ100k": {"configuration": "100k"},
    "FashionIQTerse": {"configuration": "terse"},
    "FashionIQTerse100k": {"configuration": "terse-100k"},
}

# id -> fixed keyword arguments, of the current version. Names are part of the public API: keep them.
ENV_IDS: dict[str, dict] = {
    f"fiq_gym/{name}-v{ENV_VERSION}": kwargs for name, kwargs in {**_CONFIGS, **_CONFIGURATION_IDS}.items()
}
#: every registered id: the current ones and the -v2 ones
SUPPORTED_ENV_IDS: dict[str, dict] = {
    **ENV_IDS,
    **{f"fiq_gym/{name}-v2": kwargs for name, kwargs in {**_CONFIGS, **_CONFIGURATION_IDS}.items()},
}
_ID = re.compile(r"(?:fiq_gym:)?fiq_gym/(?P<name>[A-Za-z0-9]+)-v(?P<version>[0-9]+)")


def register_envs() -> None:
    """Register every id (idempotent: ids already registered are left alone)."""
    for env_id, kwargs in SUPPORTED_ENV_IDS.items():
        if env_id in gym.registry:
            continue
        current = env_id in ENV_IDS
        # The env ends episodes after max_turns itself; the registered max_episode_steps
        # says so to libraries that read the spec (gym.make adds a TimeLimit of it too:
        # pass max_episode_steps with a different max_turns).
        gym.register(
            id=env_id,
            entry_point=_ENTRY if current else _V2_ENTRY,
            vector_entry_point=_VECTOR_ENTRY if current else _V2_VECTOR_ENTRY,
            kwargs=dict(kwargs),
            max_episode_steps=DEFAULT_MAX_TURNS,
            disable_env_checker=False,
        )


def env_id_for(configuration: str) -> str:
    """The current id that plays ``configuration`` (``fiq_gym/FashionIQ-v3`` for
    ``"default"``); ``ValueError`` naming the known ones otherwise."""
    if configuration == "default":
        return f"fiq_gym/FashionIQ-v{ENV_VERSION}"
    for env_id, kwargs in ENV_IDS.items():
        if kwargs.get("configuration") == configuration:
            return env_id
    known = ["default", *(k["configuration"] for k in ENV_IDS.values() if "configuration" in k)]
    raise ValueError(f"no registered id plays configuration {configuration!r}; registered: {known}")


def successor_env_id(env_id: str) -> str | None:
    """The current id that replaces ``env_id`` when ``env_id`` names a fiq-gym environment of
    a version no longer registered (``fiq_gym/FashionIQ-v1`` and ``fiq_gym/FashionIQ-v0`` ->
    ``fiq_gym/FashionIQ-v3``); None for any other id (a registered one, -v2 included, or one
    fiq-gym never had)."""
    match = _ID.fullmatch(env_id)
    if match is None or int(match["version"]) >= OLDEST_SUPPORTED_VERSION:
        return None
    current = f"fiq_gym/{match['name']}-v{ENV_VERSION}"
    return current if current in ENV_IDS else None


def refuse_earlier_spec(spec: gym.envs.registration.EnvSpec | None) -> None:
    """Raise ``ValueError`` naming the fix when ``spec`` (one that ``gym.make`` or
    ``gym.make_vec`` is about to give an env) names an earlier version: given an ``EnvSpec``
    object, as recorded by a Minari dataset, Gymnasium does not ask the registry, so the env
    itself must refuse it."""
    if spec is None:
        return
    successor = successor_env_id(spec.id)
    if successor is not None:
        raise ValueError(f"{spec.id} is {EARLIER_VERSION}: make {successor}, or use {EARLIER_RELEASE}")
