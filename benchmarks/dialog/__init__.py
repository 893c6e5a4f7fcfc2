"""The dialog retrieval benchmark: supervised vs RL-trained retrievers on one evaluation set.

    fiq-gym bench --quick                       # the README's main job (~11 min on 2 cores)
    fiq-gym bench --full --publish              # more seeds, longer training, both users
    python -m fiq_gym.benchmarks.dialog --preset tiny --catalog DIR --out /tmp/bench

Every agent is trained (or loaded from the run directory's cache when its arguments are
unchanged), then evaluated on the same fixed evaluation set with every evaluation user;
agents trained with one user and evaluated with the other show how much a retriever
overfits its simulator. Outputs: ``dialog.md``, ``dialog.csv``, ``dialog.json``,
``recall_at_10_by_turn.png`` and each training run's TensorBoard events.

The package, by role: :mod:`~fiq_gym.benchmarks.dialog.presets` (the agents, from the agent
registry, the presets, comparisons and metrics), :mod:`~fiq_gym.benchmarks.dialog.training`,
:mod:`~fiq_gym.benchmarks.dialog.evaluating` (the run), :mod:`~fiq_gym.benchmarks.dialog.records`
(its outcome), :mod:`~fiq_gym.benchmarks.dialog.reporting` and
:mod:`~fiq_gym.benchmarks.dialog.command` (``fiq-gym bench``). Every public name is importable
from here. Its agents are the registered agents with a bench role
(:class:`fiq_gym.agents.registry.BenchRole`): ``AGENTS`` and the lists of agents by role below
are read from the registry when asked.
"""

from __future__ import annotations

from typing import Any

from fiq_gym.benchmarks.dialog.command import _slate_section as _slate_section  # the tests' handle
from fiq_gym.benchmarks.dialog.command import build_parser, main, shopper_name
from fiq_gym.benchmarks.dialog.evaluating import bench_agent, references_unavailable, run_benchmark
from fiq_gym.benchmarks.dialog.presets import (
    COMPARISONS,
    METRICS,
    PRESETS,
    Preset,
    bench_agents,
    controls,
    references,
    shortlist_agents,
    untrained,
)
from fiq_gym.benchmarks.dialog.records import BenchmarkResult, Budget, Record
from fiq_gym.benchmarks.dialog.reporting import (
    line_styles,
    plot_recall,
    success_summary,
    to_markdown,
    write_outputs,
)
from fiq_gym.benchmarks.dialog.training import train_agents, user_directory

# AGENTS, REFERENCES, UNTRAINED, SHORTLIST_AGENTS and CONTROLS come from __getattr__ below
__all__ = [
    "AGENTS",
    "COMPARISONS",
    "CONTROLS",
    "METRICS",
    "PRESETS",
    "REFERENCES",
    "SHORTLIST_AGENTS",
    "UNTRAINED",
    "BenchmarkResult",
    "Budget",
    "Preset",
    "Record",
    "bench_agent",
    "build_parser",
    "line_styles",
    "main",
    "plot_recall",
    "references_unavailable",
    "run_benchmark",
    "shopper_name",
    "success_summary",
    "to_markdown",
    "train_agents",
    "user_directory",
    "write_outputs",
]

#: the lists of agents by role, read from the agent registry when asked (presets.py)
_ROSTERS = {
    "AGENTS": bench_agents,
    "REFERENCES": references,
    "UNTRAINED": untrained,
    "SHORTLIST_AGENTS": shortlist_agents,
    "CONTROLS": controls,
}


def __getattr__(name: str) -> Any:
    if name in _ROSTERS:
        return _ROSTERS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
