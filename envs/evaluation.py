"""The evaluation harness: play a fixed evaluation set with an agent, sealed by default.

Sealed (the default, and what every published table uses), the environment runs in a child
process, ``python -m fiq_gym.envs._sealed_worker``, started afresh with pipes: the agent, in
the caller's process, receives observations and the filtered info of
:func:`fiq_gym.evaluation.public_info` and nothing else, so the env's private state,
pickles, deep copies and generators are out of its reach. The child never imports the
caller's ``__main__`` (scripts need no ``if __name__ == "__main__":`` guard), dies with the
caller, and plays exactly what the in-process harness plays: same seeds, same set, same
results for an honest agent.

The harness builds environments, so it lives in the envs layer; the evaluation data
(:class:`~fiq_gym.evaluation.EvaluationSet`, :class:`~fiq_gym.evaluation.EvaluationResult`)
and what agents may see stay in the core, :mod:`fiq_gym.evaluation`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import subprocess
import sys
from typing import IO, Any

import gymnasium as gym
import numpy as np

from fiq_gym.evaluation import (
    EvaluationResult,
    EvaluationSet,
    PublicInfo,
    RetrievalAgent,
    evaluate_in_process,
    play_dialogs,
    refuse_training_opt_ins,
    training_opt_in,
)

__all__ = ["SealedDialogs", "evaluate"]

WORKER_MODULE = "fiq_gym.envs._sealed_worker"
_HEADER = struct.Struct("<cQ")  # message tag, payload length
_PIPE_BYTES = 1 << 20  # the usual /proc/sys/fs/pipe-max-size
_MAKE_VEC_KEYS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")


def write_message(stream: IO[bytes], tag: bytes, payload: bytes = b"") -> None:
    # One write: a header written on its own wakes the reader, which then waits for the rest.
    stream.write(_HEADER.pack(tag, len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next (tag, payload), or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    tag, size = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return tag, payload


def encode_actions(actions: Any) -> bytes:
    """An agent's actions as ``.npy`` bytes: numbers only, never a pickle."""
    arr = np.asarray(actions)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"the agent's actions must be a numeric array, got dtype {arr.dtype}")
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue()


class SealedDialogs:
    """The caller's handle on an :class:`~fiq_gym.evaluation.EvaluationDialogs` that runs in
    a child process: the same ``reset`` / ``step`` / ``result``, over pipes.

    The child builds ``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point",
    **env_kwargs)`` and the evaluation set (generated there from ``seed`` when ``episodes`` is
    a number, so the targets never exist in this process). It is killed if this process dies
    (Linux) and ends when its pipe closes.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        num_envs: int,
        episodes: int | EvaluationSet,
        seed: int,
    ) -> None:
        request = {
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "num_envs": int(num_envs),
            "episodes": episodes,
            "seed": int(seed),
        }
        try:
            payload = pickle.dumps(request)
        except Exception as e:
            raise ValueError(
                f"sealed evaluation cannot send the env's arguments to its process ({e}); "
                "pass catalog paths and user names, or evaluate(..., sealed=False) to debug"
            ) from None
        self._finished = False
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        _widen_pipes(self._proc)
        try:
            write_message(self._stdin, b"I", payload)
            header = self._receive()
        except BaseException:
            self.close()
            raise
        self.num_envs: int = header["num_envs"]
        self.num_batches: int = header["num_batches"]
        self.num_items: int = header["num_items"]
        self.turns: int = header["turns"]
        self.episodes: int = header["episodes"]
        self._next_batch = 0

    @property
    def _stdin(self) -> IO[bytes]:
        assert self._proc is not None and self._proc.stdin is not None
        return self._proc.stdin

    def _receive(self) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        message = read_message(self._proc.stdout)
        if message is None:
            code = self._proc.wait()
            self._proc = None
            raise RuntimeError(
                f"the sealed evaluation process exited unexpectedly (exit code {code}); "
                "its error is on stderr above, and evaluate(..., sealed=False) runs the same dialogs in this process"
            )
        tag, payload = message
        value = pickle.loads(payload)
        if tag == b"E":
            self.close()
            value.add_note("(raised in the sealed evaluation process)")
            raise value
        return value

    def _request(self, tag: bytes | None, payload: bytes = b"") -> Any:
        """Send a message (unless ``tag`` is None) and return the child's next answer."""
        if self._proc is None:
            raise RuntimeError("the sealed evaluation process has ended")
        if tag is not None:
            # A child that is gone has closed the pipe: _receive reports its exit code.
            with contextlib.suppress(BrokenPipeError):
                write_message(self._stdin, tag, payload)
        return self._receive()

    def reset(self, batch: int) -> tuple[dict[str, np.ndarray], PublicInfo]:
        # The child sends each batch's first observations unasked, as soon as the previous
        # batch is over: one message fewer per batch, and it works while this side does.
        if batch != self._next_batch:
            raise RuntimeError(
                f"sealed dialogs play their batches in order: expected {self._next_batch}, got {batch}"
            )
        self._next_batch += 1
        return self._request(None)

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], PublicInfo, bool]:
        return self._request(b"S", encode_actions(actions))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ranks, success turns) of the whole set, sent once the last batch is over; ends
        the child process."""
        if self._next_batch != self.num_batches:
            raise RuntimeError("play every batch before asking for the result")
        ranks, success_turn = self._request(None)
        self._finished = True
        self.close()
        return ranks, success_turn

    def close(self) -> None:
        """End the child: it exits by itself after sending the result; stopped earlier (an
        error, Ctrl-C), it is killed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=10 if self._finished else 0.5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> SealedDialogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


