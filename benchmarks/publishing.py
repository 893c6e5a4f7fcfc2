"""Where benchmark results go, and which revision made them.

Published tables live in the source checkout's ``benchmarks/results/``. From a clone
installed with ``pip install -e .`` that is where the scripts write by default; from an
installed copy (site-packages, often read-only, never under version control) they write to
``./fiq-gym-results/`` in the working directory instead, and ``--publish`` is refused, since a
published table must name the git revision that produced it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fiq_gym import __version__

__all__ = [
    "checkout_results_dir",
    "default_results_dir",
    "git_revision",
    "library_versions",
    "published_results_dir",
]

_PACKAGE = Path(__file__).resolve().parent


def checkout_results_dir() -> Path | None:
    """``benchmarks/results`` of the source checkout this code runs from, or None when it runs
    from an installed copy."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return _PACKAGE / "results"
    return None


def default_results_dir() -> Path:
    """The checkout's results folder, or ``./fiq-gym-results`` outside a checkout."""
    return checkout_results_dir() or Path.cwd() / "fiq-gym-results"


def published_results_dir() -> Path:
    """The checkout's results folder; raises ``ValueError`` outside a checkout."""
    found = checkout_results_dir()
    if found is None:
        raise ValueError(
            "--publish writes into a source checkout's benchmarks/results and records its git revision; "
            "this fiq-gym is an installed copy. Run from a clone (pip install -e .), or drop --publish and "
            "use --out"
        )
    return found


def git_revision() -> str:
    """The checkout's short revision, with ``+changes`` for a dirty tree; ``unknown`` outside one."""
    if checkout_results_dir() is None:
        return "unknown (not a source checkout)"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=_PACKAGE
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, check=True, cwd=_PACKAGE
        ).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> str:
    """One line naming the versions of the libraries a result depends on."""
    import gymnasium
    import numpy
    import stable_baselines3
    import torch
    import transformers

    return (
        f"fiq-gym {__version__}, gymnasium {gymnasium.__version__}, stable-baselines3 "
        f"{stable_baselines3.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"numpy {numpy.__version__}"
    )
