"""BoundedDict: per-account caches forget their oldest entries instead of growing forever."""

from __future__ import annotations

import pytest

from roost.util.bounded import BoundedDict


def test_oldest_entries_go_first_and_updates_do_not_evict() -> None:
    d: BoundedDict[str, int] = BoundedDict(3)
    for key in "abc":
        d[key] = 1
    d["a"] = 2  # an update: nothing is dropped
    assert d == {"a": 2, "b": 1, "c": 1}
    d["d"] = 1
    assert list(d) == ["b", "c", "d"]
    del d["c"]
    d["e"] = 1
    assert list(d) == ["b", "d", "e"] and len(d) == 3


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        BoundedDict(0)
