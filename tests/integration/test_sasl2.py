"""SASL2 (XEP-0388), Bind2 (XEP-0386) and FAST (XEP-0484) with a raw client over real TLS."""

from __future__ import annotations

import base64
import ssl
import time
from pathlib import Path

import pytest

from roost.core.fast import DAY, LAST_USED_PRECISION
from roost.core.session import SessionState
from roost.stream.features.sasl2 import UserAgent
from roost.stream.sasl.scram import SaslFailure, ScramClient, derive_credentials, ssdp_string
from roost.transports import tls
from roost.util.datetime import parse_datetime
from roost.xml.element import Element
from roost.xml.ns import BIND, BIND2, CSI, SASL, SASL2, SASL_CB, SASL_UPGRADE, SM, STANZA_ERRORS
from tests.support import sasl2
from tests.support.im import eventually
from tests.support.raw import RawClient
from tests.support.sasl2 import Agent
from tests.support.server import RunningServer, running_server

CARBONS = "urn:xmpp:carbons:2"


async def connect(server: RunningServer) -> RawClient:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    return raw


async def test_features_offer_sasl2_bind2_and_fast(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    assert sasl2.offered(raw)[0] == [], "§5: SASL2 only after TLS"
    await raw.starttls()
    mechs, fast, bind = sasl2.offered(raw)
    assert "SCRAM-SHA-256-PLUS" in mechs and "SCRAM-SHA-256" in mechs and "PLAIN" in mechs
    assert "HT-SHA-256-NONE" in fast and "HT-SHA-256-EXPR" in fast and "HT-SHA-256-ENDP" in fast
    assert "HT-SHA-256-UNIQ" not in fast, "TLS 1.3 has no tls-unique"
    assert bind is not None
    inline = bind.find("inline", BIND2)
    assert inline is not None and CARBONS in {f.attrs["var"] for f in inline.elements("feature")}
    raw.close()


@pytest.mark.parametrize(
    ("mech", "cb_type"),
    [
        ("SCRAM-SHA-1", None),
        ("SCRAM-SHA-256", None),
        ("SCRAM-SHA-512", None),
        ("SCRAM-SHA-1-PLUS", "tls-exporter"),
        ("SCRAM-SHA-256-PLUS", "tls-exporter"),
        ("SCRAM-SHA-512-PLUS", "tls-server-end-point"),
    ],
)
async def test_scram_login_with_inline_bind(server: RunningServer, mech: str, cb_type: str | None) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    agent = Agent()
    result = await sasl2.scram(raw, "romeo", "s3cret", mech, cb_type=cb_type, agent=agent, tag="Awesome")
    assert result.ok, result.element
    jid = result.authzid
    assert jid.startswith("romeo@localhost/Awesome/")
    assert agent.id not in jid, "XEP-0386 §3.2: the user-agent id is never exposed"
    assert result.bound is not None
    # §2.5: features follow without a restart; the stream is bound, so no <bind/> is offered.
    assert result.features is not None and result.features.find("bind", BIND) is None
    assert result.features.find("sm", SM) is None, "SM is negotiated inline with Bind2"
    # The stream is established: stanzas flow at once.
    raw.send_raw("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = await raw.element()
    assert reply.attrs["type"] == "result" and reply.attrs["to"] == jid
    (session,) = server.server.sessions.resources("localhost", "romeo")
    assert session.user_agent is not None
    assert (session.user_agent.id, session.user_agent.software, session.user_agent.device) == (
        agent.id,
        agent.software,
        agent.device,
    )
    raw.close()


async def test_resource_is_stable_per_device_and_replaces_the_old_session(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    first = await connect(server)
    r1 = await sasl2.scram(first, "romeo", "s3cret", agent=agent)
    second = await connect(server)
    r2 = await sasl2.scram(second, "romeo", "s3cret", agent=agent)
    assert r1.authzid == r2.authzid
    assert await first.stream_error() == "conflict"  # §3.2: the earlier session of this client ends
    other = await connect(server)
    r3 = await sasl2.scram(other, "romeo", "s3cret", agent=Agent())
    assert r3.authzid != r2.authzid
    no_agent = await connect(server)
    r4 = await sasl2.scram(no_agent, "romeo", "s3cret", agent=None, tag="")
    assert r4.ok and r4.authzid.startswith("romeo@localhost/")
    for raw in (second, other, no_agent):
        raw.close()


async def test_plain_login_and_legacy_bind_after_sasl2(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    result = await sasl2.plain(raw, "romeo", "s3cret", Agent(), bind=False)
    assert result.ok
    assert result.authzid == "romeo@localhost"
    assert result.bound is None
    # Without Bind2 the client binds the RFC 6120 way, on the same stream (no restart).
    assert result.features is not None and result.features.find("bind", BIND) is not None
    reply = await raw.bind("legacy")
    assert reply.attrs["type"] == "result"
    raw.close()


async def test_failures_map_sasl_conditions(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    bad = await sasl2.scram(raw, "romeo", "wrong", agent=Agent())
    assert bad.element.ns == SASL2 and bad.element.name == "failure"
    assert bad.condition == "not-authorized"
    unknown = await sasl2.plain(raw, "nobody", "x", Agent())
    assert unknown.condition == "not-authorized"
    raw.send(Element("authenticate", SASL2, {"mechanism": "DIGEST-MD5"}))
    invalid = await sasl2.finish(raw)
    assert invalid.condition == "invalid-mechanism"
    # Third failure: RFC 6120 §6.4.5 applies to SASL2 as well.
    assert await raw.stream_error() == "policy-violation"


async def test_abort_and_retry(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    raw.send(sasl2.authenticate("SCRAM-SHA-256", None, Agent()))
    challenge = await raw.element()
    assert challenge.name == "challenge" and challenge.ns == SASL2 and not challenge.text.strip()
    raw.send(Element("abort", SASL2))
    aborted = await sasl2.finish(raw)
    assert aborted.condition == "aborted"
    result = await sasl2.scram(raw, "romeo", "s3cret", agent=Agent())
    assert result.ok
    raw.close()


async def test_authenticate_after_success_is_a_stream_error(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    assert (await sasl2.plain(raw, "romeo", "s3cret", Agent(), bind=False)).ok
    raw.send(sasl2.authenticate("PLAIN", b"\0romeo\0s3cret", Agent()))
    assert await raw.stream_error() == "policy-violation"


async def test_inline_carbons(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    result = await sasl2.scram(raw, "romeo", "s3cret", agent=Agent(), inline=[Element("enable", CARBONS)])
    assert result.ok
    (session,) = server.server.sessions.resources("localhost", "romeo")
    assert session.data.get("carbons") is True
    plain = await connect(server)
    result = await sasl2.scram(plain, "romeo", "s3cret", agent=Agent())
    sessions = server.server.sessions.resources("localhost", "romeo")
    assert [s.data.get("carbons") for s in sessions if str(s.jid) == result.authzid] == [None]
    raw.close()
    plain.close()


# -- FAST -------------------------------------------------------------------------------------------


async def _token(server: RunningServer, agent: Agent, mech: str = "HT-SHA-256-NONE") -> str:
    raw = await connect(server)
    result = await sasl2.scram(raw, "romeo", "s3cret", agent=agent, request_token=mech)
    assert result.ok and result.token is not None
    expiry = parse_datetime(result.token.attrs["expiry"]).timestamp()
    assert expiry > time.time() + 20 * DAY
    raw.close()
    return result.token.attrs["token"]


@pytest.mark.parametrize("mech", ["HT-SHA-256-NONE", "HT-SHA-256-EXPR", "HT-SHA-256-ENDP"])
async def test_fast_token_login(server: RunningServer, mech: str) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    token = await _token(server, agent, mech)
    raw = await connect(server)
    result = await sasl2.ht(raw, "romeo", token, agent, mech)
    assert result.ok, result.element
    assert result.token is None, "not due for rotation"
    assert result.authzid.startswith("romeo@localhost/test/")
    raw.close()
    # Stored hashed: the database holds no usable token.
    stored = await server.server.storage.map("fast_tokens").items("localhost", "romeo")
    assert token not in repr(stored)
    assert sasl2.token_hash(token).hex() in repr(stored)


async def test_fast_token_is_bound_to_its_client_and_mechanism(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    token = await _token(server, agent, "HT-SHA-256-EXPR")
    raw = await connect(server)
    assert (await sasl2.ht(raw, "romeo", token, Agent())).condition == "not-authorized"
    assert (await sasl2.ht(raw, "romeo", token, agent, "HT-SHA-256-NONE")).condition == "not-authorized"
    raw.close()
    raw = await connect(server)
    assert (await sasl2.ht(raw, "romeo", token + "x", agent, "HT-SHA-256-EXPR")).condition == "not-authorized"
    assert (await sasl2.ht(raw, "romeo", token, agent, "HT-SHA-256-EXPR")).ok
    raw.close()


async def test_fast_rotation_keeps_the_old_token_until_the_new_one_is_used(tmp_path: Path) -> None:
    # A token younger than its rotation window: every use rotates it (fast_rotate_days > lifetime).
    extra = "[c2s]\nfast_token_days = 1.0\nfast_rotate_days = 2.0\n"
    async with running_server(tmp_path, extra) as server:
        await server.add_user("romeo@localhost", "s3cret")
        agent = Agent()
        old = await _token_short(server, agent)
        raw = await connect(server)
        first = await sasl2.ht(raw, "romeo", old, agent)
        assert first.ok and first.token is not None, "§4.3: rotated without being asked"
        new = first.token.attrs["token"]
        assert new != old
        raw.close()
        # The client lost the new token: the old one still works (and rotates again).
        raw = await connect(server)
        again = await sasl2.ht(raw, "romeo", old, agent)
        assert again.ok and again.token is not None
        newest = again.token.attrs["token"]
        raw.close()
        # The never-used token of the first rotation is gone (§4.3), the one in use is kept.
        keys = [t.key for t in await server.server.fast.lookup("localhost", "romeo", agent.id)]
        assert sasl2.token_hash(new) not in keys and sasl2.token_hash(old) in keys
        # Using the newest invalidates every earlier one (just after <success/>).
        raw = await connect(server)
        assert (await sasl2.ht(raw, "romeo", newest, agent)).ok
        raw.close()

        async def old_dropped() -> bool:
            stored = await server.server.fast.lookup("localhost", "romeo", agent.id)
            return sasl2.token_hash(old) not in [t.key for t in stored] and len(stored) == 2

        await eventually(old_dropped)
        raw = await connect(server)
        assert (await sasl2.ht(raw, "romeo", old, agent)).condition == "not-authorized"
        raw.close()


async def test_fast_use_writes_last_used_only_when_stale(server: RunningServer) -> None:
    """A phone reconnecting every few minutes costs no token-store write per login."""
    fast = server.server.fast
    agent = UserAgent("dev-1", "TestClient", "phone")
    await fast.issue("localhost", "romeo", agent, "HT-SHA-256-NONE")
    (token,) = await fast.lookup("localhost", "romeo", agent.id)
    (issued,) = await fast.devices("localhost", "romeo")
    assert issued.last_used > 0, "issuing is a login of that device"
    await fast.used("localhost", "romeo", agent.id, token)
    assert (await fast.devices("localhost", "romeo"))[0].last_used == issued.last_used
    record = await fast.store.get("localhost", "romeo", agent.id)
    assert isinstance(record, dict)
    stale = issued.last_used - LAST_USED_PRECISION - 1
    await fast.store.set("localhost", "romeo", agent.id, {**record, "last_used": stale})
    await fast.used("localhost", "romeo", agent.id, token)
    assert (await fast.devices("localhost", "romeo"))[0].last_used > issued.last_used


async def _token_short(server: RunningServer, agent: Agent) -> str:
    raw = await connect(server)
    result = await sasl2.scram(raw, "romeo", "s3cret", agent=agent, request_token="HT-SHA-256-NONE")
    assert result.ok and result.token is not None
    raw.close()
    return result.token.attrs["token"]


async def test_fast_expired_token_is_refused(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    token = await _token(server, agent)
    fast = server.server.fast
    (stored,) = await fast.lookup("localhost", "romeo", agent.id)
    record = await fast.store.get("localhost", "romeo", agent.id)
    assert isinstance(record, dict)
    record["tokens"] = [{"key": stored.key.hex(), "mechanism": stored.mechanism, "expiry": time.time() - 1}]
    await fast.store.set("localhost", "romeo", agent.id, record)
    raw = await connect(server)
    result = await sasl2.ht(raw, "romeo", token, agent)
    assert result.condition == "not-authorized"
    # The password still works, and can ask for a fresh token.
    fresh = await sasl2.scram(raw, "romeo", "s3cret", agent=agent, request_token="HT-SHA-256-NONE")
    assert fresh.ok and fresh.token is not None
    raw.close()


async def test_fast_invalidate_on_request(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    token = await _token(server, agent)
    raw = await connect(server)
    result = await sasl2.ht(raw, "romeo", token, agent, invalidate=True)
    assert result.ok and result.token is None
    raw.close()
    raw = await connect(server)
    assert (await sasl2.ht(raw, "romeo", token, agent)).condition == "not-authorized"
    raw.close()


async def test_fast_tokens_revoked_on_password_change(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    token = await _token(server, agent)
    devices = await server.server.fast.devices("localhost", "romeo")
    assert [(d.client_id, d.software, d.device, len(d.tokens)) for d in devices] == [
        (agent.id, agent.software, agent.device, 1)
    ]
    creds = [derive_credentials("n3w", h, 4096) for h in ("SHA-1", "SHA-256", "SHA-512")]
    await server.server.accounts.set_credentials("localhost", "romeo", creds)
    assert await server.server.fast.devices("localhost", "romeo") == []
    raw = await connect(server)
    assert (await sasl2.ht(raw, "romeo", token, agent)).condition == "not-authorized"
    raw.close()


async def test_fast_needs_a_user_agent_id(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    result = await sasl2.scram(raw, "romeo", "s3cret", agent=None, request_token="HT-SHA-256-NONE")
    assert result.ok and result.token is None, "a token belongs to a client installation"
    raw.close()


# -- downgrade protection (XEP-0474 SSDP) ------------------------------------------------------------


async def _scram_with_ssdp(
    raw: RawClient, mechs: list[str], cbs: list[str] | None, *, sasl2_: bool, tls_version: str | None = None
) -> str:
    """A SCRAM-SHA-256 exchange whose client believes the server offered ``mechs``/``cbs`` (and
    that its TLS version is ``tls_version``, default the real one): "ok" if the server's hash
    matched, else the client's failure text."""
    client = ScramClient(
        "SHA-256",
        "romeo",
        "s3cret",
        ssdp=ssdp_string(mechs, cbs),
        tls_version=tls_version or raw.tls_version(),
    )
    if sasl2_:
        raw.send(sasl2.authenticate("SCRAM-SHA-256", client.first(), Agent()))
    else:
        auth = Element("auth", SASL, {"mechanism": "SCRAM-SHA-256"})
        auth.children.append(base64.b64encode(client.first()).decode())
        raw.send(auth)
    challenge = await raw.element()
    assert challenge.name == "challenge"
    server_first = base64.b64decode(challenge.text)
    assert b",h=" in server_first
    assert f",t={raw.tls_version()}".encode() in server_first, "XEP-0515: the TLS version the server sees"
    try:
        client.respond(server_first)
    except SaslFailure as e:
        return e.text or e.condition
    return "ok"


def _advertised(raw: RawClient) -> tuple[list[str], list[str]]:
    assert raw.features is not None
    cb = raw.features.find("sasl-channel-binding", SASL_CB)
    assert cb is not None
    return raw.mechanisms(), [c.attrs["type"] for c in cb.elements()]


@pytest.mark.parametrize("use_sasl2", [False, True])
async def test_stripped_mechanism_list_is_detected(server: RunningServer, use_sasl2: bool) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    mechs, cbs = _advertised(raw)
    assert sasl2.offered(raw)[0] == mechs, "SASL1 and SASL2 offer the same list"
    # What the server really offered: the hash matches.
    assert await _scram_with_ssdp(raw, mechs, cbs, sasl2_=use_sasl2) == "ok"
    raw.close()
    # A MITM removed the -PLUS mechanisms (no channel binding) and SCRAM-SHA-512.
    raw = await connect(server)
    stripped = [m for m in mechs if not m.endswith("-PLUS") and "512" not in m]
    assert "downgrade" in await _scram_with_ssdp(raw, stripped, cbs, sasl2_=use_sasl2)
    raw.close()
    # A MITM removed tls-exporter from the channel-binding types.
    raw = await connect(server)
    fewer = [c for c in cbs if c != "tls-exporter"]
    assert "downgrade" in await _scram_with_ssdp(raw, mechs, fewer, sasl2_=use_sasl2)
    raw.close()
    # ... or the whole XEP-0440 list.
    raw = await connect(server)
    assert "downgrade" in await _scram_with_ssdp(raw, mechs, None, sasl2_=use_sasl2)
    raw.close()


@pytest.mark.parametrize("use_sasl2", [False, True])
async def test_tls_version_split_is_detected(server: RunningServer, use_sasl2: bool) -> None:
    """XEP-0515: a MITM speaking TLS 1.3 to the client and TLS 1.2 to the server (where tls-exporter
    is not offered) is caught by the t= the server puts in the signed server-first-message."""
    await server.add_user("romeo@localhost", "s3cret")
    raw = await connect(server)
    assert raw.tls_version() == "0304"
    mechs, cbs = _advertised(raw)
    assert await _scram_with_ssdp(raw, mechs, cbs, sasl2_=use_sasl2) == "ok"
    raw.close()
    # The server's arm of the MITM: TLS 1.2. The server says t=0303; a client on TLS 1.2 agrees ...
    tls12 = tls.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls(tls12)
    assert raw.tls_version() == "0303"
    mechs, cbs = _advertised(raw)
    assert "tls-exporter" not in cbs
    assert await _scram_with_ssdp(raw, mechs, cbs, sasl2_=use_sasl2) == "ok"
    raw.close()
    # ... but the client of the MITM, on TLS 1.3 (and shown the TLS 1.2 lists), sees the split.
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls(tls12)
    mechs, cbs = _advertised(raw)
    failure = await _scram_with_ssdp(raw, mechs, cbs, sasl2_=use_sasl2, tls_version="0304")
    assert "downgrade" in failure and "0303" in failure
    raw.close()


# -- inline stream management and CSI (XEP-0198 in XEP-0386/0388) ---------------------------------------


def _chat(to: str, body: str) -> Element:
    msg = Element("message", "jabber:client", {"to": to, "type": "chat", "id": body})
    msg.add("body", text=body)
    return msg


async def test_inline_sm_enable_csi_and_fast_resume(server: RunningServer) -> None:
    await server.add_user("juliet@localhost", "s3cret")
    await server.add_user("romeo@localhost", "s3cret")
    probe = await connect(server)
    _, _, bind = sasl2.offered(probe)
    probe.close()
    assert bind is not None
    inline = bind.find("inline", BIND2)
    assert inline is not None
    assert {SM, CSI} <= {f.attrs["var"] for f in inline.elements("feature")}

    phone = Agent()
    juliet = await connect(server)
    auth = juliet.features.find("authentication", SASL2) if juliet.features is not None else None
    assert auth is not None and auth.find("inline", SASL2).find("sm", SM) is not None  # type: ignore[union-attr]
    result = await sasl2.scram(
        juliet,
        "juliet",
        "s3cret",
        agent=phone,
        inline=[Element("enable", SM, {"resume": "true"}), Element("inactive", CSI)],
        request_token="HT-SHA-256-EXPR",
    )
    assert result.ok and result.bound is not None and result.token is not None
    enabled = result.bound.find("enabled", SM)
    assert enabled is not None and enabled.attrs.get("resume") == "true"
    previd = enabled.attrs["id"]
    full = result.authzid
    (session,) = server.server.sessions.resources("localhost", "juliet")
    assert session.sm is not None and session.csi is not None, "SM on, starting inactive"

    romeo = await connect(server)
    assert (await sasl2.scram(romeo, "romeo", "s3cret", agent=Agent())).ok
    romeo.send(_chat(full, "while-you-sleep"))
    # The phone's network dies before it reads anything (h = 0).
    transport = juliet.writer.transport
    transport.abort()

    async def detached() -> bool:
        return session.state is SessionState.DETACHED

    await eventually(detached)

    # One round trip: FAST token + resume inline; the message comes again after <success/>.
    back = await connect(server)
    token = result.token.attrs["token"]
    resume = Element("resume", SM, {"previd": previd, "h": "0"})
    again = await sasl2.ht(back, "juliet", token, phone, "HT-SHA-256-EXPR", extra=[resume])
    assert again.ok, again.element
    resumed = again.element.find("resumed", SM)
    assert resumed is not None and resumed.attrs["previd"] == previd
    assert again.bound is None and again.authzid == full
    msg = await back.element()
    assert msg.name == "message" and msg.attrs["id"] == "while-you-sleep"
    assert server.server.sessions.resources("localhost", "juliet") == [session]
    assert session.state is SessionState.BOUND
    back.close()
    romeo.close()


async def test_inline_resume_failure_then_bind(server: RunningServer) -> None:
    await server.add_user("juliet@localhost", "s3cret")
    raw = await connect(server)
    resume = Element("resume", SM, {"previd": "no-such-session", "h": "0"})
    result = await sasl2.scram(raw, "juliet", "s3cret", agent=Agent(), extra=[resume])
    assert result.ok
    failed = result.element.find("failed", SM)
    assert failed is not None and failed.find("item-not-found", STANZA_ERRORS) is not None
    assert result.bound is not None and "/" in result.authzid, "XEP-0386 §3.1: bound after all"
    raw.close()


async def test_locked_account_is_refused_over_sasl2_and_fast(server: RunningServer) -> None:
    from roost.admin import locks

    await server.add_user("romeo@localhost", "s3cret")
    agent = Agent()
    token = await _token(server, agent)
    await locks.lock(server.server.storage, "localhost", "romeo", "spam", "test")
    raw = await connect(server)
    refused = await sasl2.scram(raw, "romeo", "s3cret", agent=agent)
    assert refused.condition == "account-disabled"
    assert (await sasl2.ht(raw, "romeo", token, agent)).condition == "account-disabled"
    raw.close()
    await locks.unlock(server.server.storage, "localhost", "romeo")
    raw = await connect(server)
    assert (await sasl2.ht(raw, "romeo", token, agent)).ok
    raw.close()


# -- <continue/> tasks: XEP-0480 SCRAM upgrades -------------------------------------------------------


async def sha1_only_user(server: RunningServer) -> None:
    """An account as imported from a server that stored SCRAM-SHA-1 keys only."""
    await server.server.storage.accounts.create("localhost", "juliet", [derive_credentials("n0rth", "SHA-1")])


async def test_scram_upgrade_tasks_add_the_missing_hashes(server: RunningServer) -> None:
    await sha1_only_user(server)
    raw = await connect(server)
    auth = raw.features.find("authentication", SASL2) if raw.features is not None else None
    assert auth is not None
    offered = [u.text for u in auth.elements("upgrade", SASL_UPGRADE)]
    assert offered == ["UPGR-SCRAM-SHA-1", "UPGR-SCRAM-SHA-256", "UPGR-SCRAM-SHA-512"]
    # Without SHA-256 keys, SCRAM-SHA-256 cannot log in.
    assert (
        await sasl2.scram(raw, "juliet", "n0rth", "SCRAM-SHA-256", agent=Agent())
    ).condition == "not-authorized"
    upgrades = ["UPGR-SCRAM-SHA-256", "UPGR-SCRAM-SHA-512", "UPGR-BLOOP2"]
    first = await sasl2.scram(
        raw, "juliet", "n0rth", "SCRAM-SHA-1-PLUS", cb_type="tls-exporter", upgrade=upgrades
    )
    # One <continue/> per task (XEP-0388 §2.6.3), the SCRAM signature in the first (checked by
    # sasl2.scram); the task Roost does not know is not run.
    assert sasl2.continue_tasks(first) == ["UPGR-SCRAM-SHA-256"]
    second, salt = await sasl2.scram_upgrade(raw, "UPGR-SCRAM-SHA-256", "n0rth")
    assert int(salt.attrs["iterations"]) >= 4096
    assert sasl2.continue_tasks(second) == ["UPGR-SCRAM-SHA-512"]
    assert second.element.find("additional-data", SASL2) is None
    done, _ = await sasl2.scram_upgrade(raw, "UPGR-SCRAM-SHA-512", "n0rth")
    assert done.ok, done.element
    assert done.authzid.startswith("juliet@localhost/") and done.bound is not None
    raw.close()
    accounts = server.server.storage.accounts
    sha256 = await accounts.get_credentials("localhost", "juliet", "SHA-256")
    assert sha256 is not None and sha256.salt == base64.b64decode(salt.text), "keys with the salt sent"
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512", "SCRAM-SHA-1"):  # old keys kept (XEP-0480 §4)
        again = await connect(server)
        assert (await sasl2.scram(again, "juliet", "n0rth", mech, agent=Agent())).ok, mech
        again.close()
    # Keys the account has are not offered as a task again.
    again = await connect(server)
    result = await sasl2.scram(again, "juliet", "n0rth", "SCRAM-SHA-1", agent=Agent(), upgrade=upgrades)
    assert result.ok, result.element
    again.close()


async def test_scram_upgrade_task_failures(server: RunningServer) -> None:
    await sha1_only_user(server)
    raw = await connect(server)
    upgrade = ["UPGR-SCRAM-SHA-256"]
    # <next/> naming another task than the one offered.
    first = await sasl2.scram(raw, "juliet", "n0rth", "SCRAM-SHA-1", agent=Agent(), upgrade=upgrade)
    assert sasl2.continue_tasks(first) == upgrade
    raw.send(Element("next", SASL2, {"task": "UPGR-SCRAM-SHA-512"}))
    assert (await sasl2.finish(raw)).condition == "malformed-request"
    # A SaltedPassword of the wrong length (a SHA-1 one for SHA-256).
    first = await sasl2.scram(raw, "juliet", "n0rth", "SCRAM-SHA-1", agent=Agent(), upgrade=upgrade)
    raw.send(Element("next", SASL2, {"task": "UPGR-SCRAM-SHA-256"}))
    assert (await raw.element()).name == "task-data"
    bad = Element("task-data", SASL2)
    bad.add("hash", "urn:xmpp:scram-upgrade:0", text=base64.b64encode(b"x" * 20).decode())
    raw.send(bad)
    assert (await sasl2.finish(raw)).condition == "malformed-request"
    assert await server.server.storage.accounts.get_credentials("localhost", "juliet", "SHA-256") is None
    # Third failure ends the stream, as for any SASL failure (RFC 6120 §6.4.5).
    await sasl2.scram(raw, "juliet", "n0rth", "SCRAM-SHA-1", agent=Agent(), upgrade=upgrade)
    raw.send(Element("abort", SASL2))
    assert (await sasl2.finish(raw)).condition == "aborted"  # aborting does not count
    await sasl2.scram(raw, "juliet", "n0rth", "SCRAM-SHA-1", agent=Agent(), upgrade=upgrade)
    raw.send(Element("task-data", SASL2))  # before <next/>
    assert (await sasl2.finish(raw)).condition == "malformed-request"
    assert await raw.stream_error() == "policy-violation"
    # XEP-0388 §7: <authenticate/> after <continue/> is a stream error.
    other = await connect(server)
    first = await sasl2.scram(other, "juliet", "n0rth", "SCRAM-SHA-1", agent=Agent(), upgrade=upgrade)
    assert sasl2.continue_tasks(first) == upgrade
    other.send(sasl2.authenticate("PLAIN", b"\0juliet\0n0rth", Agent()))
    assert await other.stream_error() == "policy-violation"
    assert await server.server.storage.accounts.get_credentials("localhost", "juliet", "SHA-256") is None
