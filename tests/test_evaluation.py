"""The evaluation harness: fixed sets, per-turn metrics, refusing training-only opt-ins."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import fiq_gym  # noqa: F401
from fiq_gym.agents import RandomAgent
from fiq_gym.envs import FashionIQEnv
from fiq_gym.envs.evaluation import EvaluationResult, EvaluationSet, RetrievalAgent, compare, evaluate

ENV = "fiq_gym/FashionIQ-v3"


class ShowsKnownTargets:
    """A test double that is handed the evaluation set's targets, in the harness's order."""

    def __init__(self, targets: np.ndarray, batch: int) -> None:
        self.targets, self.batch, self.start = targets, batch, -batch

    def reset(self, observation, info, mask):
        self.start += self.batch

    def act(self, observation, info):
        return np.resize(self.targets[self.start : self.start + self.batch], self.batch)


def test_random_agent_is_a_retrieval_agent(small_catalog_path):
    env = FashionIQEnv(catalog=small_catalog_path)
    assert isinstance(RandomAgent.for_env(env), RetrievalAgent)


def test_bookkeeping_with_an_agent_that_always_finds_the_target(small_catalog_path):
    eval_set = EvaluationSet.generate(300, episodes=20, seed=1)
    agent = ShowsKnownTargets(eval_set.targets, batch=8)
    result = evaluate(agent, ENV, eval_set, num_envs=8, catalog=small_catalog_path)
    rows = result.per_turn()
    assert len(rows) == 6 and rows[0]["success_rate"] == 0.0
    # turn 0 is the first item, before any caption: never the target, so nothing is found yet
    assert (result.ranks[:, 0] >= 1).all() and rows[0]["Hits@1"] == 0.0
    for row in rows[1:]:
        assert row["R@1"] == 1.0 and row["success_rate"] == 1.0 and row["mean_percentile"] == 1.0
        assert row["Hits@1"] == 1.0
    assert result.mean_turns_to_success == 1.0
    # best ranks b_0, 0, 0, 0, 0, 0: one trapezoid of ln(1 + b_0) / 2 over 5 turns
    assert result.bri == pytest.approx(np.mean(np.log1p(result.ranks[:, 0])) / 10)


def test_random_agent_evaluation_is_deterministic_and_near_chance(small_catalog_path):
    def run():
        venv = gym.make_vec(
            ENV, num_envs=16, vectorization_mode="vector_entry_point", catalog=small_catalog_path
        )
        return evaluate(RandomAgent.for_env(venv, seed=0), venv, episodes=64, seed=3)

    a, b = run(), run()
    np.testing.assert_array_equal(a.ranks, b.ranks)
    final = a.per_turn()[-1]
    assert 0.2 < final["mean_percentile"] < 0.8
    assert final["success_rate"] < 0.2


def test_evaluation_refuses_target_exposure(small_catalog_path):
    agent = RandomAgent(gym.spaces.Discrete(300))
    with pytest.raises(ValueError, match="refuses expose_target"):
        evaluate(agent, ENV, 4, catalog=small_catalog_path, expose_target=True)
    venv = gym.make_vec(
        ENV,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        catalog=small_catalog_path,
        expose_target=True,
    )
    with pytest.raises(ValueError, match="refuses an environment with expose_target"):
        evaluate(agent, venv, 4)


def test_outputs_round_trip(small_catalog_path, tmp_path):
    venv = gym.make_vec(ENV, num_envs=4, vectorization_mode="vector_entry_point", catalog=small_catalog_path)
    result = evaluate(RandomAgent.for_env(venv, seed=0), venv, episodes=8, seed=0, name="random")
    data = json.loads(result.save_json(tmp_path / "r.json").read_text())
    assert data["per_turn"] == result.per_turn()
    with open(result.save_csv(tmp_path / "r.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["R@10"]) for r in rows] == [row["R@10"] for row in result.per_turn()]
    assert "| turn | R@1 | R@5 | R@10 | R@50 |" in str(result)


def test_evaluation_set_save_load_and_errors(tmp_path, small_catalog_path):
    s = EvaluationSet.generate(100, 50, seed=2)
    assert (s.targets != s.shown).all()
    loaded = EvaluationSet.load(s.save(tmp_path / "set.json"))
    np.testing.assert_array_equal(loaded.targets, s.targets)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        EvaluationSet.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EvaluationSet.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="made for 100 items"):
        evaluate(RandomAgent(gym.spaces.Discrete(300)), ENV, s, catalog=small_catalog_path)


def test_evaluation_refuses_lookahead(small_catalog_path):
    agent = RandomAgent(gym.spaces.Discrete(300))
    with pytest.raises(ValueError, match="refuses lookahead=True"):
        evaluate(agent, ENV, 4, catalog=small_catalog_path, lookahead=True)


def test_evaluate_keeps_the_given_name(small_catalog_path):
    env = FashionIQEnv(catalog=small_catalog_path)
    agent = RandomAgent.for_env(env, seed=0)
    result = evaluate(agent, ENV, episodes=4, num_envs=4, name="mine", catalog=small_catalog_path)
    assert result.agent == "mine"
    assert evaluate(agent, ENV, episodes=4, num_envs=4, catalog=small_catalog_path).agent == "RandomAgent"


def worked_example() -> EvaluationResult:
    """docs/benchmarks.md's worked example: 3 dialogs, turns 0..3, N = 100 items."""
    ranks = np.array([[40, 8, 12, 0], [3, 3, 0, 0], [99, 60, 70, 20]])
    return EvaluationResult("example", ranks, np.array([3, 2, -1]), 100)


