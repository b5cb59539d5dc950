"""``roost check federation DOMAIN``: can this server federate with DOMAIN, and if not, why?

Step by step, as an outgoing link would do it, each with what was found and what to fix:
DNS (SRV records or the domain on 5269), the TCP connection (every address, Happy Eyeballs), the
stream and STARTTLS, the peer's certificate (RFC 6125 against ``[s2s] ca_file`` or the system
store), and what authentication the peer offers us (SASL EXTERNAL for our certificate, dialback).
It authenticates nothing: dialback would need the peer to call this server back.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

from roost.config.schema import Config
from roost.s2s.certs import chain_of, load_store, valid_for
from roost.s2s.dns import DnsResolver, NoService, Resolver, Target
from roost.stanza.errors import StreamError
from roost.stream.core import Closed, Feature, Opened, Role, Stream, StreamEvent
from roost.stream.events import NeedTls
from roost.stream.features.tls import StartTls
from roost.stream.s2s import DIALBACK_FEATURE, S2SFraming
from roost.transports import tls as tls_util
from roost.xml.element import Element
from roost.xml.ns import SASL, SERVER

TIMEOUT = 10.0


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    fix: str = ""


class _Probe(Feature):
    """Initiating role: records the features offered after TLS, then ends the stream."""

    def __init__(self) -> None:
        self.features: Element | None = None

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        self.features = features
        return stream.close()


async def diagnose(
    domain: str, config: Config, resolver: Resolver | None = None, timeout: float = TIMEOUT
) -> list[Step]:
    """The steps, in order; the first failing one ends the list."""
    steps: list[Step] = []
    resolver = resolver or DnsResolver()
    local = config.server.domains[0]
    try:
        targets = await asyncio.wait_for(resolver.targets(domain), timeout)
    except NoService as e:
        steps.append(Step("DNS", False, str(e), f"{domain} says it runs no XMPP server; nothing to fix here"))
        return steps
    except (TimeoutError, OSError) as e:
        steps.append(Step("DNS", False, f"lookup failed: {e}", "check this machine's resolver"))
        return steps
    srv = any(t.port != 5269 or t.host != domain or t.direct_tls for t in targets)
    listing = ", ".join(f"{t.host}:{t.port}{' (direct TLS)' if t.direct_tls else ''}" for t in targets)
    steps.append(
        Step(
            "DNS",
            True,
            f"{'SRV records' if srv else 'no SRV records; the domain itself on 5269'}: {listing}",
        )
    )
    target, reader, writer, why = await _connect(targets, timeout)
    if target is None or reader is None or writer is None:
        steps.append(
            Step(
                "connection",
                False,
                why,
                f"is {domain}'s server running and its port 5269 open to this machine "
                "(firewall, SRV record pointing at the right host)?",
            )
        )
        return steps
    peer = writer.get_extra_info("peername")
    steps.append(
        Step("connection", True, f"connected to {target.host}:{target.port} ({peer[0] if peer else '?'})")
    )
    try:
        steps += await _negotiate(domain, local, config, target, reader, writer, timeout)
    finally:
        writer.close()
    return steps


async def _connect(
    targets: list[Target], timeout: float
) -> tuple[Target | None, asyncio.StreamReader | None, asyncio.StreamWriter | None, str]:
    errors: list[str] = []
    for target in targets:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM
            )
        except OSError as e:
            errors.append(f"{target.host}: no address ({e})")
            continue
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port, happy_eyeballs_delay=0.25), timeout
            )
        except (OSError, TimeoutError) as e:
            addresses = ", ".join(sorted({str(i[4][0]) for i in infos}))
            errors.append(f"{target.host}:{target.port} ({addresses}): {e or 'timed out'}")
            continue
        return target, reader, writer, ""
    return None, None, None, "; ".join(errors)


async def _negotiate(
    domain: str,
    local: str,
    config: Config,
    target: Target,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timeout: float,
) -> list[Step]:
    steps: list[Step] = []
    probe = _Probe()
    starttls = StartTls(available=True, required=config.s2s.require_encryption)
    stream = Stream(S2SFraming(), [starttls, probe], role=Role.INITIATING, content_ns=SERVER)
    ctx = tls_util.client_context(verify=False)
    cert, key = config.tls.cert, config.tls.key
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    secure = False
    if target.direct_tls:
        await writer.start_tls(ctx, server_hostname=domain)
        stream.secure = secure = True
    stream.start(domain, from_=local)
    writer.write(stream.data_to_send())
    opened = False
    while True:
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout)
        except TimeoutError:
            steps.append(
                Step("stream", False, "no answer to our stream header", "is this an XMPP server port?")
            )
            return steps
        if not data:
            steps.append(Step("stream", False, "the peer closed the connection", "see the peer's logs"))
            return steps
        for event in stream.receive_data(data):
            if isinstance(event, Opened) and not opened:
                opened = True
                steps.append(Step("stream", True, f"stream opened (id {event.attrs.get('id', '?')})"))
            elif isinstance(event, NeedTls):
                writer.write(stream.data_to_send())
                await writer.drain()
                try:
                    await writer.start_tls(ctx, server_hostname=domain)
                except (ssl.SSLError, OSError) as e:
                    steps.append(Step("TLS", False, f"handshake failed: {e}", "check the peer's TLS setup"))
                    return steps
                secure = True
                starttls.established(stream, {})
            elif isinstance(event, Closed):
                if event.peer_error is not None:
                    steps.append(Step("stream", False, f"the peer closed the stream: {event.peer_error}", ""))
                    return steps
                if event.error is not None and probe.features is None:
                    steps.append(Step("TLS", False, f"{event.error}", _tls_fix(event.error)))
                    return steps
        out = stream.data_to_send()
        if out:
            writer.write(out)
        if probe.features is not None:
            break
    ssl_object = writer.get_extra_info("ssl_object")
    if not secure or ssl_object is None:
        steps.append(Step("TLS", False, "the peer does not offer STARTTLS", "enable TLS on the peer"))
        return steps
    steps.append(Step("TLS", True, f"{ssl_object.version()} with {ssl_object.cipher()[0]}"))
    why = valid_for(chain_of(ssl_object), domain, load_store(config.s2s.ca_file))
    if why is None:
        steps.append(Step("certificate", True, f"valid for {domain}"))
    else:
        steps.append(
            Step(
                "certificate",
                not config.s2s.secure_auth,
                why,
                f"{domain} needs a certificate for {domain} from a CA in "
                f"{config.s2s.ca_file or 'the system store'}"
                + ("" if config.s2s.secure_auth else " (dialback works without it)"),
            )
        )
    features = probe.features
    assert features is not None
    mechanisms = features.find("mechanisms", SASL)
    external = mechanisms is not None and any(m.text.strip() == "EXTERNAL" for m in mechanisms.elements())
    dialback = features.find("dialback", DIALBACK_FEATURE) is not None
    if external:
        steps.append(
            Step("authentication", True, "the peer offers SASL EXTERNAL: our certificate is accepted")
        )
    elif dialback and not config.s2s.secure_auth:
        steps.append(
            Step(
                "authentication",
                True,
                f"the peer offers dialback: it will verify us by connecting back to {local}",
                f"make sure {local} resolves (SRV or A/AAAA) to this server, port 5269 open to {domain}",
            )
        )
    else:
        steps.append(
            Step(
                "authentication",
                False,
                "the peer offers neither SASL EXTERNAL for our certificate nor dialback we may use",
                f"a certificate for {local} from a CA the peer trusts (or allow dialback: [s2s] secure_auth)",
            )
        )
    return steps


def _tls_fix(error: StreamError) -> str:
    if error.condition == "policy-violation":
        return "the peer offers no STARTTLS; [s2s] require_encryption = false would allow it (not advised)"
    return ""
