"""Full client login (TCP, STARTTLS, SCRAM, bind, initial presence) and clean close, with step timings.

Stanzas are pre-built bytes; the only per-login work is the SCRAM exchange (with the salted password
cached per user, so the generator does not spend its CPU on PBKDF2) and a handful of regex searches.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from dataclasses import dataclass, field

from roost.stream.sasl.scram import ScramClient

from .conn import XmppConn, XmppError

NS_TLS = b"urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

RE_FEATURES = re.compile(rb"</(?:[\w-]+:)?features>")
RE_PROCEED = re.compile(rb"<proceed\b[^>]*>")
RE_CHALLENGE = re.compile(rb"<challenge\b[^>]*>([^<]*)</challenge>")
RE_SUCCESS = re.compile(rb"<success\b[^>]*?(?:/>|>([^<]*)</success>)")
# Each wait consumes its whole stanza, so what follows in the buffer starts at a top-level element
# (a scenario that parses the stream from there, e.g. stream management's stanza count, needs that).
RE_BIND = re.compile(rb"<jid>([^<]+)</jid>\s*</(?:[\w-]+:)?bind>\s*</(?:[\w-]+:)?iq>")
RE_SESSION_RESULT = re.compile(rb"<iq\b[^>]*\bid=['\"]sess1['\"][^>]*?(?:/>|>.*?</(?:[\w-]+:)?iq>)", re.S)
RE_PRESENCE = re.compile(rb"<presence\b[^>]*?(?:/>|>.*?</(?:[\w-]+:)?presence>)", re.S)
RE_STREAM_END = re.compile(rb"</(?:[\w-]+:)?stream>")
RE_MECHANISM = re.compile(rb"<mechanism>([^<]+)</mechanism>")
RE_SESSION_REQUIRED = re.compile(rb"<session\b[^>]*xmpp-session['\"]\s*(?:/>|>\s*</session>)")

STEPS = ("connect", "tls", "auth", "bind", "presence", "close")


def client_tls_context() -> ssl.SSLContext:
    """Loopback only: no certificate verification."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def stream_open(domain: str, frm: str | None = None) -> bytes:
    """A stream header; ``frm``: the account's bare JID (RFC 6120 §4.7.1; XEP-0388 clients send it,
    and ejabberd offers SASL2 only to a stream that names its account)."""
    from_attr = f" from='{frm}'" if frm else ""
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'{from_attr} version='1.0'>"
    ).encode()


STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
STREAM_CLOSE = b"</stream:stream>"
INITIAL_PRESENCE = b"<presence/>"
SESSION_IQ = b"<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"


def bind_iq(resource: str) -> bytes:
    return (
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    ).encode()


@dataclass(slots=True)
class Account:
    user: str  # localpart
    password: str


@dataclass(slots=True)
class Endpoint:
    host: str
    port: int
    domain: str


class CredentialCache:
    """Salted passwords per (user, hash), learnt from the first exchange or seeded by the target."""

    def __init__(self) -> None:
        self._salted: dict[tuple[str, str], bytes] = {}

    def get(self, user: str, hash_name: str) -> bytes | None:
        return self._salted.get((user, hash_name))

    def put(self, user: str, hash_name: str, salted: bytes) -> None:
        self._salted[(user, hash_name)] = salted

    def __len__(self) -> int:
        return len(self._salted)


@dataclass(slots=True)
class Session:
    """A logged-in connection plus how long each login step took (seconds)."""

    conn: XmppConn
    account: Account
    jid: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def login_seconds(self) -> float:
        return sum(v for k, v in self.timings.items() if k != "close")


@dataclass(slots=True)
class LoginOptions:
    tls: ssl.SSLContext
    hash_name: str = "SHA-1"
    timeout: float = 15.0
    # "echo": send initial presence and wait for the server to reflect it (RFC 6121 §4.2.2);
    # "send": send it without waiting; "none": stay unavailable.
    presence: str = "echo"
    local_addr: tuple[str, int] | None = None


