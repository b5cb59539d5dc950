"""Dicts for the tables a server keeps per account, shaped for a long-running process.

:class:`BoundedDict` forgets its oldest entries beyond a size: for per-account caches (last
unavailable time, offline message counts) whose entries can always be read again from storage.
Without a bound they would grow with every account that ever logged in.

:class:`TrackedDict` stays visible to the cyclic collector, so the ``[gc]`` policy freezes it once
and no collection walks it again (docs/gc.md).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TrackedDict(dict[K, V]):
    """A plain dict that the cyclic collector never untracks.

    CPython untracks an exact ``dict`` during a full collection when every key and value is untracked
    (strings, numbers, tuples of them), and tracks it again, as a *young* object, at the next insertion
    of a freshly built tuple key such as ``(domain, user)``. A table of all online accounts shaped like
    that is therefore walked entry by entry by every periodic collection instead of staying frozen: at
    10,000 sessions two of them made ~40,000 references per collection, most of its ~10 ms. Instances
    of a dict subclass are always tracked, so this one is frozen once and left alone.
    """

    __slots__ = ()


class BoundedDict(TrackedDict[K, V]):
    """Insertion-ordered; setting a new key beyond ``limit`` entries drops the oldest one.

    Only ``d[key] = value`` enforces the bound (do not use ``update``/``setdefault`` on it).
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self and len(self) >= self.limit:
            del self[next(iter(self))]
        super().__setitem__(key, value)
