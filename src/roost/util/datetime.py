"""XEP-0082 date/time profiles."""

from __future__ import annotations

from datetime import UTC, datetime


def format_datetime(value: datetime | float) -> str:
    """XEP-0082 DateTime in UTC with millisecond precision: ``2026-11-25T01:02:03.456Z``."""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_datetime(text: str) -> datetime:
    """Parse a XEP-0082 DateTime (``Z`` or ``±hh:mm`` offset, optional fractions); ValueError if bad."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("a XEP-0082 DateTime needs a time zone")
    return value.astimezone(UTC)


def format_tzo(offset_seconds: int) -> str:
    """XEP-0082 time zone offset: ``+01:00``, ``-05:30``, ``+00:00``."""
    sign = "-" if offset_seconds < 0 else "+"
    offset_seconds = abs(offset_seconds)
    return f"{sign}{offset_seconds // 3600:02d}:{offset_seconds % 3600 // 60:02d}"
