"""Agents that set out to cheat, with ordinary Python: the evaluation harness's adversaries.

Each one finds the targets (or forges the result) when it runs where the evaluation's secrets
are, and falls back to showing random unseen items otherwise, so "scores like random" is the
test that a harness holds. Each class is also an agent factory for an isolated evaluation
(``AgentSpec("fiq_gym.benchmarks.adversaries:ReadsCallerFrames")``), where it runs in a process
of its own. :data:`ADVERSARIES` lists them for ``python -m fiq_gym.benchmarks.sealed_evaluation``;
the tests (``tests/test_adversaries.py``) try each one against each harness.

These are attacks on *this* project's harness, kept to show what its threat model covers
(docs/agents.md, "What agents may read"); they use no OS-level exploit.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import FrameType
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.envs.evaluation import EvaluationSet
from fiq_gym.envs.inner import inner_env

__all__ = [
    "ADVERSARIES",
    "ChangesInterpreter",
    "EvaluatesInside",
    "Hangs",
    "PatchesTheHarness",
    "ReadsCallerFrames",
    "ReadsProcessMemory",
    "StopsTheEnvironment",
]


class _Fallback:
    """Random unseen items, batch by batch (what each adversary does when its route is closed),
    and the bookkeeping of which evaluation dialog each row plays."""

    def __init__(self, venv: gym.vector.VectorEnv, **kwargs: Any) -> None:
        inner = inner_env(venv)
        self.num_items = int(inner.num_items)
        self.num_envs = int(venv.num_envs)
        self.features = np.asarray(inner.gallery.features)
        self.rng = np.random.default_rng(12345)
        self.batch = -1
        self.shown: list[set[int]] = []
        self.targets: np.ndarray | None = None  # of the whole set, once found

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        self.batch += 1
        self.shown = [{int(s)} for s in np.atleast_1d(info["shown"])]

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        found = self.found(observation, info)
        actions = np.empty(self.num_envs, dtype=np.int64)
        for row in range(self.num_envs):
            if found is not None:
                actions[row] = found[row]
                continue
            pick = int(self.rng.integers(self.num_items))
            while pick in self.shown[row] and len(self.shown[row]) < self.num_items:
                pick = int(self.rng.integers(self.num_items))
            actions[row] = pick
            self.shown[row].add(pick)
        return actions

    def found(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray | None:
        """This batch's targets, if the route worked."""
        if self.targets is None:
            return None
        rows = self.batch * self.num_envs + np.arange(self.num_envs)
        return self.targets[np.minimum(rows, len(self.targets) - 1)]


class ReadsCallerFrames(_Fallback):
    """Walks up its callers' stack frames for the evaluation's seed and size (or the set
    itself) and regenerates the targets: a harness that holds the set in the agent's process
    hands it over."""

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        super().reset(observation, info, mask)
        if self.targets is None:
            self.targets = self._from_frames()

    def _from_frames(self) -> np.ndarray | None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            local = frame.f_locals
            for value in local.values():
                if isinstance(value, EvaluationSet) and value.num_items == self.num_items:
                    return value.targets
            episodes, seed = local.get("episodes"), local.get("seed")
            if isinstance(episodes, int) and isinstance(seed, int) and "evaluat" in frame.f_code.co_filename:
                return EvaluationSet.generate(self.num_items, episodes, seed).targets
            frame = frame.f_back
        return None


class PatchesTheHarness(_Fallback):
    """From its constructor, replaces the harness's result code in its own process so that every
    dialog reads as found at turn 1; the forged result still says ``sealed: True``.
    :meth:`restore` undoes it (tests call it)."""

    def __init__(self, venv: gym.vector.VectorEnv, **kwargs: Any) -> None:
        super().__init__(venv)
        from fiq_gym.envs.evaluation import EvaluationDialogs, SealedDialogs

        self._patched = [
            (EvaluationDialogs, "result", EvaluationDialogs.result),
            (SealedDialogs, "result", SealedDialogs.result),
        ]
        for owner, attr, original in self._patched:
            setattr(owner, attr, _forged(original))

    def restore(self) -> None:
        for owner, attr, original in self._patched:
            setattr(owner, attr, original)


def _forged(original: Any) -> Any:
    def result(self: Any) -> tuple[np.ndarray, np.ndarray]:
        ranks, success_turn = original(self)
        ranks, success_turn = ranks.copy(), success_turn.copy()
        ranks[:, 1:] = 0
        success_turn[:] = 1
        return ranks, success_turn

    return result


_LEAK = """
import numpy as np
import fiq_gym.envs.evaluation as _evaluation

_reset, _step = _evaluation.EvaluationDialogs.reset, _evaluation.EvaluationDialogs.step

def _leak(self, info):
    targets = self._venv.unwrapped._dialog.target
    info["caption_text"] = np.array(["TARGET %d" % t for t in targets], dtype=object)
    return info

def reset(self, batch):
    obs, info = _reset(self, batch)
    return obs, _leak(self, info)

def step(self, actions):
    obs, info, done = _step(self, actions)
    return obs, _leak(self, info), done

_evaluation.EvaluationDialogs.reset, _evaluation.EvaluationDialogs.step = reset, step
"""


