"""Honest evaluation (issue 13): cheating agents, the sealed harness, target == shown.

Each cheating agent (from the sealed-evaluation benchmark) is first shown to work where it
can reach the environment, so the tests that it scores like the random agent under the
sealed harness would fail if sealing broke.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding

import fiq_gym  # noqa: F401
from fiq_gym.agents import RandomAgent
from fiq_gym.benchmarks.sealed_evaluation import (
    CopiesGenerators,
    DeepCopiesEnv,
    OpensUnwrapped,
    PicklesEnv,
    ReadsRankAndGallery,
)
from fiq_gym.envs import FashionIQEnv
from fiq_gym.envs.evaluation import (
    PUBLIC_INFO_KEYS,
    EvaluationSet,
    SealedEvaluator,
    close_warm_evaluator,
    evaluate,
)

ENV = "fiq_gym/FashionIQ-v3"
DIALOGS = 500  # as the issue asks: success at turn 1 <= 0.01 on 500 dialogs
ITEMS = 300  # the small catalog


def make_venv(catalog, num_envs=64, **kwargs):
    return gym.make_vec(
        ENV, num_envs=num_envs, vectorization_mode="vector_entry_point", catalog=catalog, **kwargs
    )


def success_at_turn_1(result) -> float:
    return result.per_turn()[1]["success_rate"]


@pytest.fixture(scope="module")
def venv(small_catalog_path):
    env = make_venv(small_catalog_path)
    yield env
    env.close()


def test_rank_and_gallery_cheat_works_on_a_raw_env_and_is_refused_by_the_harness(venv):
    obs, info = venv.reset(seed=0)
    cheat = ReadsRankAndGallery(venv)
    _, _, terminated, _, _ = venv.step(cheat.act(obs, info))
    assert terminated.mean() >= 0.9  # the leak is real
    for sealed in (True, False):
        with pytest.raises(KeyError, match=r"info\['rank'\] is withheld during evaluation"):
            evaluate(cheat, venv, 64, sealed=sealed)


@pytest.mark.parametrize("cheat", [OpensUnwrapped, PicklesEnv, DeepCopiesEnv])
def test_env_object_cheats_win_unsealed_and_score_like_random_sealed(small_catalog_path, cheat):
    debug = make_venv(small_catalog_path)
    unsealed = evaluate(cheat(debug), debug, 128, seed=5, sealed=False)
    assert success_at_turn_1(unsealed) == 1.0  # in the same process the target is reachable
    debug.close()
    # A fresh env object: one that ran this set unsealed still holds its last dialogs.
    venv = make_venv(small_catalog_path)
    sealed = evaluate(cheat(venv), venv, DIALOGS, seed=5)
    assert sealed.meta["sealed"] is True
    assert success_at_turn_1(sealed) <= 0.01


def test_generator_copy_cheat_predicts_targets_on_a_raw_env_but_not_sealed(small_catalog_path, venv):
    raw = make_venv(small_catalog_path, num_envs=8, expose_target=True)
    raw.reset(seed=3)
    predicted = CopiesGenerators(raw).act(None, None)
    _, info = raw.reset()  # unseeded: continues the generators the cheat copied
    np.testing.assert_array_equal(predicted, info["target"])
    raw.close()
    sealed = evaluate(CopiesGenerators(venv), venv, DIALOGS, seed=5)
    assert success_at_turn_1(sealed) <= 0.01
    unsealed = evaluate(CopiesGenerators(venv), venv, DIALOGS, seed=5, sealed=False)
    assert success_at_turn_1(unsealed) <= 0.01  # the set fixes the targets, not the generators


def test_random_agent_baseline_on_the_same_dialogs(venv):
    result = evaluate(RandomAgent.for_env(venv, seed=0), venv, DIALOGS, seed=5)
    assert success_at_turn_1(result) <= 0.01


# --- honest agents: sealed == unsealed -------------------------------------------------------------


class RecordsWhatItSees:
    """An honest agent (random over unseen items) that keeps every observation and info it
    was handed."""

    def __init__(self, venv):
        self.inner = RandomAgent.for_env(venv, seed=1)
        self.infos = []
        self.observations = []

    def reset(self, observation, info, mask):
        self.infos.append(dict(info))
        self.observations.append(observation)
        self.inner.reset(observation, info, mask)

    def act(self, observation, info):
        self.infos.append(dict(info))
        self.observations.append(observation)
        return self.inner.act(observation, info)


def test_sealed_and_unsealed_give_identical_results_and_the_same_public_info(venv):
    a, b = RecordsWhatItSees(venv), RecordsWhatItSees(venv)
    sealed = evaluate(a, venv, 150, seed=2)
    unsealed = evaluate(b, venv, 150, seed=2, sealed=False)
    np.testing.assert_array_equal(sealed.ranks, unsealed.ranks)
    np.testing.assert_array_equal(sealed.success_turn, unsealed.success_turn)
    assert sealed.per_turn() == unsealed.per_turn()
    assert len(a.infos) == len(b.infos)
    for x, y in zip(a.infos, b.infos, strict=True):
        # ``candidates`` exist in shortlist mode only, ``slate`` and ``slate_pick`` in slate mode.
        assert sorted(x) == sorted(y) == sorted(set(PUBLIC_INFO_KEYS) - {"candidates", "slate", "slate_pick"})
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    # The observations came through the shared region: equal, and each the agent's own copy.
    assert len(a.observations) == len(b.observations)
    for x, y in zip(a.observations, b.observations, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype
            np.testing.assert_array_equal(x[key], y[key])
    # (reset and the first act get the same observation; the first step's is the third)
    assert not np.shares_memory(a.observations[0]["caption"], a.observations[2]["caption"])


def test_a_retriever_in_scores_mode_gives_identical_results_sealed_and_unsealed(small_catalog_path):
    import torch

    from fiq_gym.agents.retriever import RetrieverAgent, RetrieverConfig, RetrieverNet

    venv = make_venv(small_catalog_path, num_envs=32, action_mode="scores", max_turns=3)
    inner = venv.unwrapped
    torch.manual_seed(0)
    net = RetrieverNet(RetrieverConfig.for_env(venv, embed_dim=32))
    eval_set = EvaluationSet.generate(inner.num_items, 80, seed=9)
    sealed = evaluate(RetrieverAgent(net, inner.gallery), venv, eval_set, seed=4)
    unsealed = evaluate(RetrieverAgent(net, inner.gallery), venv, eval_set, seed=4, sealed=False)
    np.testing.assert_array_equal(sealed.ranks, unsealed.ranks)
    assert sealed.ranks.shape == (80, 4)
    venv.close()


def test_fiq_gym_eval_is_isolated_by_default_and_every_mode_gives_the_same_numbers(
    small_agent_checkpoint, tmp_path, capsys
):
    import json

    from fiq_gym.cli import main

    runs = {
        "isolated": [],
        "sealed": ["--sealed"],
        "unsealed": ["--unsealed"],
        "none": ["--isolation", "none"],
    }
    for label, flags in runs.items():
        out = tmp_path / f"{label}.json"
        assert main(["eval", str(small_agent_checkpoint), "--episodes", "24", *flags, "--out", str(out)]) == 0
    results = {label: json.loads((tmp_path / f"{label}.json").read_text()) for label in runs}
    assert results["isolated"]["meta"]["isolation"] == "process"
    assert results["sealed"]["meta"]["sealed"] is True and "isolation" not in results["sealed"]["meta"]
    assert results["unsealed"]["meta"]["sealed"] is False and results["none"]["meta"]["sealed"] is False
    assert all(r["per_turn"] == results["isolated"]["per_turn"] for r in results.values())


def test_bench_refuses_to_publish_an_unsealed_run():
    from fiq_gym.benchmarks.dialog import main

    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--unsealed", "--publish"])


# --- the child process ---------------------------------------------------------------------------


def test_errors_in_the_sealed_process_reach_the_caller_as_themselves(small_catalog_path, venv):
    agent = RandomAgent(gym.spaces.Discrete(ITEMS))
    with pytest.raises(ValueError, match="unknown category 'nope'"):
        evaluate(agent, ENV, 4, catalog=small_catalog_path, category="nope")
    with pytest.raises(ValueError, match="cannot send the env's arguments"):
        evaluate(agent, ENV, 4, catalog=small_catalog_path, user_kwargs={"bad": lambda: 0})

    class ObjectActions:
        def reset(self, observation, info, mask):
            pass

        def act(self, observation, info):
            return np.array([object()] * 64)

    with pytest.raises(ValueError, match="actions must be a numeric array"):
        evaluate(ObjectActions(), venv, 4)


def test_a_vector_env_without_a_spec_cannot_be_sealed(small_catalog_path):
    from fiq_gym.envs import FashionIQVectorEnv

    env = FashionIQVectorEnv(num_envs=2, catalog=small_catalog_path)
    with pytest.raises(ValueError, match="rebuilds the env in another process from its spec"):
        evaluate(RandomAgent.for_env(env), env, 4)
    assert evaluate(RandomAgent.for_env(env), env, 4, sealed=False).ranks.shape == (4, 6)


def test_an_unguarded_script_evaluates_sealed_without_re_running_itself(small_catalog_path, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import gymnasium as gym
            import fiq_gym
            from fiq_gym.agents import RandomAgent
            from fiq_gym.envs.evaluation import evaluate

            print("script body ran", flush=True)
            venv = gym.make_vec("{ENV}", num_envs=8, vectorization_mode="vector_entry_point",
                                catalog={str(small_catalog_path)!r})
            result = evaluate(RandomAgent.for_env(venv, seed=0), venv, 16, sealed=True)
            print("sealed", result.meta["sealed"], result.ranks.shape)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sealed True (16, 6)" in done.stdout
    assert (done.stdout + done.stderr).count("script body ran") == 1


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_agent_error_ends_the_sealed_process(venv):
    class FailsOnTurn3:
        def reset(self, observation, info, mask):
            pass

        def act(self, observation, info):
            if info["dialog_turn"][0] == 2:
                raise ZeroDivisionError("the agent's own bug")
            return np.zeros(64, dtype=np.int64)

    before = set(_children(os.getpid()))
    with pytest.raises(ZeroDivisionError, match="the agent's own bug"):
        evaluate(FailsOnTurn3(), venv, 256)
    assert set(_children(os.getpid())) <= before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_sealed_process_dies_with_its_parent(small_catalog_path, tmp_path):
    ready = tmp_path / "ready"
    script = tmp_path / "hangs.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import pathlib, time
            import gymnasium as gym
            import fiq_gym
            from fiq_gym.envs.evaluation import evaluate

            class Hangs:
                def reset(self, observation, info, mask):
                    pathlib.Path({str(ready)!r}).write_text("x")
                    time.sleep(600)

                def act(self, observation, info):
                    raise AssertionError

            evaluate(Hangs(), "{ENV}", 8, num_envs=8, catalog={str(small_catalog_path)!r})
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        children = _children(parent.pid)
        assert len(children) == 1 and _alive(children[0])
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(children[0]):
            assert time.monotonic() < deadline, "the sealed process outlived its parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# --- target == shown at reset --------------------------------------------------------------------


def test_reset_refuses_target_equal_to_shown_in_every_mode(small_catalog_path, venv):
    env = FashionIQEnv(catalog=small_catalog_path, action_mode="scores")
    with pytest.raises(ValueError, match=r"target == shown \(item 7\)"):
        env.reset(seed=0, options={"target": 7, "shown": 7})
    shown = np.arange(64)
    targets = shown + 1
    targets[5] = 5
    with pytest.raises(ValueError, match=r"target == shown \(item 5\)"):
        venv.reset(seed=0, options={"target": targets, "shown": shown})
    with pytest.raises(ValueError, match="starts by showing its target"):
        EvaluationSet(np.array([1, 2]), np.array([3, 2]), ITEMS)


def test_a_drawn_target_never_equals_a_given_first_item(small_catalog_path):
    env = FashionIQEnv(catalog=small_catalog_path, expose_target=True)
    for seed in range(3):
        # The item the generator draws as the target is given as the first item.
        clash = int(seeding.np_random(seed)[0].integers(env.num_items))
        _, info = env.reset(seed=seed, options={"shown": clash})
        assert info["shown"] == clash and info["target"] != clash and not info["is_success"]
        # Without the clash, fixing the first item leaves the drawn target as it was.
        other = (clash + 1) % env.num_items
        _, info = env.reset(seed=seed, options={"shown": other})
        assert info["target"] == clash


def test_sealed_evaluation_benchmark_writes_its_report(small_catalog_path, tmp_path):
    from fiq_gym.benchmarks.sealed_evaluation import main

    args = [
        "--catalog",
        str(small_catalog_path),
        "--episodes",
        "64",
        "--cheat-episodes",
        "64",
        "--repeats",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    text = (tmp_path / "sealed_evaluation.md").read_text()
    assert "Git revision:" in text and "Machine:" in text and "Command: `python -m" in text
    assert "| retriever (scores) | 64 |" in text
    assert "| opens env.unwrapped | 1.000 |" in text  # unsealed it wins...
    assert "| reads info['rank'] + gallery | refused: info['rank'] is withheld" in text
    assert "it shows the target at turn 1 in 1.000\nof the dialogs" in text
    assert "| process |" in text and "## Isolated evaluation: cost" in text
    frames = next(
        line for line in text.splitlines() if line.startswith("| reads the caller's stack frames |")
    )
    cells = [c.strip() for c in frames.strip("|").split("|")]
    assert cells[1:3] == ["1.000", "1.000"] and float(cells[3]) <= 0.05  # wins in-process, not isolated
    assert (
        "| evaluates the same set inside act() | refused: an evaluation of this set is already open" in text
    )


def test_checking_the_default_catalog_does_not_import_torch(small_catalog_path):
    """The sealed harness's child opens the default catalog at every evaluation: without
    torch that takes well under a second instead of several."""
    from fiq_gym.features.default_network import SHIPPED_CONFIG
    from fiq_gym.features.model import CONFIG_FILE, DEFAULT_CHECKPOINT

    assert (DEFAULT_CHECKPOINT / CONFIG_FILE).resolve() == SHIPPED_CONFIG
    code = (
        "import sys; from fiq_gym.features.default_network import needs_default_features; "
        f"needs_default_features({str(small_catalog_path)!r}); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


# --- warm children: one child process for many evaluations ------------------------------------


def _same_result(a, b):
    np.testing.assert_array_equal(a.ranks, b.ranks)
    np.testing.assert_array_equal(a.success_turn, b.success_turn)
    assert a.meta == {**b.meta, "sealed": True}


def test_a_sealed_evaluator_keeps_its_child_and_env_and_plays_what_a_new_child_plays(small_catalog_path):
    kwargs = {"catalog": str(small_catalog_path), "max_turns": 4}
    with SealedEvaluator(ENV, num_envs=32, **kwargs) as ev:
        pid = ev.pid
        assert _alive(pid)
        first = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=1), 100, seed=2)
        second = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=3), 70, seed=4)
        assert ev.pid == pid and ev.envs_built == 1 and ev.evaluations == 2
        # Another spec: the same process builds the other env.
        scores = ev.evaluate(
            ScoresFromFeatures(), 40, seed=5, env=ENV, num_envs=16, action_mode="scores", **kwargs
        )
        assert ev.pid == pid and ev.envs_built == 2
        back = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=1), 100, seed=2)
        assert ev.pid == pid and ev.envs_built == 3
    assert not _alive(pid)
    for result, (agent_seed, episodes, seed) in [
        (first, (1, 100, 2)),
        (second, (3, 70, 4)),
        (back, (1, 100, 2)),
    ]:
        agent = RandomAgent(gym.spaces.Discrete(ITEMS), seed=agent_seed)
        cold = evaluate(agent, ENV, episodes, seed, num_envs=32, warm=False, **kwargs)
        unsealed = evaluate(
            RandomAgent(gym.spaces.Discrete(ITEMS), seed=agent_seed),
            ENV,
            episodes,
            seed,
            num_envs=32,
            sealed=False,
            **kwargs,
        )
        _same_result(result, cold)
        _same_result(result, unsealed)
    unsealed = evaluate(
        ScoresFromFeatures(), ENV, 40, 5, num_envs=16, sealed=False, action_mode="scores", **kwargs
    )
    _same_result(scores, unsealed)


class ScoresFromFeatures:
    """A deterministic ``scores`` agent that answers in float64: 64 dialogs x 300 items of it
    (150 kB) travel through the shared region, not the pipe."""

    def reset(self, observation, info, mask):
        pass

    def act(self, observation, info):
        features = observation["shown_features"].astype(np.float64)
        catalog = np.cos(np.arange(ITEMS * features.shape[1], dtype=np.float64)).reshape(ITEMS, -1)
        return np.tanh(features @ catalog.T)


def test_large_actions_give_identical_results_sealed_and_unsealed(small_catalog_path):
    kwargs = {"catalog": str(small_catalog_path), "action_mode": "scores", "max_turns": 3}
    sealed = evaluate(ScoresFromFeatures(), ENV, 128, seed=6, **kwargs)
    unsealed = evaluate(ScoresFromFeatures(), ENV, 128, seed=6, sealed=False, **kwargs)
    _same_result(sealed, unsealed)


def test_shortlist_observations_warm_and_cold_are_identical(featured_catalog_path):
    from fiq_gym.agents.shortlist import ShortlistGreedyAgent

    kwargs = {"catalog": str(featured_catalog_path), "action_mode": "shortlist", "max_turns": 3}
    with SealedEvaluator(ENV, num_envs=32, **kwargs) as ev:
        warm = [ev.evaluate(ShortlistGreedyAgent(), 64, seed=s) for s in (0, 1)]
        assert ev.envs_built == 1
    for s, result in enumerate(warm):
        _same_result(result, evaluate(ShortlistGreedyAgent(), ENV, 64, s, num_envs=32, warm=False, **kwargs))
        _same_result(
            result, evaluate(ShortlistGreedyAgent(), ENV, 64, s, num_envs=32, sealed=False, **kwargs)
        )


def test_evaluate_keeps_one_warm_child_and_replaces_it_when_the_environment_changes(
    small_catalog_path, monkeypatch
):
    from fiq_gym.envs.evaluation import harness as evaluation

    close_warm_evaluator()
    agent = RandomAgent(gym.spaces.Discrete(ITEMS), seed=0)
    kwargs = {"catalog": str(small_catalog_path), "num_envs": 16}
    evaluate(agent, ENV, 16, **kwargs)
    pid = evaluation._warm.pid
    evaluate(agent, ENV, 16, seed=1, **kwargs)
    assert evaluation._warm.pid == pid and evaluation._warm.envs_built == 1
    evaluate(agent, ENV, 16, max_turns=2, **kwargs)  # another spec: same child, another env
    assert evaluation._warm.pid == pid and evaluation._warm.envs_built == 2
    # A child inherits the environment when it starts: a changed one needs a new child.
    monkeypatch.setenv("FIQ_GYM_TEST_MARKER", "changed")
    evaluate(agent, ENV, 16, **kwargs)
    assert evaluation._warm.pid != pid and not _alive(pid)
    # warm=False leaves the warm child alone and leaves nothing behind.
    warm_pid = evaluation._warm.pid
    before = set(_children(os.getpid()))
    evaluate(agent, ENV, 16, warm=False, **kwargs)
    assert set(_children(os.getpid())) == before and evaluation._warm.pid == warm_pid
    close_warm_evaluator()
    assert not _alive(warm_pid)


def test_a_warm_child_that_died_is_replaced(small_catalog_path):
    """The kernel kills a child when the *thread* that started it ends (PR_SET_PDEATHSIG),
    and anything may kill it from outside: the next evaluation starts another."""
    import threading

    from fiq_gym.envs.evaluation import harness as evaluation

    close_warm_evaluator()
    kwargs = {"catalog": str(small_catalog_path), "num_envs": 16}

    def run():
        return evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=0), ENV, 32, **kwargs)

    results = []
    thread = threading.Thread(target=lambda: results.append(run()))
    thread.start()
    thread.join()
    started_in_thread = evaluation._warm.pid
    _same_result(run(), results[0])
    assert evaluation._warm.pid != started_in_thread and not _alive(started_in_thread)
    killed = evaluation._warm.pid
    os.kill(killed, signal.SIGKILL)
    _same_result(run(), results[0])
    assert evaluation._warm.pid != killed
    close_warm_evaluator()


def test_a_child_whose_starting_thread_ended_counts_as_gone_at_once():
    """The kernel's kill of such a child (PR_SET_PDEATHSIG) may land after join() returns; an
    evaluation handed the child in between would die in the middle (seen once in CI)."""
    import threading

    from fiq_gym.envs.evaluation.harness import _Child

    children = []
    thread = threading.Thread(target=lambda: children.append(_Child()))
    thread.start()
    thread.join()
    child = children[0]
    try:
        assert not child.alive()
    finally:
        child.close()
    here = _Child()
    try:
        assert here.alive()
    finally:
        here.close()


def test_an_agent_error_ends_the_evaluators_child_and_the_next_evaluation_starts_another(small_catalog_path):
    class Fails:
        def reset(self, observation, info, mask):
            pass

        def act(self, observation, info):
            raise ZeroDivisionError("the agent's own bug")

    with SealedEvaluator(ENV, num_envs=16, catalog=str(small_catalog_path)) as ev:
        pid = ev.pid
        with pytest.raises(ZeroDivisionError):
            ev.evaluate(Fails(), 32)
        assert not _alive(pid)
        result = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=0), 32)
        assert ev.pid != pid and result.ranks.shape == (32, 6)


def test_one_evaluation_at_a_time_per_evaluator(small_catalog_path):
    with SealedEvaluator(ENV, num_envs=16, catalog=str(small_catalog_path)) as ev:

        class EvaluatesInside:
            def reset(self, observation, info, mask):
                pass

            def act(self, observation, info):
                ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS)), 16, seed=1)  # another set

        with pytest.raises(RuntimeError, match="already running an evaluation"):
            ev.evaluate(EvaluatesInside(), 16)
    with pytest.raises(RuntimeError, match="SealedEvaluator is closed"):
        ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS)), 16)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_unguarded_script_leaves_no_warm_child_at_exit(small_catalog_path, tmp_path):
    script = tmp_path / "warm.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import gymnasium as gym
            import fiq_gym
            from fiq_gym.agents import RandomAgent
            from fiq_gym.envs.evaluation import harness as evaluation
            from fiq_gym.envs.evaluation import SealedEvaluator, evaluate

            print("script body ran", flush=True)
            agent = RandomAgent(gym.spaces.Discrete({ITEMS}), seed=0)
            a = evaluate(agent, "{ENV}", 16, num_envs=8, catalog={str(small_catalog_path)!r})
            b = evaluate(agent, "{ENV}", 16, num_envs=8, catalog={str(small_catalog_path)!r})
            session = SealedEvaluator("{ENV}", num_envs=8, catalog={str(small_catalog_path)!r})
            session.evaluate(agent, 16)
            print("children", evaluation._warm.pid, session.pid, flush=True)
            # neither is closed: interpreter exit ends them
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).count("script body ran") == 1
    pids = [int(p) for p in done.stdout.split("children")[1].split()]
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "a warm child outlived its interpreter"
        time.sleep(0.1)


def test_actions_cross_as_numbers_never_as_a_pickle():
    import pickle

    from fiq_gym.envs.evaluation._protocol import SharedRegion, decode_actions, encode_actions

    for actions in (
        np.arange(5),
        np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
        np.array([True, False]),
    ):
        np.testing.assert_array_equal(decode_actions(encode_actions(actions)), actions)
        assert decode_actions(encode_actions(actions)).dtype == actions.dtype
    with pytest.raises(ValueError, match="actions must be a numeric array"):
        encode_actions(np.array([object()]))
    with pytest.raises(ValueError, match="malformed actions message"):
        decode_actions(pickle.dumps(np.arange(3)))
    forged = encode_actions(np.arange(3)).replace(b"<i8", b"|O8", 1)
    with pytest.raises(ValueError, match="malformed actions message"):
        decode_actions(forged)
    region = SharedRegion.create()
    if region is not None:  # large actions go through the region and come back copied
        from fiq_gym.envs.evaluation._protocol import Layout

        space = gym.spaces.Box(0, 1, (4, 50_000), np.float32)
        region.use(Layout.for_spaces(gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (4, 2))}), space), grow=True)
        big = np.random.default_rng(0).random((4, 50_000))
        message = encode_actions(big, region)
        assert len(message) < 100  # the numbers are not in the message
        decoded = decode_actions(message, region)
        np.testing.assert_array_equal(decoded, big)
        region.actions_area(8)[:] = b"\xff" * 8  # writing the region afterwards changes nothing
        np.testing.assert_array_equal(decoded, big)
        region.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_copy_lets_go_of_the_warm_child_and_evaluates_with_its_own(small_catalog_path):
    kwargs = {"catalog": str(small_catalog_path), "num_envs": 16}
    with SealedEvaluator(ENV, **kwargs) as ev:
        expected = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=0), 32)
        pid = ev.pid
        fork = os.fork()
        if fork == 0:  # the copy: a child of its own, the same numbers
            code = 1
            try:
                own = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=0), 32)
                code = 0 if ev.pid != pid and np.array_equal(own.ranks, expected.ranks) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(fork, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        again = ev.evaluate(RandomAgent(gym.spaces.Discrete(ITEMS), seed=0), 32)
        assert ev.pid == pid
        _same_result(again, expected)
