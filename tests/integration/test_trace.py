"""`--log-level debug`: stanza traces in and out, bodies masked unless [log] trace_bodies allows them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.support.clients import connect
from tests.support.server import running_server


@pytest.mark.parametrize("bodies", [False, True])
async def test_debug_traces_stanzas(tmp_path: Path, caplog: pytest.LogCaptureFixture, bodies: bool) -> None:
    caplog.set_level(logging.DEBUG, logger="roost.trace")
    extra = "[log]\ntrace_bodies = true\n" if bodies else ""
    async with running_server(tmp_path, extra) as running:
        await running.add_user("alice@localhost", "wonderland")
        await running.add_user("bob@localhost", "builder")
        alice = await connect("alice@localhost/a", "wonderland", running.c2s_port)
        bob = await connect("bob@localhost/b", "builder", running.c2s_port)
        alice.send_message(mto="bob@localhost/b", mbody="secret plans")
        await asyncio.wait_for(bob.received.get(), 10)
        alice.disconnect()
        bob.disconnect()
    traces = [r.getMessage() for r in caplog.records if r.name == "roost.trace"]
    inbound = [t for t in traces if t.startswith("in  alice@localhost/a:") and "<message" in t]
    outbound = [t for t in traces if t.startswith("out bob@localhost/b:") and "<message" in t]
    assert inbound and outbound
    if bodies:
        assert "<body>secret plans</body>" in outbound[0]
    else:
        assert "secret plans" not in "\n".join(traces)
        assert "<body>[12 characters]</body>" in outbound[0]


async def test_no_trace_filters_without_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roost.trace")
    async with running_server(tmp_path) as running:
        module = running.server.hosts["localhost"].modules.loaded["trace"]
        assert module._undo == []  # type: ignore[attr-defined]
