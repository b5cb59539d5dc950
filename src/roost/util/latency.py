"""Latency figures kept cheaply on a hot path and read when metrics are scraped.

One writer per instance (the event loop, or the one database thread): no lock. The buckets are
cumulative-on-read, Prometheus style, so a scrape turns them into a histogram as they are.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

#: Upper bounds in seconds: from 50 µs (a routed stanza) to 5 s (a stalled disk).
BUCKETS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    5.0,
)


class LatencyStats:
    """Counts per bucket, their sum and number."""

    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of observations <= le), …, ("+Inf", n)]``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(BUCKETS, self.counts, strict=False):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out
