"""Time-ordered ids (stanza-ids, archive ids): unique, sortable by time, timestamp recoverable."""

from __future__ import annotations

import re
import time

import pytest

from roost.util import ids as ids_module
from roost.util.ids import ID_LENGTH, id_timestamp, random_bytes, random_token, time_ordered_id


@pytest.fixture(autouse=True)
def restore_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that pass far-future times must not leave the process's id clock there."""
    monkeypatch.setattr(ids_module, "_last_us", ids_module._last_us)


def test_ids_are_unique_and_sort_in_creation_order_even_within_one_microsecond() -> None:
    ids = [time_ordered_id(now_us=1_700_000_000_000_000) for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    assert all(len(i) == ID_LENGTH and i.isalnum() for i in ids)


def test_a_clock_stepping_back_does_not_break_the_order() -> None:
    later = time_ordered_id(now_us=4_000_000_000_000_000)
    earlier_clock = time_ordered_id(now_us=3_000_000_000_000_000)
    assert earlier_clock > later


def test_timestamp_is_recovered_from_the_id() -> None:
    before = time.time()
    made = time_ordered_id()
    stamp = id_timestamp(made)
    assert stamp is not None and stamp >= before - 1


@pytest.mark.parametrize(
    "text", ["", "short", "x" * ID_LENGTH, "0" * 23 + "_", " " + "0" * 23, "é" * ID_LENGTH]
)
def test_foreign_ids_have_no_timestamp(text: str) -> None:
    assert id_timestamp(text) is None


def test_out_of_range_timestamps_are_refused() -> None:
    with pytest.raises(ValueError):
        time_ordered_id(now_us=1 << 56)


def test_random_bytes_come_fresh_across_batches() -> None:
    seen = {random_bytes(16) for _ in range(2000)}  # 32 KB: crosses several 4 KiB refills
    assert len(seen) == 2000 and all(len(b) == 16 for b in seen)
    assert len(random_bytes(5000)) == 5000  # larger than a batch: read directly


def test_random_tokens_are_url_safe_text() -> None:
    token = random_token(12)
    assert len(token) == 16 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len({random_token(12) for _ in range(1000)}) == 1000
