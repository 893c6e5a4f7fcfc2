"""Exceptions raised by fiq-gym. Each message names the problem and, where there is one, the fix."""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "CheckpointError",
    "DatasetError",
    "EvaluationError",
    "EvaluationTimeout",
    "FallbackWarning",
    "FiqGymError",
]


class FiqGymError(Exception):
    """Base class of fiq-gym's own errors."""


class CatalogError(FiqGymError, ValueError):
    """A catalog directory or catalog contents are missing, corrupt or inconsistent."""


class DatasetError(FiqGymError, ValueError):
    """A real dataset's files (Fashion IQ, Shoes) are missing, malformed or inconsistent."""


class CheckpointError(FiqGymError, ValueError):
    """A checkpoint or training state is missing, damaged, of another kind, or does not fit
    where it is used."""


class EvaluationError(FiqGymError, RuntimeError):
    """An evaluation was refused or could not finish: a nested evaluation of the same set, an
    agent's process that failed, a held-out set outside an isolated evaluation."""


class EvaluationTimeout(EvaluationError, TimeoutError):
    """One side of an evaluation stopped answering (the agent's ``act()`` or the process that
    runs the environment); the message names which, and the option that sets the budget."""


class FallbackWarning(UserWarning):
    """fiq-gym fell back to a weaker substitute (thumbnails for missing features, zeros for
    missing attribute predictions); the message names the command that fixes it."""
