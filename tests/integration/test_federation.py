"""Two Roost servers in one process, federated over real TCP and TLS on loopback.

``a.test`` and ``b.test`` resolve to each other's s2s ports through the injectable test resolver.
Dialback: each server has its own self-signed certificate (nothing validates, dialback decides).
EXTERNAL: both have certificates from a test CA and ``secure_auth = true`` (no dialback at all).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server
from roost.s2s.diagnose import diagnose
from roost.s2s.dns import StaticResolver
from roost.s2s.manager import Federation
from roost.transports import tls as tls_util
from tests.support.clients import Client, connect
from tests.support.raw import RawClient
from tests.support.server import RunningServer
from tests.support.testca import TestCA


def write_config(directory: Path, domain: str, extra: str = "", more_domains: str = "") -> Path:
    data_dir = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["{domain}"{more_domains}]
data_dir = "{data_dir}"

[[listen]]
kind = "c2s"
address = "127.0.0.1:0"

[[listen]]
kind = "s2s"
address = "127.0.0.1:0"

[storage]
url = "sqlite:///{data_dir / "roost.db"}"

{extra}
"""
    )
    return path


@dataclass
class Pair:
    a: Server
    b: Server

    async def user(self, server: Server, name: str, domain: str = "") -> Client:
        domain = domain or server.config.server.domains[0]
        await RunningServer(server, server.config.server.data_dir).add_user(f"{name}@{domain}", "pw")
        return await connect(f"{name}@{domain}", "pw", server.addresses["c2s"][1])


async def start_pair(tmp_path: Path, extra_a: str = "", extra_b: str = "", more_b: str = "") -> Pair:
    """a.test and b.test (``more_b``: more domains on b, e.g. ``, "c.test"``)."""
    a = create_server(load_config(write_config(tmp_path / "a", "a.test", extra_a)))
    b = create_server(load_config(write_config(tmp_path / "b", "b.test", extra_b, more_b)))
    await a.start()
    await b.start()
    a_port, b_port = a.addresses["s2s"][1], b.addresses["s2s"][1]
    resolver = StaticResolver(
        {
            "a.test": ("127.0.0.1", a_port),
            "conference.a.test": ("127.0.0.1", a_port),
            "b.test": ("127.0.0.1", b_port),
            "conference.b.test": ("127.0.0.1", b_port),
            "c.test": ("127.0.0.1", b_port),
        }
    )
    for server in (a, b):
        federation = server.route_table.remote
        assert isinstance(federation, Federation)
        federation.resolver = resolver
    return Pair(a, b)


@pytest.fixture
async def dialback_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    pair = await start_pair(tmp_path)
    try:
        yield pair
    finally:
        await pair.a.stop()
        await pair.b.stop()


@pytest.fixture
async def external_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    ca = TestCA(tmp_path / "ca")
    extras = []
    for domain in ("a.test", "b.test"):
        issued = ca.issue(domain, f"conference.{domain}")
        extras.append(
            f"""
[tls]
cert = "{issued.cert}"
key = "{issued.key}"

[s2s]
ca_file = "{ca.ca_file}"
secure_auth = true
"""
        )
    pair = await start_pair(tmp_path, *extras)
    try:
        yield pair
    finally:
        await pair.a.stop()
        await pair.b.stop()


async def next_message(client: Client, timeout: float = 15) -> Any:
    return await asyncio.wait_for(client.received.get(), timeout)


async def chat_both_ways(pair: Pair) -> None:
    alice = await pair.user(pair.a, "alice")
    bob = await pair.user(pair.b, "bob")
    try:
        alice.send_message(mto="bob@b.test", mbody="hello from a", mtype="chat")
        got = await next_message(bob)
        assert got["body"] == "hello from a" and str(got["from"]).startswith("alice@a.test/")
        bob.send_message(mto=got["from"], mbody="hello from b", mtype="chat")
        back = await next_message(alice)
        assert back["body"] == "hello from b" and str(back["from"]).startswith("bob@b.test/")
    finally:
        alice.disconnect()
        bob.disconnect()


async def test_chat_both_ways_with_dialback(dialback_pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="roost.s2s")
    await chat_both_ways(dialback_pair)
    lines = [r.getMessage() for r in caplog.records]
    assert any("s2s in: a.test → b.test authenticated by dialback, bidi" in line for line in lines)
    # b verified a's key over a stream of its own to a (never on the stream that asked, XEP-0288
    # §2.2), which then carries b's stanzas too.
    assert any("s2s out: b.test → a.test authenticated by dialback, bidi" in line for line in lines)


