"""Exact comparisons of dot products, found with a fast scan and a proven error band.

An item *scores at least as well as the target* when the exact real value of its dot product
with the query is at least the target's. Scores computed with floating point cannot decide
that for every item: BLAS rounds the same dot product differently depending on the shape of
the matrix product it is part of (on numpy's OpenBLAS, an item's float32 score changes in the
last bits when the gallery is split into row blocks), so counts taken over shards would not
add up to the count over the whole gallery. Exact comparisons do not depend on how anything
is split, batched or stored.

They are found in three passes, each one only over what the previous one left open:

1. **Scan**: the query times the whole shard in float32 BLAS, with the features as stored for
   scanning (float32, or float16 upcast block by block). Every scanned score lies within a
   proven distance ``err`` of the exact one: the summation error of any order of summing D
   products, ``gamma_D * |q| * |f|`` (Higham, *Accuracy and Stability of Numerical
   Algorithms*, 3.1), plus ``|q| * |f16 - f|`` for float16 storage. Items whose scanned score
   is clearly above or below the target's are decided here.
2. **Recheck**: the few items inside the band get their score again from the float32 features
   in float64, where products of float32 numbers are exact and the summation error is about
   1e-15.
3. **Exact**: what is still undecided (in practice: items whose exact score equals the
   target's) is settled by comparing bitwise-equal feature rows (a tie) or by the sign of
   ``math.fsum`` over the 2D exact products, which is the sign of the exact difference.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ONE_BLAS_THREAD", "SCANS", "SHARD_MODES", "GalleryShard", "exact_best"]

#: How a shard stores the copy of its features that it scans.
SCANS = ("float32", "float16")
#: Where shards run: each in a worker process, one after another in this process, or each in
#: a Ray actor (:mod:`fiq_gym.ranking.sharded`, :mod:`fiq_gym.ranking.ray_shards`).
SHARD_MODES = ("process", "inline", "ray")
#: The environment of a shard process or actor: one BLAS thread, as the shards are the parallelism.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_U32 = 2.0**-24
_U64 = 2.0**-53
# Per term: the absolute error of a product that underflows (gradually, or flushed to zero by
# a kernel that sets FTZ). Negligible next to any real score, but it keeps the bound a bound.
_UNDERFLOW = 2.0**-125
# Scores as large as this are out of float16's range.
_FLOAT16_MAX = 65504.0
# Room for the float64 arithmetic that computes the bounds themselves.
_SLACK = 1.01
# Scanned scores held at once: rows per block so that a (B, rows) float32 block is ~8 MB.
_BLOCK_BYTES = 8 << 20


def _gamma(n: int, u: float) -> float:
    """Higham's gamma_n: the relative error bound of any summation order of n terms."""
    return n * u / (1.0 - n * u)


