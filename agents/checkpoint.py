"""Deprecated: :mod:`fiq_gym.agents.loading` (``load_agent``, ``LoadedAgent``, resuming
retriever runs) under its old name.

The module was renamed because ``fiq_gym.checkpoint`` (training state and checkpoint configs)
had the same name; scripts that import ``fiq_gym.agents.checkpoint`` keep working, with a
``DeprecationWarning``, until this alias is removed in a later release.
"""

from __future__ import annotations

import warnings
from typing import Any

from fiq_gym.agents import loading

__all__ = loading.__all__

warnings.warn(
    "fiq_gym.agents.checkpoint is deprecated: import load_agent and the rest from fiq_gym.agents.loading",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    # Every name, read from the module itself: ACTION_MODES there follows the registry.
    return getattr(loading, name)