_F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity


def _widen_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Let a whole batch's observations or actions fit in the pipes (Linux; best effort), so
    a message is one write and one read instead of many switches between the processes."""
    if not sys.platform.startswith("linux"):
        return
    import fcntl

    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


def _spec_of(venv: gym.vector.VectorEnv) -> tuple[str, dict[str, Any]]:
    """The id and arguments that rebuild ``venv`` in another process."""
    spec = getattr(venv, "spec", None)
    mode = None if spec is None else spec.kwargs.get("vectorization_mode")
    if spec is None or mode not in (None, "vector_entry_point", gym.VectorizeMode.VECTOR_ENTRY_POINT):
        raise ValueError(
            "sealed evaluation rebuilds the env in another process from its spec: pass an env id with its "
            "arguments, or a vector env made by gym.make_vec(id, ..., vectorization_mode='vector_entry_point')"
        )
    return spec.id, {k: v for k, v in spec.kwargs.items() if k not in _MAKE_VEC_KEYS}


def evaluate(
    agent: RetrievalAgent,
    env: str | gym.vector.VectorEnv,
    episodes: int | EvaluationSet = 1000,
    seed: int = 0,
    *,
    sealed: bool = True,
    num_envs: int = 64,
    name: str | None = None,
    **env_kwargs: Any,
) -> EvaluationResult:
    """Run ``agent`` on a fixed evaluation set and return per-turn metrics.

    The agent gets observations and ``info`` filtered to caption text, shown item, turn and
    ``is_success`` (:data:`fiq_gym.evaluation.PUBLIC_INFO_KEYS`); never rank, percentile,
    reward or the env object. Environments with a training-only opt-in (``expose_target``,
    ``lookahead``) are refused.

    Args:
        agent: a :class:`~fiq_gym.evaluation.RetrievalAgent` built for this env (same items
            in play; it may read the gallery, e.g. ``venv.unwrapped.gallery``).
        env: a registered id (a native vector env of ``num_envs`` is made with
            ``env_kwargs``), or a native vector env made by ``gym.make_vec``. Sealed, a given
            vector env is only read for its spec: the child process builds its own copy,
            and the one given is never reset or stepped.
        episodes: the number of episodes of a set generated from ``seed``, or a set.
        seed: seeds the evaluation set and the env (the shopper's wording).
        sealed: run the env in a child process (the default; published numbers use it).
            ``sealed=False`` runs it in this process, for debugging: same results for an
            honest agent, but an agent could reach the env object.
    """
    if isinstance(env, str):
        refuse_training_opt_ins(env_kwargs)
        env_id, kwargs, n, label = env, dict(env_kwargs), num_envs, env
    elif isinstance(env, gym.vector.VectorEnv):
        if env_kwargs:
            raise ValueError("env_kwargs only apply when env is given by id")
        opt_in = training_opt_in(env)
        if opt_in:
            raise ValueError(
                f"evaluate() refuses an environment with {opt_in}=True: a training-only opt-in that reveals the target"
            )
        if not sealed:
            return evaluate_in_process(agent, env, episodes, seed, name)
        env_id, kwargs = _spec_of(env)
        n, label = int(env.num_envs), type(env.unwrapped).__name__
    else:
        raise TypeError(
            f"evaluate() takes an env id or a vector env made with gym.make_vec(..., vectorization_mode='vector_entry_point'), got {type(env).__name__}"
        )
    if not sealed:
        venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
        try:
            return evaluate_in_process(agent, venv, episodes, seed, name, label)
        finally:
            venv.close()
    refuse_training_opt_ins(kwargs)
    with SealedDialogs(env_id, kwargs, n, episodes, seed) as dialogs:
        play_dialogs(agent, dialogs)
        ranks, success_turn = dialogs.result()
    meta = {
        "seed": seed,
        "episodes": dialogs.episodes,
        "max_turns": dialogs.turns,
        "env": label,
        "sealed": True,
    }
    return EvaluationResult(name or type(agent).__name__, ranks, success_turn, dialogs.num_items, meta)
