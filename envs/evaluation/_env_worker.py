"""The child process of the sealed evaluation harness (``python -m fiq_gym.envs.evaluation._env_worker
PARENT_PID REGION_FD``); see :mod:`fiq_gym.envs.evaluation.harness` and, for what crosses the pipes and
the shared region, :mod:`fiq_gym.envs.evaluation._protocol`.

It imports the environment's modules at once (torch among them), so a caller that starts it
early gets that done while it prepares its agent, then serves requests until its stdin
closes:

* ``B`` (env spec): build the env, or keep the one it has if the spec is the same;
* ``I`` (env spec, evaluation set or its size, seed): the same, then play the set: send the
  header, each batch's first observations (unasked, as soon as the previous batch is over),
  an answer per batch of actions (observations and filtered info only) and, after the last
  batch, the ranks (unasked).

One process serves many evaluations (a warm child): it keeps its imports, the library's
caches and its last env between them. Every evaluation starts each batch with a seeded reset
of fixed targets and first items, so a kept env plays exactly what a new one would (tested).
On any error it sends the exception and exits. Its stdout carries nothing but the protocol:
anything the environment prints goes to stderr. It is started ``python -I`` with the
interpreter and environment pinned when fiq-gym was imported, and makes itself not dumpable
(:mod:`fiq_gym.envs.evaluation._launch`).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from typing import IO, Any

from fiq_gym.envs.evaluation._launch import forbid_dumps, protocol_stdout, start_child


def _error(exc: BaseException) -> bytes:
    """A pickled exception the parent can raise, falling back to RuntimeError with the message."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def serve(inp: IO[bytes], out: IO[bytes], region_fd: int = -1) -> int:
    import gymnasium as gym

    import fiq_gym
    import fiq_gym.envs.vector  # noqa: F401 - the env's modules, torch included, before the first request
    from fiq_gym.envs.evaluation._protocol import (
        Layout,
        SharedRegion,
        decode_actions,
        encode_answer,
        read_message,
        write_message,
    )
    from fiq_gym.envs.evaluation.sets import EvaluationDialogs, EvaluationSet

    region = SharedRegion(region_fd) if region_fd >= 0 else None
    spec_key: bytes | None = None
    venv: Any = None

    def answer(value: Any) -> None:
        write_message(out, b"O", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def send(obs: Any, info: Any, done: bool = False, *, shared: bool) -> None:
        write_message(out, b"O", encode_answer(obs, info, done, region, shared=shared))

    def env_for(spec: bytes) -> bool:
        """Make ``venv`` the env of ``spec`` (pickled id, arguments, number of dialogs);
        True if it had to be built."""
        nonlocal spec_key, venv
        if venv is not None and spec == spec_key:
            return False
        if venv is not None:
            spec_key, old, venv = None, venv, None
            old.close()
        request = pickle.loads(spec)
        venv = gym.make_vec(
            request["env_id"],
            num_envs=request["num_envs"],
            vectorization_mode="vector_entry_point",
            **request["env_kwargs"],
        )
        spec_key = spec
        if region is not None:
            region.use(Layout.for_spaces(venv.observation_space, venv.action_space), grow=True)
        return True

    def play(dialogs: EvaluationDialogs) -> bool:
        """Play every batch; False if the caller went away."""
        batch = 0
        send(*dialogs.reset(batch), shared=True)
        while (message := read_message(inp)) is not None:
            tag, payload = message
            if tag != b"S":
                raise RuntimeError(f"unexpected message {tag!r} from the evaluation harness during play")
            obs, info, done = dialogs.step(decode_actions(payload, region))
            # The last step's observations travel in the message: the next batch's first
            # ones go into the region right after, before the caller has read these.
            send(obs, info, done, shared=not done)
            if done:
                batch += 1
                if batch == dialogs.num_batches:
                    answer((*dialogs.result(), dialogs.human_captions()))
                    return True
                send(*dialogs.reset(batch), shared=True)
        return False

    try:
        while (message := read_message(inp)) is not None:
            tag, payload = message
            if tag == b"B":
                answer({"built": env_for(payload)})
            elif tag == b"I":
                request = pickle.loads(payload)
                built = env_for(request["spec"])
                episodes, seed = request["episodes"], request["seed"]
                eval_set = (
                    episodes
                    if isinstance(episodes, EvaluationSet)
                    else EvaluationSet.for_env(venv, episodes, seed)
                )
                dialogs = EvaluationDialogs(venv, eval_set, seed)
                answer(
                    {
                        "num_envs": dialogs.num_envs,
                        "num_batches": dialogs.num_batches,
                        "num_items": dialogs.num_items,
                        "turns": dialogs.turns,
                        "episodes": len(eval_set),
                        "built": built,
                        "layout": None if region is None else region.layout,
                    }
                )
                if not play(dialogs):
                    return 0
            else:
                raise RuntimeError(f"unknown message {tag!r} from the evaluation harness")
        return 0
    except Exception as e:
        with contextlib.suppress(OSError):
            write_message(out, b"E", _error(e))
        return 1
    finally:
        if venv is not None:
            venv.close()
        if region is not None:
            region.close()


def main(argv: list[str]) -> int:
    started = start_child(
        argv, "python -m fiq_gym.envs.evaluation._env_worker PARENT_PID [REGION_FD] (started by the harness)"
    )
    if started is None:
        return 2
    # The environment holds the evaluation's targets: no other process of this user (the
    # caller's agent included) may read this one's memory.
    forbid_dumps()
    return serve(sys.stdin.buffer, protocol_stdout(), started[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
