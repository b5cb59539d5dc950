"""Small statistics helpers (nearest-rank percentiles; no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of durations given in seconds, in milliseconds."""
    if not values:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": ordered[-1] * 1000}
