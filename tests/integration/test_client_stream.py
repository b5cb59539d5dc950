"""Roost's own client role (the initiating stream core) logs in to the real server over TCP and TLS."""

from __future__ import annotations

from roost.jid import JID
from roost.stream.client import ClientSettings
from roost.stream.core import Closed, Established
from roost.stream.events import Authenticated, AuthFailed, Bound, NeedTls
from roost.xml.element import Element
from roost.xml.ns import PING
from tests.support.server import RunningServer
from tests.support.stream_client import StreamClient


async def test_starttls_scram_plus_bind_ping_and_chat(server: RunningServer) -> None:
    await server.add_user("juliet@localhost", "pencil")
    await server.add_user("romeo@localhost", "s3cret")
    juliet = await StreamClient.connect(
        server.c2s_port, ClientSettings("localhost", "juliet", "pencil", "balcony")
    )
    assert isinstance(await juliet.login(), Established)
    assert NeedTls() in juliet.events
    # The server offers -PLUS (channel binding over real TLS): the client takes the strongest.
    assert Authenticated("localhost", "juliet", "SCRAM-SHA-512-PLUS") in juliet.events
    assert Bound(JID("juliet", "localhost", "balcony")) in juliet.events

    juliet.send(
        Element(
            "iq", "jabber:client", {"type": "get", "id": "p1", "to": "localhost"}, [Element("ping", PING)]
        )
    )
    pong = await juliet.next_stanza()
    assert pong.name == "iq" and pong.attrs["type"] == "result" and pong.attrs["id"] == "p1"

    romeo = await StreamClient.connect(
        server.c2s_port, ClientSettings("localhost", "romeo", "s3cret", "garden")
    )
    assert isinstance(await romeo.login(), Established)
    message = Element("message", "jabber:client", {"to": "juliet@localhost/balcony", "type": "chat"})
    message.add("body", text="hello")
    romeo.send(message)
    received = await juliet.next_stanza()
    assert received.name == "message" and received.find_text("body") == "hello"
    assert received.attrs["from"] == "romeo@localhost/garden"
    juliet.close()
    romeo.close()


async def test_wrong_password_fails_and_the_client_closes(server: RunningServer) -> None:
    await server.add_user("juliet@localhost", "pencil")
    client = await StreamClient.connect(server.c2s_port, ClientSettings("localhost", "juliet", "crayon"))
    closed = await client.login()
    assert isinstance(closed, Closed)
    assert AuthFailed("juliet", "not-authorized") in client.events
    client.writer.close()
