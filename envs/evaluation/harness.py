"""The evaluation harness: play a fixed evaluation set with an agent, sealed by default.

Sealed (the default, and what every published table uses), the environment runs in a child
process, ``python -m fiq_gym.envs.evaluation._env_worker``, started with pipes: the agent, in the
caller's process, receives observations and the filtered info of
:func:`fiq_gym.envs.evaluation.public_info` and nothing else, so the env's private state,
pickles, deep copies and generators are out of its reach. The child never imports the
caller's ``__main__`` (scripts need no ``if __name__ == "__main__":`` guard), dies with the
caller, and plays exactly what the in-process harness plays: same seeds, same set, same
results for an honest agent.

**Warm children.** Starting a child costs more than playing a small set (Python, torch and
the env's modules, then the env; loading the transformer shopper takes seconds), so a child
serves many evaluations. :class:`SealedEvaluator` is such a session: its child keeps its
imports and the library's caches, and keeps its env while the env spec (id, arguments,
number of dialogs) stays the same; another spec makes the same child build another env.
``evaluate(..., sealed=True)`` uses one process-wide session of this kind (closed at
interpreter exit, or by :func:`close_warm_evaluator`), except when ``warm=False``, when that
session is busy (another thread, or an evaluation started inside an agent), or after the
current directory or an environment variable changed since its child started (a new child
then sees them, as a child started afresh would). Reuse changes nothing an agent can see or
reach: each evaluation resets every batch with its seed and fixed dialogs, so a warm child
plays what a new one plays (tested), and the child holds nothing of the caller's agents.

**What crosses per step** (:mod:`fiq_gym.envs.evaluation._protocol`): the caller's actions,
numbers only; back, the observations through a shared memory region (Linux; the pipe
elsewhere), the filtered info and whether the batch is over. Ranks stay in the child until
the result, after the last dialog.

The evaluation data (:class:`~fiq_gym.envs.evaluation.EvaluationSet`,
:class:`~fiq_gym.envs.evaluation.EvaluationResult`), what agents may see and the in-process
play are in :mod:`fiq_gym.envs.evaluation.sets`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import subprocess
import sys
import threading
import weakref
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.envs.evaluation._common import (
    DEFAULT_NUM_ENVS,
    ENV_TIMEOUT,
    START_TIMEOUT,
    EnvSpec,
    only_evaluation_of,
    refuse_held_out,
    refuse_opt_in_env,
)
from fiq_gym.envs.evaluation._launch import child_environment, spawn_child
from fiq_gym.envs.evaluation._protocol import (
    SharedRegion,
    decode_answer,
    encode_actions,
    read_message_within,
    write_message,
)
from fiq_gym.envs.evaluation.isolation import evaluate_isolated
from fiq_gym.envs.evaluation.sets import (
    TURN_TIMEOUT,
    EvaluationResult,
    EvaluationSet,
    HeldOutSeed,
    PublicInfo,
    RetrievalAgent,
    evaluate_in_process,
    human_meta,
    play_dialogs,
    public_info,
    refuse_training_opt_ins,
)
from fiq_gym.errors import EvaluationTimeout

__all__ = ["SealedDialogs", "SealedEvaluator", "close_warm_evaluator", "evaluate"]

WORKER_MODULE = "fiq_gym.envs.evaluation._env_worker"
_PIPE_BYTES = 1 << 20  # the usual /proc/sys/fs/pipe-max-size
_F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity


class _ChildGone(RuntimeError):
    """The child closed its end of the pipe without an answer (it died or was killed)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(
            f"the sealed evaluation process exited unexpectedly (exit code {code}); its error is on "
            "stderr above, and evaluate(..., sealed=False) runs the same dialogs in this process"
        )


