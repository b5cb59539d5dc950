"""The HTTP listeners: one aiohttp server per ``http``/``https`` listener, one route table for all.

Every HTTP service — WebSocket (RFC 7395), BOSH (XEP-0124/0206), host-meta (XEP-0156), and later
upload, metrics and XEP-0070 — mounts a path on the server's :class:`HttpRoutes`; each listener
dispatches every request through that table, so a service mounted or unmounted at run time (a module
loaded or unloaded) is served, or not, on every listener at once.

A request's client is the socket peer unless that peer is a configured trusted proxy: then the
``Forwarded`` (RFC 7239) or ``X-Forwarded-For``/``-Proto``/``-Host`` headers say who the client is
and whether it came over TLS (:func:`client_info`). Headers from any other peer are ignored, so a
client cannot claim another address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import MultiMapping

from roost.config.schema import listen_hosts

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Where the XMPP web transports are served (the paths Prosody and ejabberd use too).
WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"


# -- who the client is --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The client behind one HTTP request, trusted proxies taken into account."""

    #: The client's IP address ("" if unknown).
    address: str
    #: The request reached us, or the first trusted proxy, over TLS.
    secure: bool
    #: TLS ends in this process (so TLS channel bindings describe the client's own connection).
    direct_tls: bool
    #: The host (and port) the client asked for: its Host header, or the proxy's X-Forwarded-Host.
    host: str
    #: A plain-HTTP client on this machine (a loopback peer, no proxy hop), which ``[http]
    #: plain_loopback`` lets through where encryption is required: its bytes never leave the host.
    local: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @property
    def confidential(self) -> bool:
        """Nobody on the network can read this client's traffic: TLS, or a trusted local client."""
        return self.secure or self.local


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The ``[http] trusted_proxies`` entries as networks."""
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def _ip(text: str) -> IPAddress | None:
    """An IP address from a proxy header node: ``1.2.3.4``, ``1.2.3.4:80``, ``[v6]``, ``[v6]:80``, ``v6``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None  # "unknown", an obfuscated "_node" (RFC 7239 §6), or garbage


def _split_list(values: Iterable[str]) -> list[str]:
    """Comma-separated header values (every occurrence of the header), quotes respected."""
    items: list[str] = []
    for value in values:
        current: list[str] = []
        quoted = False
        for ch in value:
            if ch == '"':
                quoted = not quoted
            if ch == "," and not quoted:
                items.append("".join(current).strip())
                current = []
            else:
                current.append(ch)
        items.append("".join(current).strip())
    return [i for i in items if i]


def _forwarded_pairs(element: str) -> dict[str, str]:
    """``for=1.2.3.4;proto=https`` → ``{"for": "1.2.3.4", "proto": "https"}`` (RFC 7239 §4)."""
    pairs: dict[str, str] = {}
    for part in element.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            pairs[key.strip().lower()] = value.strip().strip('"')
    return pairs


