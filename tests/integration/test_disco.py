"""disco#info advertises exactly what the loaded modules do, for the server and for accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.modules.privacy import NS_PRIVACY
from roost.stanza import error_condition
from roost.xml.ns import DISCO_INFO, LAST, PRIVATE, REGISTER, REGISTER_FEATURE, VCARD
from tests.support.clients import connect
from tests.support.queries import ask
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server

TOGGLED = "\n".join(
    f"[{name}]\nenabled = {value}\n"
    for name, value in (
        ("vcard", "false"),
        ("private", "false"),
        ("last", "false"),
        ("privacy", "false"),
        ("registration", "true"),
    )
)


async def features_of(client: RawClient, to: str) -> set[str]:
    reply = await ask(client, f"<query xmlns='{DISCO_INFO}'/>", to=to)
    query = reply.find("query", DISCO_INFO)
    assert query is not None, reply
    return {f.attrs["var"] for f in query.elements("feature")}


def loaded_features(running: RunningServer) -> tuple[set[str], set[str]]:
    host = running.server.hosts["localhost"]
    return host.features(), host.account_features()


@pytest.fixture
async def toggled(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "toggled", TOGGLED) as running:
        yield running


async def test_defaults(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    await server.add_user("juliet@localhost", "s3cret")
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    domain = await features_of(romeo, "localhost")
    account = await features_of(romeo, "juliet@localhost")
    own = await features_of(romeo, "romeo@localhost")
    assert {VCARD, PRIVATE, LAST, NS_PRIVACY} <= domain
    assert REGISTER not in domain  # in-band registration is off by default
    assert {VCARD, LAST} <= account and account == own
    # Exactly the loaded modules' features, nothing else.
    assert (domain, account) == loaded_features(server)


async def test_toggled_modules(toggled: RunningServer) -> None:
    await toggled.add_user("romeo@localhost", "s3cret")
    romeo = await RawClient.login(toggled.c2s_port, "romeo", "s3cret", "r")
    domain = await features_of(romeo, "localhost")
    account = await features_of(romeo, "romeo@localhost")
    assert REGISTER in domain
    assert not {VCARD, PRIVATE, LAST, NS_PRIVACY} & domain
    assert not {VCARD, LAST} & account
    assert (domain, account) == loaded_features(toggled)
    # What is not advertised is not served either.
    assert error_condition(await ask(romeo, "<vCard xmlns='vcard-temp'/>")) == "service-unavailable"
    last = await ask(romeo, f"<query xmlns='{LAST}'/>", to="localhost")
    assert error_condition(last) == "service-unavailable"
    private = await ask(romeo, f"<query xmlns='{PRIVATE}'><a xmlns='urn:a'/></query>")
    assert error_condition(private) == "service-unavailable"


async def test_registration_stream_feature_follows_the_module(
    server: RunningServer, toggled: RunningServer
) -> None:
    for running, offered in ((server, False), (toggled, True)):
        client = await RawClient.connect(running.c2s_port)
        await client.open()
        await client.starttls()
        assert client.features is not None
        assert (client.features.find("register", REGISTER_FEATURE) is not None) is offered
        client.close()


async def test_slixmpp_sees_the_same(toggled: RunningServer) -> None:
    await toggled.add_user("romeo@localhost", "s3cret")
    romeo = await connect("romeo@localhost/r", "s3cret", toggled.c2s_port)
    info = await romeo.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
    features = set(info["disco_info"]["features"])
    assert features == loaded_features(toggled)[0]
    assert REGISTER in features and VCARD not in features
    romeo.disconnect()