class _Child:
    """One child process: its pipes and the shared region it writes observations into."""

    def __init__(self, env_timeout: float | None = ENV_TIMEOUT) -> None:
        self.env_timeout = env_timeout
        self.region = SharedRegion.create()
        fds = () if self.region is None else (self.region.fd,)
        self.owner = os.getpid()
        # The kernel kills the child when this thread ends (PR_SET_PDEATHSIG in the worker), but
        # only some time after a join() of it has returned: a child whose thread has ended counts
        # as gone at once, so it is never handed an evaluation it would die in the middle of.
        self.thread = threading.current_thread()
        self.unanswered = 0  # build requests (B) whose answer is still in the pipe
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            # The interpreter and environment pinned at import, not the caller's current
            # ones, which an agent may have changed (fiq_gym.envs.evaluation._launch).
            self.proc = spawn_child(WORKER_MODULE, fds[0] if fds else None, child_environment())
        except BaseException:
            self.close()
            raise
        _widen_pipes(self.proc)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.thread.is_alive() and self.proc.poll() is None

    def send(self, tag: bytes, payload: bytes = b"") -> None:
        if self.proc is None or self.proc.stdin is None:
            raise _ChildGone(None)
        # A child that is gone has closed the pipe: the next receive reports its exit code.
        with contextlib.suppress(BrokenPipeError):
            write_message(self.proc.stdin, tag, payload)

    def _payload(self, timeout: float | None) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            message = read_message_within(self.proc.stdout.fileno(), timeout)
        except TimeoutError:
            self.close(timeout=0)
            raise EvaluationTimeout(
                f"the sealed evaluation process (the environment) did not answer within {timeout:g} s and "
                "was stopped; if its env is that slow, raise env_timeout="
            ) from None
        if message is None:
            code = self.proc.wait()
            self.close()
            raise _ChildGone(code)
        tag, payload = message
        if tag == b"E":
            error = pickle.loads(payload)
            self.close()  # the child exits after an error
            error.add_note("(raised in the sealed evaluation process)")
            raise error
        return payload

    def receive(self, timeout: float | None = START_TIMEOUT) -> Any:
        """The child's next value (its exception, raised here, if it sent one)."""
        return pickle.loads(self._payload(timeout))

    def receive_step(self) -> tuple[dict[str, np.ndarray], PublicInfo, bool]:
        obs, info, done = decode_answer(self._payload(self.env_timeout), self.region)
        # Filtered again on this side: what reaches the agent never depends on the child.
        return obs, public_info(info), done

    def close(self, timeout: float = 0.5) -> None:
        """End the child: closing its stdin lets it exit; if it has not within ``timeout``
        seconds (it was playing), it is killed."""
        proc, self.proc = self.proc, None
        if self.region is not None:
            self.region.close()
            self.region = None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        if os.getpid() == self.owner:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def abandon(self) -> None:
        """In a forked copy of the caller: let go of the pipes and the region without
        touching the process, which belongs to the caller."""
        self.owner = -1
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and getattr(self, "owner", None) == os.getpid() and proc.poll() is None:
            proc.kill()


