"""The oracle-reward benchmark (``python -m fiq_gym.benchmarks.oracle_rewards``): its two
policies on a small catalog, and docs/rl.md's table against the published results file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fiq_gym.benchmarks.oracle_rewards import play_oracles
from fiq_gym.dialog_engine import REWARDS
from fiq_gym.metrics import rank_percentile

TURNS = 5


@pytest.mark.filterwarnings("ignore::fiq_gym.errors.FallbackWarning")
@pytest.mark.parametrize("kind", REWARDS)
def test_find_earns_the_most_a_dialog_can_pay_and_hover_less(kind, small_catalog_path):
    run = play_oracles(kind, 16, catalog=str(small_catalog_path), max_turns=TURNS)
    find, hover = run.returns["find"], run.returns["hover"]
    start = run.ranks["find"][:, 0]
    # The most a dialog pays: every turn at rank 0 (delta: the percentile gained from the start).
    best = 1.0 - rank_percentile(start, run.num_items) if kind == "delta" else np.full(16, float(TURNS))
    assert find == pytest.approx(best)
    assert (run.ranks["find"][:, 1:] == 0).all()
    # Hover never shows the target, and every dialog pays it less than finding it.
    assert (run.ranks["hover"][:, 1:] >= 1).all()
    assert (hover < find).all()
    # Both played the same dialogs.
    assert np.array_equal(run.ranks["hover"][:, 0], start)


@pytest.mark.filterwarnings("ignore::fiq_gym.errors.FallbackWarning")
def test_the_script_writes_the_table_and_its_record(small_catalog_path, tmp_path):
    from fiq_gym.benchmarks.oracle_rewards import main

    assert main(["--catalog", str(small_catalog_path), "--episodes", "4", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "oracle_rewards.json").read_text())
    assert list(record["returns"]) == list(REWARDS) and record["episodes"] == 4
    table = (tmp_path / "oracle_rewards.md").read_text()
    assert "| reward | find | hover | find - hover |" in table
    assert (
        "Command: `python -m fiq_gym.benchmarks.oracle_rewards --catalog" in table and "Revision: " in table
    )
