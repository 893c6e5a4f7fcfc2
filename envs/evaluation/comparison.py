"""Paired comparisons of two agents evaluated on the same dialogs.

Two agents evaluated on one evaluation set face the same (target, first item) pairs, so the
fair question is how their outcomes differ *dialog by dialog*: a paired comparison removes the
variation between dialogs (some targets are easy for everyone) and needs far fewer dialogs
than comparing two independent means. With several training seeds the seeds vary too, and an
honest interval must include that.

:func:`paired_difference` takes per-dialog outcomes of shape ``(seeds, dialogs)`` (or
``(dialogs,)`` for one seed) for agents A and B and returns the mean difference A - B with a
percentile bootstrap interval that resamples both seeds and dialogs (a two-level bootstrap:
seeds with replacement, then dialogs with replacement, the same dialogs for both agents).
With one seed only dialogs are resampled, and the interval says nothing about how another
training seed would do; the result records which.

:func:`detectable_difference` answers the power question behind an evaluation size: the
smallest true difference a two-sided test at level ``alpha`` detects with probability
``power``, given how often the two agents disagree on a dialog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedDifference", "detectable_difference", "paired_difference"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of A - B over dialogs and seeds, with a bootstrap interval.

    Attributes:
        mean: the observed mean difference.
        low, high: the interval's bounds.
        confidence: its coverage, e.g. 0.95.
        seeds, dialogs: how many of each the outcomes had.
        resampled: ``"seeds and dialogs"`` or ``"dialogs"`` (one seed: training variation is
            not in the interval).
    """

    mean: float
    low: float
    high: float
    confidence: float
    seeds: int
    dialogs: int
    resampled: str

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval excludes 0: only then do we call the difference detected."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> PairedDifference:
    """The mean of ``a - b`` with a paired percentile-bootstrap interval.

    Args:
        a, b: per-dialog outcomes (e.g. 1.0 for a success by turn 5, or the rank) of the two
            agents on the same dialogs, shape ``(dialogs,)`` or ``(seeds, dialogs)``; row s of
            both comes from training seed s, column i from dialog i.
        confidence: the interval's coverage, in (0, 1).
        resamples: bootstrap resamples.
        seed: seeds the resampling, so a table is reproducible.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must come from the same dialogs and seeds, got shapes {a.shape} and {b.shape}"
        )
    if a.ndim == 1:
        a, b = a[None], b[None]
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(
            f"outcomes must be (dialogs,) or (seeds, dialogs) with at least 2 dialogs, got {a.shape}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("outcomes must be finite numbers")
    diff = a - b
    seeds, dialogs = diff.shape
    rng = np.random.default_rng([0xC0FFEE, seed])
    # Resampling dialogs as columns keeps each dialog's pairing across seeds (the benchmark
    # evaluates every seed on the same evaluation set).
    columns = rng.integers(0, dialogs, size=(resamples, dialogs))
    if seeds > 1:
        rows = rng.integers(0, seeds, size=(resamples, seeds))
        # mean over the resampled (seed, dialog) grid = mean over resampled seeds of the
        # per-seed means over the resampled dialogs
        per_seed = np.stack([diff[:, cols].mean(axis=1) for cols in columns])  # (resamples, seeds)
        stats = np.take_along_axis(per_seed, rows, axis=1).mean(axis=1)
    else:
        stats = diff[0][columns].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return PairedDifference(
        mean=float(diff.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        seeds=seeds,
        dialogs=dialogs,
        resampled="seeds and dialogs" if seeds > 1 else "dialogs",
    )


def detectable_difference(
    dialogs: int, discordant: float, *, seeds: int = 1, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true difference in a success rate that a paired test detects.

    For binary outcomes paired on the same dialogs, the variance of the mean difference over
    ``n = seeds * dialogs`` pairs is about ``discordant / n`` (``discordant``: the share of
    dialogs where exactly one agent succeeds), so the detectable difference is
    ``(z_{1 - alpha/2} + z_{power}) * sqrt(discordant / n)``. Seed-to-seed variation of
    training adds to this; the benchmark's bootstrap interval includes it, this formula does
    not, so read it as a lower bound.
    """
    if dialogs < 1 or seeds < 1:
        raise ValueError("dialogs and seeds must be positive")
    if not 0 <= discordant <= 1:
        raise ValueError(f"discordant must be a share in [0, 1], got {discordant}")
    z = _normal_quantile(1 - alpha / 2) + _normal_quantile(power)
    return z * math.sqrt(discordant / (dialogs * seeds))


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF (bisection on erf; exact enough for power sums)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2