class ChangesInterpreter(_Fallback):
    """From its constructor, before the harness starts its child: writes a ``sitecustomize.py``
    that makes the environment's process leak each target through the public
    ``caption_text``, puts it on ``PYTHONPATH``, points ``sys.executable`` at a wrapper that
    drops ``-I`` and adds it, and sets ``LD_LIBRARY_PATH`` there; then reads the targets off
    the captions. :meth:`restore` undoes the process-wide changes (tests call it)."""

    def __init__(self, venv: gym.vector.VectorEnv, **kwargs: Any) -> None:
        super().__init__(venv)
        self._directory = tempfile.mkdtemp(prefix="fiq-gym-adversary-")
        Path(self._directory, "sitecustomize.py").write_text(textwrap.dedent(_LEAK))
        wrapper = Path(self._directory, "python")
        wrapper.write_text(
            "#!/bin/sh\n"
            '[ "$1" = "-I" ] && shift\n'
            f'PYTHONPATH="{self._directory}" exec "{sys.executable}" "$@"\n'
        )
        wrapper.chmod(0o755)
        self._saved = (sys.executable, {k: os.environ.get(k) for k in ("PYTHONPATH", "LD_LIBRARY_PATH")})
        sys.executable = str(wrapper)
        os.environ["PYTHONPATH"] = self._directory
        os.environ["LD_LIBRARY_PATH"] = self._directory
        import fiq_gym.envs.evaluation as sealed

        sealed.close_warm_evaluator()  # so that the harness starts a child after these changes

    def found(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray | None:
        texts = np.atleast_1d(info.get("caption_text", np.array([], dtype=object)))
        if len(texts) == self.num_envs and all(str(t).startswith("TARGET ") for t in texts):
            return np.array([int(str(t).split()[1]) for t in texts], dtype=np.int64)
        return None

    def restore(self) -> None:
        executable, saved = self._saved
        sys.executable = executable
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Recorder(_Fallback):
    """The nested evaluation's agent: remembers each dialog's first shown item."""

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        super().__init__(venv)
        self.first_shown: list[int] = []

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        super().reset(observation, info, mask)
        self.first_shown.extend(int(s) for s in np.atleast_1d(info["shown"]))


class EvaluatesInside(_Fallback):
    """In its first ``act()``, evaluates a recording agent on the same set (the public default
    seed, the size given as ``episodes``) and reads each target off the nested result: turn
    0's rank is the target's by similarity to the first shown item, which leaves one item."""

    def __init__(self, venv: gym.vector.VectorEnv, episodes: int = 500, **kwargs: Any) -> None:
        super().__init__(venv)
        self.venv, self.episodes = venv, episodes

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        if self.targets is None and self.batch == 0:
            from fiq_gym.envs.evaluation import evaluate

            recorder = _Recorder(self.venv)
            nested = evaluate(recorder, self.venv, self.episodes, seed=0, sealed=False)
            shown = np.array(recorder.first_shown[: self.episodes])
            self.targets = np.array(
                [self._item_at(s, r) for s, r in zip(shown, nested.ranks[:, 0], strict=True)]
            )
        return super().act(observation, info)

    def _item_at(self, shown: int, rank: int) -> int:
        sims = self.features @ self.features[shown]
        order = np.sort(sims)
        ranks = len(sims) - np.searchsorted(order, sims, side="left") - 1
        candidates = np.flatnonzero(ranks == rank)
        candidates = candidates[candidates != shown]
        return int(candidates[0]) if len(candidates) else shown


class ReadsProcessMemory(_Fallback):
    """Tries to read the memory of the process that holds the evaluation's secrets through
    ``/proc/PID/mem``: its parent (the evaluator, when this agent runs in a process of its
    own) or its children (the environment's process, when sealed), and its parent's
    environment (where a held-out seed may be). Writes what happened to the file ``report``
    (one line per process, ``PID read`` or ``PID refused: ERROR``, then ``environ ...``)."""

    def __init__(self, venv: gym.vector.VectorEnv, report: str = "", **kwargs: Any) -> None:
        super().__init__(venv)
        self.report = report

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        super().reset(observation, info, mask)
        if self.batch == 0 and self.report:
            lines = [f"{pid} {_try_reading(pid)}" for pid in [os.getppid(), *_children(os.getpid())]]
            lines.append(f"environ {_try_environ(os.getppid())}")
            Path(self.report).write_text("\n".join(lines) + "\n")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _try_reading(pid: int) -> str:
    """``read`` if a page of the process's heap (or first mapping) could be read, else why not."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        region = next((m for m in maps if "[heap]" in m), maps[0] if maps else "")
        start = int(region.split("-")[0], 16)
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(start)
            mem.read(4096)
        return "read"
    except (OSError, ValueError) as e:
        return f"refused: {type(e).__name__}"


def _try_environ(pid: int) -> str:
    try:
        Path(f"/proc/{pid}/environ").read_bytes()
        return "read"
    except OSError as e:
        return f"refused: {type(e).__name__}"


class Hangs(_Fallback):
    """Never returns from ``act()``."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        while True:
            time.sleep(3600)


class StopsTheEnvironment(_Fallback):
    """Stops (SIGSTOP) the environment's process in its first ``act()``, so that the harness
    waits for an answer that never comes: the sealed worker started after this agent was made
    (children of the caller that were there before, a warm child among them, are left alone)."""

    def __init__(self, venv: gym.vector.VectorEnv, **kwargs: Any) -> None:
        super().__init__(venv)
        self._before = set(_children(os.getpid()))

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        for pid in set(_children(os.getpid())) - self._before:
            if b"_env_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGSTOP)
        return super().act(observation, info)


#: name -> adversary (each also a factory for an isolated evaluation)
ADVERSARIES: dict[str, type[_Fallback]] = {
    "reads the caller's stack frames": ReadsCallerFrames,
    "patches the harness's result code": PatchesTheHarness,
    "changes PYTHONPATH, sys.executable, LD_LIBRARY_PATH": ChangesInterpreter,
    "evaluates the same set inside act()": EvaluatesInside,
}
