"""A tiny authoritative DNS server on loopback UDP for the s2s benchmark's domains.

``*.localhost`` names resolve nowhere here without /etc/hosts changes, and the instances of a run
listen for s2s on free ports, not 5269. So the benchmark answers the queries a federating server
makes itself (RFC 6120 §3.2.1): ``_xmpp-server._tcp.<domain>`` SRV → ``localhost.`` on the
instance's port, ``_xmpps-server._tcp.<domain>`` has none (NXDOMAIN), ``localhost`` A → 127.0.0.1.
Servers that take a nameserver setting use it (ejabberd's inetrc, Roost's dnspython resolver), so
the link set-up time includes real SRV lookups over UDP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60
SRV_TARGET = "localhost."


class LoopbackDns(asyncio.DatagramProtocol):
    """Answers SRV for each domain's s2s port and A for ``localhost``; NXDOMAIN for anything else."""

    def __init__(self, s2s_ports: Mapping[str, int]) -> None:
        self.srv = {f"_xmpp-server._tcp.{d}.".lower(): p for d, p in s2s_ports.items()}
        self.names = {f"{d}.".lower() for d in s2s_ports} | {SRV_TARGET}
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return  # not DNS: ignore, as a real server would
        self.queries += 1
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text().lower()
            if question.rdtype == dns.rdatatype.SRV and name in self.srv:
                rdata = f"0 0 {self.srv[name]} {SRV_TARGET}"
                reply.answer.append(dns.rrset.from_text(question.name, TTL, "IN", "SRV", rdata))
            elif question.rdtype == dns.rdatatype.A and name == SRV_TARGET:
                reply.answer.append(dns.rrset.from_text(question.name, TTL, "IN", "A", "127.0.0.1"))
            elif name not in self.names and name not in self.srv:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            # else: the name exists without that type (NOERROR, no answer)
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


async def serve(s2s_ports: Mapping[str, int]) -> tuple[asyncio.DatagramTransport, LoopbackDns, int]:
    """Start the server on a free 127.0.0.1 UDP port: (transport to close, protocol, port)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: LoopbackDns(s2s_ports), local_addr=("127.0.0.1", 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    return transport, protocol, port
