"""Small helpers for tests that speak raw XML: send an IQ, wait for its answer, read error conditions."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from roost.xml.element import Element
from tests.support.raw import RawClient

_ids = itertools.count(1)


async def ask(client: RawClient, payload: str, *, type_: str = "get", to: str | None = None) -> Element:
    """Send ``<iq>`` with ``payload`` (XML text) and return the answer with the same id."""
    iq_id = f"q{next(_ids)}"
    to_attr = f" to='{to}'" if to is not None else ""
    client.send_raw(f"<iq type='{type_}' id='{iq_id}'{to_attr}>{payload}</iq>")
    return await answer(client, iq_id)


async def answer(client: RawClient, iq_id: str, timeout: float = 5) -> Element:
    """The next IQ result/error with ``iq_id`` (other stanzas are skipped)."""
    while True:
        el = await client.element(timeout)
        if el.name == "iq" and el.attrs.get("id") == iq_id and el.attrs.get("type") in ("result", "error"):
            return el


async def next_stanza(client: RawClient, name: str, timeout: float = 5) -> Element:
    """The next stanza called ``name`` (others are skipped)."""
    while True:
        el = await client.element(timeout)
        if el.name == name:
            return el


async def nothing_arrives(client: RawClient, name: str | None = None, wait: float = 0.3) -> None:
    """Fail if a stanza (called ``name``, if given) arrives within ``wait`` seconds."""
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        while True:
            el = await client.element(timeout=wait)
            if name is None or el.name == name:
                return
