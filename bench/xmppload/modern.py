"""Reconnecting the old way and the modern way, with round trips counted.

- :func:`full_login`: STARTTLS, RFC 6120 SASL SCRAM, stream restart, bind, roster get: what a client
  without SASL2 does on every reconnect.
- :func:`fast_setup`: a SASL2 password login with Bind2 and inline stream management that asks for
  a FAST token (XEP-0484), then drops the connection so the session waits, detached, for resumption.
- :func:`fast_resume`: STARTTLS, then one ``<authenticate/>`` with the token (HT-SHA-256-NONE) and
  an inline ``<resume/>``: the session is back in one round trip after TLS.

A round trip is one "write, then wait for the server's answer" of the client (the TCP and TLS
handshakes count one each).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import re
import time
import uuid
from dataclasses import dataclass

from roost.stream.sasl.scram import ScramClient

from .client import (
    RE_BIND,
    RE_CHALLENGE,
    RE_FEATURES,
    RE_PROCEED,
    RE_SUCCESS,
    STARTTLS,
    Account,
    CredentialCache,
    Endpoint,
    LoginOptions,
    Session,
    _auth,
    _response,
    bind_iq,
    stream_open,
)
from .conn import XmppConn, XmppError

SASL2 = "urn:xmpp:sasl:2"
RE_SASL2 = re.compile(rb"<authentication\b[^>]*urn:xmpp:sasl:2")
RE_FAST_NONE = re.compile(rb"<mechanism>HT-SHA-256-NONE</mechanism>")
RE_S2_CHALLENGE = re.compile(rb"<challenge\b[^>]*>([^<]*)</challenge>")
RE_S2_DONE = re.compile(rb"<(success|failure)\b[^>]*urn:xmpp:sasl:2[^>]*>(.*?)</\1>", re.S)
RE_ADDITIONAL = re.compile(rb"<additional-data>([^<]*)</additional-data>")
RE_TOKEN = re.compile(rb"<token\b[^>]*\btoken=['\"]([^'\"]+)['\"]")
RE_ENABLED = re.compile(rb"<enabled\b[^>]*\bid=['\"]([^'\"]+)['\"]")
RE_RESUMED = re.compile(rb"<resumed\b")
RE_ROSTER = re.compile(rb"<iq\b[^>]*\bid=['\"]roster1['\"][^>]*>")
ROSTER_GET = b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>"


@dataclass(slots=True)
class Device:
    """What a phone keeps between connections: its id, FAST token, SM id."""

    account: Account
    client_id: str
    token: str = ""
    sm_id: str = ""


async def _connect_tls(
    endpoint: Endpoint, opts: LoginOptions, account: Account | None = None
) -> tuple[XmppConn, bytes, int]:
    """TCP, stream, STARTTLS, stream again: the connection and the features after TLS. With
    ``account``, the headers name it in 'from' (what a SASL2 client does, XEP-0388 §2.1)."""
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(XmppConn, endpoint.host, endpoint.port, local_addr=opts.local_addr),
        opts.timeout,
    )
    opener = stream_open(endpoint.domain, f"{account.user}@{endpoint.domain}" if account else None)
    conn.write(opener)
    await conn.expect(RE_FEATURES, opts.timeout)
    conn.write(STARTTLS)
    await conn.expect(RE_PROCEED, opts.timeout)
    await conn.start_tls(opts.tls, endpoint.domain, opts.timeout)
    conn.write(opener)
    m = await conn.expect(RE_FEATURES, opts.timeout)
    return conn, m.string, 5  # TCP, header, starttls, TLS handshake, header


async def full_login(
    endpoint: Endpoint, account: Account, resource: str, creds: CredentialCache, opts: LoginOptions
) -> tuple[Session, int]:
    """RFC 6120: SCRAM, restart, bind, roster; the session and its round trips."""
    t0 = time.perf_counter()
    conn, _, trips = await _connect_tls(endpoint, opts)
    try:
        cached = creds.get(account.user, opts.hash_name)
        scram = ScramClient(opts.hash_name, account.user, account.password, salted_password=cached)
        conn.write(_auth(opts.hash_name, scram.first()))
        m = await conn.expect(RE_CHALLENGE, opts.timeout)
        conn.write(_response(scram.respond(base64.b64decode(m.group(1)))))
        m = await conn.expect(RE_SUCCESS, opts.timeout)
        if cached is None and scram.salted_password is not None:
            creds.put(account.user, opts.hash_name, scram.salted_password)
        conn.write(stream_open(endpoint.domain))
        await conn.expect(RE_FEATURES, opts.timeout)
        conn.write(bind_iq(resource))
        m = await conn.expect(RE_BIND, opts.timeout)
        jid = m.group(1).decode()
        conn.write(ROSTER_GET)
        await conn.expect(RE_ROSTER, opts.timeout)
        trips += 5  # auth, response, header, bind, roster
    except BaseException:
        conn.abort()
        raise
    return Session(conn, account, jid, {"login": time.perf_counter() - t0}), trips


def _authenticate(mechanism: str, initial: bytes, device: Device, inner: str) -> bytes:
    return (
        f"<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>"
        f"<initial-response>{base64.b64encode(initial).decode()}</initial-response>"
        f"<user-agent id='{device.client_id}'><software>roost-bench</software></user-agent>"
        f"{inner}</authenticate>"
    ).encode()


_BIND_SM = (
    "<bind xmlns='urn:xmpp:bind:0'><tag>bench</tag><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>"
)


async def supports_fast(endpoint: Endpoint, opts: LoginOptions, account: Account) -> bool:
    """Whether the server offers SASL2 with FAST HT-SHA-256-NONE (to a stream from ``account``)."""
    conn, features, _ = await _connect_tls(endpoint, opts, account)
    conn.abort()
    return RE_SASL2.search(features) is not None and RE_FAST_NONE.search(features) is not None


async def fast_setup(endpoint: Endpoint, device: Device, creds: CredentialCache, opts: LoginOptions) -> None:
    """Password login over SASL2 asking for a token, Bind2 with SM; then the network "drops"."""
    conn, _, _ = await _connect_tls(endpoint, opts, device.account)
    try:
        account = device.account
        cached = creds.get(account.user, opts.hash_name)
        scram = ScramClient(opts.hash_name, account.user, account.password, salted_password=cached)
        request = f"<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>{_BIND_SM}"
        conn.write(_authenticate(f"SCRAM-{opts.hash_name}", scram.first(), device, request))
        m = await conn.expect(RE_S2_CHALLENGE, opts.timeout)
        final = scram.respond(base64.b64decode(m.group(1)))
        conn.write(f"<response xmlns='{SASL2}'>{base64.b64encode(final).decode()}</response>".encode())
        m = await conn.expect(RE_S2_DONE, opts.timeout)
        if m.group(1) != b"success":
            raise XmppError(f"SASL2 login failed: {m.group(0)[:200]!r}")
        token, enabled = RE_TOKEN.search(m.group(2)), RE_ENABLED.search(m.group(2))
        if token is None or enabled is None:
            raise XmppError(f"no token or no SM in {m.group(0)[:300]!r}")
        device.token, device.sm_id = token.group(1).decode(), enabled.group(1).decode()
    finally:
        conn.abort()  # no goodbye: the session stays, detached, for resumption


async def fast_resume(endpoint: Endpoint, device: Device, opts: LoginOptions) -> tuple[float, int, bool]:
    """Token login with inline resumption; (seconds, round trips, resumed). Drops the connection
    again afterwards, so the session can be resumed once more."""
    t0 = time.perf_counter()
    conn, _, trips = await _connect_tls(endpoint, opts, device.account)
    try:
        proof = hmac.digest(device.token.encode(), b"Initiator", "sha256")
        inner = (
            f"<fast xmlns='urn:xmpp:fast:0'/><resume xmlns='urn:xmpp:sm:3' previd='{device.sm_id}' h='0'/>"
            f"{_BIND_SM}"
        )
        conn.write(
            _authenticate("HT-SHA-256-NONE", device.account.user.encode() + b"\0" + proof, device, inner)
        )
        m = await conn.expect(RE_S2_DONE, opts.timeout)
        if m.group(1) != b"success":
            raise XmppError(f"FAST login failed: {m.group(0)[:200]!r}")
        resumed = RE_RESUMED.search(m.group(2)) is not None
        if not resumed:
            enabled = RE_ENABLED.search(m.group(2))
            if enabled is not None:
                device.sm_id = enabled.group(1).decode()
        token = RE_TOKEN.search(m.group(2))
        if token is not None:
            device.token = token.group(1).decode()  # rotated
        trips += 1
        elapsed = time.perf_counter() - t0
    finally:
        conn.abort()
    return elapsed, trips, resumed


def new_device(account: Account) -> Device:
    return Device(account, str(uuid.uuid4()))
