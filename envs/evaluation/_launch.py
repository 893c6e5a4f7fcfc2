"""How the evaluation harness starts and protects its processes (Linux; best effort elsewhere).

An agent under evaluation runs ordinary Python, and in the sealed in-process mode it runs in
the caller's process before the harness starts its child. So what a child is started *with*
must not be what the agent may have changed by then:

* **Interpreter and environment are pinned** when this module is imported (``import
  fiq_gym`` imports it, before any agent code of a script can run): the child runs
  ``PINNED_PYTHON -I -m MODULE`` (``-I``: no ``PYTHON*`` variables, no user site, no script
  directory on ``sys.path``) with :func:`child_environment`, the environment captured then,
  in which only the variables that configure fiq-gym and its libraries (:data:`FOLLOWED`)
  take their current values. An agent that sets ``LD_PRELOAD``, ``PYTHONPATH`` or
  ``sys.executable`` changes nothing a child runs.
* **Children are not dumpable** (:func:`forbid_dumps`): another process of the same user
  cannot read their memory (``/proc/PID/mem``), attach a debugger or read their environment.
* **An agent's own process has no privileges** (:func:`drop_privileges`): no capabilities and
  no way to regain them, so even when everything runs as root it cannot read the memory of the
  evaluator, which makes itself not dumpable while it evaluates (:func:`no_dumps`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO

__all__ = [
    "FOLLOWED",
    "PINNED_PYTHON",
    "child_command",
    "child_environment",
    "die_with_parent",
    "drop_privileges",
    "forbid_dumps",
    "hold_no_dumps",
    "is_dumpable",
    "no_dumps",
    "protocol_stdout",
    "release_no_dumps",
    "spawn_child",
    "start_child",
]

#: the interpreter every child runs, as it was when fiq-gym was imported
PINNED_PYTHON = sys.executable
_PINNED_ENVIRONMENT = dict(os.environ)
#: prefixes of the variables a child takes from the caller's *current* environment (settings of
#: fiq-gym, Hugging Face and the thread pools, which users change between evaluations)
FOLLOWED = ("FIQ_GYM_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_", "MKL_", "OPENBLAS_")

_PR_SET_PDEATHSIG = 1
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE, each with its lock
_LOCKED_SECUREBITS = 0b1110_1111
_CAPABILITY_VERSION_3 = 0x20080522


def child_environment() -> dict[str, str]:
    """The environment a child starts with: the one pinned at import, with the current values
    of the :data:`FOLLOWED` variables (and without those removed since)."""
    env = {k: v for k, v in _PINNED_ENVIRONMENT.items() if not k.startswith(FOLLOWED)}
    env.update({k: v for k, v in os.environ.items() if k.startswith(FOLLOWED)})
    return env


def child_command(module: str, *args: str) -> list[str]:
    """``python -I -m module args...`` with the pinned interpreter."""
    return [PINNED_PYTHON, "-I", "-m", module, *args]


def spawn_child(module: str, region_fd: int | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``python -I -m module PARENT_PID REGION_FD`` (the pinned interpreter, ``env``),
    with pipes on stdin and stdout and the shared region's descriptor passed on."""
    fds = () if region_fd is None else (region_fd,)
    return subprocess.Popen(
        child_command(module, str(os.getpid()), str(region_fd if region_fd is not None else -1)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=fds,
        env=env,
    )


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, arg: int = 0) -> int:
    libc = _libc()
    if libc is None:
        return -1
    return int(
        libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    )


def start_child(argv: list[str], usage: str) -> tuple[int, int] | None:
    """The common start of a child (the env's or the agent's): ``argv`` is ``[program,
    PARENT_PID, REGION_FD?]``; returns (parent pid, region fd or -1), or None after printing
    ``usage``. It dies with the parent, ignores Ctrl-C (it reaches the whole process group; the
    parent handles it and closes the pipe)."""
    if len(argv) not in (2, 3):
        print(f"usage: {usage}", file=sys.stderr)
        return None
    parent = int(argv[1])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return parent, int(argv[2]) if len(argv) == 3 else -1


def protocol_stdout() -> IO[bytes]:
    """Keep stdout for the protocol: the binary stream to write it to; fd 1 and ``sys.stdout``
    then point at stderr, so whatever the child's code prints goes there."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def die_with_parent(parent: int) -> None:
    """Get SIGKILL when the parent dies (Linux; elsewhere the closed pipe ends the child).

    The kernel sends it when the *thread* that started this process ends, so the harness
    starts a new child if it finds its warm one gone."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def forbid_dumps() -> None:
    """Make this process not dumpable: no core file, and another process of the same user
    (without CAP_SYS_PTRACE) can neither read its memory nor attach to it."""
    _prctl(_PR_SET_DUMPABLE, 0)


def is_dumpable() -> bool | None:
    """Whether this process is dumpable (None where the platform does not say)."""
    result = _prctl(_PR_GET_DUMPABLE)
    return None if result < 0 else bool(result)


_holds = 0
_dumpable_before: bool | None = None
_holds_lock = threading.Lock()


def hold_no_dumps() -> None:
    """Make this process not dumpable until every hold is released (:func:`release_no_dumps`):
    the evaluator holds it while any agent's process is alive."""
    global _holds, _dumpable_before
    with _holds_lock:
        if _holds == 0:
            _dumpable_before = is_dumpable()
            if _dumpable_before:
                forbid_dumps()
        _holds += 1


def release_no_dumps() -> None:
    """Release one hold; the last one restores dumpability as it was before the first."""
    global _holds
    with _holds_lock:
        _holds = max(0, _holds - 1)
        if _holds == 0 and _dumpable_before:
            _prctl(_PR_SET_DUMPABLE, 1)


@contextlib.contextmanager
def no_dumps() -> Iterator[None]:
    """This process not dumpable for the duration (as it was, after)."""
    hold_no_dumps()
    try:
        yield
    finally:
        release_no_dumps()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_privileges() -> None:
    """Give up every capability for good (Linux): a process run as root then has only a
    user's rights over other processes (it cannot read the memory of one that is not
    dumpable), and nothing it executes regains them. Best effort: a step the kernel refuses is
    skipped (an unprivileged process has nothing to drop)."""
    libc = _libc()
    if libc is None:
        return
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _prctl(_PR_SET_SECUREBITS, _LOCKED_SECUREBITS)  # root regains nothing on execve
    for cap in range(64):
        if _prctl(_PR_CAPBSET_DROP, cap) < 0 and ctypes.get_errno() == 22:  # EINVAL: past the last
            break
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    with contextlib.suppress(AttributeError):
        libc.capset(ctypes.byref(header), data)
