"""The agent's process of an isolated evaluation (``python -I -m fiq_gym.envs.evaluation._agent_worker
PARENT_PID``); see :mod:`fiq_gym.envs.evaluation.isolation`.

It gives up its privileges and dies with the evaluator, then reads one ``A`` request (the
agent's factory and arguments, the env spec), builds its own copy of the env and the agent,
answers ``K``, and serves until its stdin closes: ``L`` (the layout of the shared region the
evaluator passed at start, where observations and large actions travel), ``R`` (first
observations of a batch: the agent's ``reset``) and ``S`` (observations: ``act``, answered
with ``A`` and the actions as numbers). An error is answered with ``E`` and its text, never a pickle; the traceback goes
to stderr. Its stdout carries nothing but the protocol: whatever the agent prints goes to
stderr.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import traceback
from typing import IO, Any

from fiq_gym.envs.evaluation._launch import drop_privileges, protocol_stdout, start_child


def _fail(out: IO[bytes], exc: BaseException) -> int:
    from fiq_gym.envs.evaluation._protocol import write_message

    traceback.print_exception(exc, file=sys.stderr)
    with contextlib.suppress(OSError):
        write_message(out, b"E", f"{type(exc).__name__}: {exc}".encode("utf-8", errors="replace"))
    return 1


def serve(inp: IO[bytes], out: IO[bytes], region_fd: int = -1) -> int:
    import gymnasium as gym

    import fiq_gym
    from fiq_gym.envs.evaluation._protocol import SharedRegion, encode_actions, read_message, write_message
    from fiq_gym.envs.evaluation.isolation import AgentSpec

    region = SharedRegion(region_fd) if region_fd >= 0 else None

    def observations(inline: Any) -> Any:
        if inline is not None:
            return inline
        if region is None:
            raise RuntimeError(
                "the evaluator wrote observations to a shared region this process does not have"
            )
        return region.take_observations()

    message = read_message(inp)
    if message is None or message[0] != b"A":
        return 2
    request = pickle.loads(message[1])  # from the evaluator, which started this process
    venv: Any = None
    try:
        # The factory and the env's modules first, while the evaluator prepares the env spec.
        factory = AgentSpec(request["factory"], request["kwargs"]).resolve()
        import fiq_gym.envs.vector  # noqa: F401  (torch among them)

        message = read_message(inp)
        if message is None:
            return 0
        if message[0] != b"V":
            raise RuntimeError(f"expected the env spec from the evaluator, got message {message[0]!r}")
        env = pickle.loads(message[1])
        venv = gym.make_vec(
            env["env_id"],
            num_envs=env["num_envs"],
            vectorization_mode="vector_entry_point",
            **env["env_kwargs"],
        )
        agent = factory(venv, **request["kwargs"])
        write_message(out, b"K")
        while (message := read_message(inp)) is not None:
            tag, payload = message
            if tag == b"L" and region is not None:
                region.use(pickle.loads(payload))
            elif tag == b"R":
                obs, info, mask = pickle.loads(payload)
                agent.reset(observations(obs), info, mask)
            elif tag == b"S":
                obs, info = pickle.loads(payload)
                write_message(out, b"A", encode_actions(agent.act(observations(obs), info), region))
            else:
                raise RuntimeError(f"unknown message {tag!r} from the evaluator")
        return 0
    except Exception as e:
        return _fail(out, e)
    finally:
        if venv is not None:
            with contextlib.suppress(Exception):
                venv.close()
        if region is not None:
            region.close()


def main(argv: list[str]) -> int:
    started = start_child(
        argv,
        "python -m fiq_gym.envs.evaluation._agent_worker PARENT_PID [REGION_FD] (started by the evaluator)",
    )
    if started is None:
        return 2
    # No capabilities, for good: even as root, this process cannot read the memory of the
    # evaluator, which is not dumpable while it runs.
    drop_privileges()
    return serve(sys.stdin.buffer, protocol_stdout(), started[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
