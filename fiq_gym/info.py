"""The key names of an environment's ``info`` dict, and the old names it still answers to.

``info`` used to hold ``caption`` (the caption text) and ``turn``, the same names as two
observation keys. Libraries that merge ``info`` into the observation's
namespace cannot hold both: TorchRL's ``GymEnv(..., num_envs=n)`` registers every ``info``
key beside the observation keys and fails on the clash. The text is now
``info["caption_text"]`` and the turn ``info["dialog_turn"]``.

For one release the envs return a :class:`StepInfo`, a plain ``dict`` that answers a
lookup of an old name (``info["caption"]``, ``info.get("turn")``) with the new key's value
and a ``DeprecationWarning``. The old names are never *stored*: ``keys()``, iteration,
``in`` and ``len`` show only the new ones, so code that walks the keys (TorchRL, loggers)
sees no clash. Gymnasium's own ``SyncVectorEnv`` / ``AsyncVectorEnv`` build a new ``dict``
from the sub-envs' infos, so behind them only the new names work.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["RENAMED_INFO_KEYS", "StepInfo", "renamed_info_key"]

#: Old ``info`` key -> new key (removed in the next release).
RENAMED_INFO_KEYS = {"caption": "caption_text", "turn": "dialog_turn"}


def renamed_info_key(key: Any) -> str | None:
    """The new name of a renamed ``info`` key (Gymnasium's ``_key`` masks included), or None."""
    if not isinstance(key, str):
        return None
    private = key.startswith("_")
    new = RENAMED_INFO_KEYS.get(key[1:] if private else key)
    if new is None:
        return None
    return "_" + new if private else new


class StepInfo(dict):
    """An environment's ``info``: a ``dict`` whose renamed keys (:data:`RENAMED_INFO_KEYS`)
    are still readable by their old names, with a ``DeprecationWarning``, for one release."""

    def __missing__(self, key: Any) -> Any:
        return self._read_old_name(key)

    def get(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        try:
            return self._read_old_name(key)
        except KeyError:
            return default

    def _read_old_name(self, key: Any) -> Any:
        """The value of ``key``'s new name, with a warning pointing at the caller's line (two
        frames up: the caller, then ``__missing__`` or ``get``); ``KeyError`` otherwise."""
        new = renamed_info_key(key)
        if new is None or not dict.__contains__(self, new):
            raise KeyError(key)
        warnings.warn(
            f"info[{key!r}] is deprecated and will be removed in the next release: read info[{new!r}] "
            "(the old name clashed with an observation key; see CHANGELOG.md)",
            DeprecationWarning,
            stacklevel=3,
        )
        return dict.__getitem__(self, new)