def _widen_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Let a batch's messages fit in the pipes (Linux; best effort), so a message is one
    write and one read instead of many switches between the processes (the region carries
    the bulk where there is one; the pipe carries everything elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import fcntl

    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


class SealedDialogs:
    """The caller's handle on one evaluation that a :class:`SealedEvaluator`'s child plays: the
    ``reset`` / ``step`` / ``result`` of :class:`~fiq_gym.envs.evaluation.EvaluationDialogs`, for
    :func:`~fiq_gym.envs.evaluation.play_dialogs`. Made by :meth:`SealedEvaluator.open`.

    Closing it before the result (an agent's error, Ctrl-C) kills the child: it was in the
    middle of a batch. The evaluator starts a new one for its next evaluation.
    """

    def __init__(self, evaluator: SealedEvaluator, child: _Child, header: dict[str, Any]) -> None:
        self._evaluator, self._child = evaluator, child
        self.num_envs: int = header["num_envs"]
        self.num_batches: int = header["num_batches"]
        self.num_items: int = header["num_items"]
        self.turns: int = header["turns"]
        self.episodes: int = header["episodes"]
        self._next_batch = 0
        self._open = True
        #: :meth:`~fiq_gym.envs.evaluation.EvaluationDialogs.human_captions`, with the result
        self.human: np.ndarray | None = None

    def _live_child(self) -> _Child:
        if not self._open:
            raise RuntimeError("these sealed dialogs are over: open new ones from the SealedEvaluator")
        return self._child

    def reset(self, batch: int) -> tuple[dict[str, np.ndarray], PublicInfo]:
        # The child sends each batch's first observations unasked, as soon as the previous
        # batch is over: one message fewer per batch, and it works while this side does.
        child = self._live_child()
        if batch != self._next_batch:
            raise RuntimeError(
                f"sealed dialogs play their batches in order: expected {self._next_batch}, got {batch}"
            )
        self._next_batch += 1
        obs, info, _ = child.receive_step()
        return obs, info

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], PublicInfo, bool]:
        child = self._live_child()
        child.send(b"S", encode_actions(actions, child.region))
        return child.receive_step()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ranks, success turns) of the whole set, sent once the last batch is over; the
        child then waits for the evaluator's next evaluation."""
        child = self._live_child()
        if self._next_batch != self.num_batches:
            raise RuntimeError("play every batch before asking for the result")
        ranks, success_turn, self.human = child.receive(child.env_timeout)
        self._finish(ok=True)
        return ranks, success_turn

    def _finish(self, ok: bool) -> None:
        if self._open:
            self._open = False
            self._evaluator._release(self._child, ok)

    def close(self) -> None:
        """Give the child back to the evaluator; before the result, that ends the child."""
        self._finish(ok=False)

    def __enter__(self) -> SealedDialogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


#: every evaluator not yet closed, for interpreter exit and for forks
_EVALUATORS: weakref.WeakSet[SealedEvaluator] = weakref.WeakSet()


