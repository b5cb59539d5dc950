"""Time-ordered unique ids for stanza-ids (XEP-0359) and archive items (offline, MAM).

An id is 15 bytes rendered as 24 characters of RFC 4648 "base32hex" (``0-9A-V``), an alphabet whose
character order is its numeric order, so ids sort as the bytes do:

* 7 bytes: microseconds since the Unix epoch (good until the year 4253), strictly increasing within
  the process (a clock that stalls or steps back is bumped one microsecond past the last id);
* 8 bytes: from the OS random source, so ids are unpredictable (XEP-0359 §4 "SHOULD be
  unpredictable") and ids made on different nodes at the same microsecond do not collide.

Why this shape: MAM pages by id and by time; an id that sorts by time lets an archive use it as its
order key and recover the timestamp without a lookup (:func:`id_timestamp`).
"""

from __future__ import annotations

import base64
import os
import time
from typing import Final

ID_LENGTH: Final = 24
_MAX_US: Final = (1 << 56) - 1
#: base32hex digits, and every pair of them: one table lookup renders 10 bits.
_DIGITS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_PAIRS: Final = tuple(a + b for a in _DIGITS for b in _DIGITS)
_RANDOM_BATCH: Final = 4096  # bytes read from the OS at a time (512 ids per system call)

_last_us = 0
_random = b""
_random_at = 0


def time_ordered_id(now_us: int | None = None) -> str:
    """A new id; ``now_us`` (microseconds since the epoch) defaults to the current time."""
    global _last_us
    us = time.time_ns() // 1000 if now_us is None else now_us
    if us <= _last_us:
        us = _last_us + 1
    if not 0 <= us <= _MAX_US:
        raise ValueError(f"timestamp {us} µs is outside the id range")
    _last_us = us
    # The 120 bits as two 60-bit halves (small ints: cheaper shifts than one 120-bit int), each
    # rendered as six 10-bit pairs; measured 1.2 µs against 1.9 µs for a loop over the whole number.
    rand = int.from_bytes(random_bytes(8), "big")
    hi = (us << 4) | (rand >> 60)
    lo = rand & 0xFFFFFFFFFFFFFFF
    p = _PAIRS
    return (
        p[hi >> 50]
        + p[(hi >> 40) & 1023]
        + p[(hi >> 30) & 1023]
        + p[(hi >> 20) & 1023]
        + p[(hi >> 10) & 1023]
        + p[hi & 1023]
        + p[lo >> 50]
        + p[(lo >> 40) & 1023]
        + p[(lo >> 30) & 1023]
        + p[(lo >> 20) & 1023]
        + p[(lo >> 10) & 1023]
        + p[lo & 1023]
    )


def random_bytes(count: int) -> bytes:
    """``count`` bytes from the OS random source, read in batches (one system call per 4 KiB: stream
    ids and SCRAM nonces are made several times per login)."""
    global _random, _random_at
    if count > _RANDOM_BATCH // 4:
        return os.urandom(count)
    at = _random_at
    if at + count > len(_random):
        _random = os.urandom(_RANDOM_BATCH)
        at = 0
    _random_at = at + count
    return _random[at : at + count]


def random_token(count: int) -> str:
    """URL-safe text of ``count`` random bytes (like ``secrets.token_urlsafe``)."""
    return base64.urlsafe_b64encode(random_bytes(count)).rstrip(b"=").decode("ascii")


def id_timestamp(item_id: str) -> float | None:
    """Unix seconds encoded in an id made by :func:`time_ordered_id`; None if it is not one."""
    if len(item_id) != ID_LENGTH or not item_id.isalnum() or not item_id.isascii():
        return None
    try:
        n = int(item_id, 32)  # Python's base 32 digits are exactly base32hex's (any case)
    except ValueError:
        return None
    return (n >> 64) / 1_000_000
