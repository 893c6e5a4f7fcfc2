"""The oracle-reward benchmark (``python -m fiq_gym.benchmarks.oracle_rewards``): its two
policies on a small catalog, and docs/rl.md's table against the published results file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fiq_gym.benchmarks.oracle_rewards import play_oracles
from fiq_gym.dialog_engine import REWARDS
from fiq_gym.metrics import rank_percentile

TURNS = 5
ROOT = Path(__file__).resolve().parents[1]


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
    # Both played the same dialogs. Exact: integer ranks of one env's resets with the same seeds,
    # in one process (the same products on the same BLAS threads), not a float recomputed apart.
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


def _table_lines(text: str, header: str) -> list[str]:
    """The lines of the one table of ``text`` that starts with ``header``, to its blank line."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line == header]
    assert len(starts) == 1, f"{len(starts)} tables start with {header!r}"
    table = []
    for line in lines[starts[0] :]:
        if not line.strip():
            break
        table.append(line)
    return table


def test_docs_rl_md_shows_the_published_oracle_returns():
    """docs/rl.md's oracle table and the figures its prose names are the published file's
    (benchmarks/results/oracle_rewards.json and .md, one run); after a republication, copy the
    table from the .md and check the prose's claims against it."""
    from fiq_gym.benchmarks.oracle_rewards import table

    record = json.loads((ROOT / "benchmarks/results/oracle_rewards.json").read_text(encoding="utf-8"))
    expected = table(record)
    published = (ROOT / "benchmarks/results/oracle_rewards.md").read_text(encoding="utf-8")
    page = (ROOT / "docs/rl.md").read_text(encoding="utf-8")
    assert _table_lines(published, expected[0]) == expected, (
        "oracle_rewards.md and .json are of different runs"
    )
    assert _table_lines(page, expected[0]) == expected, (
        "docs/rl.md's oracle table differs from benchmarks/results/oracle_rewards.md: copy it from there"
    )
    # The prose's figures: the dialogs, hover's mean rank and N - 1.
    hover = np.asarray(record["hover_ranks"])[:, 1:]
    for claim in (
        f"over {record['episodes']} dialogs of the default catalog",
        f"hover keeps the target at rank {hover.mean():.1f} on average",
        f"1 - r/{record['num_items'] - 1:,}",
        f"its last rank over {record['num_items'] - 1:,}",
    ):
        assert claim in " ".join(page.split()), f"docs/rl.md no longer says {claim!r}"
    # Every kind pays finding more, as the prose says.
    assert all(means["find"] > means["hover"] for means in record["returns"].values())
