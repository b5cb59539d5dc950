"""The server's certificates: one default and one per configured domain, chosen by SNI.

``[tls] cert/key`` (or the generated self-signed pair) is the default; ``[tls.domains."name"]`` gives
a domain (and its subdomains, e.g. its MUC service) a certificate of its own. A receiving TLS context
switches to the domain's context in its SNI callback (RFC 6066 §3), so each c2s or s2s connection is
answered with the certificate for the name the peer asked for; outgoing s2s streams present the
certificate of the local domain they are opened from (the peer's SASL EXTERNAL checks it, XEP-0178).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from roost.transports import tls

if TYPE_CHECKING:
    from roost.config.schema import Config


def default_domains(config: Config) -> list[str]:
    """The served domains the default certificate must cover: those without one of their own."""
    own = config.tls.domains
    return [
        d for d in config.server.domains if not any(d == o or d.endswith("." + o) for o in own)
    ]


def load_certificates(config: Config, default: tuple[Path, Path]) -> Certificates:
    """The configured per-domain certificates around ``default``; a broken one is refused with
    what to fix (ValueError), as the default certificate is."""
    domains: dict[str, tuple[Path, Path]] = {}
    for domain, entry in config.tls.domains.items():
        problems = tls.certificate_problems(entry.cert, entry.key, [domain])
        if problems:
            raise ValueError(f"[tls.domains.{domain!r}]: " + "; ".join(problems))
        domains[domain] = (entry.cert, entry.key)
    return Certificates(default, domains)


class Certificates:
    """Certificate and key files by domain, with the TLS contexts made from them."""

    def __init__(self, default: tuple[Path, Path], domains: Mapping[str, tuple[Path, Path]]) -> None:
        self.default = default
        self.domains = dict(domains)
        self._der: dict[tuple[Path, Path], bytes] = {}
        #: DER of the leaf certificate by id() of the server context presenting it.
        self._der_by_context: dict[int, bytes] = {}
        for files in (default, *self.domains.values()):
            self._der[files] = tls.certificate_der(files[0])

    def files_for(self, name: str | None) -> tuple[Path, Path]:
        """The pair for ``name``: its own, else its closest configured parent domain's, else the default."""
        if name:
            name = name.lower().rstrip(".")
            while True:
                files = self.domains.get(name)
                if files is not None:
                    return files
                _, dot, name = name.partition(".")
                if not dot:
                    break
        return self.default

    def der_for(self, name: str | None) -> bytes:
        """DER of the leaf certificate presented for ``name`` (tls-server-end-point channel binding)."""
        return self._der[self.files_for(name)]

    def server_context(self, configure: Callable[[ssl.SSLContext], None] | None = None) -> ssl.SSLContext:
        """A receiving context presenting the default certificate, switching by SNI to a domain's.

        ``configure`` is applied to every context (e.g. asking for the peer's certificate on s2s).
        """
        contexts: dict[tuple[Path, Path], ssl.SSLContext] = {}
        for files in (self.default, *self.domains.values()):
            if files not in contexts:
                ctx = tls.server_context(*files)
                if configure is not None:
                    configure(ctx)
                contexts[files] = ctx
                self._der_by_context[id(ctx)] = self._der[files]
        default = contexts[self.default]
        if not self.domains:
            return default

        def choose(obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
            chosen = contexts[self.files_for(name)]
            if chosen is not default:
                obj.context = chosen

        default.sni_callback = choose
        return default

    def presented_der(self, obj: ssl.SSLObject | ssl.SSLSocket) -> bytes:
        """DER of the certificate this (server-side) connection presented: the SNI callback left
        the object on the context of that certificate."""
        return self._der_by_context.get(id(obj.context), self._der[self.default])

    def client_context(self, domain: str) -> ssl.SSLContext:
        """An initiating s2s context presenting ``domain``'s certificate (the peer's certificate is
        checked after the handshake, against the configured CAs: :mod:`roost.s2s.certs`)."""
        cert, key = self.files_for(domain)
        ctx = tls.client_context(verify=False)
        ctx.load_cert_chain(str(cert), str(key))
        return ctx
