"""Runs the snippets of one documentation page in order, as a reader would (tests/test_docs.py).

``python docs_runner.py STEPS.json``: every step is a Python block (executed in this process's
``__main__`` namespace, which all the page's blocks share, as when pasted into one session), a
Python script (a block guarded by ``if __name__ == "__main__":``, written to a file and run by
its own interpreter) or a shell command (``bash -c``, in the working directory). Before each
step it prints ``@@ start LABEL`` and after it ``@@ done LABEL SECONDS`` to stderr, each on a line
of its own; the first failing step prints its error and ``@@ failed LABEL`` and ends the run
with status 1.

Tracebacks of a Python block name the documentation file and the line in it.
"""

# Every name here starts with an underscore: the snippets run in this module's namespace.
import json as _json
import os as _os
import signal as _signal
import subprocess as _subprocess
import sys as _sys
import time as _time
import traceback as _traceback


class _StepTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _StepTimeout()


def _run_child(command, step, env):
    """A child process in a session of its own, killed with its children after the step's time."""
    stdin = step.get("stdin")
    child = _subprocess.Popen(
        command,
        env=env,
        stdin=_subprocess.PIPE if stdin is not None else _subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    try:
        child.communicate(stdin, timeout=step["timeout"])
    except _subprocess.TimeoutExpired:
        _os.killpg(child.pid, _signal.SIGKILL)
        child.wait()
        raise _StepTimeout() from None
    return child.returncode


def _step(step, scope):
    _os.environ.update(step.get("env", {}))
    if step["kind"] == "python":
        code = compile("\n" * (step["line"] - 1) + step["code"], step["path"], "exec", dont_inherit=True)
        _signal.signal(_signal.SIGALRM, _alarm)
        _signal.alarm(step["timeout"])
        try:
            exec(code, scope)
        finally:
            _signal.alarm(0)
        return
    if step["kind"] == "script":
        with open(step["script"], "w", encoding="utf-8") as f:
            f.write(step["code"])
        command = [_sys.executable, step["script"]]
    else:
        command = ["bash", "-o", "pipefail", "-c", step["code"]]
    status = _run_child(command, step, dict(_os.environ))
    if status != 0:
        raise SystemExit(f"exit status {status}")


def _main() -> int:
    with open(_sys.argv[1], encoding="utf-8") as f:
        steps = _json.load(f)
    scope = vars(_sys.modules["__main__"])
    for step in steps:
        label = step["label"]
        print(f"\n@@ start {label}", file=_sys.stderr, flush=True)
        start = _time.monotonic()
        try:
            _step(step, scope)
        except _StepTimeout:
            print(f"\n@@ timeout after {step['timeout']} s", file=_sys.stderr)
            print(f"\n@@ failed {label}", file=_sys.stderr, flush=True)
            return 1
        except BaseException as error:  # the snippet's own error, SystemExit included
            if isinstance(error, SystemExit) and error.code in (0, None):
                pass
            else:
                _traceback.print_exc()
                print(f"\n@@ failed {label}", file=_sys.stderr, flush=True)
                return 1
        _sys.stdout.flush()
        print(f"\n@@ done {label} {_time.monotonic() - start:.1f}", file=_sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
