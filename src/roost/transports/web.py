"""The web services of a server: the HTTP route table and what mounts on it, and the listener starter.

The composition root maps the ``http`` and ``https`` listener kinds to :func:`start_http`. Every
HTTP listener of a server shares one :class:`~roost.transports.http.HttpRoutes` (:func:`http_routes`),
on which the built-in services are mounted once, as ``[http]`` enables them: WebSocket (RFC 7395),
BOSH (XEP-0124/0206), host-meta (XEP-0156) and the web chat (/chat). Other services (upload, metrics,
…) mount on the same table from their modules.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from roost.transports.bosh import BoshService
from roost.transports.host_meta import HostMeta
from roost.transports.http import BOSH_PATH, WEBSOCKET_PATH, HttpListener, HttpRoutes
from roost.transports.webchat import WebChat
from roost.transports.websocket import handle_websocket

if TYPE_CHECKING:
    from roost.config.schema import ListenEntry
    from roost.core.server import Server

#: Where a server keeps its web services (they live and die with it; the core does not know them).
_ROUTES = "_roost_http_routes"
_BOSH = "_roost_bosh_service"


def http_routes(server: Server) -> HttpRoutes:
    """The server's HTTP route table, with the built-in web services mounted (made on first use)."""
    routes: HttpRoutes | None = getattr(server, _ROUTES, None)
    if routes is None:
        routes = HttpRoutes()
        setattr(server, _ROUTES, routes)
        http = server.config.http
        # The c2s listeners' settings (shared caches; a reload changes them in place).
        settings = server.listen_settings or server.c2s_settings()
        if http.websocket:
            handler = functools.partial(handle_websocket, server, settings)
            routes.mount(WEBSOCKET_PATH, handler, owner="websocket")
        if http.bosh:
            bosh = BoshService(server, settings)
            setattr(server, _BOSH, bosh)
            routes.mount(BOSH_PATH, bosh.handle, methods=("GET", "POST"), cors=True, owner="bosh")
        if http.host_meta:
            HostMeta(routes, http).mount()
        if http.webchat:
            WebChat(server, routes).mount()
    return routes


def bosh_service(server: Server) -> BoshService | None:
    """The server's BOSH sessions (None when BOSH is off or no HTTP listener started)."""
    bosh: BoshService | None = getattr(server, _BOSH, None)
    return bosh


async def start_http(server: Server, entry: ListenEntry) -> tuple[HttpListener, tuple[str, int]]:
    """An ``http`` or ``https`` (TLS with the server's certificate) listener."""
    listener = HttpListener(server, http_routes(server), tls=entry.kind == "https", name=entry.kind)
    host, port = entry.host_port
    address = await listener.start(host, port, backlog=entry.backlog)
    return listener, address
