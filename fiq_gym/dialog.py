"""Deprecated alias of :mod:`fiq_gym.dialog_engine` (renamed so the core dialog engine and the
dialog benchmark, ``fiq_gym.benchmarks.dialog``, no longer share a name). Removed in the
next release: import from ``fiq_gym.dialog_engine``."""

from __future__ import annotations

import warnings

from fiq_gym.dialog_engine import *  # noqa: F403
from fiq_gym.dialog_engine import __all__  # noqa: F401

warnings.warn(
    "fiq_gym.dialog is renamed fiq_gym.dialog_engine; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
