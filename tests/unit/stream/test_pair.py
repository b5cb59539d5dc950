"""Both roles of the stream core, joined in memory by StreamPair: c2s logins end to end."""

from __future__ import annotations

import pytest

from roost.jid import JID
from roost.stanza.errors import StanzaError
from roost.stream.c2s import C2SSettings, C2SStream
from roost.stream.client import C2SClientStream, ClientSettings
from roost.stream.core import Phase, StreamEvent
from roost.stream.events import (
    Authenticated,
    AuthFailed,
    Bound,
    Closed,
    Established,
    NeedBind,
    NeedCredentials,
    NeedTls,
    Opened,
)
from roost.stream.framing import BoshFraming, Framing, WebSocketFraming, XmlFraming
from roost.stream.pair import StreamPair
from roost.stream.sasl.plain import verify_password
from roost.stream.sasl.scram import HASH_NAMES, derive_credentials
from roost.xml.element import Element

CREDS = {h: derive_credentials("pencil", h, 4096) for h in HASH_NAMES}
FRAMINGS: dict[str, type[Framing]] = {"xml": XmlFraming, "websocket": WebSocketFraming, "bosh": BoshFraming}


def kinds(events: list[StreamEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def make_pair(
    framing: str = "xml",
    *,
    password: str = "pencil",
    secure: bool = False,
    server: C2SSettings | None = None,
    **client: object,
) -> StreamPair:
    settings = server or C2SSettings(domains=frozenset({"example.org"}))
    receiving = C2SStream(settings, secure=secure, framing=FRAMINGS[framing]())
    initiating = C2SClientStream(
        ClientSettings("example.org", "juliet", password, **client),  # type: ignore[arg-type]
        secure=secure,
        framing=FRAMINGS[framing](),
    )
    initiating.open()
    return StreamPair(initiating, receiving)


class Server:
    """The driver of the receiving side, as transports/tcp.py does it, without storage."""

    def __init__(self, pair: StreamPair) -> None:
        self.pair = pair
        self.stream = pair.receiving.stream
        assert isinstance(self.stream, C2SStream)

    def answer(self, events: list[StreamEvent]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        stream = self.stream
        assert isinstance(stream, C2SStream)
        for event in events:
            if isinstance(event, NeedCredentials):
                creds = CREDS[event.hash_name] if event.username == "juliet" else None
                ok = (
                    creds is not None
                    and event.password is not None
                    and verify_password(event.password, creds)
                )
                out.extend(stream.credentials(creds, ok))
            elif isinstance(event, NeedBind):
                out.extend(stream.bound(JID("juliet", "example.org", event.resource or "gen")))
        self.pair.receiving.events.extend(out)
        return out


def login(pair: StreamPair) -> tuple[list[StreamEvent], list[StreamEvent]]:
    """Pump, answering the server's events and doing TLS when both asked, until quiet."""
    server = Server(pair)
    all_client: list[StreamEvent] = []
    all_server: list[StreamEvent] = []
    client_events, server_events = pair.pump()
    answered: list[StreamEvent] = []
    for _ in range(50):
        if not (client_events or server_events or answered):
            break
        all_client += client_events
        all_server += server_events + answered
        if NeedTls() in client_events and NeedTls() in server_events:
            client_events, server_events = pair.tls()
            answered = []
            continue
        answered = server.answer(server_events)
        client_events, server_events = pair.pump()
    return all_client, all_server


def test_full_login_over_starttls_with_scram_plus() -> None:
    pair = make_pair()
    client_events, server_events = login(pair)
    assert NeedTls() in client_events
    assert Authenticated("example.org", "juliet", "SCRAM-SHA-512-PLUS") in client_events
    assert Bound(JID("juliet", "example.org", "gen")) in client_events
    assert isinstance(client_events[-1], Established)
    server = pair.receiving.stream
    assert server.phase is Phase.ESTABLISHED and pair.initiating.stream.phase is Phase.ESTABLISHED
    assert Authenticated("example.org", "juliet", "SCRAM-SHA-512-PLUS") in server_events
    assert sum(isinstance(e, Opened) for e in client_events) == 3  # initial, after TLS, after SASL
    assert not any(isinstance(e, Closed) for e in client_events + server_events)
    # Stanzas flow both ways.
    pair.initiating.stream.send(Element("message", "jabber:client", {"to": "romeo@example.org"}))
    _, to_server = pair.pump()
    assert [e.name for e in to_server if isinstance(e, Element)] == ["message"]
    server.send(Element("message", "jabber:client", {"from": "romeo@example.org"}))
    to_client, _ = pair.pump()
    assert [e.name for e in to_client if isinstance(e, Element)] == ["message"]


def test_wrong_password_fails_on_both_sides_and_the_client_closes() -> None:
    pair = make_pair(password="wrong")
    client_events, server_events = login(pair)
    assert AuthFailed("juliet", "not-authorized") in client_events
    assert any(isinstance(e, AuthFailed) for e in server_events)
    assert isinstance(client_events[-1], Closed) and isinstance(server_events[-1], Closed)
    assert server_events[-1].error is None  # the client closed its stream; the server followed


def test_direct_tls_without_channel_binding_uses_plain_scram() -> None:
    pair = make_pair(secure=True)
    client_events, _ = login(pair)
    assert NeedTls() not in client_events
    assert Authenticated("example.org", "juliet", "SCRAM-SHA-512") in client_events
    assert isinstance(client_events[-1], Established)


def test_plain_when_the_client_prefers_it_over_tls() -> None:
    pair = make_pair(secure=True, mechanisms=("PLAIN",))
    client_events, server_events = login(pair)
    assert Authenticated("example.org", "juliet", "PLAIN") in server_events
    assert isinstance(client_events[-1], Established)


def test_client_insisting_on_tls_gives_up_when_it_is_not_offered() -> None:
    settings = C2SSettings(domains=frozenset({"example.org"}), tls_available=False, require_encryption=False)
    pair = make_pair(server=settings)
    client_events, server_events = login(pair)
    closed = client_events[-1]
    assert isinstance(closed, Closed) and closed.error is not None
    assert closed.error.condition == "policy-violation"
    assert not any(isinstance(e, NeedCredentials) for e in server_events)


def test_unknown_domain_reaches_the_client_as_a_stream_error() -> None:
    pair = make_pair()
    pair.initiating.stream.domain = "elsewhere.example"
    pair.initiating.stream.items_to_send()
    pair.initiating.stream.start("elsewhere.example")
    client_events, server_events = pair.pump()
    closed = client_events[-1]
    assert isinstance(closed, Closed) and closed.error is None and closed.peer_error is not None
    assert closed.peer_error.condition == "host-unknown"
    assert closed.peer_error.text == "this server does not serve 'elsewhere.example'"
    server_closed = server_events[-1]
    assert isinstance(server_closed, Closed) and server_closed.error is not None
    assert server_closed.error.condition == "host-unknown"


def test_bind_refused_by_the_server_ends_the_clients_stream() -> None:
    pair = make_pair(secure=True)
    server = pair.receiving.stream
    assert isinstance(server, C2SStream)
    client_events, server_events = pair.pump()
    for _ in range(10):
        for event in server_events:
            if isinstance(event, NeedCredentials):
                server_events = server.credentials(CREDS[event.hash_name])
                break
            if isinstance(event, NeedBind):
                server_events = server.bind_failed(StanzaError("resource-constraint"))
                break
        else:
            server_events = []
        pair.receiving.events.extend(server_events)
        more_client, more_server = pair.pump()
        client_events += more_client
        server_events += more_server
        if any(isinstance(e, Closed) for e in client_events):
            break
    closed = client_events[-1]
    assert isinstance(closed, Closed) and closed.error is not None
    assert "resource-constraint" in (closed.error.text or "")


@pytest.mark.parametrize("framing", ["websocket", "bosh"])
def test_login_and_chat_over_message_framings(framing: str) -> None:
    settings = C2SSettings(domains=frozenset({"example.org"}), tls_available=False)
    pair = make_pair(framing, secure=True, server=settings, resource="web")
    client_events, server_events = login(pair)
    assert Authenticated("example.org", "juliet", "SCRAM-SHA-512") in server_events
    assert Bound(JID("juliet", "example.org", "web")) in client_events
    assert isinstance(client_events[-1], Established)
    pair.initiating.stream.send(Element("message", "jabber:client", {"to": "romeo@example.org"}))
    _, to_server = pair.pump()
    assert [e.name for e in to_server if isinstance(e, Element)] == ["message"]
    pair.receiving.events.extend(pair.receiving.stream.close())
    client_events, _ = pair.pump()
    assert isinstance(client_events[-1], Closed) and client_events[-1].error is None


def test_websocket_redirect_reaches_the_client() -> None:
    settings = C2SSettings(domains=frozenset({"example.org"}), tls_available=False)
    pair = make_pair("websocket", secure=True, server=settings)
    pair.pump()
    pair.receiving.events.extend(pair.receiving.stream.close(see_other_uri="wss://b.example.org/xmpp"))
    client_events, _ = pair.pump()
    assert isinstance(client_events[-1], Closed)
    framing = pair.initiating.stream.framing
    assert isinstance(framing, WebSocketFraming) and framing.see_other_uri == "wss://b.example.org/xmpp"