async def authenticate(
    endpoint: Endpoint, account: Account, creds: CredentialCache, opts: LoginOptions
) -> tuple[XmppConn, re.Match[bytes], dict[str, float], float]:
    """Connect, STARTTLS, SCRAM and restart the stream: the connection, the post-auth stream
    features (bind, stream management, …), the step timings so far and when authentication ended."""
    loop = asyncio.get_running_loop()
    timeout = opts.timeout
    t0 = time.perf_counter()
    _, conn = await asyncio.wait_for(
        loop.create_connection(XmppConn, endpoint.host, endpoint.port, local_addr=opts.local_addr),
        timeout,
    )
    try:
        opener = stream_open(endpoint.domain)
        conn.write(opener)
        m = await conn.expect(RE_FEATURES, timeout)
        if NS_TLS not in m.string:
            raise XmppError("server does not offer STARTTLS")
        t1 = time.perf_counter()

        conn.write(STARTTLS)
        await conn.expect(RE_PROCEED, timeout)
        await conn.start_tls(opts.tls, endpoint.domain, timeout)
        conn.write(opener)
        m = await conn.expect(RE_FEATURES, timeout)
        mechanism = f"SCRAM-{opts.hash_name}".encode()
        if mechanism not in RE_MECHANISM.findall(m.string):
            raise XmppError(f"server does not offer {mechanism.decode()}: {m.string[-400:]!r}")
        t2 = time.perf_counter()

        cached = creds.get(account.user, opts.hash_name)
        scram = ScramClient(opts.hash_name, account.user, account.password, salted_password=cached)
        conn.write(_auth(opts.hash_name, scram.first()))
        m = await conn.expect(RE_CHALLENGE, timeout)
        conn.write(_response(scram.respond(base64.b64decode(m.group(1)))))
        m = await conn.expect(RE_SUCCESS, timeout)
        if m.group(1):
            scram.verify(base64.b64decode(m.group(1)))
        if cached is None and scram.salted_password is not None:
            creds.put(account.user, opts.hash_name, scram.salted_password)
        t3 = time.perf_counter()

        conn.write(opener)
        features = await conn.expect(RE_FEATURES, timeout)
    except BaseException:
        conn.abort()
        raise
    return conn, features, {"connect": t1 - t0, "tls": t2 - t1, "auth": t3 - t2}, t3


async def login(
    endpoint: Endpoint, account: Account, resource: str, creds: CredentialCache, opts: LoginOptions
) -> Session:
    """Log one account in; the returned session is bound and (by default) available."""
    timeout = opts.timeout
    conn, m, timings, t3 = await authenticate(endpoint, account, creds, opts)
    try:
        session_required = RE_SESSION_REQUIRED.search(m.string) is not None
        conn.write(bind_iq(resource))
        m = await conn.expect(RE_BIND, timeout)
        jid = m.group(1).decode()
        if session_required:
            # RFC 3921 §3 session establishment, only when the server does not mark it optional.
            conn.write(SESSION_IQ)
            await conn.expect(RE_SESSION_RESULT, timeout)
        t4 = time.perf_counter()

        t5 = t4
        if opts.presence != "none":
            conn.write(INITIAL_PRESENCE)
            if opts.presence == "echo":
                await conn.expect(RE_PRESENCE, timeout)
            t5 = time.perf_counter()
    except BaseException:
        conn.abort()
        raise
    timings.update(bind=t4 - t3, presence=t5 - t4)
    return Session(conn, account, jid, timings)


async def close(session: Session, time_limit: float = 10.0) -> None:
    """Close the stream the polite way: send ``</stream:stream>``, wait for the server's, then TCP."""
    conn = session.conn
    t0 = time.perf_counter()
    conn.set_sink(None)
    conn.clear()
    try:
        conn.write(STREAM_CLOSE)
        await conn.expect(RE_STREAM_END, time_limit)
    except XmppError:
        pass  # the server may close TCP right after its closing tag
    finally:
        if conn.transport is not None:
            conn.transport.close()
    try:
        await asyncio.wait_for(asyncio.shield(conn.lost), time_limit)
    except TimeoutError:
        conn.abort()
    session.timings["close"] = time.perf_counter() - t0


def _auth(hash_name: str, first: bytes) -> bytes:
    payload = base64.b64encode(first).decode()
    return f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-{hash_name}'>{payload}</auth>".encode()


def _response(final: bytes) -> bytes:
    return f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>".encode()
