"""A dict that forgets its oldest entries beyond a size: for per-account caches a server keeps in
memory (last unavailable time, offline message counts), whose entries can always be read again
from storage. Without a bound they would grow with every account that ever logged in."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedDict(dict[K, V]):
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
