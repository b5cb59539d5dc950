"""Push notifications (XEP-0357) end to end: a raw client enables push, an app server written as a
slixmpp external component receives the notifications (detached session, gone session, a room
mention), and an app server that keeps failing loses its registration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.session import SessionState
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS, SM
from tests.integration.test_sasl2 import connect
from tests.support import sasl2
from tests.support.im import eventually
from tests.support.push_app import AppServer, start_app_server
from tests.support.raw import RawClient
from tests.support.sasl2 import Agent
from tests.support.server import RunningServer

APP = "push.localhost"
SECRET = "app-secret"
PUSH = "urn:xmpp:push:0"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningServer]:
    data_dir = tmp_path / "data"
    path = tmp_path / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["localhost"]
data_dir = "{data_dir}"

[[listen]]
kind = "c2s"
address = "127.0.0.1:0"

[[listen]]
kind = "component"
address = "127.0.0.1:0"

[storage]
url = "sqlite:///{data_dir / "roost.db"}"

[gc]
tuning = false

[components."{APP}"]
secret = "{SECRET}"

[push]
include_body = true
max_failures = 2
timeout_seconds = 3

[sm]
ack_every = 0
ack_after_seconds = 0
"""
    )
    server = create_server(load_config(path))
    await server.start()
    running = RunningServer(server, server.config.server.data_dir)
    for user in ("juliet", "romeo"):
        await running.add_user(f"{user}@localhost", "s3cret")
    try:
        yield running
    finally:
        await server.stop()


@pytest.fixture
async def app(running: RunningServer) -> AsyncIterator[AppServer]:
    app = await start_app_server(APP, SECRET, running.server.addresses["component"][1])
    try:
        yield app
    finally:
        app.disconnect()


async def login(running: RunningServer, user: str, *inline: Element) -> tuple[RawClient, str]:
    raw = await connect(running)
    result = await sasl2.scram(raw, user, "s3cret", agent=Agent(), inline=list(inline))
    assert result.ok
    return raw, result.authzid


async def iq(raw: RawClient, payload: Element, to: str | None = None) -> Element:
    el = Element("iq", "jabber:client", {"type": "set", "id": "push1", **({"to": to} if to else {})})
    el.append(payload)
    raw.send(el)
    while True:
        reply = await raw.element()
        if reply.name == "iq" and reply.attrs.get("id") == "push1":
            return reply


def enable(node: str, *, secret: str = "", body: bool = False) -> Element:
    el = Element("enable", PUSH, {"jid": APP, "node": node})
    x = el.add("x", DATA_FORMS, {"type": "submit"})
    fields = {"FORM_TYPE": "http://jabber.org/protocol/pubsub#publish-options"}
    if secret:
        fields["secret"] = secret
    if body:
        fields["include-body"] = "1"
    for var, value in fields.items():
        x.add("field", attrs={"var": var}).add("value", text=value)
    return el


def chat(to: str, body: str, type_: str = "chat") -> Element:
    msg = Element("message", "jabber:client", {"to": to, "type": type_, "id": body.replace(" ", "-")})
    msg.add("body", text=body)
    return msg


async def test_push_for_a_detached_session_with_body_and_options(
    running: RunningServer, app: AppServer
) -> None:
    juliet, jfull = await login(running, "juliet", Element("enable", SM, {"resume": "true"}))
    reply = await iq(juliet, enable("node-1", secret="s3kr1t", body=True))
    assert reply.attrs["type"] == "result"
    # Disco says the account supports push (§5).
    (session,) = running.server.sessions.resources("localhost", "juliet")
    juliet.writer.transport.abort()

    async def detached() -> bool:
        return session.state is SessionState.DETACHED

    await eventually(detached)
    romeo, rfull = await login(running, "romeo")
    romeo.send(chat(jfull, "wherefore art thou"))
    note = await app.next()
    assert note.frm == "juliet@localhost" and note.node == "node-1"
    assert note.summary == {
        "FORM_TYPE": "urn:xmpp:push:summary",
        "message-count": "1",
        "last-message-sender": rfull,
        "last-message-body": "wherefore art thou",
    }
    assert note.options == {
        "FORM_TYPE": "http://jabber.org/protocol/pubsub#publish-options",
        "secret": "s3kr1t",
    }
    # A chat state alone wakes nobody.
    state = Element("message", "jabber:client", {"to": jfull, "type": "chat"})
    state.add("composing", "http://jabber.org/protocol/chatstates")
    romeo.send(state)
    assert await app.nothing()
    romeo.close()