def _loopback(text: str) -> bool:
    ip = _ip(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


def _trusted(address: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def client_info(
    peer: str, headers: MultiMapping[str], *, tls: bool, host: str, trusted: Sequence[IPNetwork]
) -> ClientInfo:
    """Who sent a request that arrived from ``peer`` (over TLS if ``tls``), given its headers.

    When ``peer`` is a trusted proxy, the hops it reports are walked from the nearest back; the first
    address that is not itself a trusted proxy is the client. ``Forwarded`` (RFC 7239) wins over the
    ``X-Forwarded-*`` family when both are present.
    """
    peer_ip = _ip(peer)
    if not trusted or not _trusted(peer_ip, trusted):
        return ClientInfo(peer, tls, tls, host)
    hops: list[str] = []  # client first, nearest proxy's client last (as the headers list them)
    protos: list[str | None] = []
    hosts: list[str | None] = []
    forwarded = _split_list(headers.getall("Forwarded", []))
    if forwarded:
        for element in forwarded:
            pairs = _forwarded_pairs(element)
            hops.append(pairs.get("for", ""))
            protos.append(pairs.get("proto"))
            hosts.append(pairs.get("host"))
    else:
        hops = _split_list(headers.getall("X-Forwarded-For", []))
        xproto = _split_list(headers.getall("X-Forwarded-Proto", []))
        # Proxies that append one value each line up with the hops; a single value describes the
        # request the client made (what most single-proxy set-ups send).
        protos = list(xproto) if len(xproto) == len(hops) else [xproto[0] if xproto else None] * len(hops)
        xhost = headers.get("X-Forwarded-Host")
        hosts = [xhost.split(",")[0].strip() if xhost else None] * len(hops)
    address, secure, asked = peer, tls, host
    for i in range(len(hops) - 1, -1, -1):
        ip = _ip(hops[i])
        if ip is None:
            break  # an unknown or obfuscated node: keep the last address we could vouch for
        address = str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)
        proto = protos[i]
        if proto is not None:
            secure = proto.lower() in ("https", "wss")
        if hosts[i]:
            asked = hosts[i] or asked
        if not _trusted(ip, trusted):
            break
    return ClientInfo(address, secure, tls, asked)


#: Where the dispatcher leaves the request's :class:`ClientInfo`.
CLIENT_KEY = web.RequestKey("roost.client", ClientInfo)


def client_of(request: web.Request) -> ClientInfo:
    """The :class:`ClientInfo` the listener worked out for ``request``."""
    return request[CLIENT_KEY]


# -- routes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One mounted service."""

    path: str
    handler: Handler
    #: Serve ``path/…`` too (the handler reads ``request.path``).
    prefix: bool
    #: Methods served; others get 405. OPTIONS is answered for CORS routes.
    methods: frozenset[str]
    #: Add the configured CORS headers and answer preflight requests (XEP-0156 §4, BOSH from pages).
    cors: bool
    owner: str


class HttpRoutes:
    """Path → handler, shared by every HTTP listener of the server."""

    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._prefixes: list[Route] = []

    def mount(
        self,
        path: str,
        handler: Handler,
        *,
        methods: Iterable[str] = ("GET",),
        prefix: bool = False,
        cors: bool = False,
        owner: str = "",
    ) -> None:
        """Serve ``path`` with ``handler``; ValueError if another service has it."""
        if not path.startswith("/") or (path != "/" and path.endswith("/")):
            raise ValueError(f"route path {path!r} must start with '/' and not end with one")
        taken = self._exact.get(path) or next((r for r in self._prefixes if r.path == path), None)
        if taken is not None:
            raise ValueError(f"{path} is already served by {taken.owner or 'another service'}")
        route = Route(path, handler, prefix, frozenset(m.upper() for m in methods), cors, owner)
        if prefix:
            self._prefixes.append(route)
            self._prefixes.sort(key=lambda r: len(r.path), reverse=True)  # longest match first
        else:
            self._exact[path] = route

    def unmount(self, path: str) -> None:
        """Stop serving ``path`` (no error if it was not mounted)."""
        self._exact.pop(path, None)
        self._prefixes = [r for r in self._prefixes if r.path != path]

    def find(self, path: str) -> Route | None:
        """The route serving ``path``: an exact mount, else the longest prefix mount."""
        route = self._exact.get(path)
        if route is not None:
            return route
        for route in self._prefixes:
            if path == route.path or path.startswith(route.path + "/"):
                return route
        return None

    @property
    def paths(self) -> list[str]:
        return sorted([*self._exact, *(r.path for r in self._prefixes)])


# -- listeners ------------------------------------------------------------------------------------------


class HttpListener:
    """One listening socket (plain HTTP, or HTTPS with the server's certificate) serving the routes."""

    def __init__(self, server: Server, routes: HttpRoutes, *, tls: bool, name: str = "http") -> None:
        self.server = server
        self.routes = routes
        self.tls = tls
        self.name = name
        http = server.config.http
        self._trusted = parse_networks(http.trusted_proxies)
        self._cors = tuple(http.cors_origins)
        self._plain_loopback = http.plain_loopback
        app = web.Application(client_max_size=http.max_request_bytes, handler_args={"max_field_size": 16384})
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._listener: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> tuple[str, int]:
        """Listen on ``host:port`` ("" = every interface; port 0 = any free port); the bound address."""
        await self._runner.setup()
        context: ssl.SSLContext | None = self.server.tls_context if self.tls else None
        loop = asyncio.get_running_loop()
        handler = self._runner.server
        assert handler is not None
        self._listener = await loop.create_server(
            handler, listen_hosts(host, port), port, ssl=context, backlog=backlog, reuse_address=True
        )
        sockname = self._listener.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("%s listener on %s:%d", "HTTPS" if self.tls else "HTTP", *self.address)
        return self.address

    def close(self) -> None:
        """Accept no new connections (the first step of an ordered shutdown)."""
        if self._listener is not None:
            self._listener.close()

    async def wait_closed(self) -> None:
        """End the open HTTP connections (held requests get 1 s to finish) and release the app."""
        server = self._runner.server
        if server is not None:
            await server.shutdown(1.0)
        await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peername = transport.get_extra_info("peername") if transport is not None else None
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        info = client_info(peer, request.headers, tls=self.tls, host=request.host, trusted=self._trusted)
        if self._plain_loopback and not info.secure and info.address == peer and _loopback(peer):
            info = dataclasses.replace(info, local=True)
        request[CLIENT_KEY] = info
        route = self.routes.find(request.path)
        if route is None:
            raise web.HTTPNotFound()
        if route.cors and request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
            self._add_cors(request, response, route)
            return response
        if request.method not in route.methods and not (request.method == "HEAD" and "GET" in route.methods):
            raise web.HTTPMethodNotAllowed(request.method, sorted(route.methods))
        response = await route.handler(request)
        if route.cors and not response.prepared:
            self._add_cors(request, response, route)
        return response

    def _add_cors(self, request: web.Request, response: web.StreamResponse, route: Route) -> None:
        if not self._cors:
            return
        if "*" in self._cors:
            origin = "*"
        else:
            origin = request.headers.get("Origin", "")
            if origin not in self._cors:
                return
            response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted({*route.methods, "OPTIONS"}))
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "86400"
