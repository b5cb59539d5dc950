"""Host-meta (XEP-0156 §3, RFC 6415): where a web client finds the WebSocket and BOSH endpoints.

``/.well-known/host-meta`` answers in XRD (XML, which XEP-0156 requires) and
``/.well-known/host-meta.json`` in JRD. The URLs are built from ``[http] public_url`` or, when that
is unset, from the request itself (its Host, and https where the request came over TLS or a trusted
proxy says so), so the same listener serves correct links under any name it is reached by.
"""

from __future__ import annotations

import json

from aiohttp import web

from roost.config.schema import HttpSection
from roost.transports.http import BOSH_PATH, WEBSOCKET_PATH, HttpRoutes, client_of
from roost.xml.element import Element
from roost.xml.serializer import serialize

XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"
HOST_META_PATH = "/.well-known/host-meta"
HOST_META_JSON_PATH = "/.well-known/host-meta.json"


def links(base_url: str, *, websocket: bool, bosh: bool) -> list[tuple[str, str]]:
    """``(rel, href)`` pairs for a service reached at ``base_url`` (``https://host[:port][/prefix]``)."""
    base = base_url.rstrip("/")
    scheme, _, rest = base.partition("://")
    result: list[tuple[str, str]] = []
    if bosh:
        result.append((BOSH_REL, f"{base}{BOSH_PATH}"))
    if websocket:
        ws_scheme = "wss" if scheme.lower() == "https" else "ws"
        result.append((WEBSOCKET_REL, f"{ws_scheme}://{rest}{WEBSOCKET_PATH}"))
    return result


def xrd(pairs: list[tuple[str, str]]) -> bytes:
    """The XRD document (RFC 6415 §3)."""
    root = Element("XRD", XRD_NS)
    for rel, href in pairs:
        root.add("Link", XRD_NS, {"rel": rel, "href": href})
    return ("<?xml version='1.0' encoding='utf-8'?>\n" + serialize(root)).encode()


def jrd(pairs: list[tuple[str, str]]) -> bytes:
    """The JRD document (RFC 6415 Appendix A)."""
    return json.dumps({"links": [{"rel": rel, "href": href} for rel, href in pairs]}, indent=2).encode()


class HostMeta:
    """Serves both host-meta documents for whichever transports are mounted."""

    def __init__(self, routes: HttpRoutes, config: HttpSection) -> None:
        self.routes = routes
        self.public_url = config.public_url

    def mount(self) -> None:
        self.routes.mount(HOST_META_PATH, self.xml, cors=True, owner="host-meta")
        self.routes.mount(HOST_META_JSON_PATH, self.json, cors=True, owner="host-meta")

    def _links(self, request: web.Request) -> list[tuple[str, str]]:
        info = client_of(request)
        base = self.public_url or f"{info.scheme}://{info.host}"
        return links(
            base,
            websocket=self.routes.find(WEBSOCKET_PATH) is not None,
            bosh=self.routes.find(BOSH_PATH) is not None,
        )

    async def xml(self, request: web.Request) -> web.StreamResponse:
        body = xrd(self._links(request))
        return web.Response(body=body, content_type="application/xrd+xml", charset="utf-8")

    async def json(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=jrd(self._links(request)), content_type="application/json")
