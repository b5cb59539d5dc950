"""The route table and the router's remote entry: stanzas to and from a remote link (s2s or component).

The link here records what the router writes to it, as a socket would carry it; the real links
(component and s2s streams over TCP) are tested in tests/integration.
"""

from __future__ import annotations

from roost.core import hooks
from roost.core.hooks import Origin, StanzaEvent
from roost.stanza.errors import StreamError
from roost.xml.element import Element
from tests.support.scenario import Harness, matches, parse

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class RecordingLink:
    """A link for ``domain`` (and its subdomains) that records what it is sent and how it ended."""

    kind = "component"
    id = "test-link"

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.sent: list[Element] = []
        self.closed_with: StreamError | None = None
        self.closed = False

    def send(self, stanza: Element) -> None:
        self.sent.append(stanza)

    def close(self, error: StreamError | None = None, reason: str = "") -> None:
        self.closed = True
        self.closed_with = error

    def may_send_from(self, domain: str) -> bool:
        return domain == self.domain or domain.endswith("." + self.domain)

    def may_send_to(self, domain: str) -> bool:
        return True


def test_component_owns_its_domain_and_subdomains_but_not_lookalikes(h: Harness) -> None:
    table = h.server.route_table
    link = RecordingLink("irc.example.org")
    assert table.attach_component("irc.example.org", link) is None
    assert table.component_for("irc.example.org") is link
    assert table.component_for("libera.irc.example.org") is link
    assert table.component_for("xirc.example.org") is None
    assert table.component_for("example.org") is None
    assert table.is_routable("a.irc.example.org")
    assert not table.is_routable("elsewhere.example")


def test_a_reconnecting_component_replaces_the_old_link_and_the_old_one_cannot_detach_it(h: Harness) -> None:
    table = h.server.route_table
    old, new = RecordingLink("bot.example"), RecordingLink("bot.example")
    table.attach_component("bot.example", old)
    assert table.attach_component("bot.example", new) is old
    table.detach_component("bot.example", old)
    assert table.component_for("bot.example") is new
    table.detach_component("bot.example", new)
    assert table.component_for("bot.example") is None


async def test_stanza_from_a_local_user_to_a_component_goes_out_on_its_link(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.route_table.attach_component("bot.example", link)
    romeo = await h.login("romeo/home")
    await romeo.submit("<message to='room@bot.example' id='m1'><body>hi</body></message>")
    assert len(link.sent) == 1
    expected = parse("<message from='romeo@localhost/home' to='room@bot.example' id='m1'/>")
    assert matches(expected, link.sent[0])


async def test_unknown_remote_domain_still_bounces_remote_server_not_found(h: Harness) -> None:
    romeo = await h.login("romeo/home")
    await romeo.submit("<message to='x@elsewhere.example' id='m1'><body>hi</body></message>")
    romeo.expect(
        "<message type='error' id='m1' from='x@elsewhere.example'><error type='cancel'>"
        "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )


async def test_stanza_from_a_link_reaches_the_local_user_with_its_from_unchanged(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.route_table.attach_component("bot.example", link)
    juliet = await h.login("juliet/balcony")
    seen: list[str] = []

    def record(event: StanzaEvent) -> StanzaEvent:
        seen.append(event.origin_kind)
        return event

    host = h.server.hosts["localhost"]
    host.bus.on(hooks.PRE_MESSAGE, record)
    stanza = parse(
        "<message from='news@bot.example/feed' to='juliet@localhost/balcony' id='n1'><body>x</body></message>"
    )
    pending = h.server.router.from_remote(link, stanza)
    if pending is not None:
        await pending
    await h.settle()
    juliet.expect("<message from='news@bot.example/feed' to='juliet@localhost/balcony' id='n1'/>")
    assert seen == []  # pre/* filters are for local senders only
    assert not link.closed


async def test_delivery_filters_see_remote_stanzas_as_remote(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.route_table.attach_component("bot.example", link)
    await h.login("juliet/balcony")
    kinds: list[str] = []

    def record(delivery: hooks.Delivery) -> hooks.Delivery:
        kinds.append(delivery[1].origin_kind)
        return delivery

    h.server.hosts["localhost"].bus.on(hooks.DELIVER_MESSAGE, record)
    stanza = parse("<message from='bot.example' to='juliet@localhost/balcony'><body>x</body></message>")
    assert h.server.router.from_remote(link, stanza) is None
    assert kinds == [Origin.REMOTE]


async def test_from_a_domain_the_link_did_not_authenticate_closes_it_with_invalid_from(h: Harness) -> None:
    link = RecordingLink("bot.example")
    juliet = await h.login("juliet/balcony")
    stanza = parse("<message from='admin@localhost' to='juliet@localhost/balcony'><body>x</body></message>")
    h.server.router.from_remote(link, stanza)
    await h.settle()
    assert link.closed and link.closed_with is not None and link.closed_with.condition == "invalid-from"
    juliet.expect_nothing()


async def test_a_remote_stanza_without_addresses_closes_the_link_with_improper_addressing(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.router.from_remote(link, parse("<message from='bot.example'><body>x</body></message>"))
    assert link.closed_with is not None and link.closed_with.condition == "improper-addressing"


async def test_remote_iq_to_the_server_is_answered_over_the_link(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.route_table.attach_component("bot.example", link)
    ping = parse(
        "<iq type='get' id='p1' from='bot.example' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    pending = h.server.router.from_remote(link, ping)
    if pending is not None:
        await pending
    await h.settle()
    assert len(link.sent) == 1
    assert matches(parse("<iq type='result' id='p1' from='localhost' to='bot.example'/>"), link.sent[0])


async def test_remote_iq_to_an_offline_resource_gets_service_unavailable_over_the_link(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.route_table.attach_component("bot.example", link)
    await h.add_user("juliet")
    iq = parse(
        "<iq type='get' id='v1' from='bot.example' to='juliet@localhost/gone'>"
        "<query xmlns='jabber:iq:version'/></iq>"
    )
    pending = h.server.router.from_remote(link, iq)
    if pending is not None:
        await pending
    await h.settle()
    assert len(link.sent) == 1
    reply = link.sent[0]
    assert reply.attrs["type"] == "error" and reply.attrs["to"] == "bot.example"
    error = reply.find("error", reply.ns)
    assert error is not None and error.find("service-unavailable", STANZAS) is not None


async def test_subscription_to_a_contact_behind_a_link_goes_out_on_it(h: Harness) -> None:
    link = RecordingLink("bot.example")
    h.server.route_table.attach_component("bot.example", link)
    romeo = await h.login("romeo/home")
    await romeo.submit("<presence type='subscribe' to='feed@bot.example'/>")
    presences = [s for s in link.sent if s.name == "presence"]
    assert len(presences) == 1
    expected = parse("<presence type='subscribe' from='romeo@localhost' to='feed@bot.example'/>")
    assert matches(expected, presences[0])