async def test_chat_both_ways_with_sasl_external(
    external_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="roost.s2s")
    await chat_both_ways(external_pair)
    lines = [r.getMessage() for r in caplog.records]
    assert any("s2s in: a.test → b.test authenticated by external, bidi" in line for line in lines)
    assert any("s2s out: a.test → b.test authenticated by external, bidi" in line for line in lines)
    # XEP-0288: b answered on a's stream; it opened none of its own (one TCP connection in all).
    b_federation = external_pair.b.route_table.remote
    assert isinstance(b_federation, Federation)
    assert ("b.test", "a.test") not in b_federation.links
    assert ("b.test", "a.test") in b_federation.bidi_in


async def test_chat_both_ways_with_sasl_external_without_bidi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``[s2s] bidi = false`` on the receiving server: each direction opens its own stream."""
    ca = TestCA(tmp_path / "ca")
    extras = []
    for domain, bidi in (("a.test", "true"), ("b.test", "false")):
        issued = ca.issue(domain)
        extras.append(
            f'[tls]\ncert = "{issued.cert}"\nkey = "{issued.key}"\n'
            f'[s2s]\nca_file = "{ca.ca_file}"\nsecure_auth = true\nbidi = {bidi}\n'
        )
    caplog.set_level("INFO", logger="roost.s2s")
    pair = await start_pair(tmp_path, *extras)
    try:
        await chat_both_ways(pair)
    finally:
        await pair.a.stop()
        await pair.b.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert any("s2s out: b.test → a.test authenticated by external (" in line for line in lines)
    assert not any(", bidi" in line for line in lines)


async def test_each_domain_presents_its_own_certificate_by_sni(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """b.test and c.test on one server with a certificate each ([tls.domains]); a.test accepts
    certificate-authenticated peers only, so every link below is proof that the certificate for
    the right name was presented: by SNI on b's listener, as the client certificate from c.test."""
    ca = TestCA(tmp_path / "ca")
    a, b, c = ca.issue("a.test"), ca.issue("b.test"), ca.issue("c.test")
    s2s = f'[s2s]\nca_file = "{ca.ca_file}"\nsecure_auth = true\n'
    extra_a = f'[tls]\ncert = "{a.cert}"\nkey = "{a.key}"\n{s2s}'
    # No bidi on b: it opens streams of its own, presenting its client certificates.
    extra_b = (
        f'[tls]\ncert = "{b.cert}"\nkey = "{b.key}"\n'
        f'[tls.domains."c.test"]\ncert = "{c.cert}"\nkey = "{c.key}"\n{s2s}bidi = false\n'
    )
    caplog.set_level("INFO", logger="roost.s2s")
    pair = await start_pair(tmp_path, extra_a, extra_b, ', "c.test"')
    try:
        alice = await pair.user(pair.a, "alice")
        bob = await pair.user(pair.b, "bob")
        carol = await pair.user(pair.b, "carol", "c.test")
        try:
            for peer, jid in ((bob, "bob@b.test"), (carol, "carol@c.test")):
                alice.send_message(mto=jid, mbody=f"hi {jid}", mtype="chat")
                got = await next_message(peer)
                assert got["body"] == f"hi {jid}"
                peer.send_message(mto=got["from"], mbody=f"from {jid}", mtype="chat")
                back = await next_message(alice)
                assert back["body"] == f"from {jid}" and str(back["from"]).startswith(jid + "/")
        finally:
            for client in (alice, bob, carol):
                client.disconnect()
    finally:
        await pair.a.stop()
        await pair.b.stop()
    lines = [r.getMessage() for r in caplog.records]
    for remote in ("b.test", "c.test"):
        assert any(f"s2s out: a.test → {remote} authenticated by external" in line for line in lines)
        assert any(f"s2s in: {remote} → a.test authenticated by external" in line for line in lines)


