"""Benchmark scripts run end to end on tiny settings and write their result files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dialog_report import parse_markdown_tables


def test_throughput_benchmark_writes_table_and_plot(tmp_path, small_catalog_path):
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fiq_gym.benchmarks.throughput",
            "--sizes",
            "300",
            "--batches",
            "1",
            "4",
            "--min-seconds",
            "0.05",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    table = (out / "throughput.md").read_text()
    assert "| 300 | 4 |" in table and "Machine:" in table and "Revision: " in table
    assert (out / "throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_the_template_rows_of_a_batch_are_timed_in_turns(monkeypatch):
    """SyncVectorEnv, native env and bare ranking of one (catalog, n) share rounds, so a load
    change between them cannot move (b) = native / ranking by itself."""
    from fiq_gym.benchmarks import throughput

    turns: list[str] = []

    def settings(name):
        return lambda: turns.append(name)

    monkeypatch.setattr(throughput, "_sync", lambda c, b, r: (settings("sync"), lambda: None))
    monkeypatch.setattr(throughput, "_native", lambda c, b, r: (settings("native"), lambda: None))
    monkeypatch.setattr(throughput, "_ranking", lambda c, b, r: settings("ranking"))
    rates = throughput._template_batch(None, 4, None, min_seconds=0.0, rounds=3)
    assert set(rates) == {"sync", "native", "ranking"} and all(rate > 0 for rate in rates.values())
    # One warm-up call each, then three rounds in which every setting takes its turn.
    assert turns == ["sync", "native", "ranking"] * 4


def test_demo_prints_every_turn(small_catalog_path):
    done = subprocess.run(
        [sys.executable, "-m", "fiq_gym", "demo", "--catalog", str(small_catalog_path), "--turns", "3"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "turn 0:" in done.stdout and "shopper:" in done.stdout and "target rank" in done.stdout


def test_dialog_benchmark_tiny_preset_end_to_end(tmp_path, small_catalog_path):
    import json

    out = tmp_path / "bench"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fiq_gym.benchmarks.dialog",
            "--preset",
            "tiny",
            "--catalog",
            str(small_catalog_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = out / "tiny"
    for name in ("dialog.md", "dialog.csv", "dialog.json", "recall_at_10_by_turn.png"):
        assert (run / name).exists(), name
    assert list((run / "runs").rglob("events.out.tfevents.*")), "every training run logs to TensorBoard"
    data = json.loads((run / "dialog.json").read_text())
    assert data["sealed"] is True  # the benchmark evaluates with the sealed harness by default
    assert "Evaluation: sealed harness" in (run / "dialog.md").read_text()
    table = parse_markdown_tables((run / "dialog.md").read_text())
    agents = {row["agent"] for row in data["aggregate"]}
    assert agents == {
        "random",
        "supervised",
        "control-pg",
        "policy-gradient",
        "control-pi",
        "policy-improvement",
        "ppo",
        "shortlist-random",
        "shortlist-greedy",
        "ppo-shortlist",
        "dqn-shortlist",
    }
    # The reference agents read gallery features through a readout fitted on the shipped
    # features: on this catalog (thumbnails) they are skipped, and the report says why.
    assert set(data["skipped"]) == {"posterior-map", "posterior-lookahead"}
    assert "fitted for 45 features" in data["skipped"]["posterior-map"]
    assert (
        "Not run: `posterior-map`, `posterior-lookahead`: this posterior readout"
        in (run / "dialog.md").read_text()
    )
    # On a catalog the shipped first stage does not fit, the shortlist agents' first stage is
    # the stage's own supervised retriever.
    runs_dir = run / "runs" / "template" / "seed0"
    ppo_shortlist = json.loads((runs_dir / "ppo_shortlist" / "checkpoint" / "config.json").read_text())[
        "args"
    ]
    assert ppo_shortlist["shortlist"] == f"retriever:{runs_dir / 'supervised' / 'checkpoint'}"
    assert ("ppo-shortlist", "shortlist-greedy") in {(c["agent"], c["against"]) for c in data["comparisons"]}
    # Each equal-budget control trains from the same checkpoint, on the same dialogs, for as
    # many rounds as the agent it controls.
    runs = run / "runs" / "template" / "seed0"
    for agent, control in (("policy_gradient", "control_pg"), ("policy_improvement", "control_pi")):
        a = json.loads((runs / agent / "checkpoint" / "config.json").read_text())["args"]
        c = json.loads((runs / control / "checkpoint" / "config.json").read_text())["args"]
        for key in ("init", "seed", "num_envs", "rounds", "user", "catalog", "max_turns", "env_id"):
            assert a[key] == c[key], (agent, key)
    compared = {(c["agent"], c["against"]) for c in data["comparisons"]}
    assert {("policy-gradient", "control-pg"), ("policy-improvement", "control-pi")} <= compared
    assert all(len(r["ranks"]) == 16 and len(r["success_turn"]) == 16 for r in data["runs"])
    report = (run / "dialog.md").read_text()
    assert "Paired differences at turn" in report and "A smoke test, not a comparison" in report
    assert "## Training budgets" in report
    for row in data["aggregate"]:
        if row["turn"] == 0:
            continue
        parsed = table[(row["agent"], row["train_user"], row["eval_user"], row["turn"])]
        assert "Hits@10" in parsed and "BRI" in parsed
        for metric, value in parsed.items():
            assert abs(value - row[metric]) <= 5e-4 + 1e-9, (row["agent"], metric)  # 3 decimals
    # A second run finds every trained agent in the cache and trains nothing.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "fiq_gym.benchmarks.dialog",
            "--preset",
            "tiny",
            "--catalog",
            str(small_catalog_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert again.returncode == 0
    assert "supervised:" not in again.stderr  # no training progress bar the second time


@pytest.mark.slow
def test_the_reference_agents_give_each_table_its_ceiling(tmp_path):
    """On the default catalog the posterior agents play through the sealed harness with both
    shoppers (the learned one read by the template's rules); the report leads with success by
    turn, the better reference row is the ceiling, and every other agent gets the share of
    headroom it closes over the greedy first stage; the planning comparison is made."""
    import json

    from fiq_gym.benchmarks.dialog import PRESETS, run_benchmark, write_outputs

    result = run_benchmark(
        PRESETS["tiny"],
        tmp_path / "run",
        agents=("random", "shortlist-greedy", "posterior-map", "posterior-lookahead"),
        eval_users=("template", "transformer"),
        progress=False,
    )
    assert not result.skipped
    write_outputs(result, tmp_path / "out")
    report = (tmp_path / "out" / "dialog.md").read_text()
    for eval_user in ("template", "transformer"):
        heading = (
            f"## Success by turn: trained with the template shopper, evaluated with the {eval_user} shopper"
        )
        assert heading in report
        table = report.split(heading)[1].split("\n\n")[1].splitlines()
        assert table[0].startswith("| agent | success@3 | success@5 | success, mean over turns 1-5")
        assert "(ceiling)" in table[2] and table[2].startswith("| **posterior-")
        greedy = next(line for line in table if line.startswith("| shortlist-greedy |"))
        assert greedy.endswith("| +0.00 |")
        ceiling = float(table[2].split("|")[3])
        assert ceiling > 0.5  # the reader finds most of 16 targets by turn 5 (0.98 on 1,000)
    assert report.index("## Success by turn") < report.index("## Trained with the template shopper")
    data = json.loads((tmp_path / "out" / "dialog.json").read_text())
    assert ("posterior-lookahead", "posterior-map") in {
        (c["agent"], c["against"]) for c in data["comparisons"]
    }


def test_dialog_report_adds_cumulative_hits_and_bri_computable_from_the_json(tmp_path, small_catalog_path):
    """The renderer on a small run's records (random agent, two seeds): the tables, CSV and JSON
    gain Hits@10 and BRI as mean ± std over seeds, after the columns that were there, and
    both follow from the per-dialog ranks the JSON keeps."""
    import csv
    import json

    from fiq_gym.benchmarks.dialog import PRESETS, run_benchmark, write_outputs
    from fiq_gym.metrics import best_log_rank_integral, cumulative_hits_at_k

    result = run_benchmark(
        PRESETS["tiny"],
        tmp_path / "run",
        catalog=str(small_catalog_path),
        agents=("random",),
        seeds=(0, 1),
        progress=False,
        sealed=False,  # the renderer is under test, not the harness (the end-to-end test seals)
    )
    out = tmp_path / "out"
    write_outputs(result, out)
    report = (out / "dialog.md").read_text()
    assert (
        "| agent | turn | R@1 | R@5 | R@10 | R@50 | mean_percentile | success_rate | Hits@10 | BRI |"
        in report
    )
    assert "docs/benchmarks.md#metrics" in report
    last = max(r.result.turns for r in result.records)
    last_row = next(line for line in report.splitlines() if line.startswith(f"| random | {last} |"))
    assert last_row.count(" ± ") == 8  # every column, the new ones too, as mean ± std
    data = json.loads((out / "dialog.json").read_text())
    with open(out / "dialog.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    old = ["R@1", "R@5", "R@10", "R@50", "mean_percentile", "success_rate"]
    assert reader.fieldnames == [
        *("agent", "train_user", "eval_user", "turn", "seeds"),
        *(name for m in [*old, "Hits@10", "BRI"] for name in (m, f"{m}_std")),
    ]
    assert len(rows) == len(data["aggregate"]) == last + 1
    # recomputed from the JSON's per-dialog ranks: each run, and the mean and std over seeds
    hits, bri = [], []
    for run in data["runs"]:
        ranks = np.array(run["ranks"])
        hits.append(cumulative_hits_at_k(ranks, 10))
        bri.append([best_log_rank_integral(ranks[:, : t + 1]) for t in range(last + 1)])
        assert run["bri"] == pytest.approx(bri[-1][-1])
        assert [row["Hits@10"] for row in run["per_turn"]] == pytest.approx(hits[-1].tolist())
    hits, bri = np.array(hits), np.array(bri)
    assert bri[:, -1].std() > 0, "two seeds of a random agent differ"
    table = parse_markdown_tables(report)
    for row, csv_row in zip(data["aggregate"], rows, strict=True):
        t = row["turn"]
        assert row["Hits@10"] == pytest.approx(hits[:, t].mean()) and row["Hits@10_std"] == pytest.approx(
            hits[:, t].std()
        )
        assert row["BRI"] == pytest.approx(bri[:, t].mean()) and row["BRI_std"] == pytest.approx(
            bri[:, t].std()
        )
        assert float(csv_row["BRI"]) == row["BRI"] and float(csv_row["Hits@10_std"]) == row["Hits@10_std"]
        if t > 0:
            parsed = table[("random", "template", "template", t)]
            for metric in ("Hits@10", "BRI"):
                assert abs(parsed[metric] - row[metric]) <= 5e-4 + 1e-9  # 3 decimals
    # the existing columns are the harness's numbers, as before
    per_seed = [r.result.per_turn() for r in result.records]
    for row in data["aggregate"]:
        for m in old:
            assert row[m] == pytest.approx(np.mean([p[row["turn"]][m] for p in per_seed]))


def test_machine_line_names_the_cpu_kernels_and_pinned_kernel_variables(monkeypatch):
    """Trained cells only reproduce under the same CPU kernels, so reports must say which."""
    import torch

    from fiq_gym.benchmarks.publishing import machine_line

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    line = machine_line()
    assert f"torch CPU kernels {torch.backends.cpu.get_cpu_capability()}" in line
    assert "(MKL_CBWR=AVX2)" in line


def test_paired_comparisons_of_a_benchmark_follow_the_outcomes():
    import numpy as np

    from fiq_gym.benchmarks.dialog import PRESETS, BenchmarkResult, Record
    from fiq_gym.envs.evaluation import EvaluationResult

    rng = np.random.default_rng(0)
    result = BenchmarkResult(PRESETS["tiny"])
    ranks = rng.integers(0, 50, size=(300, 6))
    success = np.where(rng.random(300) < 0.5, rng.integers(1, 6, 300), -1)
    for seed in (0, 1):
        for agent in ("policy-gradient", "control-pg"):
            result.records.append(
                Record(agent, "template", "template", seed, EvaluationResult(agent, ranks, success, 100))
            )
        # supervised never succeeds: policy gradient's advantage must be detected
        never = np.full(300, -1)
        result.records.append(
            Record("supervised", "template", "template", seed, EvaluationResult("s", ranks + 20, never, 100))
        )
    rows = {(r["agent"], r["against"]): r for r in result.comparisons("template", "template")}
    same = rows[("policy-gradient", "control-pg")]
    assert same["success"].mean == 0 and not same["success"].excludes_zero  # identical outcomes
    better = rows[("policy-gradient", "supervised")]
    assert better["success"].low > 0.3 and better["success"].excludes_zero and better["R@10"].mean > 0
    assert ("policy-improvement", "control-pi") not in rows  # agents that did not run are left out


def test_results_go_to_the_checkout_or_the_working_directory_never_site_packages(tmp_path, monkeypatch):
    from fiq_gym.benchmarks import publishing

    source = Path(publishing.__file__).resolve().parents[1]
    if (source / ".git").exists():  # run from a clone (not from an unpacked sdist)
        assert publishing.checkout_results_dir() == source / "benchmarks" / "results"
    assert publishing.published_results_dir() == publishing.default_results_dir()
    installed = tmp_path / "site-packages" / "fiq_gym" / "benchmarks"
    installed.mkdir(parents=True)
    monkeypatch.setattr(publishing, "_PACKAGE", installed)
    monkeypatch.chdir(tmp_path)
    assert publishing.default_results_dir() == tmp_path / "fiq-gym-results"
    assert publishing.published_results_dir() == tmp_path / "fiq-gym-results"
    assert publishing.published_results_dir(tmp_path / "mine") == tmp_path / "mine"
    assert publishing.git_revision().startswith("none (installed fiq-gym ")


def test_publish_takes_an_optional_directory(tmp_path, monkeypatch):
    import argparse

    from fiq_gym.benchmarks.publishing import add_publish_argument, default_results_dir, published_results_dir

    parser = argparse.ArgumentParser()
    add_publish_argument(parser, "the report")
    assert parser.parse_args([]).publish is None
    assert published_results_dir(parser.parse_args(["--publish"]).publish) == default_results_dir()
    monkeypatch.chdir(tmp_path)
    assert published_results_dir(parser.parse_args(["--publish", "tables"]).publish) == Path("tables")


@pytest.mark.parametrize("module", ["dialog", "single_shot"])
def test_publish_to_a_folder_that_cannot_be_made_fails_before_the_run(module, tmp_path, capsys):
    import importlib

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"fiq_gym.benchmarks.{module}").main(["--publish", str(blocker / "tables")])
    assert stopped.value.code == 2
    assert f"cannot create {blocker / 'tables'}" in capsys.readouterr().err


def test_benchmark_stages_in_parallel_processes_give_the_serial_numbers(tmp_path, small_catalog_path):
    """--jobs 2 runs the (shopper, seed) stages in two processes: same records, same order."""
    from fiq_gym.benchmarks.dialog import PRESETS, run_benchmark

    kwargs = dict(
        catalog=str(small_catalog_path),
        agents=("random", "supervised", "shortlist-greedy"),
        seeds=(0, 1),
        progress=False,
    )
    serial = run_benchmark(PRESETS["tiny"], tmp_path / "serial" / "tiny", **kwargs)
    parallel = run_benchmark(PRESETS["tiny"], tmp_path / "parallel" / "tiny", jobs=2, **kwargs)
    assert [(r.agent, r.seed) for r in parallel.records] == [(r.agent, r.seed) for r in serial.records]
    for a, b in zip(serial.records, parallel.records, strict=True):
        np.testing.assert_array_equal(a.result.ranks, b.result.ranks)
        np.testing.assert_array_equal(a.result.success_turn, b.result.success_turn)
    assert (tmp_path / "parallel" / "tiny" / "logs" / "template-seed1.log").exists()
    assert set(parallel.budgets) == set(serial.budgets)


def test_dialog_benchmark_plays_a_named_configuration(tmp_path, small_catalog_path):
    """`--config terse`: every agent trains and is evaluated on the configuration's id, and the
    report says which configuration it is, in its own directory."""
    import json

    from fiq_gym.benchmarks.dialog import main

    out = tmp_path / "bench"
    args = ["--preset", "tiny", "--config", "terse", "--catalog", str(small_catalog_path)]
    args += ["--agents", "random", "supervised", "--out", str(out)]
    assert main(args) == 0
    run = out / "tiny-terse"
    assert "Configuration: `terse` (`fiq_gym/FashionIQTerse-v3`)" in (run / "dialog.md").read_text()
    data = json.loads((run / "dialog.json").read_text())
    assert data["configuration"] == "terse" and data["env_id"] == "fiq_gym/FashionIQTerse-v3"
    config = json.loads(
        next((run / "runs").rglob("supervised/checkpoint/config.json")).read_text(encoding="utf-8")
    )
    assert config["args"]["env_id"] == "fiq_gym/FashionIQTerse-v3"
    assert not (out / "tiny").exists()
    # The leaderboard gathers the configuration's runs and recomputes its metrics from the ranks.
    from fiq_gym.benchmarks import leaderboard
    from fiq_gym.metrics import best_log_rank_integral

    assert (
        leaderboard.main(["--results", str(out), "--preset", "tiny", "--out", str(tmp_path / "lb.md")]) == 0
    )
    text = (tmp_path / "lb.md").read_text()
    assert "## `terse` (`fiq_gym/FashionIQTerse-v3`)" in text and "| supervised |" in text
    random_run = next(r for r in data["runs"] if r["agent"] == "random")
    bri = best_log_rank_integral(np.asarray(random_run["ranks"]))
    row = next(line for line in text.splitlines() if line.startswith("| random |"))
    assert f"{bri:.3f} ± 0.000" in row  # one seed: std 0
    assert "best BRI: `random`" in text  # the only agent besides supervised
    with pytest.raises(SystemExit):
        leaderboard.main(["--results", str(tmp_path / "nothing-here")])


def test_the_revision_ignores_result_files_but_not_code(tmp_path):
    """A run's report beside it does not make the tree dirty; any other new file does."""
    from fiq_gym.benchmarks import publishing

    root = Path(publishing.__file__).resolve().parent.parent
    if not (root / ".git").exists() or publishing.git_revision().endswith("+changes"):
        pytest.skip("needs a clean source checkout")
    result = root / "benchmarks" / "results" / f"zz-{tmp_path.name}.md"
    code = root / f"zz_{tmp_path.name}.py"
    try:
        result.write_text("a report\n")
        assert not publishing.git_revision().endswith("+changes")
        code.write_text("x = 1\n")
        assert publishing.git_revision().endswith("+changes")
    finally:
        result.unlink(missing_ok=True)
        code.unlink(missing_ok=True)


def test_the_sealed_benchmark_evaluates_everything_on_one_warm_child_with_the_unsealed_numbers(
    tmp_path, small_catalog_path, monkeypatch
):
    """The trainers' evaluations during training and the benchmark's own share one child."""
    from fiq_gym.benchmarks.dialog import PRESETS, run_benchmark
    from fiq_gym.envs.evaluation import harness as evaluation

    evaluation.close_warm_evaluator()
    started = []
    real_popen = subprocess.Popen

    def popen(args, *a, **kw):
        if evaluation.WORKER_MODULE in args:
            started.append(args)
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    kwargs = dict(
        catalog=str(small_catalog_path), agents=("random", "supervised"), seeds=(0, 1), progress=False
    )
    sealed = run_benchmark(PRESETS["tiny"], tmp_path / "sealed" / "tiny", **kwargs)
    # 2 stages x 2 agents evaluated, the supervised trainer's evaluations, 2 env specs: 1 child
    assert len(sealed.records) == 4 and len(started) == 1
    unsealed = run_benchmark(PRESETS["tiny"], tmp_path / "unsealed" / "tiny", sealed=False, **kwargs)
    # What --publish uses: each agent built from its checkpoint in a process of its own.
    isolated = run_benchmark(PRESETS["tiny"], tmp_path / "isolated" / "tiny", isolation="process", **kwargs)
    assert isolated.isolation == "process"
    for a, b, c in zip(sealed.records, unsealed.records, isolated.records, strict=True):
        assert (
            (a.agent, a.seed, a.eval_user) == (b.agent, b.seed, b.eval_user) == (c.agent, c.seed, c.eval_user)
        )
        assert a.result.meta["sealed"] and not b.result.meta["sealed"]
        assert c.result.meta["isolation"] == "process"
        for other in (b, c):
            np.testing.assert_array_equal(a.result.ranks, other.result.ranks)
            np.testing.assert_array_equal(a.result.success_turn, other.result.success_turn)
    evaluation.close_warm_evaluator()


def test_throughput_says_what_bounds_the_transformer_ratio():
    """When (d) misses its target, the table states the ratio an env step costing only its
    parts would reach, and one whose decoder ran at the FLOP limit, from the same run."""
    from fiq_gym.benchmarks.throughput import TRANSFORMER_SETTINGS, Measurement, to_markdown

    rates = {  # 64 pairs: describe 32 ms, ranking 0 ms (1e12/s), native step 40 ms
        "transformer-single": 100.0,
        "transformer-native": 1600.0,
        "transformer-describe": 2000.0,
        "transformer-generate": 2000.0,
        "transformer-ranking": 1e12,
        "transformer-caption-flops": 1e7,  # 10 MFLOP a caption...
        "transformer-matmul": 1e11,  # ...at 100 GFLOP/s: 10,000 captions/s
    }
    rows = [Measurement(s, 10_000, 64, rates[s]) for s in TRANSFORMER_SETTINGS]
    text = to_markdown(rows, "cmd")
    assert "(d) native vector env / single envs: **16.0x**" in text
    assert "What bounds (d)" not in text  # met: nothing to explain
    rows[1] = Measurement("transformer-native", 10_000, 64, 1000.0)
    text = to_markdown(rows, "cmd")
    assert "**10.0x**" in text
    assert "would reach 20.0x, one whose decoder ran at the FLOP limit of (g) 100x" in text


def test_the_leaderboard_leads_with_success_and_shows_the_ceiling(tmp_path):
    """Success by turn comes first, and when ceiling.json holds the posterior reader's runs for
    a configuration, its row heads the table and every agent gets the share of headroom it
    closes over the greedy first stage: (agent - greedy) / (ceiling - greedy) at turn 5."""
    import json

    from fiq_gym.benchmarks import leaderboard

    def run(agent, found):
        ranks = np.full((4, 6), 50)
        return {
            "agent": agent,
            "train_user": "template",
            "eval_user": "template",
            "seed": 0,
            "ranks": ranks.tolist(),
            "success_turn": found,
        }

    data = {
        "env_id": "fiq_gym/FashionIQ-v3",
        "command": "fiq-gym bench --preset leaderboard",
        "git_revision": "abc1234",
        "runs": [run("supervised", [2, 5, -1, -1]), run("shortlist-greedy", [4, -1, -1, -1])],
    }
    references = {
        "posterior-map": {"0": run("x", [1, 2, 3, -1])},
        "posterior-lookahead": {"0": run("x", [1, 2, 3, 5])},
    }
    ceiling = {"configurations": {"default": {"runs": references}}}
    (tmp_path / "ceiling.json").write_text(json.dumps(ceiling))
    text = leaderboard.to_markdown([("default", tmp_path / "leaderboard" / "dialog.json", data)], tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| agent |"))
    assert header.startswith("| agent | success@3 | success@5 | success 1-5 | R@10")
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    # the better reference row by success@5 is the ceiling; the other stays as a reference
    assert rows[0].startswith("| **posterior-lookahead** (ceiling) | 0.750 ± 0.000 | 1.000 ± 0.000")
    assert rows[1].startswith("| posterior-map | 0.750 ± 0.000 | 0.750 ± 0.000") and rows[1].endswith("| - |")
    supervised = next(r for r in rows if r.startswith("| supervised |"))
    assert supervised.endswith("| +0.33 |")  # (0.5 - 0.25) / (1.0 - 0.25)
    separations = [line for line in text.splitlines() if line.startswith("- best ")]
    assert separations and not any("posterior-" in line for line in separations)  # no contestant
    without = leaderboard.to_markdown([("default", tmp_path / "leaderboard" / "dialog.json", data)], None)
    assert "(ceiling)" not in without


def test_the_leaderboard_gathers_the_full_presets_slate_section(tmp_path):
    """With ``full/slates.json`` under the results, the leaderboard ends with the slate
    section: rows by success@5 (mean ± std over seeds for trained agents), the PPO comparisons
    with paired intervals, and the run's command and revision."""
    import json

    from fiq_gym.benchmarks import leaderboard

    def seeds(*found):
        return {"mode": "shortlist_slate", "success_turn": [list(f) for f in found], "seconds": []}

    runs = {
        "posterior-top": {**seeds([1, 2, 2, 3]), "mode": "slate"},
        "greedy-slate": seeds([3, 5, -1, -1]),
        "supervised-top-k": {**seeds([5, -1, -1, -1], [4, 4, -1, -1]), "mode": "slate"},
        "ppo-slate": seeds([2, 3, 5, -1], [2, 2, -1, -1]),
    }
    meta = {
        "command": "fiq-gym bench --full --publish",
        "revision": "abc1234",
        "episodes": 4,
        "seeds": [0, 1],
        "timesteps": 100,
        "slate_size": 4,
        "shortlist_size": 32,
    }
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "slates.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "train_seconds": {}})
    )
    data = {"env_id": "fiq_gym/FashionIQ-v3", "command": "fiq-gym bench", "git_revision": "x", "runs": []}
    text = leaderboard.to_markdown([("default", tmp_path / "leaderboard" / "dialog.json", data)], tmp_path)
    section = text.split("## Slates", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| **posterior-top**",
        "| ppo-slate",
        "| greedy-slate",
        "| supervised-top-k",
    ]
    # ppo-slate: success@5 0.75 and 0.5 over its two seeds; the untrained row has no spread
    assert rows[1].startswith("| ppo-slate | `shortlist_slate` | 0.500 ± 0.000 | 0.625 ± 0.177 |")
    assert rows[0] == "| **posterior-top** | `slate` | 1.000 | 1.000 | 0.800 |"
    assert "- ppo-slate - supervised-top-k: +0.250 [" in section
    assert "- ppo-slate - posterior-top: -0.375 [" in section
    assert "from `fiq-gym bench --full --publish` at revision abc1234" in section
    assert "## Slates" not in leaderboard.to_markdown(
        [("default", tmp_path / "leaderboard" / "dialog.json", data)], tmp_path / "elsewhere"
    )


def test_the_recipe_benchmark_times_the_documented_recipe_with_and_without_its_threads_line():
    from fiq_gym.benchmarks.recipes import recipe_script

    documented, bare = recipe_script(8), recipe_script(8, configure_threads=False)
    assert "fiq_gym.configure_threads()" in documented and "model.learn(8)" in documented
    assert "configure_threads()\n" not in bare and "model.learn(8)" in bare
    compile(documented, "<recipe>", "exec")


def test_configure_threads_sets_what_the_trainers_set_and_returns_the_previous_count():
    import torch

    import fiq_gym
    from fiq_gym.utils.threads import TRAINING_THREADS

    before = torch.get_num_threads()
    try:
        assert fiq_gym.configure_threads() == before
        assert torch.get_num_threads() == TRAINING_THREADS == 1
        with pytest.raises(ValueError, match="threads must be 0"):
            fiq_gym.configure_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_the_dqn_curve_benchmark_runs_and_writes_its_files(tmp_path):
    from fiq_gym.benchmarks.dqn_curve import main as dqn_curve

    dqn_curve(["--timesteps", "64", "--points", "1", "--episodes", "8", "--out", str(tmp_path)])
    text = (tmp_path / "dqn_learning_curve.md").read_text()
    assert "| 64 |" in text and "against the old defaults" in text and "Machine:" in text
    assert (tmp_path / "dqn_learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_every_line_of_the_recall_plot_looks_different():
    """The quick preset's plot had 11 lines in 10 colours (random and dqn-shortlist shared blue)."""
    from fiq_gym.benchmarks.dialog import AGENTS, line_styles

    styles = line_styles(2 * len(AGENTS))  # both shoppers' lines in one plot
    assert len(set(styles)) == len(styles)
    assert len({(colour, style) for colour, style, _ in styles}) == len(styles)
