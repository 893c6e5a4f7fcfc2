"""Where benchmark results go, and which revision made them.

Published tables live in the source checkout's ``benchmarks/results/``. From a clone
installed with ``pip install -e .`` that is where the scripts write by default. From an
installed copy (site-packages: often read-only, never under version control) they write to
``./fiq-gym-results/`` in the working directory instead, and so does ``--publish`` unless it
is given a directory. The git revision is read only from a checkout; an installed copy's
reports name its version instead. Nothing here ever writes into site-packages.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fiq_gym import __version__

__all__ = [
    "add_out_argument",
    "add_publish_argument",
    "checkout_results_dir",
    "default_results_dir",
    "git_revision",
    "library_versions",
    "machine_line",
    "prepare_publish_dir",
    "published_results_dir",
]

_PACKAGE = Path(__file__).resolve().parent
_WORKING_DIRECTORY_RESULTS = "fiq-gym-results"


def checkout_results_dir() -> Path | None:
    """``benchmarks/results`` of the source checkout this code runs from, or None when it runs
    from an installed copy (or an unpacked sdist, which is no git checkout)."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return _PACKAGE / "results"
    return None


def default_results_dir() -> Path:
    """The checkout's results folder, or ``./fiq-gym-results`` outside a checkout."""
    return checkout_results_dir() or Path.cwd() / _WORKING_DIRECTORY_RESULTS


def published_results_dir(explicit: Path | str | None = None) -> Path:
    """Where ``--publish`` writes: the directory it was given, else (None or "")
    :func:`default_results_dir`."""
    return Path(explicit) if explicit else default_results_dir()


def prepare_publish_dir(parser: argparse.ArgumentParser, explicit: Path | str, *subfolders: str) -> Path:
    """Resolve ``--publish`` and create the folder now, so that a DIR that cannot be written
    fails before a run of hours rather than after it (``parser.error`` names it)."""
    target = published_results_dir(explicit).joinpath(*subfolders)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--publish: cannot create {target} ({error.strerror}); pass a DIR you can write to")
    return target


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``: where a benchmark writes its report, by default :func:`default_results_dir`
    (the checkout's ``benchmarks/results``, or ``./fiq-gym-results`` when installed)."""
    parser.add_argument(
        "--out",
        type=Path,
        default=default_results_dir(),
        help="output directory (default: benchmarks/results of the checkout, or ./fiq-gym-results when installed)",
    )


def add_publish_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--publish [DIR]``: also write ``what`` (e.g. "the reports to DIR/PRESET/"); DIR defaults
    to the checkout's ``benchmarks/results`` (from a clone) or ``./fiq-gym-results`` (installed).
    ``args.publish`` is None without the flag; pass it to :func:`prepare_publish_dir`."""
    parser.add_argument(
        "--publish",
        nargs="?",
        const="",  # a string, not a Path: "" (falsy) stands for the default folder
        default=None,
        metavar="DIR",
        help=f"also write {what} (default DIR: benchmarks/results/ of the source checkout this runs "
        f"from, or ./{_WORKING_DIRECTORY_RESULTS}/ when fiq-gym is installed)",
    )


def git_revision() -> str:
    """The checkout's short revision, with ``+changes`` for a dirty tree (changes under
    ``benchmarks/results`` aside: they are what runs write). Outside a checkout no
    git command runs (site-packages may sit inside someone else's repository): the installed
    version is named instead."""
    if checkout_results_dir() is None:
        return f"none (installed fiq-gym {__version__}, not a source checkout)"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=_PACKAGE
        ).stdout.strip()
        # Result files are outputs, not code: a run that has just written its report (or another
        # run's, beside it) is still a run of this revision. A dialog.json once read "+changes"
        # because its own dialog.md had been written a moment before.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ":(top)", ":(top,exclude)benchmarks/results"],
            capture_output=True,
            text=True,
            check=True,
            cwd=_PACKAGE,
        ).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (git failed in the source checkout)"


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


def refuse_unclean_publication(parser: argparse.ArgumentParser, out: Path | str) -> None:
    """Stop with an argparse error when ``out`` is the published results folder (or a folder in
    it) and the tree has uncommitted changes: published tables come from a clean tree."""
    target, results = Path(out).resolve(), default_results_dir().resolve()
    if (target == results or results in target.parents) and git_revision().endswith("+changes"):
        parser.error(
            "the working tree has uncommitted changes: published tables come from a clean tree "
            "(commit first), or pass --out DIR for a trial run"
        )


# Environment variables that choose CPU kernels. Trained networks differ bit for bit between
# kernel choices (AVX-512 vs AVX2 ATen kernels, MKL code paths), so a report records them.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """The machine a table was measured on: platform, CPU model, core count, torch's CPU
    kernels (and any variable that pins them), Python and the main libraries."""
    import os

    import gymnasium as gym
    import numpy as np
    import torch

    pinned = [f"{k}={os.environ[k]}" for k in KERNEL_VARIABLES if os.environ.get(k)]
    return (
        f"{platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"torch CPU kernels {torch.backends.cpu.get_cpu_capability()}"
        f"{' (' + ', '.join(pinned) + ')' if pinned else ''}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, gymnasium {gym.__version__}, torch {torch.__version__}"
    )


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces a run of ``python -m module`` with ``argv`` (default: this
    process's arguments), as the file it writes states it."""
    given = list(argv if argv is not None else sys.argv[1:])
    return f"python -m {module}" + (" " + shlex.join(given) if given else "")


def provenance_lines(command: str, *, load: str = "", extra_libraries: str = "") -> list[str]:
    """The closing lines of a published table: command, revision, machine, the load average
    when the run started (if given) and library versions (plus ``extra_libraries``)."""
    return [
        "",
        f"Command: `{command}`",
        "",
        f"Revision: {git_revision()}",
        "",
        f"Machine: {machine_line()}",
        "",
        *([f"Load average (1, 5, 15 min) when the run started: {load}", ""] if load else []),
        f"Libraries: {library_versions()}{', ' + extra_libraries if extra_libraries else ''}",
        "",
    ]