async def test_c2s_presents_each_domains_certificate_by_sni(tmp_path: Path) -> None:
    """Clients of b.test and c.test on one server each get their domain's certificate: it validates
    against the CA for the name, and SCRAM-PLUS with tls-server-end-point (which hashes the
    certificate the server presented) succeeds."""
    ca = TestCA(tmp_path / "ca")
    b, c = ca.issue("b.test"), ca.issue("c.test")
    extra = (
        f'[tls]\ncert = "{b.cert}"\nkey = "{b.key}"\n'
        f'[tls.domains."c.test"]\ncert = "{c.cert}"\nkey = "{c.key}"\n'
    )
    server = create_server(load_config(write_config(tmp_path / "b", "b.test", extra, ', "c.test"')))
    await server.start()
    try:
        for domain in ("b.test", "c.test"):
            await RunningServer(server, server.config.server.data_dir).add_user(f"u@{domain}", "pw")
            raw = await RawClient.connect(server.addresses["c2s"][1], domain)
            await raw.open()
            await raw.starttls(tls_util.client_context(verify=True, cafile=ca.ca_file))
            presented = raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert presented == tls_util.certificate_der(ca.directory / f"{domain}.crt")
            mechanism = next(m for m in raw.mechanisms() if m.endswith("-PLUS"))
            result = await raw.auth_scram("u", "pw", mechanism, cb_type="tls-server-end-point")
            assert result.name == "success", result
            raw.close()
    finally:
        await server.stop()


async def test_unreachable_domain_bounces_remote_server_not_found(dialback_pair: Pair) -> None:
    federation = dialback_pair.a.route_table.remote
    assert isinstance(federation, Federation)
    federation.resolver = StaticResolver({"nowhere.test": ("127.0.0.1", 1)})
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    errors: asyncio.Queue[Any] = asyncio.Queue()
    alice.add_event_handler("message_error", errors.put_nowait)
    try:
        alice.send_message(mto="x@nowhere.test", mbody="anyone?", mtype="chat")
        reply = await asyncio.wait_for(errors.get(), 15)
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "remote-server-not-found"
    finally:
        alice.disconnect()


class _BrokenResolver(StaticResolver):
    """A resolver with a bug: it raises what no connect path expects."""

    async def targets(self, domain: str) -> Any:
        raise RuntimeError("a bug in the resolver")


