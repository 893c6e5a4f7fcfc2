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
from fiq_gym.envs.evaluation import evaluate
from fiq_gym.evaluation import PUBLIC_INFO_KEYS, EvaluationSet

ENV = "fiq_gym/FashionIQ-v1"
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
    """An honest agent (random over unseen items) that keeps every info it was handed."""

    def __init__(self, venv):
        self.inner = RandomAgent.for_env(venv, seed=1)
        self.infos = []

    def reset(self, observation, info, mask):
        self.infos.append(dict(info))
        self.inner.reset(observation, info, mask)

    def act(self, observation, info):
        self.infos.append(dict(info))
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
        # ``candidates`` exist in shortlist mode only.
        assert sorted(x) == sorted(y) == sorted(set(PUBLIC_INFO_KEYS) - {"candidates"})
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


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


def test_fiq_gym_eval_is_sealed_by_default_and_unsealed_gives_the_same_numbers(
    small_agent_checkpoint, tmp_path, capsys
):
    import json

    from fiq_gym.cli import main

    assert (
        main(["eval", str(small_agent_checkpoint), "--episodes", "24", "--out", str(tmp_path / "s.json")])
        == 0
    )
    args = [
        "eval",
        str(small_agent_checkpoint),
        "--episodes",
        "24",
        "--unsealed",
        "--out",
        str(tmp_path / "u.json"),
    ]
    assert main(args) == 0
    sealed, unsealed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "su")
    assert sealed["meta"]["sealed"] is True and unsealed["meta"]["sealed"] is False
    assert sealed["per_turn"] == unsealed["per_turn"]


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
