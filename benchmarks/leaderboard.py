"""The leaderboard: configurations x agents, gathered from the leaderboard preset's published
benchmark runs (one per configuration), with R@10, cumulative Hits@10, BRI and success at the
last turn, mean ± std over training seeds; then the slate section, gathered from the full
preset's slate runs (``results/full/slates.json``, :mod:`fiq_gym.benchmarks.slates`).

    fiq-gym bench --preset leaderboard --config terse --jobs 2 --publish    # a configuration's runs
    python -m fiq_gym.benchmarks.leaderboard                                 # results/leaderboard.md

Every number comes from a ``dialog.json`` that the sealed harness wrote (its per-dialog ranks),
so this script trains and evaluates nothing: it recomputes the metrics from the ranks and
names, for each configuration, the command, revision and date of the run it read. The
separation line compares the best agent with the supervised one: the gap between their means
over seeds in units of the larger of their two standard deviations over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiq_gym.benchmarks.publishing import default_results_dir, git_revision
from fiq_gym.benchmarks.slates import leaderboard_lines
from fiq_gym.envs.configurations import CONFIGURATIONS
from fiq_gym.metrics import best_log_rank_integral, cumulative_hits_at_k
from fiq_gym.metrics import recall_at_k as _recall
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["METRICS", "Entry", "entries_of", "main", "to_markdown"]

RESULTS = default_results_dir()
PRESET = "leaderboard"
#: (column, higher is better): success by turn first, the headline (R@10 at turn 5 is close to
#: saturated on `default`: docs/benchmarks.md, "How far from the best possible?")
METRICS = (
    ("success@3", True),
    ("success@5", True),
    ("success 1-5", True),
    ("R@10", True),
    ("Hits@10", True),
    ("BRI", False),
)
#: The reference rows read from ceiling.json (benchmarks/ceiling.py; the better of them by
#: success@5 is the ceiling), and the floor of the headroom column: the greedy first stage.
REFERENCES, GREEDY = ("posterior-map", "posterior-lookahead"), "shortlist-greedy"
#: The slate section's runs (the full preset's, benchmarks/slates.py), under the results folder.
SLATES = Path("full", "slates.json")


@dataclass
class Entry:
    """One agent on one configuration: each metric's value per training seed."""

    configuration: str
    agent: str
    values: dict[str, list[float]]

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values[metric]))

    def std(self, metric: str) -> float:
        return float(np.std(self.values[metric], ddof=1)) if len(self.values[metric]) > 1 else 0.0


def _metrics_of(run: dict) -> dict[str, float]:
    ranks = np.asarray(run["ranks"], dtype=np.int64)
    found = np.asarray(run["success_turn"], dtype=np.int64)
    by = [float(np.mean((found >= 1) & (found <= t))) for t in range(1, ranks.shape[1])]
    return {
        "success@3": by[2] if len(by) >= 3 else float("nan"),
        "success@5": by[4] if len(by) >= 5 else float("nan"),
        "success 1-5": float(np.mean(by[:5])),
        "R@10": _recall(ranks[:, -1], 10),
        "Hits@10": float(cumulative_hits_at_k(ranks, 10)[-1]),
        "BRI": best_log_rank_integral(ranks),
    }


def reference_entries(results: Path, configuration: str) -> list[Entry]:
    """The evaluable posterior rows of ``results/ceiling.json`` for ``configuration`` (one value
    per env seed), the ceiling first; empty when they have not been measured there."""
    path = results / "ceiling.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8")).get("configurations", {}).get(configuration)
    entries = []
    for name in REFERENCES:
        runs = (data or {}).get("runs", {}).get(name)
        if not runs or "ranks" not in next(iter(runs.values())):
            continue
        values: dict[str, list[float]] = {m: [] for m, _ in METRICS}
        for run in runs.values():
            for metric, value in _metrics_of(run).items():
                values[metric].append(value)
        entries.append(Entry(configuration, name, values))
    return sorted(entries, key=lambda e: -e.mean("success@5"))


def entries_of(data: dict, configuration: str) -> list[Entry]:
    """The template-trained, template-evaluated runs of one ``dialog.json``, by agent."""
    by_agent: dict[str, dict[str, list[float]]] = {}
    for run in data["runs"]:
        if run["train_user"] != "template" or run["eval_user"] != "template":
            continue
        values = by_agent.setdefault(run["agent"], {m: [] for m, _ in METRICS})
        for metric, value in _metrics_of(run).items():
            values[metric].append(value)
    return [Entry(configuration, agent, values) for agent, values in by_agent.items()]


