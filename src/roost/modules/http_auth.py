"""XEP-0070 verifying HTTP requests via XMPP: an HTTP endpoint that asks the user's client to confirm.

A web service, or a reverse proxy's ``auth_request``, calls ``GET /http-auth`` with the user's JID, a
transaction id, the method and URL of the request to verify (query parameters; or ``Authorization:
Basic`` base64(JID:transaction id) with ``X-Original-Method``/``X-Original-URL`` as nginx passes
them). Roost sends ``<confirm/>`` to the user's client — an IQ to a full JID, a message to a bare JID
(XEP-0070 §4.2) — and answers 200 (accepted), 403 (denied) or 504 (no answer in time). The same
confirmation serves Roost's own pages (/metrics) as the alternative to a password
(:mod:`roost.admin.http_login`). See docs/xep0070.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import Field

from roost.admin import http_login
from roost.admin.http_login import Verdict
from roost.admin.metrics import allowed, parse_allow
from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.core.modules import Module, Xep, hook
from roost.jid import JID, JIDError
from roost.modules.upload.engine import RateWindow
from roost.transports.http import client_of
from roost.transports.web import http_routes
from roost.xml.element import Element
from roost.xml.ns import CLIENT

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.mod.http_auth")

NS_HTTP_AUTH = "http://jabber.org/protocol/http-auth"
METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"))


class HttpAuthOptions(ModuleOptions):
    """XEP-0070 request verification endpoint (docs/xep0070.md)."""

    enabled: bool = Field(
        False, description="Serve the XEP-0070 verification endpoint on the HTTP listeners."
    )
    path: str = Field("/http-auth", description="URL path of the endpoint.")
    allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Client addresses or networks that may call the endpoint (your web services or proxy).",
    )
    timeout_seconds: float = Field(60, gt=0, le=600, description="How long to wait for the user (then 504).")
    requests_per_minute: int = Field(
        6, ge=1, le=1000, description="Confirmation requests per JID per minute (429 beyond)."
    )


@dataclass(slots=True)
class Pending:
    jid: str
    future: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class HttpAuthRuntime:
    """The endpoint of one server and the confirmations it waits for."""

    def __init__(self, server: Server, options: HttpAuthOptions) -> None:
        self.server = server
        self.options = options
        self.allow = parse_allow(options.allow)
        self.rate = RateWindow(options.requests_per_minute)
        #: transaction id → the confirmation waiting for it (one at a time per id).
        self.pending: dict[str, Pending] = {}
        self.users = 0

    def start(self) -> None:
        http_routes(self.server).mount(
            self.options.path, self.handle, methods=("GET", "POST"), owner="http_auth"
        )

    def stop(self) -> None:
        http_routes(self.server).unmount(self.options.path)
        for pending in self.pending.values():
            pending.future.cancel()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not allowed(client_of(request).address, self.allow):
            return _text(403, "not allowed from this address")
        params = request.query
        jid_text, txn = params.get("jid", ""), params.get("id", "")
        method = params.get("method") or request.headers.get("X-Original-Method") or ""
        url = params.get("url") or request.headers.get("X-Original-URL") or ""
        if not jid_text and request.headers.get("Authorization", "").startswith("Basic "):
            try:
                raw = base64.b64decode(request.headers["Authorization"][6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return _text(400, "malformed Authorization header")
            jid_text, _, txn = raw.partition(":")
        if not jid_text or not txn or not url:
            return _text(400, "jid, id (transaction id) and url are required")
        method = method.upper() or "GET"
        if method not in METHODS:
            return _text(400, f"unknown method {method}")
        try:
            jid = JID.parse(jid_text)
        except JIDError:
            return _text(400, "not a valid JID")
        verdict = await self.confirm(jid, txn, method, url)
        return _text(verdict.status, verdict.reason)

    async def confirm(self, jid: JID, txn: str, method: str, url: str) -> Verdict:
        """Ask ``jid``'s client to confirm the request ``txn`` (XEP-0070 §4); what came of it.

        Used by the endpoint (part (a)) and by Roost's own HTTP pages that take a JID and a transaction
        id in ``Authorization: Basic`` (part (b), :mod:`roost.admin.http_login`).
        """
        if not jid.local or jid.domain not in self.server.config.server.domains:
            return Verdict(403, "not an account of this server")
        if txn in self.pending:
            return Verdict(409, "a confirmation for this transaction id is already pending")
        if not self.rate.allow(str(jid.bare), time.time()):
            return Verdict(429, f"at most {self.options.requests_per_minute} requests a minute for this JID")
        if not await self.server.account_exists(jid.domain, jid.local):
            return Verdict(403, "not an account of this server")
        pending = Pending(str(jid.bare))
        self.pending[txn] = pending
        try:
            if jid.resource is not None:
                accepted = await self._ask_iq(jid, txn, method, url)
            else:
                accepted = await self._ask_message(jid, txn, method, url, pending)
        except TimeoutError:
            return Verdict(504, "the user did not answer in time")
        finally:
            self.pending.pop(txn, None)
        return Verdict(200, "confirmed") if accepted else Verdict(403, "denied by the user")

    def _confirm(self, txn: str, method: str, url: str) -> Element:
        return Element("confirm", NS_HTTP_AUTH, {"id": txn, "method": method, "url": url})

    async def _ask_iq(self, jid: JID, txn: str, method: str, url: str) -> bool:
        """XEP-0070 §4.1: an IQ to the full JID; a result accepts, an error denies."""
        iq_id = self.server.iq_tracker.new_id()
        iq = Element("iq", CLIENT, {"type": "get", "id": iq_id, "to": str(jid), "from": jid.domain})
        iq.append(self._confirm(txn, method, url))
        future = self.server.iq_tracker.expect(iq_id, jid)
        self.server.router.send(iq)
        try:
            reply = await asyncio.wait_for(future, self.options.timeout_seconds)
        finally:
            future.cancel()
        return reply.attrs.get("type") == "result"

    async def _ask_message(self, jid: JID, txn: str, method: str, url: str, pending: Pending) -> bool:
        """XEP-0070 §4.2: a message to the bare JID with a thread and a human-readable body."""
        message = Element("message", CLIENT, {"to": str(jid.bare), "from": jid.domain, "id": txn})
        message.add("thread", text=self.server.iq_tracker.new_id())
        message.add(
            "body",
            text=f"Someone (maybe you) requested {url} with method {method}; transaction id {txn}. "
            "Reply with the confirmation to accept it, or with an error to deny it.",
        )
        message.append(self._confirm(txn, method, url))
        self.server.router.send(message)
        return await asyncio.wait_for(asyncio.shield(pending.future), self.options.timeout_seconds)

    def on_reply(self, event: StanzaEvent) -> bool:
        """A message to the server domain answering a confirmation (§4.2: confirm back, or an error)."""
        confirm = event.stanza.find("confirm", NS_HTTP_AUTH)
        if confirm is None:
            return False
        txn = confirm.get("id") or ""
        pending = self.pending.get(txn)
        if pending is None or str(event.frm.bare) != pending.jid or pending.future.done():
            return True  # nothing (or somebody else's) to answer: drop it
        pending.future.set_result(event.stanza.attrs.get("type") != "error")
        return True


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


_RUNTIMES: weakref.WeakKeyDictionary[Server, HttpAuthRuntime] = weakref.WeakKeyDictionary()


class HttpAuth(Module):
    """XEP-0070: web services verify HTTP requests by asking the user's XMPP client."""

    name = "http_auth"
    xeps = (
        Xep(70, "1.0.1", note="the HTTP endpoint, and Basic JID + transaction id on Roost's own pages"),
    )
    features = (NS_HTTP_AUTH,)
    Options = HttpAuthOptions
    options: HttpAuthOptions

    async def start(self) -> None:
        runtime = _RUNTIMES.get(self.server)
        if runtime is None:
            runtime = HttpAuthRuntime(self.server, self.options)
            runtime.start()
            _RUNTIMES[self.server] = runtime
            http_login.set_confirmer(self.server, runtime.confirm)
        runtime.users += 1
        self.runtime = runtime

    async def stop(self) -> None:
        self.runtime.users -= 1
        if self.runtime.users <= 0:
            self.runtime.stop()
            _RUNTIMES.pop(self.server, None)
            http_login.set_confirmer(self.server, None)

    @hook(hooks.MESSAGE_HOST, priority=50)
    def on_message(self, event: StanzaEvent) -> bool:
        return self.runtime.on_reply(event)
