"""Evaluation against a deliberately cheating agent (issue 34).

One test per attack route (fiq_gym.benchmarks.adversaries): each first shows the route
working where the harness leaves it open (or with the defence switched off), so the check
that it scores like a random agent, or is refused, would fail if the defence broke.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

import fiq_gym  # noqa: F401
from fiq_gym.benchmarks import adversaries
from fiq_gym.envs.evaluation import HELD_OUT_VARIABLE, AgentSpec, HeldOutSeed, close_warm_evaluator, evaluate
from fiq_gym.envs.evaluation import harness as sealed_harness
from fiq_gym.errors import EvaluationError, EvaluationTimeout

ENV = "fiq_gym/FashionIQ-v3"
DIALOGS = 128
RANDOM_CEILING = 0.03  # success at turn 1 of a random agent on 300 items is about 1/299

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process isolation is Linux-first"
)


def make_venv(catalog, num_envs=64):
    return gym.make_vec(ENV, num_envs=num_envs, vectorization_mode="vector_entry_point", catalog=str(catalog))


def turn_1(result) -> float:
    return result.per_turn()[1]["success_rate"]


def in_process(adversary, catalog, isolation="sealed", **kwargs):
    """Success at turn 1 of ``adversary`` built and run in this process."""
    venv = make_venv(catalog)
    agent = adversary(venv, episodes=DIALOGS, **kwargs)
    try:
        return turn_1(evaluate(agent, venv, DIALOGS, seed=0, isolation=isolation))
    finally:
        getattr(agent, "restore", lambda: None)()
        venv.close()


HELD_OUT = HeldOutSeed(4242)


def isolated_result(adversary, catalog, seed=HELD_OUT, **kwargs):
    spec = AgentSpec(f"fiq_gym.benchmarks.adversaries:{adversary.__name__}", {"episodes": DIALOGS, **kwargs})
    return evaluate(spec, ENV, DIALOGS, seed, isolation="process", catalog=str(catalog))


def isolated(adversary, catalog, seed=HELD_OUT, **kwargs) -> float:
    """Success at turn 1 of ``adversary`` in a process of its own."""
    return turn_1(isolated_result(adversary, catalog, seed, **kwargs))


def test_an_honest_agent_scores_the_same_in_every_mode(small_catalog_path):
    spec = AgentSpec("fiq_gym.agents.random_agent:RandomAgent.for_env", {"seed": 3})
    alone = evaluate(spec, ENV, DIALOGS, 0, isolation="process", catalog=str(small_catalog_path))
    from fiq_gym.agents import RandomAgent

    venv = make_venv(small_catalog_path)
    try:
        # Exact: ranks are integers from the same code on one machine with the same thread
        # settings (the children inherit them), whichever process plays the env.
        for mode in ("sealed", "none"):
            other = evaluate(RandomAgent.for_env(venv, seed=3), venv, DIALOGS, 0, isolation=mode)
            assert (other.ranks == alone.ranks).all() and (other.success_turn == alone.success_turn).all()
    finally:
        venv.close()
    assert alone.meta["isolation"] == "process" and alone.meta["seed"] == 0 and alone.meta["set"] == "public"


def test_reading_the_callers_frames_wins_in_process_and_scores_like_random_isolated(small_catalog_path):
    assert in_process(adversaries.ReadsCallerFrames, small_catalog_path) == 1.0  # the route is real
    assert isolated(adversaries.ReadsCallerFrames, small_catalog_path) <= RANDOM_CEILING
    assert isolated(adversaries.ReadsCallerFrames, small_catalog_path, seed=0) <= RANDOM_CEILING


def test_patching_the_harness_forges_in_process_and_changes_nothing_isolated(small_catalog_path):
    assert in_process(adversaries.PatchesTheHarness, small_catalog_path) == 1.0  # forged, "sealed": True
    assert isolated(adversaries.PatchesTheHarness, small_catalog_path) <= RANDOM_CEILING


def test_changing_the_interpreter_or_environment_does_not_reach_the_environments_process(
    small_catalog_path, monkeypatch
):
    close_warm_evaluator()
    assert in_process(adversaries.ChangesInterpreter, small_catalog_path) <= RANDOM_CEILING
    assert isolated(adversaries.ChangesInterpreter, small_catalog_path) <= RANDOM_CEILING
    # Without the pinned interpreter, -I and the pinned environment, the same agent wins.
    from fiq_gym.envs.evaluation import _launch

    monkeypatch.setattr(_launch, "child_command", lambda module, *a: [sys.executable, "-m", module, *a])
    monkeypatch.setattr(sealed_harness, "child_environment", lambda: dict(os.environ))
    close_warm_evaluator()
    try:
        assert in_process(adversaries.ChangesInterpreter, small_catalog_path) == 1.0
    finally:
        close_warm_evaluator()


def test_a_nested_evaluation_of_the_same_set_is_refused(small_catalog_path, monkeypatch):
    for mode in ("sealed", "none"):
        with pytest.raises(EvaluationError, match="already open in this process"):
            in_process(adversaries.EvaluatesInside, small_catalog_path, isolation=mode)
    # Isolated, the agent can only evaluate in its own process: with a held-out seed it cannot
    # know the set; with a public seed it can regenerate it (public seed, public labels).
    assert isolated(adversaries.EvaluatesInside, small_catalog_path) <= RANDOM_CEILING
    assert isolated(adversaries.EvaluatesInside, small_catalog_path, seed=0) == 1.0
    # Without the refusal, the nested evaluation hands over the targets.
    monkeypatch.setattr(sealed_harness, "only_evaluation_of", lambda *a: contextlib.nullcontext())
    assert in_process(adversaries.EvaluatesInside, small_catalog_path, isolation="sealed") == 1.0


def test_a_thread_started_by_the_agent_cannot_evaluate_the_same_set_either(small_catalog_path):
    import threading

    from fiq_gym.agents import RandomAgent

    errors = []

    class StartsAThread(RandomAgent):
        def act(self, observation, info):
            venv = make_venv(small_catalog_path, 16)

            def nested():
                try:
                    evaluate(RandomAgent.for_env(venv), venv, 16, seed=0, sealed=False)
                except EvaluationError as e:
                    errors.append(e)

            thread = threading.Thread(target=nested)
            thread.start()
            thread.join()
            venv.close()
            return super().act(observation, info)

    venv = make_venv(small_catalog_path, 16)
    try:
        evaluate(StartsAThread.for_env(venv), venv, 16, seed=0, sealed=False)
    finally:
        venv.close()
    assert errors and "already open" in str(errors[0])


def _without_capabilities(code: str) -> str:
    """Run ``code`` in a Python process that gave up its capabilities (as an agent's does)."""
    script = (
        "from fiq_gym.envs.evaluation._launch import drop_privileges\ndrop_privileges()\n"
        + textwrap.dedent(code)
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_the_evaluators_memory_and_environment_are_out_of_the_isolated_agents_reach(
    small_catalog_path, tmp_path, monkeypatch
):
    monkeypatch.setenv(HELD_OUT_VARIABLE, "4242")
    report = tmp_path / "report.txt"
    result = isolated_result(
        adversaries.ReadsProcessMemory, small_catalog_path, HeldOutSeed.from_environment(), report=str(report)
    )
    lines = report.read_text().splitlines()
    assert lines[0].split(" ", 1)[1].startswith("refused"), lines  # the evaluator's /proc/PID/mem
    assert lines[-1].startswith("environ refused"), lines
    assert turn_1(result) <= RANDOM_CEILING
    # The control: a process without capabilities reads a dumpable one of its user.
    with _capless(["-c", "import time; time.sleep(60)"]) as sleeper:
        assert _without_capabilities(_reader(sleeper.pid)) == "read"


@contextlib.contextmanager
def _capless(args):
    """A Python process started without capabilities (as root, too: the kernel's rule that a
    reader needs every capability its target has is then out of the way, and only
    dumpability decides)."""
    launcher = (
        "import os, sys\nfrom fiq_gym.envs.evaluation._launch import drop_privileges\ndrop_privileges()\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    proc = subprocess.Popen([sys.executable, "-c", launcher, *args], stdin=subprocess.PIPE)
    try:
        import time

        time.sleep(1.5)  # started and, for the worker, past forbid_dumps()
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _reader(pid: int) -> str:
    return f"from fiq_gym.benchmarks.adversaries import _try_reading\nprint(_try_reading({pid}))"


def test_the_sealed_environments_process_is_not_dumpable(small_catalog_path):
    from fiq_gym.envs.evaluation import SealedEvaluator

    with SealedEvaluator(ENV, num_envs=16, catalog=str(small_catalog_path)) as ev:
        from fiq_gym.agents import RandomAgent

        ev.evaluate(RandomAgent(gym.spaces.Discrete(300), seed=0), 16)
        assert b"-I" in Path(f"/proc/{ev.pid}/cmdline").read_bytes().split(b"\0")
    # The worker itself, started without capabilities like its reader: refused for want of
    # dumpability alone (the control above reads a dumpable process of the same standing).
    with _capless(["-I", "-m", "fiq_gym.envs.evaluation._env_worker", str(os.getpid()), "-1"]) as worker:
        assert _without_capabilities(_reader(worker.pid)).startswith("refused")


def test_an_agent_that_hangs_is_stopped_and_named(small_catalog_path):
    with pytest.raises(EvaluationTimeout, match="agent's process did not answer within 3 s"):
        spec = AgentSpec("fiq_gym.benchmarks.adversaries:Hangs")
        evaluate(spec, ENV, 64, 0, isolation="process", catalog=str(small_catalog_path), turn_timeout=3)
    venv = make_venv(small_catalog_path)
    try:
        with pytest.raises(EvaluationTimeout, match="act\\(\\) did not return within 2 s at turn 1"):
            evaluate(adversaries.Hangs(venv), venv, 64, 0, turn_timeout=2)
    finally:
        venv.close()


def test_an_environment_process_that_stops_answering_is_stopped_and_named(small_catalog_path):
    before = set(adversaries._children(os.getpid()))
    venv = make_venv(small_catalog_path)
    try:
        with pytest.raises(EvaluationTimeout, match="the environment\\) did not answer within 3 s"):
            evaluate(adversaries.StopsTheEnvironment(venv), venv, 64, 0, env_timeout=3)
    finally:
        venv.close()
    started = set(adversaries._children(os.getpid())) - before
    assert not [p for p in started if _state(p) == "T"]  # the stopped child was ended, none left stopped


def _state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return ""


def test_held_out_results_name_the_set_by_fingerprint_only(small_catalog_path):
    spec = AgentSpec("fiq_gym.agents.random_agent:RandomAgent.for_env", {"seed": 1})
    a, b = (
        evaluate(spec, ENV, 64, HeldOutSeed(99), isolation="process", catalog=str(small_catalog_path))
        for _ in range(2)
    )
    assert a.meta["seed"] is None and a.meta["held_out"] == HeldOutSeed(99).fingerprint
    assert a.meta["set"] == "held-out"
    assert "99" not in repr(HeldOutSeed(99)) and (a.ranks == b.ranks).all()
    c = evaluate(spec, ENV, 64, HeldOutSeed(100), isolation="process", catalog=str(small_catalog_path))
    assert (c.ranks[:, 0] != a.ranks[:, 0]).any()
    with pytest.raises(EvaluationError, match="needs isolation='process'"):
        evaluate(spec, ENV, 64, HeldOutSeed(99), catalog=str(small_catalog_path))


def test_fiq_gym_eval_runs_a_submitted_agent_isolated_on_a_held_out_set(small_catalog_path, tmp_path, capsys):
    from fiq_gym.cli import main

    secret = tmp_path / "secret"
    secret.write_text("777\n")
    out = tmp_path / "r.json"
    args = [
        "eval",
        "--agent",
        "fiq_gym.benchmarks.adversaries:ReadsCallerFrames",
        "--catalog",
        str(small_catalog_path),
    ]
    assert main([*args, "--episodes", "64", "--held-out-seed-file", str(secret), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["held_out"] == HeldOutSeed(777).fingerprint and result["meta"]["seed"] is None
    assert result["per_turn"][1]["success_rate"] <= RANDOM_CEILING
    capsys.readouterr()
    assert main([*args, "--held-out-seed-file", str(secret), "--sealed"]) == 2
    assert "needs --isolation process" in capsys.readouterr().err
    secret.write_text("not a number")
    assert main([*args, "--held-out-seed-file", str(secret)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "must hold one non-negative integer" in err
    # A factory that fails is one line naming the agent's side.
    assert (
        main(
            [
                "eval",
                "--agent",
                "no_such_module:make",
                "--episodes",
                "8",
                "--catalog",
                str(small_catalog_path),
            ]
        )
        == 2
    )
    assert "the agent failed in its process during start" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_factory_in_a_script_file_works_and_the_script_is_not_rerun(small_catalog_path, tmp_path, capsys):
    script = tmp_path / "my_agent.py"
    script.write_text(
        textwrap.dedent(
            """
            from fiq_gym.agents import RandomAgent
            print("module body ran")

            def make_agent(venv):
                return RandomAgent.for_env(venv, seed=0)
            """
        )
    )
    result = evaluate(
        AgentSpec(f"{script}:make_agent"), ENV, 16, 0, isolation="process", catalog=str(small_catalog_path)
    )
    assert result.meta["isolation"] == "process" and result.ranks.shape == (16, 6)
    with pytest.raises(TypeError, match="pass an AgentSpec"):
        evaluate(object(), ENV, 16, 0, isolation="process")
    with pytest.raises(ValueError, match="package.module:function"):
        AgentSpec("no colon")


def test_the_documented_isolated_snippet_runs(small_catalog_path, tmp_path, monkeypatch):
    """docs/agents.md's isolated-evaluation snippet, with a small catalog and set."""
    text = (Path(__file__).parents[1] / "docs" / "agents.md").read_text()
    block = next(b for b in text.split("```python")[1:] if "AgentSpec(" in b).split("```")[0]
    block = block.replace('"fiq_gym/FashionIQ-v3", 1000,', '"fiq_gym/FashionIQ-v3", 16,')
    block = block.replace(
        'isolation="process")', f'isolation="process", catalog={str(small_catalog_path)!r})'
    )
    (tmp_path / "my_agent.py").write_text(
        "from fiq_gym.agents import RandomAgent\n\ndef make_agent(venv):\n    return RandomAgent.for_env(venv, seed=0)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(HELD_OUT_VARIABLE, "31337")
    scope: dict = {}
    exec(compile(block, "docs/agents.md", "exec"), scope)
    assert scope["result"].meta["held_out"] == HeldOutSeed(31337).fingerprint


def test_a_prestarted_agent_process_is_used_and_the_evaluator_is_not_dumpable_while_it_lives(
    small_catalog_path,
):
    from fiq_gym.envs.evaluation import isolation
    from fiq_gym.envs.evaluation._launch import is_dumpable

    before = is_dumpable()
    spec = AgentSpec("fiq_gym.agents.random_agent:RandomAgent.for_env", {"seed": 5})
    isolation.prestart(spec)
    remote = isolation._prestarted[isolation._key(spec)]
    assert is_dumpable() is False  # from the agent's start, before any secret is read
    pid = remote.proc.pid
    result = evaluate(spec, ENV, 16, HeldOutSeed(1), isolation="process", catalog=str(small_catalog_path))
    assert not isolation._prestarted and remote.proc.pid == pid and remote.proc.returncode is not None
    assert is_dumpable() == before and result.meta["set"] == "held-out"