async def test_push_for_a_gone_account_counts_and_hides_the_body(
    running: RunningServer, app: AppServer
) -> None:
    juliet, _ = await login(running, "juliet")
    assert (await iq(juliet, enable("node-2"))).attrs["type"] == "result"
    juliet.send_raw("</stream:stream>")
    juliet.close()

    async def gone() -> bool:
        return not running.server.sessions.resources("localhost", "juliet")

    await eventually(gone)
    romeo, _ = await login(running, "romeo")
    romeo.send(chat("juliet@localhost", "one"))
    first = await app.next()
    assert first.summary["message-count"] == "1" and "last-message-body" not in first.summary
    romeo.send(chat("juliet@localhost", "two"))
    assert (await app.next()).summary["message-count"] == "2"
    # Back online: the count starts over; then gone again.
    back, _ = await login(running, "juliet")
    back.send_raw("</stream:stream>")
    back.close()
    await eventually(gone)
    romeo.send(chat("juliet@localhost", "three"))
    assert (await app.next()).summary["message-count"] == "1"
    romeo.close()


async def test_failing_app_server_loses_the_registration_and_disable_works(
    running: RunningServer, app: AppServer
) -> None:
    juliet, _ = await login(running, "juliet")
    assert (await iq(juliet, enable("node-3"))).attrs["type"] == "result"
    assert (await iq(juliet, enable("node-4"))).attrs["type"] == "result"
    assert (await iq(juliet, Element("disable", PUSH, {"jid": APP, "node": "node-4"}))).attrs[
        "type"
    ] == "result"
    bad = await iq(juliet, Element("enable", PUSH, {"jid": APP}))
    assert bad.attrs["type"] == "error"  # §5: a node is required
    juliet.send_raw("</stream:stream>")
    juliet.close()
    store = running.server.storage.map("push")
    assert list((await store.items("localhost", "juliet")).keys()) == [f"{APP}\nnode-3"]

    async def gone() -> bool:
        return not running.server.sessions.resources("localhost", "juliet")

    await eventually(gone)
    app.fail = "item-not-found"
    romeo, _ = await login(running, "romeo")
    romeo.send(chat("juliet@localhost", "first"))
    await app.next()

    async def failed_once() -> bool:
        reg = await store.get("localhost", "juliet", f"{APP}\nnode-3")
        return isinstance(reg, dict) and reg.get("failures") == 1

    await eventually(failed_once)
    romeo.send(chat("juliet@localhost", "second"))
    await app.next()

    async def removed() -> bool:
        return await store.items("localhost", "juliet") == {}

    await eventually(removed)
    romeo.send(chat("juliet@localhost", "third"))
    assert await app.nothing()
    romeo.close()


async def test_push_feature_on_the_account(running: RunningServer) -> None:
    juliet, _ = await login(running, "juliet")
    query = Element("iq", "jabber:client", {"type": "get", "id": "d1", "to": "juliet@localhost"})
    query.add("query", "http://jabber.org/protocol/disco#info")
    juliet.send(query)
    reply = await juliet.element()
    features = {f.attrs.get("var") for f in reply.first().elements("feature")}  # type: ignore[union-attr]
    assert PUSH in features
    juliet.close()


async def join(raw: RawClient, room: str, nick: str) -> None:
    presence = Element("presence", "jabber:client", {"to": f"{room}/{nick}"})
    presence.add("x", "http://jabber.org/protocol/muc")
    raw.send(presence)
    while True:
        el = await raw.element()
        if el.name == "presence" and el.attrs.get("from") == f"{room}/{nick}":
            assert el.attrs.get("type") != "error", el
            return


