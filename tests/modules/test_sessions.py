"""The session manager: binding, conflicts, limits, and the one place bound/closed events fire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from roost.core import hooks
from roost.core.session import SessionState
from roost.xml.element import Element
from tests.support.scenario import Harness, ScriptedSession, parse


def held_until(gate: asyncio.Future[None], matches: Callable[[Element], bool]) -> Callable[[Any], Any]:
    """A delivery filter that holds the first stanzas ``matches`` accepts until ``gate`` is done (as a
    filter waiting on storage would)."""

    def hold(value: Any) -> Any:
        if matches(value[1].stanza) and not gate.done():

            async def later() -> Any:
                await gate
                return value

            return later()
        return value

    return hold


def record(h: Harness, hook: Any) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def handler(event: hooks.SessionEvent) -> None:
        seen.append((event.session.jid_str, event.reason))

    h.server.hosts["localhost"].bus.on(hook, handler)
    return seen


async def test_bound_and_closed_fire_once_each(h: Harness) -> None:
    bound = record(h, hooks.SESSION_BOUND)
    closed = record(h, hooks.SESSION_CLOSED)
    romeo = await h.login("romeo/a")
    assert bound == [("romeo@localhost/a", "")]
    assert romeo.state is SessionState.BOUND
    romeo.close(None, "logout")
    romeo.close(None, "logout")  # twice is harmless
    assert h.server.sessions.end(romeo, "again") is False
    await h.settle()
    assert closed == [("romeo@localhost/a", "logout")]
    assert romeo.state is SessionState.CLOSED
    assert h.server.sessions.get(romeo.jid) is None


async def test_a_resource_conflict_replaces_the_older_session(h: Harness) -> None:
    closed = record(h, hooks.SESSION_CLOSED)
    old = await h.login("romeo/phone")
    new = await h.login("romeo/phone")
    assert old.state is SessionState.CLOSED
    assert h.server.sessions.get(new.jid) is new
    assert closed == [("romeo@localhost/phone", "replaced")]
    assert h.server.sessions.resources("localhost", "romeo") == [new]


async def test_server_generated_resources_never_clash(h: Harness) -> None:
    manager = h.server.sessions
    await h.add_user("romeo")
    jids = set()
    for _ in range(10):
        session = ScriptedSession(h)
        jids.add(manager.bind(session, "localhost", "romeo", None))
    assert len(jids) == 10
    assert len(manager.resources("localhost", "romeo")) == 10


async def test_too_many_resources_is_refused_and_leaves_the_table_clean(tmp_path: Any) -> None:
    async with Harness.running(tmp_path, "[c2s]\nmax_resources = 2\n") as h:
        await h.login("romeo/a")
        await h.login("romeo/b")
        with pytest.raises(ValueError, match="too many resources"):
            h.server.sessions.bind(ScriptedSession(h), "localhost", "romeo", "c")
        assert len(h.server.sessions.resources("localhost", "romeo")) == 2
        # Taking over an existing resource is not one more.
        await h.login("romeo/a")
        assert len(h.server.sessions.resources("localhost", "romeo")) == 2


async def test_a_session_never_bound_ends_without_events(h: Harness) -> None:
    closed = record(h, hooks.SESSION_CLOSED)
    session = ScriptedSession(h)
    assert h.server.sessions.end(session, "disconnect") is False
    await h.settle()
    assert closed == []
    assert session.state is SessionState.CLOSED


async def test_modules_unloaded_leave_no_handler_behind(h: Harness) -> None:
    from roost.core.modules import Module

    host = h.server.hosts["localhost"]
    before = host.bus.handler_count()
    await host.modules.unload_all()
    after = host.bus.handler_count()
    assert 0 < after < before
    # What stays belongs to the core (account removal, GC policy), not to a module.
    for entries in host.bus._handlers.values():
        for entry in entries:
            assert not isinstance(getattr(entry.handler, "__self__", None), Module), entry.handler
    assert host.iq.namespaces() == set()


async def test_an_iq_without_to_is_answered_for_the_account(h: Harness) -> None:
    romeo = await h.login("romeo")
    reply = await romeo.iq("<ping xmlns='urn:xmpp:ping'/>")  # RFC 6120 §10.3.3
    assert reply.attrs["type"] == "result"


async def test_a_response_with_a_malformed_to_is_dropped(h: Harness) -> None:
    romeo = await h.login("romeo")
    await romeo.submit("<iq type='result' id='r1' to='@@bad@@'/><iq type='error' id='r2' to='a@b@c'/>")
    romeo.expect_nothing()  # RFC 6120 §8.2.3: never answered
    await romeo.submit("<iq type='get' id='g1' to='@@bad@@'><ping xmlns='urn:xmpp:ping'/></iq>")
    romeo.expect(
        "<iq type='error' id='g1'><error>"
        "<jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )


async def test_a_waiting_delivery_filter_keeps_that_recipients_order_and_holds_nobody_else(
    h: Harness,
) -> None:
    import asyncio

    romeo = await h.login("romeo")
    juliet = await h.login("juliet")
    nurse = await h.login("nurse")
    gate = asyncio.get_running_loop().create_future()

    slow_first = held_until(gate, lambda stanza: stanza.find_text("body") == "1")
    h.server.hosts["localhost"].bus.on(hooks.DELIVER_MESSAGE, slow_first)
    # receive(), not submit(): submit settles, which would wait for the gated delivery.
    for n in ("1", "2", "3"):
        romeo.receive(parse(f"<message to='juliet@localhost/juliet' type='chat'><body>{n}</body></message>"))
    romeo.receive(parse("<message to='nurse@localhost/nurse' type='chat'><body>x</body></message>"))
    for _ in range(5):
        await asyncio.sleep(0)
    nurse.expect("<message><body>x</body></message>")  # another recipient is not held
    juliet.expect_nothing()  # 2 and 3 wait behind 1
    gate.set_result(None)
    await h.settle()
    juliet.expect(
        "<message><body>1</body></message><message><body>2</body></message><message><body>3</body></message>"
    )


async def test_a_message_whose_delivery_waited_past_the_recipients_logout_goes_offline(h: Harness) -> None:
    """A delivery filter waits (storage) while the recipient logs out: the message is not dropped
    but handled as if sent to an unavailable resource (RFC 6121 §8.5.3.2.1): offline storage."""
    import asyncio

    romeo = await h.login("romeo")
    await romeo.submit("<presence/>")
    juliet = await h.login("juliet")
    await juliet.submit("<presence/>")
    romeo.clear()
    juliet.clear()
    gate = asyncio.get_running_loop().create_future()

    slow = held_until(gate, lambda stanza: stanza.find_text("body") == "late")
    h.server.hosts["localhost"].bus.on(hooks.DELIVER_MESSAGE, slow)
    romeo.receive(parse("<message to='juliet@localhost' type='chat' id='m1'><body>late</body></message>"))
    for _ in range(5):
        await asyncio.sleep(0)
    juliet.close(None, "logout")
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set_result(None)
    await h.settle()
    juliet.expect_nothing()
    romeo.expect_nothing()  # no error: nothing was lost
    again = await h.login("juliet/phone")
    await again.submit("<presence/>")
    delivered = [s for s in again.received if s.name == "message"]
    assert [m.find_text("body") for m in delivered] == ["late"]


async def test_an_iq_request_whose_delivery_waited_past_the_recipients_logout_gets_an_error(
    h: Harness,
) -> None:
    """The IQ side of the same race: the requester learns the recipient went away (RFC 6120 §8.3)
    instead of waiting for an answer that will never come."""
    import asyncio

    romeo = await h.login("romeo")
    juliet = await h.login("juliet")
    romeo.clear()
    gate = asyncio.get_running_loop().create_future()

    slow = held_until(gate, lambda stanza: stanza.attrs.get("id") == "v1")
    h.server.hosts["localhost"].bus.on(hooks.DELIVER_IQ, slow)
    romeo.receive(
        parse("<iq to='juliet@localhost/juliet' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    )
    for _ in range(5):
        await asyncio.sleep(0)
    juliet.close(None, "logout")
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set_result(None)
    await h.settle()
    errors = [s for s in romeo.received if s.name == "iq" and s.attrs.get("id") == "v1"]
    assert [e.attrs.get("type") for e in errors] == ["error"]
    assert errors[0].find("error") is not None
