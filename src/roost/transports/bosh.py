"""XMPP over BOSH (XEP-0124, XEP-0206) at ``/http-bind``: HTTP requests ⇄ one c2s stream per session.

The BOSH rules (rid window, holding, acks, pauses, termination) are the pure engine's
(:mod:`roost.stream.bosh`); this file owns the HTTP side: it parses each request's ``<body/>``, finds
the session by ``sid``, hands the payloads to the c2s driver in rid order (through the stream core's
BOSH framing), parks each HTTP request until the engine answers its rid, and runs one timer per
session for 'wait' and inactivity. The session's :class:`BoshConnection` is what the driver writes
to: stanzas and stream output queue in the engine and leave with the next response, flushed once
per event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from roost.core.c2s import C2SDriver
from roost.jid import JIDError, prepare_domain
from roost.stream.bosh import (
    XBOSH,
    BoshBody,
    BoshError,
    BoshSession,
    BoshSettings,
    Payloads,
    Response,
    Restart,
    Terminate,
    parse_body,
    terminal_response,
)
from roost.stream.c2s import C2SSettings, C2SStream
from roost.stream.framing import BoshFraming
from roost.transports.http import BOSH_PATH, ClientInfo, client_of
from roost.xml.element import Element
from roost.xml.parser import ParseEvent, StreamEnd, StreamOpen
from roost.xml.serializer import serialize

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.bosh")

_INFO = "XMPP over BOSH (XEP-0124, XEP-0206): POST a <body/> here.\n"
_STREAM_ERROR = b"<stream:error"


class BoshConnection:
    """One BOSH session as the c2s driver's :class:`~roost.core.connection.Connection`."""

    kind = "bosh"
    stanza_ns: str | None = None  # XEP-0206 §3: stanzas in a <body/> carry xmlns='jabber:client'

    def __init__(self, service: BoshService, engine: BoshSession, info: ClientInfo) -> None:
        self.service = service
        self.server = service.server
        self.engine = engine
        self.peer = info.address
        self._secure = info.confidential
        self.driver: C2SDriver | None = None
        self.stream: C2SStream | None = None
        #: HTTP requests waiting for the answer to their rid, in arrival order.
        self._waiters: dict[int, deque[asyncio.Future[Response]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self._stream_error = b""
        self._driver_closed = False  # the driver ended the stream: it needs no news of the end
        #: What a restart request may leave out (XEP-0206 §5): the creation request's 'to', 'xml:lang'
        #: and XMPP version.
        self.session_attrs: dict[str, str] = {}
        self._told_lost = False
        self._limit = self.server.config.c2s.max_send_queue_bytes
        self._loop = asyncio.get_running_loop()

    @property
    def secure(self) -> bool:
        return self._secure

    # -- Connection ---------------------------------------------------------------------------------------
    def send_stanza(self, data: bytes) -> None:
        self._push(data)

    def send_raw(self, data: bytes) -> None:
        if not data:
            return  # the BOSH framing writes no stream header or closing tag
        if data.startswith(_STREAM_ERROR):
            # XEP-0206 §6: a stream error ends the session as 'remote-stream-error' carrying it.
            self._stream_error = data
            return
        self._push(data)

    def close(self) -> None:
        self._driver_closed = True
        error = self._stream_error
        self.engine.close("remote-stream-error" if error else None, extra=error, now=self._loop.time())
        self._deliver()

    def abort(self) -> None:
        self._driver_closed = True
        self.engine.close("undefined-condition", now=self._loop.time())
        self._deliver()

    # -- output -----------------------------------------------------------------------------------------
    def _push(self, data: bytes) -> None:
        engine = self.engine
        engine.push(data)
        if engine.pending_output > self._limit:
            # Nobody is collecting: do not hold unbounded data for a client that is gone.
            log.warning("ending BOSH session %s: client is not reading (output over limit)", engine.sid)
            self.abort()
            return
        if not self._flush_pending:
            self._flush_pending = True
            self.server.writes.schedule(self)

    def flush_output(self) -> None:
        """Once per event-loop turn: everything written since goes out with one response."""
        self._flush_pending = False
        stream = self.stream
        if stream is not None and stream.stream_id:
            self.engine.stream_id = stream.stream_id
        self.engine.flush(self._loop.time())
        self._deliver()

    # -- requests ---------------------------------------------------------------------------------------
    async def request(self, body: BoshBody, items: list[ParseEvent] | None = None) -> Response:
        """One HTTP request for this session: forward its payloads (in rid order), then wait for the
        answer to its rid. ``items`` is the creation request's stream open."""
        rid = body.rid
        future: asyncio.Future[Response] = self._loop.create_future()
        self._waiters.setdefault(rid, deque()).append(future)
        if items is not None:
            self._forward(items)
        else:
            try:
                incoming = self.engine.receive(body, self._loop.time())
            except BoshError as e:  # the engine checks what it reads; this is a safety net
                self.engine.close(e.condition, now=self._loop.time())
                future.set_result(terminal_response(rid, e.condition))
                incoming = []
            for item in incoming:
                if isinstance(item, Payloads):
                    self._forward(item.elements)
                elif isinstance(item, Restart):
                    self._forward([_open({**self.session_attrs, **item.attrs})])
                elif isinstance(item, Terminate):
                    self._driver_closed = True  # the driver ends the session when the stream ends
                    self._forward([StreamEnd()])
        self.flush_output()
        try:
            return await future
        finally:
            waiting = self._waiters.get(rid)
            if waiting is not None and future in waiting:
                waiting.remove(future)  # the client went away before its answer
                if not waiting:
                    del self._waiters[rid]

    def _forward(self, items: Sequence[ParseEvent]) -> None:
        driver = self.driver
        if driver is not None and items:
            driver.receive_items(items)

    def _deliver(self) -> None:
        """Hand the engine's answers to the waiting HTTP requests; re-arm the timer; end if over."""
        for response in self.engine.take():
            waiting = self._waiters.get(response.rid)
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(response)
                    break
            if waiting is not None and not waiting:
                del self._waiters[response.rid]
        engine = self.engine
        if engine.closed:
            if not self._told_lost and not self._driver_closed:
                # The engine ended it (expired, broken rules): the stream's connection is gone.
                self._told_lost = True
                if self.driver is not None:
                    self.driver.connection_lost()
            if not engine.awaiting_final and not self._waiters:
                self._drop()
                return
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.engine.next_deadline()
        timer = self._timer
        if timer is not None:
            if deadline is not None and timer.when() == deadline:
                return
            timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.engine.tick(self._loop.time())
        self._deliver()

    def _drop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiting in self._waiters.values():
            for future in waiting:
                if not future.done():
                    future.set_result(terminal_response(0, "item-not-found"))
        self._waiters.clear()
        self.service.forget(self)
        # Break the connection ⇄ driver cycle: freed by reference counting, not by the collector.
        self.driver = None
        self.stream = None


class BoshService:
    """The ``/http-bind`` endpoint and the table of live BOSH sessions (one per server)."""

    def __init__(self, server: Server, settings: C2SSettings) -> None:
        self.server = server
        #: Shared by every BOSH stream (its caches make logins cheap); no STARTTLS (XEP-0206 §4):
        #: the stream core offers it on XML streams only.
        self.c2s_settings = settings
        http = server.config.http
        self.settings = BoshSettings(
            max_wait=http.bosh_max_wait,
            max_hold=http.bosh_max_hold,
            inactivity=http.bosh_inactivity,
            max_pause=http.bosh_max_pause,
        )
        self.sessions: dict[str, BoshConnection] = {}

    def forget(self, connection: BoshConnection) -> None:
        if self.sessions.get(connection.engine.sid) is connection:
            del self.sessions[connection.engine.sid]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(text=_INFO)
        data = await request.read()
        try:
            body = parse_body(data, self.server.config.c2s.max_stanza_bytes)
            _ = body.rid
        except BoshError as e:
            log.info("bad BOSH request from %s: %s", client_of(request).address, e)
            return _http(terminal_response(0, e.condition))
        if body.sid is None:
            return _http(await self._create(request, body))
        connection = self.sessions.get(body.sid)
        if connection is None:
            # §17.2: an unknown (or expired) sid.
            return _http(terminal_response(body.rid, "item-not-found"))
        return _http(await connection.request(body))

    async def _create(self, request: web.Request, body: BoshBody) -> Response:
        info = client_of(request)
        rid = body.rid
        legacy = body.attrs.get("ver") is None
        to = body.attrs.get("to")
        if not to:
            return terminal_response(rid, "improper-addressing", legacy=legacy)
        settings = self.c2s_settings
        try:
            domain = prepare_domain(to)
        except JIDError:
            domain = ""
        if domain not in settings.domains:
            return terminal_response(rid, "host-unknown", legacy=legacy)
        if not info.confidential and settings.require_encryption:
            public = self.server.config.http.public_url
            if public is not None and public.lower().startswith("https://"):
                # §17.2: this endpoint takes only encrypted sessions; the client can POST there.
                uri = Element("uri", "http://jabber.org/protocol/httpbind", children=[public + BOSH_PATH])
                return terminal_response(rid, "see-other-uri", extra=serialize(uri).encode())
            return terminal_response(rid, "policy-violation", legacy=legacy)
        sid = secrets.token_urlsafe(18)
        try:
            engine = BoshSession.create(sid, body, self.settings, domain, asyncio.get_running_loop().time())
        except BoshError as e:
            return terminal_response(rid, e.condition, legacy=legacy)
        connection = BoshConnection(self, engine, info)
        stream = C2SStream(settings, secure=info.confidential, framing=BoshFraming(settings.max_stanza_bytes))
        connection.stream = stream
        connection.driver = driver = _new_driver(self.server, connection, stream)
        secure = ", TLS" if info.direct_tls else (", TLS at the proxy" if info.secure else "")
        driver.session.log.info("connected from %s (BOSH%s)", info.address or "?", secure)
        kept = ("to", "xml:lang", "{" + XBOSH + "}version")
        connection.session_attrs = {k: v for k, v in body.attrs.items() if k in kept}
        self.sessions[sid] = connection
        return await connection.request(body, [_open(body.attrs)])


def _open(attrs: dict[str, str]) -> StreamOpen:
    """The stream open a creation or restart request stands for. A client that names no XMPP version
    speaks 1.0: a BOSH body has no stream header whose missing version would mean pre-1.0."""
    opened = BoshFraming.open_item(attrs)
    opened.header.attrs.setdefault("version", "1.0")
    return opened


def _http(response: Response) -> web.Response:
    return web.Response(
        status=response.status, body=response.body, headers={"Content-Type": response.content_type}
    )


def _new_driver(server: Server, connection: BoshConnection, stream: C2SStream) -> C2SDriver:
    return C2SDriver(server, connection, stream)