OLD_KEYS = ["turn", "R@1", "R@5", "R@10", "R@50", "mean_percentile", "success_rate"]
NEW_KEYS = ["Hits@1", "Hits@5", "Hits@10", "Hits@50", "BRI"]


def test_per_turn_rows_add_cumulative_hits_and_bri_after_the_old_keys():
    result = worked_example()
    rows = result.per_turn()
    assert [list(row) for row in rows] == [OLD_KEYS + NEW_KEYS] * 4
    third = 1 / 3
    assert [row["R@10"] for row in rows] == pytest.approx([third, 2 * third, third, 2 * third])
    assert [row["Hits@10"] for row in rows] == pytest.approx([third, 2 * third, 2 * third, 2 * third])
    assert [row["Hits@50"] for row in rows] == pytest.approx([2 * third, 2 * third, 2 * third, 1])
    assert [round(row["BRI"], 3) for row in rows] == [3.235, 2.900, 2.617, 2.264]
    assert [round(row["mean_percentile"], 3) for row in rows] == [0.522, 0.761, 0.724, 0.933]
    assert rows[-1]["BRI"] == result.bri and round(result.bri, 3) == 2.264


def test_every_output_shows_hits_and_bri(tmp_path):
    result = worked_example()
    text = result.to_markdown()
    assert (
        "| turn | R@1 | R@5 | R@10 | R@50 | Hits@1 | Hits@5 | Hits@10 | Hits@50 | mean percentile | success rate | BRI |"
        in text
    )
    assert (
        "| 2 | 0.333 | 0.333 | 0.333 | 0.667 | 0.333 | 0.333 | 0.667 | 0.667 | 0.724 | 0.333 | 2.617 |"
        in text
    )
    assert "BRI: 2.264" in text and "docs/benchmarks.md#metrics" in text
    data = json.loads(result.save_json(tmp_path / "r.json").read_text())
    assert {"agent", "num_items", "episodes", "per_turn", "mean_turns_to_success", "meta"} <= set(data)
    assert data["bri"] == result.bri and data["per_turn"] == result.per_turn()
    with open(result.save_csv(tmp_path / "r.csv")) as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["agent", *OLD_KEYS, *NEW_KEYS]  # old columns keep their places
        rows = list(reader)
    assert [float(r["Hits@10"]) for r in rows] == [row["Hits@10"] for row in result.per_turn()]
    assert [float(r["BRI"]) for r in rows] == [row["BRI"] for row in result.per_turn()]
    table = compare([result])
    assert table.splitlines()[0].endswith("| Hits@10 | Hits@50 | mean percentile | success rate | BRI |")
    assert table.splitlines()[2].endswith("| 0.667 | 1.000 | 0.933 | 0.667 | 2.264 |")
    assert compare([result], turn=1).splitlines()[2].endswith("| 0.761 | 0.000 | 2.900 |")
    scalars = result.scalars()
    assert scalars["eval/Hits@10"] == pytest.approx(2 / 3) and scalars["eval/BRI"] == result.bri
    assert scalars["eval/R@10"] == pytest.approx(2 / 3)  # the old keys stay


def test_the_docs_show_the_worked_example_as_computed():
    """docs/benchmarks.md's example table is what per_turn() gives, to three decimals."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    rows = worked_example().per_turn()
    titles = {
        "mean_percentile": "mean percentile",
        "success_rate": "success rate",
        "BRI": "BRI of turns 0..t",
    }
    for key in [*OLD_KEYS[1:], *NEW_KEYS]:
        line = f"| {titles.get(key, key)} | " + " | ".join(f"{row[key]:.3f}" for row in rows) + " |"
        assert line in docs, f"docs/benchmarks.md lacks {line!r}"
    assert "BRI = (2.084 + 0.693 + 4.016) / 3 = **2.264**" in docs


def test_the_evaluation_package_gives_every_public_name_and_import_fiq_gym_loads_none():
    """``fiq_gym.envs.evaluation`` re-exports the names of its modules on first access:
    ``import fiq_gym`` (which imports the package's ``_launch``) imports no other module of it."""
    code = (
        "import sys, fiq_gym; print(sorted(m for m in sys.modules if m.startswith('fiq_gym.envs.evaluation.')))\n"
        "import fiq_gym.envs.evaluation as e; print(all(getattr(e, n) is not None for n in e.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["['fiq_gym.envs.evaluation._launch']", "True"], done.stdout
