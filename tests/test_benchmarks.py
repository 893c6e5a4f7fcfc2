"""Benchmark scripts run end to end on tiny settings and write their result files."""

from __future__ import annotations

import subprocess
import sys


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
    assert "| 300 | 4 |" in table and "Machine:" in table
    assert (out / "throughput.png").read_bytes()[:4] == b"\x89PNG"


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
