"""Isolated evaluation: the agent in a process of its own, the evaluation set out of its reach.

The sealed harness (:mod:`fiq_gym.envs.evaluation.harness`) moves the *environment* out of the
agent's reach but leaves the agent in the caller's process, which holds the evaluation set,
its seed and the code that builds the result: an agent that sets out to cheat can read them
from the caller's stack frames, patch the result code, or evaluate the same set inside its own
``act()``. For agents you do not trust, this module turns that around:

* the **evaluator** (this process) holds the set, the seed, the environment and the result;
* the **agent** runs in a child, ``python -I -m fiq_gym.envs.evaluation._agent_worker``, started with
  the interpreter and environment pinned when fiq-gym was imported (never the held-out seed's
  variable), without capabilities (:func:`fiq_gym.envs.evaluation._launch.drop_privileges`); it builds
  itself from an :class:`AgentSpec` (a factory named by import path, with plain arguments) and
  its own copy of the environment, from which it may read the gallery, as any agent may;
* per turn the evaluator sends the observations and the public ``info`` (a pickle: the
  evaluator is trusted), the agent answers with its actions (numbers only: the evaluator never
  unpickles anything the agent made) and its errors as text;
* while the agent's process lives, the evaluator is not dumpable, so that process cannot read
  the evaluator's memory (``/proc/PID/mem``) or environment, even when both run as root;
* the agent has :data:`~fiq_gym.envs.evaluation.TURN_TIMEOUT` seconds per ``act()`` and
  :data:`START_TIMEOUT` to start; past either, its process is stopped and the evaluation ends
  with :class:`~fiq_gym.errors.EvaluationTimeout` naming the agent.

Its results equal the sealed and in-process harnesses' for an honest agent (same seeds, same
set; tested). What it does not defend: an agent that reads, through the file system, a file
holding a held-out seed that its account may read (keep the seed in
:data:`~fiq_gym.envs.evaluation.HELD_OUT_VARIABLE`), attacks on the kernel, and the machine's own
limits (memory, disk) which a hostile agent may exhaust.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.envs.evaluation._common import DEFAULT_NUM_ENVS, START_TIMEOUT, EnvSpec, only_evaluation_of
from fiq_gym.envs.evaluation._launch import child_environment, hold_no_dumps, release_no_dumps, spawn_child
from fiq_gym.envs.evaluation._protocol import (
    Layout,
    SharedRegion,
    decode_actions,
    read_message_within,
    write_message,
)
from fiq_gym.envs.evaluation.sets import (
    HELD_OUT_VARIABLE,
    TURN_TIMEOUT,
    EvaluationDialogs,
    EvaluationResult,
    EvaluationSet,
    HeldOutSeed,
    human_meta,
    play_dialogs,
)
from fiq_gym.errors import EvaluationError, EvaluationTimeout

__all__ = ["AGENT_WORKER_MODULE", "AgentSpec", "close_prestarted", "evaluate_isolated", "prestart"]

AGENT_WORKER_MODULE = "fiq_gym.envs.evaluation._agent_worker"


@dataclass(frozen=True)
class AgentSpec:
    """How the agent's process builds the agent: ``factory(venv, **kwargs)``.

    Args:
        factory: ``"package.module:function"``, importable in a fresh interpreter (``-I``:
            an installed package, not a script's directory), or ``"path/to/file.py:function"``
            (loaded from that file, relative to the current directory). It is called with the agent
            process's own native vector env of the evaluated spec (read its gallery, never
            the evaluation's) and returns a :class:`~fiq_gym.envs.evaluation.RetrievalAgent`.
        kwargs: plain, picklable arguments (paths, numbers, names).
        name: the agent's name in the result (default: the factory's).
    """

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        module, _, attr = self.factory.partition(":")
        if not module or not attr or " " in self.factory:
            raise ValueError(f"AgentSpec.factory must read 'package.module:function', got {self.factory!r}")
        try:
            pickle.dumps(dict(self.kwargs))
        except Exception as e:
            raise ValueError(f"AgentSpec.kwargs must be plain picklable values ({e})") from None

    @property
    def label(self) -> str:
        return self.name or self.factory.rpartition(":")[2]

    def resolve(self) -> Any:
        """The factory itself (in the agent's process)."""
        module, _, attr = self.factory.rpartition(":")
        try:
            value: Any = _import(module)
            for part in attr.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as e:
            raise ImportError(
                f"the agent factory {self.factory!r} cannot be imported in a fresh interpreter ({e}); "
                "put it in an installed package (python -I ignores PYTHONPATH and the script's folder)"
            ) from None
        return value


def _import(module: str) -> Any:
    """A module by name, or from a ``.py`` file."""
    if not module.endswith(".py"):
        return importlib.import_module(module)
    path = os.path.abspath(os.path.expanduser(module))
    name = f"fiq_gym_agent_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ImportError(f"no such file: {path}")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def _agent_environment() -> dict[str, str]:
    env = child_environment()
    env.pop(HELD_OUT_VARIABLE, None)
    return env


class _AgentProcess:
    """The evaluator's handle on the agent's process; a
    :class:`~fiq_gym.envs.evaluation.RetrievalAgent` for :func:`~fiq_gym.envs.evaluation.play_dialogs`.

    It starts at once with the factory (the process imports it and the env's modules while
    the evaluator prepares); :meth:`build` sends the env spec, :meth:`share` the region's
    layout, :meth:`wait_ready` waits for the agent. The evaluator is not dumpable from the
    start until :meth:`close`."""

    def __init__(self, spec: AgentSpec, start_timeout: float | None = START_TIMEOUT) -> None:
        self.spec, self.start_timeout = spec, start_timeout
        self.turn_timeout: float | None = TURN_TIMEOUT
        self.turn = 0
        self.started = time.monotonic()
        # Observations and large actions cross through a shared region (Linux), as in the
        # sealed harness: the evaluator writes observations and copies actions out; it never
        # reads back what it wrote, so an agent writing into the region changes nothing else.
        self.region = SharedRegion.create()
        hold_no_dumps()
        self._held = True
        try:
            self.proc = spawn_child(
                AGENT_WORKER_MODULE, None if self.region is None else self.region.fd, _agent_environment()
            )
        except BaseException:
            self._release()
            raise
        request = {"factory": spec.factory, "kwargs": dict(spec.kwargs)}
        self._send(b"A", pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))

    def build(self, env: EnvSpec) -> None:
        """Have the agent's process build its copy of the env and the agent."""
        request = {"env_id": env.env_id, "env_kwargs": env.kwargs, "num_envs": env.num_envs}
        self._send(b"V", pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _release(self) -> None:
        if self._held:
            self._held = False
            release_no_dumps()

    def _send(self, tag: bytes, payload: bytes) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a gone agent is reported by the next read
            write_message(self.proc.stdin, tag, payload)

    def _receive(self, timeout: float | None, waiting_for: str) -> tuple[bytes, bytes]:
        assert self.proc.stdout is not None
        try:
            message = read_message_within(self.proc.stdout.fileno(), timeout)
        except TimeoutError:
            self.close(kill=True)
            option = "start_timeout" if waiting_for == "start" else "turn_timeout"
            raise EvaluationTimeout(
                f"the agent's process did not answer within {timeout:g} s ({waiting_for}) and was stopped; "
                f"raise {option}= (--{option.replace('_', '-')}) if the agent is that slow"
            ) from None
        if message is None:
            code = self.proc.wait()
            raise EvaluationError(
                f"the agent's process exited (code {code}) during {waiting_for}; its own error is on stderr above"
            )
        tag, payload = message
        if tag == b"E":
            self.close(kill=True)
            text = payload.decode("utf-8", errors="replace").strip().splitlines()
            raise EvaluationError(
                f"the agent failed in its process during {waiting_for}: {text[-1] if text else 'no message'} "
                "(its traceback is on stderr above)"
            )
        return tag, payload

    def share(self, venv: gym.vector.VectorEnv) -> None:
        """Lay the region out for ``venv``'s spaces and tell the agent's process."""
        if self.region is None:
            return
        layout = Layout.for_spaces(venv.observation_space, venv.action_space)
        self.region.use(layout, grow=True)
        self._send(b"L", pickle.dumps(layout, protocol=pickle.HIGHEST_PROTOCOL))

    def _observations(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """None when they went into the region, else themselves (for the message)."""
        if self.region is not None and self.region.put_observations(observation):
            return None
        return observation

    def wait_ready(self) -> None:
        left = (
            None
            if self.start_timeout is None
            else max(0.0, self.start_timeout - (time.monotonic() - self.started))
        )
        tag, _ = self._receive(left, "start")
        if tag != b"K":
            raise EvaluationError(f"the agent's process broke the protocol at its start (message {tag!r})")

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        self.turn = 0
        message = (self._observations(observation), dict(info), mask)
        self._send(b"R", pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        self.turn += 1
        message = (self._observations(observation), dict(info))
        self._send(b"S", pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        tag, payload = self._receive(self.turn_timeout, f"act() at turn {self.turn}")
        if tag != b"A":
            raise EvaluationError(
                f"the agent's process broke the protocol (message {tag!r} instead of actions)"
            )
        try:
            return decode_actions(payload, self.region)
        except ValueError as e:
            raise EvaluationError(f"the agent's process sent unreadable actions ({e})") from None

    def close(self, kill: bool = False) -> None:
        proc = self.proc
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self.region is not None:
            self.region.close()
            self.region = None
        self._release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.close(kill=True)


_prestarted: dict[bytes, _AgentProcess] = {}
_prestarted_lock = threading.Lock()


def _key(spec: AgentSpec) -> bytes:
    return pickle.dumps((spec.factory, sorted(dict(spec.kwargs).items())))


def prestart(agent: AgentSpec) -> None:
    """Start the agent's process now, so that it imports its factory and the libraries while
    the caller prepares (``fiq-gym eval`` does this first); the next isolated evaluation of
    the same spec uses it. The evaluator is not dumpable from now until that evaluation ends."""
    with _prestarted_lock:
        key = _key(agent)
        if key not in _prestarted:
            _prestarted[key] = _AgentProcess(agent)


def _take(agent: AgentSpec, start_timeout: float | None) -> _AgentProcess:
    with _prestarted_lock:
        remote = _prestarted.pop(_key(agent), None)
    if remote is not None and remote.alive():
        remote.start_timeout = start_timeout
        return remote
    if remote is not None:
        remote.close(kill=True)
    return _AgentProcess(agent, start_timeout)


@atexit.register
def close_prestarted() -> None:
    """End every prestarted agent process that no evaluation took."""
    with _prestarted_lock:
        for remote in _prestarted.values():
            remote.close(kill=True)
        _prestarted.clear()


def evaluate_isolated(
    agent: AgentSpec | object,
    env: str | gym.vector.VectorEnv,
    episodes: int | EvaluationSet = 1000,
    seed: int | HeldOutSeed = 0,
    *,
    num_envs: int = DEFAULT_NUM_ENVS,
    name: str | None = None,
    turn_timeout: float | None = TURN_TIMEOUT,
    start_timeout: float | None = START_TIMEOUT,
    **env_kwargs: Any,
) -> EvaluationResult:
    """Evaluate an untrusted agent in a process of its own (see the module's docstring).

    Same arguments as :func:`fiq_gym.envs.evaluation.evaluate`, except that ``agent`` is an
    :class:`AgentSpec` (the agent is built in its process) and ``seed`` may be a
    :class:`~fiq_gym.envs.evaluation.HeldOutSeed`, for a set the agent cannot regenerate (the
    result then records the seed's fingerprint, not the seed).
    """
    if not isinstance(agent, AgentSpec):
        raise TypeError(
            "isolation='process' builds the agent in its own process: pass an AgentSpec('package.module:function', "
            f"kwargs), not a {type(agent).__name__} object"
        )
    spec = EnvSpec.of(env, num_envs, env_kwargs)
    held_out = seed if isinstance(seed, HeldOutSeed) else None
    seed_value = seed.value if isinstance(seed, HeldOutSeed) else int(seed)
    with only_evaluation_of(episodes, seed):
        # The agent's process starts first (or was prestarted) and builds itself while this
        # one builds the env.
        remote = _take(agent, start_timeout)
        remote.turn_timeout = turn_timeout
        try:
            remote.build(spec)
            venv = gym.make_vec(
                spec.env_id, num_envs=spec.num_envs, vectorization_mode="vector_entry_point", **spec.kwargs
            )
            try:
                num_items = int(venv.unwrapped.num_items)  # type: ignore[attr-defined]
                eval_set = (
                    episodes
                    if isinstance(episodes, EvaluationSet)
                    else EvaluationSet.for_env(venv, episodes, seed_value)
                )
                dialogs = EvaluationDialogs(venv, eval_set, seed_value)
                remote.share(venv)
                remote.wait_ready()
                play_dialogs(remote, dialogs)
                ranks, success_turn = dialogs.result()
            finally:
                venv.close()
        except BaseException:
            remote.close(kill=True)
            raise
        remote.close()
    meta: dict[str, Any] = {
        "seed": None if held_out else seed_value,
        # which kind of set: "public" (anyone can regenerate it from the seed) or "held-out"
        "set": "held-out" if held_out else "public",
        "episodes": len(eval_set),
        "max_turns": dialogs.turns,
        "env": spec.label,
        "sealed": True,
        "isolation": "process",
        **human_meta(dialogs.human_captions()),
    }
    if held_out is not None:
        meta["held_out"] = held_out.fingerprint
    return EvaluationResult(name or agent.label, ranks, success_turn, num_items, meta)
