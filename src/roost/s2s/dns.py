"""Where a remote XMPP domain's server listens (RFC 6120 §3.2, XEP-0368).

SRV records first: ``_xmpps-server._tcp`` (direct TLS) then ``_xmpp-server._tcp`` (STARTTLS), by
priority and weight (RFC 2782); a single target of "." means the service is decidedly not offered
(§3.2.1 step 5). Without SRV records, the domain itself on port 5269 (§3.2.2). Host names are
resolved later, at connect time, by the system resolver (so ``/etc/hosts`` works) with Happy
Eyeballs across the addresses (RFC 8305, asyncio's ``happy_eyeballs_delay``).

Resolvers are injectable: tests use :class:`StaticResolver` to point test domains at loopback ports.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("roost.s2s")

DEFAULT_PORT = 5269


@dataclass(frozen=True, slots=True)
class Target:
    """One place to try: a host name (or address), a port, and whether TLS starts at once."""

    host: str
    port: int
    direct_tls: bool = False


class NoService(Exception):
    """The domain says it offers no XMPP server (SRV target ".")."""


class Resolver(Protocol):
    async def targets(self, domain: str) -> list[Target]:
        """Targets in the order to try; raises :class:`NoService` if the domain has none."""
        ...


class StaticResolver:
    """Fixed targets per domain (tests; or operators' overrides); others: the domain on 5269."""

    def __init__(self, table: Mapping[str, Target | tuple[str, int]]) -> None:
        self.table = {d: t if isinstance(t, Target) else Target(*t) for d, t in table.items()}

    async def targets(self, domain: str) -> list[Target]:
        found = self.table.get(domain)
        return [found] if found is not None else [Target(domain, DEFAULT_PORT)]


class DnsResolver:
    """SRV lookups with dnspython's asynchronous resolver; the system resolver does the rest."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    async def targets(self, domain: str) -> list[Target]:
        found: list[Target] = []
        refused = 0
        for service, direct in (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False)):
            records = await self._srv(service + domain)
            if records is None:
                continue
            if len(records) == 1 and records[0][3] == ".":
                refused += 1
                continue
            found += [Target(host.rstrip("."), port, direct) for _, _, port, host in _order(records)]
        if found:
            return found
        if refused == 2 or (refused and not found):
            raise NoService(f"{domain} publishes no XMPP server (SRV target '.')")
        return [Target(domain, DEFAULT_PORT)]

    async def _srv(self, name: str) -> list[tuple[int, int, int, str]] | None:
        try:
            import dns.asyncresolver
            import dns.exception
            import dns.resolver
        except ImportError:  # pragma: no cover - dnspython is a dependency
            return None
        try:
            answer = await dns.asyncresolver.resolve(name, "SRV", lifetime=self.timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return None
        except dns.exception.DNSException as e:
            log.debug("SRV lookup of %s failed: %s", name, e)
            return None
        return [(r.priority, r.weight, r.port, r.target.to_text()) for r in answer]


def _order(records: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    """RFC 2782: by priority, and within one priority a weighted random order."""
    out: list[tuple[int, int, int, str]] = []
    for priority in sorted({r[0] for r in records}):
        group = [r for r in records if r[0] == priority]
        while group:
            total = sum(r[1] for r in group)
            if total == 0:
                pick = group[0]
            else:
                point = random.uniform(0, total)
                running = 0
                pick = group[-1]
                for r in group:
                    running += r[1]
                    if running >= point:
                        pick = r
                        break
            out.append(pick)
            group.remove(pick)
    return out