def _up32(x: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 of ``x``."""
    y = x.astype(np.float32)
    return np.where(y.astype(np.float64) < x, np.nextafter(y, np.float32(np.inf)), y)


def _down32(x: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 of ``x``."""
    y = x.astype(np.float32)
    return np.where(y.astype(np.float64) > x, np.nextafter(y, np.float32(-np.inf)), y)


def _row_norms(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", rows, rows))


def _exact_sign(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> int:
    """The sign of ``q . a - q . b`` computed exactly (float32 inputs): products of float32
    numbers are exact in float64, and ``math.fsum`` rounds their exact sum correctly, so it
    keeps the exact sum's sign."""
    if np.array_equal(a, b):
        return 0
    q64 = np.asarray(q, dtype=np.float64)
    terms = np.concatenate([q64 * np.asarray(a, dtype=np.float64), -(q64 * np.asarray(b, dtype=np.float64))])
    total = math.fsum(terms.tolist())
    return (total > 0) - (total < 0)


def exact_best(query: np.ndarray, rows: np.ndarray, indices: np.ndarray) -> int:
    """The index (of ``indices``, ascending) whose feature row has the highest exact score
    with ``query``; ties go to the lowest index, as ``np.argmax`` breaks them."""
    indices = np.asarray(indices)
    q64 = np.asarray(query, dtype=np.float64)
    if len(indices) == 1 or not q64.any():  # a zero query ties every item
        return int(indices[0])
    rows = np.asarray(rows, dtype=np.float32)
    d = rows.astype(np.float64) @ q64
    bound = _gamma(len(q64), _U64) * float(np.linalg.norm(q64)) * float(_row_norms(rows).max()) * _SLACK
    bound += float(np.abs(d).max()) * 2.0**-50
    keep = np.flatnonzero(d >= d.max() - 2.0 * bound)
    best = keep[0]
    for k in keep[1:]:
        if _exact_sign(query, rows[k], rows[best]) > 0:
            best = k
    return int(indices[best])


class GalleryShard:
    """Rows ``offset .. offset + n`` of a gallery, answering exact rank questions about them.

    Args:
        features: (n, D) float32 item features, the exact values (may be a memory map: only
            the rows the recheck needs are read from it when ``scan="float16"``).
        offset: the global index of row 0, so answers use gallery-wide indices.
        scan: ``"float32"`` scans ``features`` itself; ``"float16"`` scans a float16 copy held
            in memory, half the bytes, with a wider band (about 2**-11 * |q| instead of
            about D * 2**-24 * |q|) and so more rechecks.
    """

    def __init__(self, features: np.ndarray, offset: int = 0, scan: str = "float32") -> None:
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {list(SCANS)}, got {scan!r}")
        if features.ndim != 2 or features.dtype != np.float32:
            raise ValueError(f"features must be a 2-D float32 array, got {features.dtype} {features.shape}")
        self.features = features
        self.offset = int(offset)
        self.scan_dtype = scan
        n, d = features.shape
        self.dim = d
        norm, scan_norm, scan_error = 0.0, 0.0, 0.0
        copy = np.empty((n, d), dtype=np.float16) if scan == "float16" else None
        step = 1 << 16
        for start in range(0, n, step):
            block = np.asarray(features[start : start + step])
            norms = _row_norms(block)
            norm = max(norm, float(norms.max(initial=0.0)))
            if copy is None:
                continue
            if np.abs(block).max(initial=0.0) > _FLOAT16_MAX:
                raise ValueError(
                    "float16 scoring needs feature values within +-65504 (float16's range); these features "
                    "exceed it: score with scoring='exact' (float32) instead"
                )
            half = block.astype(np.float16)
            copy[start : start + step] = half
            scan_norm = max(scan_norm, float(_row_norms(half).max(initial=0.0)))
            scan_error = max(scan_error, float(_row_norms(half.astype(np.float64) - block).max(initial=0.0)))
        self.norm = norm * (1.0 + 1e-12)
        self._scan = features if copy is None else copy
        self.scan_norm = (norm if copy is None else scan_norm) * (1.0 + 1e-12)
        self.scan_error = scan_error * (1.0 + 1e-12)

    @property
    def num_items(self) -> int:
        return int(self.features.shape[0])

    def scan_bound(self, query_norms: np.ndarray) -> np.ndarray:
        """For each query, a bound on |scanned score - exact score| over this shard's items."""
        # Cauchy-Schwarz on both parts: |q . (f16 - f)| <= |q| |f16 - f| (the largest such
        # norm, measured when the copy was made) and the float32 sum's error over the
        # scanned values, gamma_D |q| |f_scan|.
        d = self.dim
        bound = query_norms * (_gamma(d, _U32) * self.scan_norm + self.scan_error) + d * _UNDERFLOW
        return bound * _SLACK

    def _scanned(self, queries: np.ndarray, start: int, stop: int) -> np.ndarray:
        block = self._scan[start:stop]
        if block.dtype != np.float32:
            block = block.astype(np.float32)
        return queries @ block.T

    def scan(
        self,
        queries: np.ndarray,
        targets: np.ndarray,
        history: np.ndarray | None = None,
        target_index: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact counts and, if ``history`` is given, the best item not shown yet.

        Args:
            queries: (B, D) float32 queries.
            targets: (B, D) float32 feature rows of each query's target (any item: it need
                not lie in this shard).
            history: (B, H) gallery-wide indices of items already shown, -1 padded; None when
                no best item is wanted.
            target_index: (B,) gallery-wide indices of the targets, if known: a target in this
                shard is then counted without a recheck (it always lies inside its own band).

        Returns:
            ``(counts, best)``: (B,) int64 numbers of this shard's items whose exact score is
            at least the target's, and (B,) int64 gallery-wide indices of the highest-scoring
            item not in ``history`` (ties: the lowest index; -1 if every item was shown).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        targets = np.ascontiguousarray(targets, dtype=np.float32)
        b, n = len(queries), self.num_items
        q64, t64 = queries.astype(np.float64), targets.astype(np.float64)
        q_norm = _row_norms(q64) * (1.0 + 1e-12)
        t_norm = _row_norms(t64) * (1.0 + 1e-12)
        # The target's score in float64: products exact, any summation order within gamma_D.
        r = np.einsum("ij,ij->i", q64, t64)
        r_error = _gamma(self.dim, _U64) * q_norm * t_norm * _SLACK
        err = self.scan_bound(q_norm)
        margin = (r_error + err) * _SLACK + np.abs(r) * 2.0**-50
        sure, possible = _up32(r + margin)[:, None], _down32(r - margin)[:, None]
        counts = np.zeros(b, dtype=np.int64)
        band: list[list[np.ndarray]] = [[] for _ in range(b)]
        best_scan = np.full(b, -np.inf, dtype=np.float32)
        candidates: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(b)]
        block = max(1, (_BLOCK_BYTES // 4) // max(1, b))
        own = None if target_index is None else np.asarray(target_index, dtype=np.int64) - self.offset
        for start in range(0, n, block):
            stop = min(n, start + block)
            s = self._scanned(queries, start, stop)
            above = s >= sure
            counts += np.count_nonzero(above, axis=1)
            maybe = s >= possible
            if own is not None:
                # The target scores exactly as well as itself: count it, recheck the others.
                mine = np.flatnonzero((own >= start) & (own < stop))
                maybe[mine, own[mine] - start] = False
                counts[mine] += 1
            open_rows = np.flatnonzero(np.count_nonzero(maybe, axis=1) > np.count_nonzero(above, axis=1))
            for i in open_rows:
                band[i].append(start + np.flatnonzero(maybe[i] & ~above[i]))
            if history is not None:
                lo, hi = self.offset + start, self.offset + stop
                seen_r, seen_c = np.nonzero((history >= lo) & (history < hi))
                s[seen_r, history[seen_r, seen_c] - lo] = -np.inf
                best_scan = np.maximum(best_scan, s.max(axis=1))
                live = np.isfinite(best_scan)
                floor = _down32(best_scan.astype(np.float64) - 2.0 * err)
                for i in np.flatnonzero(live):
                    picked = np.flatnonzero(s[i] >= floor[i])
                    if len(picked):
                        candidates[i].append((start + picked, s[i, picked]))
        for row in range(b):
            if band[row]:
                counts[row] += self._recheck(
                    queries[row], targets[row], r[row], q_norm[row], t_norm[row], np.concatenate(band[row])
                )
        best = np.full(b, -1, dtype=np.int64)
        if history is not None:
            floor = _down32(best_scan.astype(np.float64) - 2.0 * err)
            for i in np.flatnonzero(np.isfinite(best_scan)):
                local = np.concatenate([c for c, _ in candidates[i]])
                values = np.concatenate([v for _, v in candidates[i]])
                local = np.sort(local[values >= floor[i]])
                best[i] = self.offset + exact_best(queries[i], np.asarray(self.features[local]), local)
        return counts, best

    def _recheck(
        self,
        query: np.ndarray,
        target: np.ndarray,
        r: float,
        q_norm: float,
        t_norm: float,
        local: np.ndarray,
    ) -> int:
        """How many of rows ``local`` score exactly at least as well as ``target``."""
        rows = np.asarray(self.features[np.sort(local)])
        d = rows.astype(np.float64) @ query.astype(np.float64)
        bound = _gamma(self.dim, _U64) * q_norm * (self.norm + t_norm) * _SLACK + abs(r) * 2.0**-50
        diff = d - r
        count = int(np.count_nonzero(diff >= bound))
        # Outside the bound the sign of the exact difference is that of ``diff``; at or
        # inside it (ties, in practice) the exact sign decides.
        for k in np.flatnonzero((diff < bound) & (diff >= -bound)):
            count += _exact_sign(query, rows[k], target) >= 0
        return count