def _separation(entries: Sequence[Entry], metric: str, higher: bool) -> str:
    supervised = next((e for e in entries if e.agent == "supervised"), None)
    others = [e for e in entries if e.agent != "supervised"]
    if supervised is None or not others:
        return ""
    best = max(others, key=lambda e: e.mean(metric) if higher else -e.mean(metric))
    gap = best.mean(metric) - supervised.mean(metric)
    spread = max(best.std(metric), supervised.std(metric))
    units = f"{abs(gap) / spread:.1f} std" if spread > 0 else "std 0"
    return f"best {metric}: `{best.agent}` {best.mean(metric):.3f} vs supervised {supervised.mean(metric):.3f} ({gap:+.3f}, {units})"


def to_markdown(sources: Sequence[tuple[str, Path, dict]], results: Path | None = None) -> str:
    lines = [
        "# Leaderboard",
        "",
        "Configurations x agents: success by turn 3 and turn 5 and its mean over turns 1-5 (the "
        "target shown by then), then at the last turn (turn 5) R@10, cumulative Hits@10 (found in "
        "the top 10 at any turn so far) and BRI (best log rank integral, lower is better); mean ± "
        "std over 3 training seeds, trained and evaluated with each configuration's template shopper "
        "on 1,000 fixed dialogs by the sealed harness. The metrics are defined in docs/benchmarks.md; "
        "how hard each configuration is: configurations.md. The first row of each table is the "
        "ceiling: the better of the reference rows `posterior-map` and `posterior-lookahead`, the "
        "Bayesian reader of the shopper's captions showing the most probable item or planning one "
        "step (untrained; mean ± std over the same 3 env seeds on the same dialogs; ceiling.md). "
        f"Headroom closed: (success@5 - `{GREEDY}`'s) / (the ceiling's - `{GREEDY}`'s).",
        "",
    ]
    for configuration, path, data in sources:
        entries = entries_of(data, configuration)
        references = reference_entries(results, configuration) if results is not None else []
        ceiling = references[0] if references else None
        floor = next((e for e in entries if e.agent == GREEDY), None)
        seeds = sorted({r["seed"] for r in data["runs"]})
        lines += [
            f"## `{configuration}` (`{data.get('env_id', '?')}`)",
            "",
            f"{CONFIGURATIONS[configuration].summary}. Seeds {seeds}.",
            "",
            "| agent | " + " | ".join(m for m, _ in METRICS) + " | headroom closed |",
            "|---|" + "---:|" * (len(METRICS) + 1),
        ]
        for e in references + entries:
            cells = [f"{e.mean(m):.3f} ± {e.std(m):.3f}" for m, _ in METRICS]
            closed = "-"
            if ceiling is not None and floor is not None and e not in references:
                top, low = ceiling.mean("success@5"), floor.mean("success@5")
                closed = f"{(e.mean('success@5') - low) / (top - low):+.2f}" if top > low else "-"
            name = f"**{e.agent}** (ceiling)" if e is ceiling else e.agent
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {closed} |")
        separations = [_separation(entries, m, higher) for m, higher in METRICS]
        lines += ["", *(f"- {s}" for s in separations if s)]
        lines += [
            "",
            f"Source: `{path.parent.name}/{path.name}`, from `{data['command']}` at revision "
            f"{data.get('git_revision', '?')}.",
            "",
        ]
    slates = results / SLATES if results is not None else None
    if slates is not None and slates.is_file():
        data = json.loads(slates.read_text(encoding="utf-8"))
        lines += leaderboard_lines(data, f"{slates.parent.name}/{slates.name}")
    lines += [f"Gathered at revision {git_revision()} by `python -m fiq_gym.benchmarks.leaderboard`.", ""]
    return "\n".join(lines)


def find_sources(results: Path, preset: str = PRESET) -> list[tuple[str, Path, dict]]:
    """Every ``results/PRESET[-CONFIG]/dialog.json``, in the order of the configurations."""
    sources = []
    for path in sorted(results.glob(f"{preset}*/dialog.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        configuration = data.get("configuration", "default")
        if data.get("preset", {}).get("name") != preset or not data.get("sealed", False):
            raise ValueError(
                f"{path} is not a sealed run of the {preset} preset; re-run it with the command in its file"
            )
        sources.append((configuration, path, data))
    order = list(CONFIGURATIONS)
    return sorted(sources, key=lambda s: order.index(s[0]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the benchmark runs are")
    parser.add_argument("--out", type=Path, help="file to write (default: RESULTS/leaderboard.md)")
    parser.add_argument("--preset", default=PRESET, help=argparse.SUPPRESS)  # tests: a smaller preset
    args = parser.parse_args(argv)
    sources = find_sources(args.results, args.preset)
    if not sources:
        parser.error(
            f"no {args.preset} runs under {args.results}: run "
            f"`fiq-gym bench --preset {args.preset} --config NAME --publish` first"
        )
    text = to_markdown(sources, args.results)
    atomic_write_text(args.out or args.results / "leaderboard.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