class SealedEvaluator:
    """A sealed evaluation session: one warm child process for many evaluations.

    ::

        with SealedEvaluator("fiq_gym/FashionIQ-v3", catalog=path, action_mode="index") as ev:
            a = ev.evaluate(agent_a, episodes=1000, seed=0)
            b = ev.evaluate(agent_b, episodes=1000, seed=0)  # same child, same env: no start-up
            c = ev.evaluate(agent_c, 1000, env=other_venv)  # same child, another env

    The child starts at once and, given an env, builds it at once, so both happen while the
    caller prepares its agent. It keeps its imports and caches for its whole life and its env
    while the spec (env id, arguments, number of dialogs) stays the same. Results are those
    of a fresh child, and of ``evaluate(..., sealed=False)``, for an honest agent (tested).

    One evaluation at a time: give each thread its own evaluator. An error during an
    evaluation ends the child; the next evaluation starts a new one. :meth:`close` (or the
    ``with`` block) ends it; so do interpreter exit and the death of this process.

    Args:
        env: the default env of :meth:`evaluate`: a registered id (with ``num_envs`` and
            ``env_kwargs``) or a native vector env made by ``gym.make_vec`` (only read for its
            spec). None: give ``env=`` to each evaluation.
        num_envs: parallel dialogs when ``env`` is an id.
        env_timeout: seconds the child may take to answer a step (None: no limit); past it,
            the child is stopped and the evaluation ends with
            :class:`~fiq_gym.errors.EvaluationTimeout`.
    """

    def __init__(
        self,
        env: str | gym.vector.VectorEnv | None = None,
        *,
        num_envs: int = DEFAULT_NUM_ENVS,
        env_timeout: float | None = ENV_TIMEOUT,
        **env_kwargs: Any,
    ) -> None:
        self._env_timeout = env_timeout
        if env is None and env_kwargs:
            raise ValueError("env_kwargs only apply together with an env id")
        self._default = None if env is None else EnvSpec.of(env, num_envs, env_kwargs)
        self._child: _Child | None = None
        self._busy = threading.Lock()
        self._closed = False
        #: envs the children of this evaluator have built (a kept env is not built again)
        self.envs_built = 0
        #: evaluations finished (a number that reads well in logs and tests)
        self.evaluations = 0
        _EVALUATORS.add(self)
        child = self._ensure_child()
        if self._default is not None:
            child.send(b"B", self._default.payload)
            child.unanswered += 1

    @property
    def pid(self) -> int | None:
        """The child's process id (None before its first start or after a failure)."""
        return None if self._child is None else self._child.pid

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_child(self) -> _Child:
        if self._closed:
            raise RuntimeError("this SealedEvaluator is closed: make a new one")
        if self._child is not None and not self._child.alive():
            self._child.close()
            self._child = None
        if self._child is None:
            self._child = _Child(self._env_timeout)
        return self._child

    def _spec(self, env: Any, num_envs: int | None, env_kwargs: dict[str, Any]) -> EnvSpec:
        if env is not None:
            return EnvSpec.of(env, num_envs, env_kwargs)
        if env_kwargs or num_envs is not None:
            raise ValueError("env_kwargs and num_envs apply together with env=")
        if self._default is None:
            raise TypeError("this SealedEvaluator was made without an env: pass env= (an id or a vector env)")
        return self._default

    def open(
        self,
        episodes: int | EvaluationSet = 1000,
        seed: int = 0,
        *,
        env: str | gym.vector.VectorEnv | None = None,
        num_envs: int | None = None,
        **env_kwargs: Any,
    ) -> SealedDialogs:
        """Start an evaluation in the child (its env built, or kept, and the set ready) and
        return the handle the agent's side plays; :meth:`evaluate` does the rest."""
        return self._open(self._spec(env, num_envs, env_kwargs), episodes, seed)

    def _open(self, spec: EnvSpec, episodes: int | EvaluationSet, seed: int) -> SealedDialogs:
        request = pickle.dumps({"spec": spec.payload, "episodes": episodes, "seed": int(seed)})
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                "this SealedEvaluator is already running an evaluation (another thread, or an agent that "
                "evaluates inside its own evaluation): give each a SealedEvaluator of its own"
            )
        try:
            header, child = self._start(request)
        except BaseException:
            self._drop_child()
            self._busy.release()
            raise
        if header["built"]:
            self.envs_built += 1
        return SealedDialogs(self, child, header)

    def _start(self, request: bytes) -> tuple[dict[str, Any], _Child]:
        """Send the request and read the header; a kept child found dead (the thread that
        started it ended, or it was killed) is replaced once."""
        for attempt in range(2):
            fresh = self._child is None or not self._child.alive()
            child = self._ensure_child()
            try:
                child.send(b"I", request)
                while child.unanswered:
                    if child.receive()["built"]:
                        self.envs_built += 1
                    child.unanswered -= 1
                header = child.receive()
            except _ChildGone:
                self._drop_child()
                if fresh or attempt:
                    raise
                continue
            if child.region is not None:
                child.region.use(header["layout"])
            return header, child
        raise AssertionError("unreachable")

    def _drop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.close()

    def _release(self, child: _Child, ok: bool) -> None:
        """The end of an evaluation: keep the child if it finished, else end it."""
        if ok:
            self.evaluations += 1
        elif child is self._child:
            self._drop_child()
        if self._busy.locked():
            self._busy.release()

    def evaluate(
        self,
        agent: RetrievalAgent,
        episodes: int | EvaluationSet = 1000,
        seed: int = 0,
        *,
        env: str | gym.vector.VectorEnv | None = None,
        num_envs: int | None = None,
        name: str | None = None,
        turn_timeout: float | None = TURN_TIMEOUT,
        **env_kwargs: Any,
    ) -> EvaluationResult:
        """Play the set with ``agent`` in the child: :func:`evaluate`'s sealed run, on this
        evaluator's child. ``env`` (and ``num_envs``, ``env_kwargs``) default to the
        evaluator's own env."""
        spec = self._spec(env, num_envs, env_kwargs)
        return self._evaluate(agent, spec, episodes, seed, name, turn_timeout)

    def _evaluate(
        self,
        agent: RetrievalAgent,
        spec: EnvSpec,
        episodes: int | EvaluationSet,
        seed: int,
        name: str | None,
        turn_timeout: float | None = TURN_TIMEOUT,
    ) -> EvaluationResult:
        refuse_held_out(seed, "sealed")
        with only_evaluation_of(episodes, seed), self._open(spec, episodes, seed) as dialogs:
            play_dialogs(agent, dialogs, turn_timeout)
            ranks, success_turn = dialogs.result()
        meta = {
            "seed": seed,
            "set": "public",
            "episodes": dialogs.episodes,
            "max_turns": dialogs.turns,
            "env": spec.label,
            "sealed": True,
            **human_meta(dialogs.human),
        }
        return EvaluationResult(name or type(agent).__name__, ranks, success_turn, dialogs.num_items, meta)

    def close(self) -> None:
        """End the child (it exits when its pipe closes; killed if it was playing)."""
        self._closed = True
        child, self._child = self._child, None
        if child is not None:
            child.close(timeout=0.5 if self._busy.locked() else 10)
        _EVALUATORS.discard(self)

    def _abandon(self) -> None:
        """After a fork, in the copy: forget the caller's child without touching it."""
        child, self._child = self._child, None
        if child is not None:
            child.abandon()
        self._busy = threading.Lock()

    def __enter__(self) -> SealedEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the process-wide warm evaluator of evaluate() ------------------------------------------------

