"""Real XMPP clients for tests (slixmpp), with helpers to connect and wait."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import slixmpp


class Client(slixmpp.ClientXMPP):  # type: ignore[misc]
    """A slixmpp client that trusts the test server's self-signed certificate."""

    def __init__(self, jid: str, password: str, plugins: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(jid, password, **kwargs)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.session_started = asyncio.Event()
        self.failed_auth = asyncio.Event()
        self.disconnected_event = asyncio.Event()
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", lambda *_: self.failed_auth.set())
        self.add_event_handler("disconnected", lambda *_: self.disconnected_event.set())
        self.add_event_handler("message", self.received.put_nowait)
        for plugin in ("xep_0030", "xep_0199", "xep_0092", "xep_0202", "xep_0012", *plugins):
            self.register_plugin(plugin)

    async def _on_session_start(self, _: Any) -> None:
        self.session_started.set()


async def connect(
    jid: str,
    password: str,
    port: int,
    *,
    direct_tls: bool = False,
    mech: str | None = None,
    send_presence: bool = True,
    timeout: float = 10,
    plugins: tuple[str, ...] = (),
) -> Client:
    """Log in and wait for the session to start (``plugins``: more slixmpp plugins, e.g. xep_0198)."""
    client = Client(jid, password, plugins, sasl_mech=mech)
    client.enable_direct_tls = direct_tls
    client.enable_starttls = not direct_tls
    client.enable_plaintext = False
    if not send_presence:
        client.add_event_handler("session_start", lambda *_: None)
    client.connect("127.0.0.1", port)
    await asyncio.wait(
        [
            asyncio.ensure_future(client.session_started.wait()),
            asyncio.ensure_future(client.failed_auth.wait()),
        ],
        timeout=timeout,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if not client.session_started.is_set():
        client.disconnect()
        raise AssertionError(f"{jid} could not log in (auth failed: {client.failed_auth.is_set()})")
    if send_presence:
        client.send_presence()
    return client
