"""Worker processes that never run the caller's main module and die with their parent.

multiprocessing's ``spawn`` and ``forkserver`` start methods re-import the parent's
``__main__`` in every worker. A research script without an ``if __name__ == "__main__":``
guard then re-enters fiq-gym inside the worker, which tries to start workers of its own and
dies while bootstrapping, so the first ``gym.make`` on a fresh cache failed with
``BrokenProcessPool``. Pool workers also outlived a ``kill -9`` of their parent (they block
on a queue whose write end they hold themselves), together with multiprocessing's resource
tracker.

The workers here are plain ``python -c`` children that exchange pickles over their own
stdin and stdout. They import only the module of the function they run, ignore Ctrl-C (the
parent handles it and closes them), and exit the moment their stdin reaches end-of-file,
which the kernel delivers when the parent closes the pipe or dies in any way.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, TypeVar

__all__ = ["WorkerError", "WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")

# Jobs queued per worker ahead of the one it runs: enough to keep it busy while the parent
# reads the previous result, few enough that a worker's stdin pipe never fills up.
_AHEAD = 2
_BOOTSTRAP = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from fiq_gym.utils.workers import _serve; _serve()"
)


class WorkerError(RuntimeError):
    """A worker process exited without answering (killed, out of memory, crashed)."""


class WorkerPool:
    """``processes`` worker processes; :meth:`map` runs a module-level function over jobs.

    Use as a context manager: leaving it (normally or by an exception) closes the workers.
    """

    def __init__(
        self, processes: int, *, env: dict[str, str] | None = None, pass_fds: Sequence[int] = ()
    ) -> None:
        """``env``: environment variables set in the workers on top of this process's own
        (e.g. ``OPENBLAS_NUM_THREADS=1`` for workers that each use one core); ``pass_fds``:
        file descriptors the workers inherit, under the same numbers."""
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self._procs: list[subprocess.Popen] = []
        try:
            for _ in range(processes):
                proc = subprocess.Popen(
                    [sys.executable, "-c", _BOOTSTRAP],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=None if env is None else {**os.environ, **env},
                    pass_fds=tuple(pass_fds),
                )
                self._procs.append(proc)
                _send(proc, list(sys.path))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, fn: Callable[[T], R], jobs: Iterable[T]) -> Iterator[R]:
        """``fn(job)`` for every job, in the order of ``jobs``, computed by the workers.

        ``fn`` must be importable by name (a module-level function of an importable module);
        an exception it raises in a worker is raised here.
        """
        module, name = self._name(fn)
        jobs = list(jobs)
        procs = self._procs
        ahead = len(procs) * _AHEAD
        for i in range(min(len(jobs), ahead)):
            self._submit(procs[i % len(procs)], (module, name, jobs[i]))
        for i in range(len(jobs)):
            proc = procs[i % len(procs)]
            status, value = self._receive(proc, name)
            if i + ahead < len(jobs):
                self._submit(proc, (module, name, jobs[i + ahead]))
            if status == "error":
                raise value
            yield value

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, in worker order."""
        return [proc.pid for proc in self._procs]

    def scatter(self, fn: Callable[[T], R], jobs: Sequence[T]) -> list[R]:
        """``fn(jobs[k])`` on worker ``k`` for every ``k``, all at once; the results in order.

        For workers that keep state between calls (a worker's module-level variables live as
        long as the worker): job ``k`` always reaches worker ``k``. Every worker's answer is
        read before an error is raised, so the pool stays usable afterwards.
        """
        module, name = self._name(fn)
        if len(jobs) != len(self._procs):
            raise ValueError(f"scatter needs one job per worker ({len(self._procs)}), got {len(jobs)}")
        for proc, job in zip(self._procs, jobs, strict=True):
            self._submit(proc, (module, name, job))
        replies = [self._receive(proc, name) for proc in self._procs]
        for status, value in replies:
            if status == "error":
                raise value
        return [value for _, value in replies]

    @staticmethod
    def _name(fn: Callable) -> tuple[str, str]:
        module, name = fn.__module__, fn.__qualname__
        if module == "__main__" or "<" in name:
            raise ValueError(
                f"{name} must be a module-level function of an importable module to run in a worker"
            )
        return module, name

    def _submit(self, proc: subprocess.Popen, message: object) -> None:
        try:
            _send(proc, message)
        except (BrokenPipeError, OSError):
            raise WorkerError(self._death_notice(proc)) from None

    def _receive(self, proc: subprocess.Popen, name: str) -> tuple[str, Any]:
        assert proc.stdout is not None, "workers are started with stdout=PIPE"
        try:
            return pickle.load(proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            raise WorkerError(self._death_notice(proc) + f" while running {name}") from None

    @staticmethod
    def _death_notice(proc: subprocess.Popen) -> str:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return f"worker process {proc.pid} stopped answering (exit code {code})"

    def close(self) -> None:
        """End every worker: end-of-file on its stdin, then a kill if it has not exited."""
        for proc in self._procs:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []


def _send(proc: subprocess.Popen, message: object) -> None:
    assert proc.stdin is not None, "workers are started with stdin=PIPE"
    pickle.dump(message, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    proc.stdin.flush()


def _serve() -> None:
    """The worker's loop (runs in the child): read jobs, run them, write results in order."""
    # Ctrl-C reaches the whole process group; the parent decides what happens and closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    results: IO[bytes] = os.fdopen(os.dup(1), "wb")
    # Whatever a job prints must not corrupt the result stream: send fd 1 to stderr.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                jobs.put(pickle.load(requests))
            except BaseException:
                # End-of-file: the parent is done with us or has died. Leave at once, even in
                # the middle of a job nobody will read.
                os._exit(0)

    threading.Thread(target=read, name="fiq-gym-worker-stdin", daemon=True).start()
    while True:
        module, name, job = jobs.get()
        try:
            fn: Any = importlib.import_module(module)
            for part in name.split("."):
                fn = getattr(fn, part)
            reply: tuple[str, Any] = ("ok", fn(job))
        except Exception as e:
            e.add_note(f"(in fiq-gym worker process {os.getpid()})\n{traceback.format_exc()}")
            reply = ("error", e)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # an unpicklable exception or result
            data = pickle.dumps(("error", WorkerError(f"{name} returned something unpicklable: {e}")))
        results.write(data)
        results.flush()
