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
_last_us = 0


def time_ordered_id(now_us: int | None = None) -> str:
    """A new id; ``now_us`` (microseconds since the epoch) defaults to the current time."""
    global _last_us
    us = time.time_ns() // 1000 if now_us is None else now_us
    if us <= _last_us:
        us = _last_us + 1
    if not 0 <= us <= _MAX_US:
        raise ValueError(f"timestamp {us} µs is outside the id range")
    _last_us = us
    return base64.b32hexencode(us.to_bytes(7, "big") + os.urandom(8)).decode("ascii")


def id_timestamp(item_id: str) -> float | None:
    """Unix seconds encoded in an id made by :func:`time_ordered_id`; None if it is not one."""
    if len(item_id) != ID_LENGTH:
        return None
    try:
        raw = base64.b32hexdecode(item_id)
    except (ValueError, TypeError):
        return None
    return int.from_bytes(raw[:7], "big") / 1_000_000