async def test_a_bug_while_connecting_still_answers_what_waited(
    dialback_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in the connect task bounces the queued stanzas: nothing vanishes."""
    federation = dialback_pair.a.route_table.remote
    assert isinstance(federation, Federation)
    federation.resolver = _BrokenResolver({})
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    errors: asyncio.Queue[Any] = asyncio.Queue()
    alice.add_event_handler("message_error", errors.put_nowait)
    try:
        alice.send_message(mto="x@elsewhere.test", mbody="anyone?", mtype="chat")
        reply = await asyncio.wait_for(errors.get(), 15)
        assert reply["error"]["condition"] == "internal-server-error"
        assert any("connecting failed" in r.getMessage() for r in caplog.records)
    finally:
        alice.disconnect()


async def test_subscription_and_presence_both_ways(dialback_pair: Pair) -> None:
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    bob = await dialback_pair.user(dialback_pair.b, "bob")
    subscribed = asyncio.Event()
    bob_saw_alice = asyncio.Event()
    alice_saw_bob = asyncio.Event()

    def on_bob_subscribe(presence: Any) -> None:
        if presence["from"].bare == "alice@a.test":
            bob.send_presence(pto="alice@a.test", ptype="subscribed")
            bob.send_presence(pto="alice@a.test", ptype="subscribe")

    def on_alice_subscribe(presence: Any) -> None:
        if presence["from"].bare == "bob@b.test":
            alice.send_presence(pto="bob@b.test", ptype="subscribed")

    alice.add_event_handler("presence_subscribed", lambda p: subscribed.set())
    bob.add_event_handler("presence_subscribe", on_bob_subscribe)
    alice.add_event_handler("presence_subscribe", on_alice_subscribe)
    alice.add_event_handler(
        "presence_available", lambda p: alice_saw_bob.set() if p["from"].bare == "bob@b.test" else None
    )
    bob.add_event_handler(
        "presence_available", lambda p: bob_saw_alice.set() if p["from"].bare == "alice@a.test" else None
    )
    alice.auto_authorize = None
    bob.auto_authorize = None
    # Interested resources (RFC 6121 §2.1.6) get subscription states and roster pushes.
    await alice.get_roster(timeout=10)
    await bob.get_roster(timeout=10)
    try:
        alice.send_presence(pto="bob@b.test", ptype="subscribe")
        await asyncio.wait_for(subscribed.wait(), 15)
        await asyncio.wait_for(alice_saw_bob.wait(), 15)
        await asyncio.wait_for(bob_saw_alice.wait(), 15)
        assert alice.client_roster["bob@b.test"]["subscription"] == "both"
        assert bob.client_roster["alice@a.test"]["subscription"] == "both"
    finally:
        alice.disconnect()
        bob.disconnect()


async def test_check_federation_explains_each_step(dialback_pair: Pair) -> None:
    b_port = dialback_pair.b.addresses["s2s"][1]
    steps = await diagnose(
        "b.test", dialback_pair.a.config, StaticResolver({"b.test": ("127.0.0.1", b_port)})
    )
    assert [s.name for s in steps] == ["DNS", "connection", "stream", "TLS", "certificate", "authentication"]
    by_name = {s.name: s for s in steps}
    assert all(s.ok for s in steps), steps
    assert "dialback" in by_name["authentication"].detail
    assert "not" in by_name["certificate"].detail or "does not validate" in by_name["certificate"].detail


async def test_check_federation_names_the_failing_step(dialback_pair: Pair) -> None:
    steps = await diagnose(
        "nowhere.test", dialback_pair.a.config, StaticResolver({"nowhere.test": ("127.0.0.1", 1)})
    )
    assert [s.name for s in steps] == ["DNS", "connection"]
    assert not steps[-1].ok and "5269" in steps[-1].fix


async def test_message_to_an_offline_remote_user_is_stored_and_delivered_at_login(
    dialback_pair: Pair,
) -> None:
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    await RunningServer(dialback_pair.b, dialback_pair.b.config.server.data_dir).add_user("bob@b.test", "pw")
    try:
        alice.send_message(mto="bob@b.test", mbody="while you were out", mtype="chat")
        await asyncio.sleep(1.0)  # over s2s to b.test, into bob's offline store
        bob = await connect("bob@b.test", "pw", dialback_pair.b.addresses["c2s"][1])
        try:
            got = await next_message(bob)
            assert got["body"] == "while you were out" and got["from"].bare == "alice@a.test"
        finally:
            bob.disconnect()
    finally:
        alice.disconnect()


async def test_blocked_remote_jid_cannot_reach_a_local_user(dialback_pair: Pair) -> None:
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    bob = await dialback_pair.user(dialback_pair.b, "bob")
    try:
        iq = bob.make_iq_set()
        block = ET.Element("{urn:xmpp:blocking}block")
        ET.SubElement(block, "{urn:xmpp:blocking}item", jid="alice@a.test")
        iq.append(block)
        await iq.send(timeout=10)
        errors: asyncio.Queue[Any] = asyncio.Queue()
        alice.add_event_handler("message_error", errors.put_nowait)
        alice.send_message(mto="bob@b.test", mbody="blocked?", mtype="chat")
        error = await asyncio.wait_for(errors.get(), 15)
        assert error["error"]["condition"] == "service-unavailable"
        assert bob.received.empty()
    finally:
        alice.disconnect()
        bob.disconnect()


async def test_disco_ping_and_version_of_the_remote_server(dialback_pair: Pair) -> None:
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    try:
        info = await alice.plugin["xep_0030"].get_info(jid="b.test", timeout=15)
        assert any(i[0] == "server" for i in info["disco_info"]["identities"])
        items = await alice.plugin["xep_0030"].get_items(jid="b.test", timeout=15)
        assert "conference.b.test" in {i[0] for i in items["disco_items"]["items"]}
        await alice.plugin["xep_0199"].ping(jid="b.test", timeout=15)
        version = await alice.plugin["xep_0092"].get_version("b.test", timeout=15)
        assert version["software_version"]["name"]
    finally:
        alice.disconnect()


async def test_rooms_are_joined_across_servers(dialback_pair: Pair) -> None:
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    bob = await dialback_pair.user(dialback_pair.b, "bob")
    for client in (alice, bob):
        client.register_plugin("xep_0045")
    room = "tea@conference.a.test"
    try:
        await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=15)
        iq = alice.make_iq_set(ito=room)
        query = ET.Element("{http://jabber.org/protocol/muc#owner}query")
        ET.SubElement(query, "{jabber:x:data}x", type="submit")
        iq.append(query)
        await iq.send(timeout=15)
        await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=15)
        got: asyncio.Queue[Any] = asyncio.Queue()
        alice.add_event_handler("groupchat_message", got.put_nowait)
        bob.send_message(mto=room, mbody="hello room", mtype="groupchat")
        while True:
            message = await asyncio.wait_for(got.get(), 15)
            if message["body"] == "hello room":
                assert message["from"].resource == "bob"
                break
    finally:
        alice.disconnect()
        bob.disconnect()


@pytest.fixture
async def strict_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """a.test closes idle links after half a second and blocks blocked.test."""
    extra = '[s2s]\nidle_timeout_seconds = 0.5\nblocklist = ["blocked.test"]\n'
    pair = await start_pair(tmp_path, extra)
    try:
        yield pair
    finally:
        await pair.a.stop()
        await pair.b.stop()


async def test_idle_link_closes_and_reopens_on_demand(
    strict_pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="roost.s2s")
    alice = await strict_pair.user(strict_pair.a, "alice")
    bob = await strict_pair.user(strict_pair.b, "bob")
    federation = strict_pair.a.route_table.remote
    assert isinstance(federation, Federation)
    try:
        alice.send_message(mto="bob@b.test", mbody="one", mtype="chat")
        assert (await next_message(bob))["body"] == "one"
        for _ in range(50):
            if ("a.test", "b.test") not in federation.links:
                break
            await asyncio.sleep(0.1)
        assert ("a.test", "b.test") not in federation.links
        assert any("a.test → b.test idle; closing" in r.getMessage() for r in caplog.records)
        alice.send_message(mto="bob@b.test", mbody="two", mtype="chat")
        assert (await next_message(bob))["body"] == "two"
    finally:
        alice.disconnect()
        bob.disconnect()


async def test_blocked_domain_is_not_contacted(strict_pair: Pair) -> None:
    alice = await strict_pair.user(strict_pair.a, "alice")
    errors: asyncio.Queue[Any] = asyncio.Queue()
    alice.add_event_handler("message_error", errors.put_nowait)
    federation = strict_pair.a.route_table.remote
    assert isinstance(federation, Federation)
    try:
        alice.send_message(mto="x@chat.blocked.test", mbody="hi", mtype="chat")
        error = await asyncio.wait_for(errors.get(), 10)
        assert error["error"]["condition"] == "remote-server-not-found"
        assert not any(remote.endswith("blocked.test") for _, remote in federation.links)
    finally:
        alice.disconnect()


async def test_vcard_of_a_remote_user(dialback_pair: Pair) -> None:
    alice = await dialback_pair.user(dialback_pair.a, "alice")
    bob = await dialback_pair.user(dialback_pair.b, "bob")
    for client in (alice, bob):
        client.register_plugin("xep_0054")
    try:
        card = bob.plugin["xep_0054"].make_vcard()
        card["FN"] = "Bob of B"
        await bob.plugin["xep_0054"].publish_vcard(card, timeout=15)
        got = await alice.plugin["xep_0054"].get_vcard("bob@b.test", cached=False, timeout=15)
        assert got["vcard_temp"]["FN"] == "Bob of B"
    finally:
        alice.disconnect()
        bob.disconnect()


async def test_carbons_copy_messages_from_remote_users(dialback_pair: Pair) -> None:
    server_a = dialback_pair.a
    await RunningServer(server_a, server_a.config.server.data_dir).add_user("alice@a.test", "pw")
    phone = await connect("alice@a.test/phone", "pw", server_a.addresses["c2s"][1])
    laptop = await connect("alice@a.test/laptop", "pw", server_a.addresses["c2s"][1])
    bob = await dialback_pair.user(dialback_pair.b, "bob")
    carbons: asyncio.Queue[Any] = asyncio.Queue()
    try:
        for client in (phone, laptop):
            client.register_plugin("xep_0280")
            await client.plugin["xep_0280"].enable(timeout=10)
        laptop.add_event_handler("carbon_received", carbons.put_nowait)
        bob.send_message(mto=phone.boundjid.full, mbody="to the phone", mtype="chat")
        assert (await next_message(phone))["body"] == "to the phone"
        carbon = await asyncio.wait_for(carbons.get(), 15)
        assert "to the phone" in str(carbon) and "urn:xmpp:carbons:2" in str(carbon)
    finally:
        phone.disconnect()
        laptop.disconnect()
        bob.disconnect()