_warm: SealedEvaluator | None = None
_warm_context: tuple[str | None, dict[str, str]] | None = None
_warm_lock = threading.Lock()


def _context() -> tuple[str | None, dict[str, str]]:
    """What a child inherits at its start and a later call could have changed."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    return cwd, child_environment()


def _warm_evaluator() -> SealedEvaluator:
    """The process-wide evaluator, replaced if the directory or environment changed; the
    caller holds ``_warm_lock``."""
    global _warm, _warm_context
    context = _context()
    if _warm is None or _warm.closed or context != _warm_context:
        if _warm is not None:
            _warm.close()
        _warm, _warm_context = SealedEvaluator(), context
    return _warm


def close_warm_evaluator() -> None:
    """End the child that ``evaluate(..., sealed=True)`` keeps warm between calls, e.g. to
    give its memory back or before rebuilding a catalog in place (it waits for an evaluation
    running on it in another thread); the next sealed evaluation starts a new one."""
    global _warm, _warm_context
    with _warm_lock:
        if _warm is not None:
            _warm.close()
        _warm, _warm_context = None, None


def _close_all() -> None:
    """At interpreter exit: end every child, without waiting for a thread that is still
    evaluating (it may be a daemon thread that never finishes)."""
    for evaluator in list(_EVALUATORS):
        evaluator.close()


def _after_fork_in_child() -> None:
    """A forked copy of this process shares the children's pipes: it lets go of them, so the
    children still end when this process closes its own, and starts its own if it evaluates."""
    global _warm, _warm_context, _warm_lock
    _warm, _warm_context, _warm_lock = None, None, threading.Lock()
    for evaluator in list(_EVALUATORS):
        evaluator._abandon()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


ISOLATION_MODES = ("none", "sealed", "process")


def evaluate(
    agent: RetrievalAgent | Any,
    env: str | gym.vector.VectorEnv,
    episodes: int | EvaluationSet = 1000,
    seed: int | HeldOutSeed = 0,
    *,
    sealed: bool = True,
    isolation: str | None = None,
    warm: bool = True,
    num_envs: int = DEFAULT_NUM_ENVS,
    name: str | None = None,
    turn_timeout: float | None = TURN_TIMEOUT,
    env_timeout: float | None = ENV_TIMEOUT,
    **env_kwargs: Any,
) -> EvaluationResult:
    """Run ``agent`` on a fixed evaluation set and return per-turn metrics.

    The agent gets observations and ``info`` filtered to caption text, shown item, turn and
    ``is_success`` (:data:`fiq_gym.envs.evaluation.PUBLIC_INFO_KEYS`); never rank, percentile,
    reward or the env object. Environments with a training-only opt-in (``expose_target``,
    ``lookahead``) are refused, and so is a second evaluation of a set while one is open in
    this process (an agent evaluating inside its own ``act()``).

    Args:
        agent: a :class:`~fiq_gym.envs.evaluation.RetrievalAgent` built for this env (same items
            in play; it may read the gallery, e.g. ``venv.unwrapped.gallery``); with
            ``isolation="process"``, an :class:`~fiq_gym.envs.evaluation.isolation.AgentSpec` that
            builds it in its own process.
        env: a registered id (a native vector env of ``num_envs`` is made with
            ``env_kwargs``), or a native vector env made by ``gym.make_vec``. Sealed, a given
            vector env is only read for its spec: the child process builds its own copy,
            and the one given is never reset or stepped.
        episodes: the number of episodes of a set generated from ``seed``, or a set.
        seed: seeds the evaluation set and the env (the shopper's wording); a
            :class:`~fiq_gym.envs.evaluation.HeldOutSeed` (isolated only) for a set the agent
            cannot regenerate.
        isolation: ``"sealed"`` (the default): the env in a child process, the agent in
            this one, which holds the set (it stops accidents: an agent cannot reach the env,
            its ranks or its generators; it does not stop an agent that sets out to read
            this process's frames or patch its code). ``"process"``: the agent in a process
            of its own, for agents you do not trust (:mod:`fiq_gym.envs.evaluation.isolation`).
            ``"none"``: everything in this process, for debugging (same results for an
            honest agent). ``sealed=False`` is ``isolation="none"``.
        warm: sealed, use the process-wide child kept warm between calls (see the module's
            docstring; it falls back to a child of its own when that one is busy).
            ``warm=False`` starts a child for this call only and ends it after.
        turn_timeout: seconds each ``act()`` may take (None: no limit); past it the
            evaluation ends with :class:`~fiq_gym.errors.EvaluationTimeout`. Enforced
            everywhere with ``isolation="process"``; in this process only on the main
            thread (an interval timer).
        env_timeout: seconds the environment's process may take to answer a step (sealed).
    """
    if isolation is None:
        isolation = "sealed" if sealed else "none"
    elif isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}")
    elif not sealed and isolation != "none":
        raise ValueError(f"sealed=False contradicts isolation={isolation!r}; pass one of them")
    if isolation == "process":
        return evaluate_isolated(
            agent, env, episodes, seed, num_envs=num_envs, name=name, turn_timeout=turn_timeout, **env_kwargs
        )
    refuse_held_out(seed, isolation)
    seed = int(seed)  # type: ignore[arg-type]
    if isinstance(env, gym.vector.VectorEnv) and isolation == "none":
        if env_kwargs:
            raise ValueError("env_kwargs only apply when env is given by id")
        refuse_opt_in_env(env)
        with only_evaluation_of(episodes, seed):
            return evaluate_in_process(agent, env, episodes, seed, name, turn_timeout=turn_timeout)
    if isinstance(env, str) and isolation == "none":
        refuse_training_opt_ins(env_kwargs)
        venv = gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
        try:
            with only_evaluation_of(episodes, seed):
                return evaluate_in_process(agent, venv, episodes, seed, name, env, turn_timeout=turn_timeout)
        finally:
            venv.close()
    spec = EnvSpec.of(env, num_envs, env_kwargs)
    if warm and env_timeout == ENV_TIMEOUT and _warm_lock.acquire(blocking=False):
        try:
            return _warm_evaluator()._evaluate(agent, spec, episodes, seed, name, turn_timeout)
        finally:
            _warm_lock.release()
    with SealedEvaluator(env_timeout=env_timeout) as evaluator:
        return evaluator._evaluate(agent, spec, episodes, seed, name, turn_timeout)
