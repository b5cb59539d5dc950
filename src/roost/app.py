"""The composition root: the one place that knows every transport and every module.

It reads nothing itself: given a loaded :class:`~roost.config.schema.Config`, it builds a
:class:`~roost.core.server.Server` with the module classes to load on each served domain and a
starter for each kind of ``[[listen]]`` entry, and runs it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from roost.component.link import ComponentConnection
from roost.config.schema import Config, ListenEntry, listen_hosts
from roost.core.server import Listener, ListenerStarter, Server, load_secret, run_until_signalled
from roost.modules import all_modules
from roost.s2s.link import IncomingS2S
from roost.s2s.manager import Federation
from roost.transports.tcp import TcpConnection
from roost.transports.web import start_http
from roost.util.logging import setup_logging


async def start_tcp_c2s(server: Server, entry: ListenEntry) -> tuple[Listener, tuple[str, int]]:
    """A ``c2s`` (STARTTLS) or ``c2s_tls`` (direct TLS, XEP-0368) listener."""
    host, port = entry.host_port
    # One settings object shared by the c2s listeners; a reload changes it in place.
    settings = server.listen_settings or server.c2s_settings()
    srv = await asyncio.get_running_loop().create_server(
        functools.partial(TcpConnection, server, settings, direct_tls=entry.kind == "c2s_tls"),
        listen_hosts(host, port),
        port,
        backlog=entry.backlog,
        reuse_address=True,
    )
    address = srv.sockets[0].getsockname()[:2]
    return srv, (str(address[0]), int(address[1]))


async def start_component(server: Server, entry: ListenEntry) -> tuple[Listener, tuple[str, int]]:
    """A ``component`` listener: external components (XEP-0114) over plain TCP."""
    host, port = entry.host_port
    srv = await asyncio.get_running_loop().create_server(
        functools.partial(ComponentConnection, server),
        host or None,
        port,
        backlog=entry.backlog,
        reuse_address=True,
    )
    address = srv.sockets[0].getsockname()[:2]
    return srv, (str(address[0]), int(address[1]))


async def start_s2s(server: Server, entry: ListenEntry) -> tuple[Listener, tuple[str, int]]:
    """An ``s2s`` listener; the first one turns federation on (outgoing links, dialback)."""
    federation = server.route_table.remote
    if not isinstance(federation, Federation):
        secret = load_secret(server.config.server.data_dir / "dialback.secret")
        federation = Federation(server, server.config.s2s, secret)
        server.route_table.remote = federation
        federation.start()
    host, port = entry.host_port
    srv = await asyncio.get_running_loop().create_server(
        functools.partial(IncomingS2S, server, federation),
        host or None,
        port,
        backlog=entry.backlog,
        reuse_address=True,
    )
    address = srv.sockets[0].getsockname()[:2]
    return srv, (str(address[0]), int(address[1]))


def listener_starters() -> Mapping[str, ListenerStarter]:
    """How each kind of listener starts."""
    return {
        "c2s": start_tcp_c2s,
        "c2s_tls": start_tcp_c2s,
        "http": start_http,
        "https": start_http,
        "component": start_component,
        "s2s": start_s2s,
    }


def create_server(config: Config) -> Server:
    """A server with every built-in module and transport (not started)."""
    return Server(config, modules=all_modules(), listeners=listener_starters())


def serve(config: Config, overrides: dict[str, str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (the ``roost run`` command); SIGHUP reloads.

    ``overrides`` are the command line's ``--set``/``--log-level``: a reload applies them again.
    """
    setup_logging(config.log.level, config.log.file)
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    server = create_server(config)
    server.config_overrides = dict(overrides or {})
    return runner(run_until_signalled(server))
