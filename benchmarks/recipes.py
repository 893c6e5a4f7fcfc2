"""The documented Python recipes at the command line's speed: docs/agents.md's SB3 PPO recipe,
as written (with ``fiq_gym.configure_threads()``), without that line (torch's default threads),
and ``fiq-gym train ppo`` with the recipe's settings, each in a fresh process, in one run.

    python -m fiq_gym.benchmarks.recipes                 # 2,048 env steps; writes results/recipes.md
    python -m fiq_gym.benchmarks.recipes --timesteps 512 --out /tmp/recipes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fiq_gym.benchmarks.publishing import (
    add_out_argument,
    checkout_results_dir,
    command_line,
    provenance_lines,
)
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["recipe_script", "run"]

_DOCS = "docs/agents.md"
# The recipe's own settings, given to the CLI too (its defaults differ: n_steps 64, 4 epochs).
_CLI_SETTINGS = ["--num-envs", "16", "--n-steps", "32", "--batch-size", "256", "--learning-rate", "1e-3"]
_CLI_SETTINGS += ["--n-epochs", "10", "--action-mode", "shortlist", "--eval-episodes", "16"]


def recipe_script(timesteps: int, *, configure_threads: bool = True, docs: Path | None = None) -> str:
    """The SB3 PPO recipe of docs/agents.md, cut after ``model.learn`` (its evaluation is not
    what is timed), with ``timesteps`` steps; without its ``configure_threads()`` line when
    ``configure_threads`` is False. It prints the seconds ``learn`` took as JSON."""
    root = checkout_results_dir()
    path = docs or (root.parent.parent / _DOCS if root is not None else None)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{_DOCS} not found: run this benchmark from a source checkout")
    text = path.read_text(encoding="utf-8")
    block = next(b for b in text.split("```python")[1:] if "model = PPO(" in b).split("```")[0]
    head, _, _ = block.partition("model.learn(")
    if not configure_threads:
        head = re.sub(r"^fiq_gym\.configure_threads\(.*$", "", head, flags=re.M)
    return (
        head
        + "import json, time\n"
        + "_start = time.perf_counter()\n"
        + f"model.learn({timesteps})\n"
        + "print(json.dumps({'learn_seconds': time.perf_counter() - _start}))\n"
    )


def _timed(command: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return seconds, (json.loads(lines[-1]) if lines else {})


def run(timesteps: int, out: Path, command: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # other work would slow every variant
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # A first, untimed run builds the default catalog and warms the file cache.
        _timed([sys.executable, "-c", recipe_script(64)])
        for name, script in (
            ("recipe as documented (`fiq_gym.configure_threads()`)", recipe_script(timesteps)),
            (
                "recipe without `configure_threads()` (torch's default threads)",
                recipe_script(timesteps, configure_threads=False),
            ),
        ):
            total, printed = _timed([sys.executable, "-c", script])
            rows.append((name, total, printed["learn_seconds"]))
            print(f"{name}: {total:.1f} s")
        cli = [sys.executable, "-m", "fiq_gym", "train", "ppo", *_CLI_SETTINGS, "--timesteps", str(timesteps)]
        cli += ["--out", str(Path(tmp) / "cli")]
        total, _ = _timed(cli)
        rows.append(("`fiq-gym train ppo` (the same settings)", total, None))
        print(f"CLI: {total:.1f} s")
    cli_seconds = rows[-1][1]
    lines = [
        "# Recipes at the command line's speed",
        "",
        f"docs/agents.md's SB3 PPO recipe (shortlist mode, 16 envs, `n_steps=32`, `batch_size=256`, 10 epochs) "
        f"for {timesteps:,} env steps, each variant in a fresh process, one after another in one run. Whole: the "
        "process's wall time (imports, the env, training; the CLI also evaluates 16 dialogs and writes its "
        "checkpoint). `learn`: the seconds `model.learn` took.",
        "",
        "| variant | whole (s) | `learn` (s) | whole / CLI |",
        "|---|---:|---:|---:|",
    ]
    for name, total, learn in rows:
        learned = f"{learn:.1f}" if learn is not None else "-"
        lines.append(f"| {name} | {total:.1f} | {learned} | {total / cli_seconds:.2f} |")
    lines += provenance_lines(command, load=load)
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "recipes.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=2048, help="env steps of each run (default 2048)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    print(run(args.timesteps, args.out, command_line("fiq_gym.benchmarks.recipes", argv)))


if __name__ == "__main__":
    main()