async def test_push_for_a_room_mention_in_a_detached_session(running: RunningServer, app: AppServer) -> None:
    room = "verona@conference.localhost"
    juliet, _ = await login(running, "juliet", Element("enable", SM, {"resume": "true"}))
    assert (await iq(juliet, enable("node-5", body=True))).attrs["type"] == "result"
    await join(juliet, room, "jules")
    # XEP-0045 §10.1.2: an instant room, so that others may enter.
    owner = Element("query", "http://jabber.org/protocol/muc#owner")
    owner.add("x", DATA_FORMS, {"type": "submit"})
    configure = Element("iq", "jabber:client", {"type": "set", "id": "push1", "to": room})
    configure.append(owner)
    juliet.send(configure)
    while True:
        el = await juliet.element()
        if el.name == "iq":
            assert el.attrs["type"] == "result", el
            break
    romeo, _ = await login(running, "romeo")
    await join(romeo, room, "romeo")
    (session,) = running.server.sessions.resources("localhost", "juliet")
    assert session.data.get("push_nicks") == {room: "jules"}
    juliet.writer.transport.abort()

    async def detached() -> bool:
        return session.state is SessionState.DETACHED

    await eventually(detached)
    romeo.send(chat(room, "good morrow, all", "groupchat"))
    assert await app.nothing(1.0), "no mention, no push"
    romeo.send(chat(room, "Jules, art thou awake?", "groupchat"))
    note = await app.next()
    assert note.summary["last-message-sender"] == f"{room}/romeo"
    assert note.summary["last-message-body"] == "Jules, art thou awake?"
    romeo.close()


def bookmark(room: str, nick: str, *settings: tuple[str, dict[str, str]]) -> Element:
    """A XEP-0402 publish of ``room``'s bookmark with XEP-0492 notification settings."""
    conference = Element("conference", "urn:xmpp:bookmarks:1", {"autojoin": "true"})
    conference.add("nick", text=nick)
    notify = conference.add("extensions").add("notify", "urn:xmpp:notification-settings:1")
    for name, attrs in settings:
        notify.add(name, attrs=attrs)
    pubsub = Element("pubsub", "http://jabber.org/protocol/pubsub")
    pubsub.add("publish", attrs={"node": "urn:xmpp:bookmarks:1"}).add("item", attrs={"id": room}).append(
        conference
    )
    form = pubsub.add("publish-options").add("x", DATA_FORMS, {"type": "submit"})
    for var, value in (
        ("FORM_TYPE", "http://jabber.org/protocol/pubsub#publish-options"),
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ):
        form.add("field", attrs={"var": var}).add("value", text=value)
    return pubsub


async def test_push_for_every_message_of_a_marked_room(running: RunningServer, app: AppServer) -> None:
    """XEP-0492 in the room's bookmark: 'always' for a phone wakes it for every message, 'never'
    not even for a mention."""
    room = "capulet@conference.localhost"
    phone = {"identity-category": "client", "identity-type": "phone"}
    juliet, _ = await login(running, "juliet", Element("enable", SM, {"resume": "true"}))
    assert (await iq(juliet, enable("node-6", body=True))).attrs["type"] == "result"
    published = await iq(juliet, bookmark(room, "jules", ("always", phone), ("on-mention", {})))
    assert published.attrs["type"] == "result", published
    await join(juliet, room, "jules")
    owner = Element("query", "http://jabber.org/protocol/muc#owner")
    owner.add("x", DATA_FORMS, {"type": "submit"})
    assert (await iq(juliet, owner, to=room)).attrs["type"] == "result"
    romeo, _ = await login(running, "romeo")
    await join(romeo, room, "romeo")
    (session,) = running.server.sessions.resources("localhost", "juliet")
    juliet.writer.transport.abort()

    async def detached() -> bool:
        return session.state is SessionState.DETACHED

    await eventually(detached)
    romeo.send(chat(room, "good morrow, all", "groupchat"))
    note = await app.next()
    assert note.summary["last-message-body"] == "good morrow, all", "a marked room: every message"
    # Another client of Juliet's marks the room 'never' for phones (and leaves).
    other, _ = await login(running, "juliet")
    assert (await iq(other, bookmark(room, "jules", ("never", phone), ("always", {})))).attrs[
        "type"
    ] == "result"
    other.close()
    romeo.send(chat(room, "Jules, art thou awake?", "groupchat"))
    assert await app.nothing(1.0), "'never': not even a mention wakes the phone"
    romeo.close()
