"""The child process of the sealed evaluation harness (``python -m fiq_gym.envs._sealed_worker
PARENT_PID``); see :mod:`fiq_gym.envs.evaluation`.

It reads one request from stdin (env id, env arguments, number of parallel dialogs,
evaluation set or its size, seed), builds the environment and the evaluation set, then
answers each batch of actions with observations and filtered info only; it sends each batch's
first observations, and at the end the ranks, without being asked. Its stdout
carries nothing but the protocol: anything the environment prints goes to stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import pickle
import signal
import sys
from typing import IO, Any

import numpy as np

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Get SIGKILL when the parent dies (Linux); elsewhere the closed pipe ends the loop."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _error(exc: BaseException) -> bytes:
    """A pickled exception the parent can raise, falling back to RuntimeError with the message."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    import gymnasium as gym

    import fiq_gym  # noqa: F401 - registers the ids
    from fiq_gym.envs.evaluation import read_message, write_message
    from fiq_gym.evaluation import EvaluationDialogs, EvaluationSet

    def answer(value: Any) -> None:
        write_message(out, b"O", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    message = read_message(inp)
    if message is None or message[0] != b"I":
        return 1
    venv = None
    try:
        request = pickle.loads(message[1])
        venv = gym.make_vec(
            request["env_id"],
            num_envs=request["num_envs"],
            vectorization_mode="vector_entry_point",
            **request["env_kwargs"],
        )
        episodes, seed = request["episodes"], request["seed"]
        eval_set = (
            episodes
            if isinstance(episodes, EvaluationSet)
            else EvaluationSet.generate(int(venv.unwrapped.num_items), episodes, seed)
        )
        dialogs = EvaluationDialogs(venv, eval_set, seed)
        answer(
            {
                "num_envs": dialogs.num_envs,
                "num_batches": dialogs.num_batches,
                "num_items": dialogs.num_items,
                "turns": dialogs.turns,
                "episodes": len(eval_set),
            }
        )
        # Batch b's first observations go out unasked, once batch b - 1 is over; after the
        # last batch, the ranks. The caller only ever sends actions.
        batch = 0
        answer(dialogs.reset(batch))
        while (message := read_message(inp)) is not None:
            tag, payload = message
            if tag != b"S":
                raise RuntimeError(f"unknown message {tag!r} from the evaluation harness")
            obs, info, done = dialogs.step(np.load(io.BytesIO(payload), allow_pickle=False))
            answer((obs, info, done))
            if done:
                batch += 1
                if batch == dialogs.num_batches:
                    answer(dialogs.result())
                    return 0
                answer(dialogs.reset(batch))
        return 0
    except Exception as e:
        with contextlib.suppress(OSError):
            write_message(out, b"E", _error(e))
        return 1
    finally:
        if venv is not None:
            venv.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m fiq_gym.envs._sealed_worker PARENT_PID (started by the harness)",
            file=sys.stderr,
        )
        return 2
    _die_with_parent(int(argv[1]))
    # Ctrl-C reaches the whole process group: the parent handles it and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep stdout for the protocol; whatever the environment prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
