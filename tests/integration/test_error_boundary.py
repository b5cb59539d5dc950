"""A failing filter or handler harms only the stanza it failed on (architecture review §1).

(a) A ``deliver/message`` filter that raises on the *recipient's* side must not drop the sender's
connection. (b) An exception while a session's queue drains must not strand or reorder the stanzas
queued behind the failing one (RFC 6120 §10.1).
"""

from __future__ import annotations

from typing import Any

import pytest

from roost.core import hooks
from roost.stanza import error_condition
from tests.support.raw import RawClient
from tests.support.server import RunningServer


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    for user in ("romeo", "juliet"):
        await server.add_user(f"{user}@localhost", "s3cret")


def ping(iq_id: str) -> str:
    return f"<iq type='get' id='{iq_id}'><ping xmlns='urn:xmpp:ping'/></iq>"


async def answers(client: RawClient, count: int) -> list[tuple[str, str]]:
    """The next ``count`` IQ answers as (id, type), skipping anything else."""
    got: list[tuple[str, str]] = []
    while len(got) < count:
        el = await client.element()
        if el.name == "iq" and el.attrs.get("type") in ("result", "error"):
            got.append((el.attrs.get("id", ""), el.attrs["type"]))
    return got


async def test_recipient_side_filter_failure_leaves_the_sender_connected(server: RunningServer) -> None:
    host = server.server.hosts["localhost"]

    def explode(value: Any) -> Any:
        session, event = value
        if session.jid.local == "juliet" and event.stanza.name == "message":
            raise RuntimeError("recipient-side filter bug")
        return value

    host.bus.on(hooks.DELIVER_MESSAGE, explode)
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    juliet = await RawClient.login(server.c2s_port, "juliet", "s3cret", "j")
    juliet.send_raw(ping("ready"))  # juliet's session is fully set up (blocklist loaded)
    assert await answers(juliet, 1) == [("ready", "result")]
    romeo.send_raw("<message to='juliet@localhost/j' type='chat' id='m1'><body>hi</body></message>")
    romeo.send_raw(ping("after"))
    # The message could not be delivered: romeo learns it, and his stream goes on.
    error = await romeo.element()
    assert error.name == "message" and error.attrs.get("type") == "error"
    assert error_condition(error) == "internal-server-error"
    assert await answers(romeo, 1) == [("after", "result")]
    # Juliet's session is unharmed too.
    juliet.send_raw(ping("still"))
    assert await answers(juliet, 1) == [("still", "result")]


async def test_a_failing_stanza_does_not_strand_or_reorder_the_ones_behind_it(
    server: RunningServer,
) -> None:
    host = server.server.hosts["localhost"]

    def explode(event: Any) -> Any:
        if event.stanza.attrs.get("id") == "bad":
            raise RuntimeError("filter bug")
        return event

    host.bus.on(hooks.PRE_IQ, explode)
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    # Juliet is offline: the message goes to offline storage, asynchronously, so what follows queues.
    romeo.send_raw("<message to='juliet@localhost' type='chat' id='m1'><body>later</body></message>")
    romeo.send_raw(ping("bad"))
    romeo.send_raw(ping("p2"))
    romeo.send_raw(ping("p3"))
    assert await answers(romeo, 3) == [("bad", "error"), ("p2", "result"), ("p3", "result")]
