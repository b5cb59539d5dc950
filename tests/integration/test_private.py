"""XEP-0049 Private XML Storage with real clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from slixmpp.xmlstream import ElementBase

from roost.stanza import error_condition
from roost.xml.element import Element
from roost.xml.ns import PRIVATE
from tests.support.clients import connect
from tests.support.queries import ask
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server

PREFS = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"


async def store(client: RawClient, inner: str, to: str | None = None) -> Element:
    return await ask(client, f"<query xmlns='{PRIVATE}'>{inner}</query>", type_="set", to=to)


async def fetch(client: RawClient, inner: str, to: str | None = None) -> Element:
    return await ask(client, f"<query xmlns='{PRIVATE}'>{inner}</query>", to=to)


async def login(server: RunningServer, name: str = "hamlet") -> RawClient:
    await server.add_user(f"{name}@localhost", "s3cret")
    return await RawClient.login(server.c2s_port, name, "s3cret", "r")


async def test_store_and_retrieve_with_slixmpp(server: RunningServer) -> None:
    await server.add_user("hamlet@localhost", "s3cret")
    client = await connect("hamlet@localhost/denmark", "s3cret", server.c2s_port)
    client.register_plugin("xep_0049")

    class Prefs(ElementBase):  # type: ignore[misc]
        name = "prefs"
        namespace = "urn:example:prefs"
        plugin_attrib = "example_prefs"
        interfaces = {"nick"}
        sub_interfaces = interfaces

    client.plugin["xep_0049"].register(Prefs)
    prefs = Prefs()
    prefs["nick"] = "Hamlet"
    await client.plugin["xep_0049"].store(prefs, timeout=5)
    got = await client.plugin["xep_0049"].retrieve("example_prefs", timeout=5)
    assert got["private"]["example_prefs"]["nick"] == "Hamlet"
    client.disconnect()


async def test_unknown_fragment_comes_back_empty(server: RunningServer) -> None:
    hamlet = await login(server)
    reply = await ask(hamlet, f"<query xmlns='{PRIVATE}'><exodus xmlns='exodus:prefs'/></query>")
    assert reply.attrs["type"] == "result"
    query = reply.find("query", PRIVATE)
    assert query is not None
    [element] = list(query.elements())
    assert (element.name, element.ns, element.children) == ("exodus", "exodus:prefs", [])


async def test_fragments_are_kept_by_name_and_namespace(server: RunningServer) -> None:
    hamlet = await login(server)
    stored = await ask(
        hamlet,
        f"<query xmlns='{PRIVATE}'>{PREFS}<other xmlns='exodus:prefs'><x>1</x></other></query>",
        type_="set",
    )
    assert stored.attrs["type"] == "result"
    reply = await ask(hamlet, f"<query xmlns='{PRIVATE}'><exodus xmlns='exodus:prefs'/></query>")
    query = reply.find("query", PRIVATE)
    assert query is not None
    exodus = query.find("exodus", "exodus:prefs")
    assert exodus is not None and exodus.find_text("defaultnick") == "Hamlet"
    other = await ask(hamlet, f"<query xmlns='{PRIVATE}'><other xmlns='exodus:prefs'/></query>")
    assert other.find("query", PRIVATE).find("other").find_text("x") == "1"  # type: ignore[union-attr]
    # Same name, other namespace: a different fragment.
    elsewhere = await ask(hamlet, f"<query xmlns='{PRIVATE}'><exodus xmlns='urn:example:other'/></query>")
    assert elsewhere.find("query", PRIVATE).find("exodus").children == []  # type: ignore[union-attr]


async def test_another_users_private_data_is_forbidden(server: RunningServer) -> None:
    hamlet = await login(server)
    await login(server, "macbeth")
    macbeth = await RawClient.login(server.c2s_port, "macbeth", "s3cret", "m")
    await ask(hamlet, f"<query xmlns='{PRIVATE}'>{PREFS}</query>", type_="set")
    set_other = await store(macbeth, PREFS, to="hamlet@localhost")
    get_other = await fetch(macbeth, "<exodus xmlns='exodus:prefs'/>", to="hamlet@localhost")
    assert error_condition(set_other) == error_condition(get_other) == "forbidden"  # XEP-0049 §2.3


@pytest.mark.parametrize(
    ("type_", "payload", "expected"),
    [
        ("set", "", "not-acceptable"),  # no child at all
        ("get", "", "not-acceptable"),
        ("set", "<vCard xmlns='vcard-temp'><FN>H</FN></vCard>", "not-acceptable"),  # reserved namespace
        ("set", "<x xmlns='jabber:iq:roster'/>", "not-acceptable"),
        ("get", "<y xmlns='http://jabber.org/protocol/disco#info'/>", "not-acceptable"),
        ("get", "<a xmlns='urn:a'/><b xmlns='urn:b'/>", "bad-request"),  # one namespace per get
    ],
)
async def test_wrong_forms_are_refused(
    server: RunningServer, type_: str, payload: str, expected: str
) -> None:
    hamlet = await login(server)
    reply = await ask(hamlet, f"<query xmlns='{PRIVATE}'>{payload}</query>", type_=type_)
    assert error_condition(reply) == expected


async def test_item_size_and_count_limits(tmp_path: Path) -> None:
    async with running_server(tmp_path, "[private]\nmax_item_bytes = 256\nmax_items = 2\n") as running:
        hamlet = await login(running)
        big = "<big xmlns='urn:big'>" + "x" * 300 + "</big>"
        assert error_condition(await store(hamlet, big)) == "not-acceptable"
        for name in ("a", "b"):
            ok = await store(hamlet, f"<{name} xmlns='urn:n'>v</{name}>")
            assert ok.attrs["type"] == "result"
        assert error_condition(await store(hamlet, "<c xmlns='urn:n'>v</c>")) == "not-acceptable"
        # Replacing an existing fragment, and clearing one to make room, stay possible at the limit.
        assert (await store(hamlet, "<a xmlns='urn:n'>w</a>")).attrs["type"] == "result"
        cleared = await store(hamlet, "<b xmlns='urn:n'/><c xmlns='urn:n'>v</c>")
        assert cleared.attrs["type"] == "result"
        c = (await fetch(hamlet, "<c xmlns='urn:n'/>")).find("query", PRIVATE).find("c")  # type: ignore[union-attr]
        assert c is not None and c.text == "v"


async def test_private_data_survives_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        hamlet = await login(running)
        await ask(hamlet, f"<query xmlns='{PRIVATE}'>{PREFS}</query>", type_="set")
        hamlet.close()

    async with running_server(tmp_path) as running:
        hamlet = await RawClient.login(running.c2s_port, "hamlet", "s3cret", "r")
        reply = await ask(hamlet, f"<query xmlns='{PRIVATE}'><exodus xmlns='exodus:prefs'/></query>")
        exodus = reply.find("query", PRIVATE).find("exodus", "exodus:prefs")  # type: ignore[union-attr]
        assert exodus is not None and exodus.find_text("defaultnick") == "Hamlet"
