"""Latency histogram with fixed logarithmic bins, so percentiles can be computed from rollups.

Bin `i` holds latencies `LOWER[i] <= latency_ms < LOWER[i + 1]`; the lower bounds are
`floor(2 ** (k / 2))` for k = 0..40 plus 0 (40 bins: 1, 2, 4, 5, 8, 11, 16, 22, 32, ... ms, the last
one open-ended from 1 048 576 ms, about 17.5 minutes). Each bin spans a factor of about sqrt(2).

Precision (documented in the API): a percentile is computed by nearest rank over the bin counts,
and reported as the bin's representative value, the geometric mean of its smallest and largest
integer latency. The reported value always lies in the same bin as the exact nearest-rank
percentile, so it is within about +-19% of it (exact below 2 ms; the open-ended last bin reports its
lower bound). Counts add, so rollups merge exactly: a percentile over a month of hourly rollups
equals the one computed from the raw records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["BINS", "COLUMNS", "LOWER", "bin_of", "percentile", "raw_bin_sums", "representative"]

LOWER: tuple[int, ...] = tuple(sorted({0} | {int(2 ** (k / 2)) for k in range(41)}))
BINS = len(LOWER)
COLUMNS: tuple[str, ...] = tuple(f"lat_{i:02d}" for i in range(BINS))


def bin_of(latency_ms: int) -> int:
    """The bin of one latency (the Python twin of `raw_bin_sums`, used by tests and benches)."""
    lo, hi = 0, BINS - 1
    while lo < hi:  # the last bin whose lower bound is <= latency
        mid = (lo + hi + 1) // 2
        if LOWER[mid] <= latency_ms:
            lo = mid
        else:
            hi = mid - 1
    return lo


def representative(i: int) -> int:
    if i == BINS - 1 or LOWER[i] == 0:
        return LOWER[i]
    return round(math.sqrt(LOWER[i] * (LOWER[i + 1] - 1)))


def percentile(counts: Sequence[int], p: int) -> int | None:
    """Nearest-rank percentile `p` (1..100) over bin counts; None when nothing was measured."""
    total = sum(counts)
    if total == 0:
        return None
    rank = -(-p * total // 100)  # ceil(p/100 * total), in integers
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return representative(i)
    raise AssertionError("unreachable: rank <= total")


def raw_bin_sums(column: str = "latency_ms") -> str:
    """SQL select-list that counts a raw table's rows per bin (NULL latency counts nowhere)."""
    parts = []
    for i, low in enumerate(LOWER):
        upper = f" AND {column} < {LOWER[i + 1]}" if i + 1 < BINS else ""
        parts.append(f"SUM(CASE WHEN {column} >= {low}{upper} THEN 1 ELSE 0 END)")
    return ", ".join(parts)
