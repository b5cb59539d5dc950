"""Stream management (XEP-0198) for client sessions, on every c2s transport.

The protocol state of one session is :class:`roost.stream.sm.StreamManagement` (pure); this file
puts it to work with the session, its connections and the clock:

* :class:`SmSession` sits at the session's one exit (``ClientSession.sm``): it counts and keeps each
  stanza written to the client, and asks for acks (every ``ack_every`` stanzas, or ``ack_after_seconds``
  after the oldest unrequested one).
* :class:`SmService` (one per served domain, configured by the ``sm`` module) answers the nonzas
  the stream hands the c2s driver (``<enable/>``, ``<r/>``, ``<a/>``, ``<resume/>``), keeps resumable
  sessions by SM-ID, detaches a session whose connection dropped (no ``session/closed``: others see
  no presence flap, rooms keep the occupant), hands a new connection to it on ``<resume/>``, and
  ends it when the resumption time runs out.
* When a managed session ends, its unacknowledged stanzas are re-routed exactly once (§4, §5):
  messages as if to an unavailable resource (another resource, or offline storage), with a
  XEP-0203 delay stamp of their first delivery; IQ requests answered with an error; the rest
  (presence, IQ results, errors, chat states) is state the client gets again, and is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from roost.core.hooks import FireHook, SessionEvent
from roost.core.session import ClientSession, SessionState
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError, StreamError
from roost.stream import sm
from roost.stream.csi import ClientState
from roost.stream.sm import (
    AckNonza,
    AckPolicy,
    EnableRequested,
    HandledCountTooHigh,
    ResumeRequested,
    SmFailure,
    StreamManagement,
)
from roost.util.bounded import BoundedDict
from roost.util.datetime import format_datetime
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DELAY
from roost.xml.serializer import serialize

if TYPE_CHECKING:
    from roost.core.c2s import C2SDriver
    from roost.core.host import Host
    from roost.core.server import Server

log = logging.getLogger("roost.sm")


@dataclass(frozen=True, slots=True)
class ClientStateEvent:
    """XEP-0352: the client said it is active (True) or inactive (False)."""

    session: ClientSession
    active: bool


#: Fired on the session's host, in order with the client's stanzas (XEP-0352 §5.1).
CLIENT_STATE: Final = FireHook[ClientStateEvent]("c2s/client-state")
#: A detached session was resumed on a new connection (XEP-0198 §5); per-stream state such as the
#: CSI state starts over (XEP-0352 §5.2).
SESSION_RESUMED: Final = FireHook[SessionEvent]("session/resumed")

_now = time.time
#: Reasons a connection ends after which a resumable session is kept: the client did not say goodbye.
_DETACH_REASONS = frozenset(("disconnect", "timeout"))
#: SM-IDs of sessions that ended, remembered to answer a late <resume/> with <failed h/> (§5).
_EXPIRED_REMEMBERED = 10_000


@dataclass(slots=True)
class SmConfig:
    """The ``[sm]`` options, as the service uses them."""

    resume_seconds: int = 300
    ack_every: int = 5
    ack_after_seconds: float = 30.0
    max_unacked: int = 10_000
    location: str = ""


class SmSession:
    """Stream management of one session: the exit filter, the ack-request timer, the expiry timer."""

    __slots__ = ("__weakref__", "_expiry", "_timer", "service", "session", "state")

    def __init__(self, service: SmService, session: ClientSession, state: StreamManagement) -> None:
        self.service = service
        self.session = session
        self.state = state
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # -- the session's exit (roost.core.session.StanzaExit) -------------------------------------------
    def on_send(self, session: ClientSession, stanza: Element) -> bool:
        """Count and keep the stanza, write it if connected, and an <r/> after it when one is due."""
        state = self.state
        connection = session.connection
        # Detached: kept as it would be written on the stream the session had (the usual case).
        ns = connection.stanza_ns if connection is not None else CLIENT
        data = serialize(stanza, ns).encode()
        due = state.sent(data, ns, _now())
        if connection is not None:
            connection.send_stanza(data)
            if due:
                state.requested()
                connection.send_raw(sm.REQUEST_BYTES)
            elif self._timer is None and state.policy.after_seconds > 0:
                self._arm_request_timer(state.policy.after_seconds)
        if len(state.unacked) > state.max_unacked:
            # The client does not ack (or has been away too long): the session cannot be kept.
            session.log.info("closing: %d stanzas unacknowledged", len(state.unacked))
            asyncio.get_running_loop().call_soon(
                session.close, StreamError("resource-constraint", "too many unacknowledged stanzas"), "error"
            )
        return True

    # -- acks --------------------------------------------------------------------------------------------
    def ack_nonza(self, driver: C2SDriver, el: Element) -> None:
        """``<r/>`` from the client on ``driver``'s established stream: answer at once (§4).

        The client's ``<a/>`` never comes here: the stream's SM feature applies it (see
        :func:`attach`); one that reaches the driver means SM is not enabled on that stream.
        """
        if el.name == "r":
            driver.connection.send_raw(serialize(self.state.answer()).encode())
        else:
            driver.close(StreamError("unsupported-stanza-type", "stream management is not enabled"), "error")

    def request(self) -> None:
        """Write an ``<r/>`` now (if connected)."""
        connection = self.session.connection
        if connection is not None:
            self.state.requested()
            connection.send_raw(sm.REQUEST_BYTES)

    def _arm_request_timer(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._request_timer)

    def _request_timer(self) -> None:
        self._timer = None
        state = self.state
        if self.session.connection is None or not state.unacked:
            return
        if state.request_due(time.time()):
            self.request()
        else:
            self._arm_request_timer(state.policy.after_seconds / 2)

    # -- detach, expiry ------------------------------------------------------------------------------
    def arm_expiry(self, seconds: float) -> None:
        self.cancel_expiry()
        self._expiry = asyncio.get_running_loop().call_later(seconds, self.service.expire, self)

    def cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def stop_timers(self) -> None:
        self.cancel_expiry()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SmService:
    """XEP-0198 for the client sessions of one domain (see the module docstring)."""

    def __init__(self, server: Server, domain: str, config: SmConfig) -> None:
        self.server = server
        self.domain = domain
        self.config = config
        #: Resumable sessions (bound or detached) by SM-ID.
        self.resumable: dict[str, SmSession] = {}
        #: Ended sessions' SM-ID → (username, the last 'h' we reported).
        self.expired: BoundedDict[str, tuple[str, int]] = BoundedDict(_EXPIRED_REMEMBERED)
        #: Whether another resource already has this stanza (e.g. a carbon copy, XEP-0280), so that
        #: re-routing it would deliver it twice (set by the module; arguments: the ended session,
        #: the stanza, when it was written).
        self.delivered_elsewhere: Callable[[ClientSession, Element, float], bool] | None = None
        #: Hands an unacknowledged message of an ended session to the account's other resources or
        #: to offline storage, keeping its stanza-id (it is archived already; set by the module).
        #: Without it, messages are routed again like new ones.
        self.redeliver: Callable[[ClientSession, Element], Awaitable[None] | None] | None = None

    # -- nonzas from the stream (the c2s driver calls these) --------------------------------------------
    def enable(self, driver: C2SDriver, request: sm.EnableRequest) -> None:
        """``<enable/>`` on an established stream (§3)."""
        answer = self.enable_session(driver, request)
        if answer is not None:
            driver.connection.send_raw(serialize(answer).encode())

    def enable_session(self, driver: C2SDriver, request: sm.EnableRequest) -> Element | None:
        """Enable stream management for the driver's session; the ``<enabled/>`` to write (None:
        the stream is closing). Bind2 (XEP-0386 §3.3) puts it inside ``<bound/>``."""
        session = driver.session
        if session.sm is not None:
            # §3: "a client SHALL only make at most one attempt": a second one ends the stream.
            driver.close(StreamError("policy-violation", "stream management is already enabled"), "error")
            return None
        config = self.config
        sm_id: str | None = None
        max_seconds: int | None = None
        if request.resume and config.resume_seconds > 0:
            sm_id = sm.new_id()
            max_seconds = config.resume_seconds
            if request.max_seconds is not None and 0 < request.max_seconds < max_seconds:
                max_seconds = request.max_seconds  # the client prefers less (§3 'max')
        state = StreamManagement(
            policy=AckPolicy(config.ack_every, config.ack_after_seconds),
            max_unacked=config.max_unacked,
            sm_id=sm_id,
            max_seconds=max_seconds,
        )
        managed = SmSession(self, session, state)
        if sm_id is not None:
            self.resumable[sm_id] = managed
        # Counting starts now both ways (§4 note): after <enabled/> for what we send, after
        # <enable/> for what we receive.
        session.sm = managed
        driver.sm = state
        attach(driver, state)
        session.log.info("stream management enabled%s", " (resumable)" if sm_id else "")
        return sm.enabled(sm_id, max_seconds, config.location or None)

    def received_nonza(self, driver: C2SDriver, el: Element) -> None:
        """``<r/>`` or ``<a/>`` on an established stream (§4)."""
        managed = driver.session.sm
        if not isinstance(managed, SmSession):
            # §6: misuse of stream management may end the stream.
            driver.close(StreamError("unsupported-stanza-type", "stream management is not enabled"), "error")
            return
        managed.ack_nonza(driver, el)

    def resume(self, driver: C2SDriver, request: sm.ResumeRequest) -> SmFailure | list[Element]:
        """``<resume/>`` after authentication (§5): move the session to this connection.

        Returns the failure to answer with, or the stanzas to send again after ``<resumed/>``.
        On success the driver's session is the resumed one and its state is BOUND.
        """
        stream = driver.stream
        username = stream.username
        managed = self.resumable.get(request.previd)
        session = managed.session if managed is not None else None
        if managed is None or session is None or session.jid.local != username or not session.bound:
            # An SM-ID of another account is as unknown as a wrong one (§9: no hijacking).
            gone = self.expired.get(request.previd)
            h = gone[1] if gone is not None and gone[0] == username else None
            return SmFailure("item-not-found", "no such session to resume", h=h)
        try:
            again = managed.state.resume(request.h)
        except HandledCountTooHigh as e:
            driver.close(e.stream_error(), "error")
            return []
        managed.cancel_expiry()
        old_closer = session.closer
        fresh = driver.session
        fresh.state = SessionState.CLOSED  # the negotiating session of this connection is not needed
        fresh.connection = None
        fresh.closer = None
        session.connection = driver.connection
        session.closer = driver
        session.state = SessionState.BOUND
        driver.session = session
        driver.sm = managed.state
        attach(driver, managed.state)
        if old_closer is not None:
            # §5: the old stream is still open (we had not noticed it drop): end it, not the session.
            old_closer.close(
                StreamError("conflict", "the session was resumed on another connection"), "resumed"
            )
        session.log.info(
            "resumed on %s from %s; %d stanzas sent again",
            driver.connection.kind,
            driver.connection.peer or "?",
            len(again),
        )
        return again

    def detach(self, session: ClientSession, reason: str) -> bool:
        """The session's connection ended: keep the session for resumption if it may be resumed."""
        managed = session.sm
        if not isinstance(managed, SmSession) or reason not in _DETACH_REASONS:
            return False
        state = managed.state
        if state.id is None or state.id not in self.resumable or session.state is not SessionState.BOUND:
            return False
        session.state = SessionState.DETACHED
        session.connection = None
        session.closer = None
        seconds = state.max_seconds or self.config.resume_seconds
        managed.arm_expiry(seconds)
        session.log.info("detached (%s); resumable for %d s", reason, seconds)
        return True

    def expire(self, managed: SmSession) -> None:
        """The resumption time ran out: the session ends now."""
        session = managed.session
        managed.stop_timers()
        if session.state is SessionState.DETACHED:
            session.log.info("not resumed in time")
            self.server.sessions.end(session, "timeout")

    # -- the end -------------------------------------------------------------------------------------
    def ended(self, session: ClientSession) -> None:
        """A managed session ended (``session/closed``): forget it and re-route what was not acked."""
        managed = session.sm
        if not isinstance(managed, SmSession):
            return
        managed.stop_timers()
        state = managed.state
        if state.id is not None:
            self.resumable.pop(state.id, None)
            self.expired[state.id] = (session.jid.local or "", state.inbound)
        unacked = state.take_unacked()
        # The session and its SmSession refer to each other: break the cycle, or the pair (and what
        # hangs on it) waits for a full collection — forever once the periodic freeze has frozen it
        # (roost.core.gc_policy). A closed session's send() no longer looks at its exit filters.
        session.sm = None
        if unacked:
            session.log.info("re-routing %d unacknowledged stanzas", len(unacked))
            self.reroute(session, unacked)

    def reroute(self, session: ClientSession, stanzas: list[tuple[Element, float]]) -> None:
        """Stanzas (with the time they were written) that ``session`` — ended — will never get:
        handled as if its resource had been unavailable, in the background, in order."""
        self.server.spawn(self._reroute(session, stanzas), f"{session.id}-reroute")

    async def _reroute(self, session: ClientSession, unacked: list[tuple[Element, float]]) -> None:
        """One at a time, in order: offline storage keeps them in the order they were sent, and a
        burst of them does not take every storage connection at once."""
        router = self.server.router
        elsewhere = self.delivered_elsewhere
        for stanza, sent_at in unacked:
            again = self.rerouted(stanza, sent_at)
            if again is None or (elsewhere is not None and elsewhere(session, stanza, sent_at)):
                continue
            try:
                redeliver = self.redeliver
                if again.name == "message" and redeliver is not None:
                    pending = redeliver(session, again)
                else:
                    pending = router.route(again)
                if pending is not None:
                    await pending
            except Exception:
                session.log.exception("re-routing an unacknowledged %s failed", stanza.name)

    def rerouted(self, stanza: Element, sent_at: float) -> Element | None:
        """What to route for a stanza the client never acknowledged, as if its resource had been
        unavailable (§4); None: nothing (state the client gets again, or nobody to tell)."""
        name = stanza.name
        type_ = stanza.attrs.get("type")
        if name == "message":
            if type_ == "error" or type_ == "groupchat":
                return None  # errors are not answered; a room's message to a gone occupant is moot
            if stanza.find("delay", DELAY) is not None:
                return stanza
            # XEP-0198 §4: a delay element with the original (failed) delivery time (XEP-0203). The
            # message goes to the full JID, now unbound: another resource or offline storage.
            stamped = stanza.copy()
            stamped.append(Element("delay", DELAY, {"from": self.domain, "stamp": format_datetime(sent_at)}))
            return stamped
        if name == "iq" and type_ in ("get", "set"):
            return error_reply(stanza, StanzaError("service-unavailable", "the recipient went away"))
        return None


# -- one service per served domain ----------------------------------------------------------------------
_services: weakref.WeakKeyDictionary[Host, SmService] = weakref.WeakKeyDictionary()


def register(host: Host, service: SmService) -> None:
    _services[host] = service


def unregister(host: Host) -> None:
    _services.pop(host, None)


def service_for(server: Server, domain: str | None) -> SmService | None:
    """The stream-management service of ``domain``; None when the ``sm`` module is not loaded."""
    host = server.hosts.get(domain) if domain is not None else None
    return _services.get(host) if host is not None else None


def attach(driver: C2SDriver, state: sm.StreamManagement) -> None:
    """Stream management is on for the driver's stream: its SM feature applies ``<a/>`` itself."""
    feature = driver.stream.feature(sm.SmFeature)
    if feature is not None:
        feature.state = state


# -- what the c2s driver calls ---------------------------------------------------------------------------
def stream_event(
    driver: C2SDriver, event: AckNonza | EnableRequested | ResumeRequested | ClientState
) -> None:
    """A stream-management or client-state nonza from the driver's stream."""
    server = driver.server
    domain = driver.stream.domain
    if isinstance(event, ClientState):
        session = driver.session
        host = server.hosts.get(domain) if domain is not None else None
        if host is not None and host.bus.has_handlers(CLIENT_STATE):
            # §5.1: after every stanza the client sent before it, before any it sends after it.
            bus = host.bus
            payload = ClientStateEvent(session, event.active)
            session.after_pending(lambda: _fire_now(server, bus.fire_sync(CLIENT_STATE, payload)))
        return
    service = service_for(server, domain)
    if isinstance(event, ResumeRequested):
        if service is None:
            answer: SmFailure | list[Element] = SmFailure(
                "feature-not-implemented", "no stream management here"
            )
        else:
            answer = service.resume(driver, event.request)
        if isinstance(answer, SmFailure):
            driver._handle(event.feature.resume_failed(driver.stream, answer))
            return
        session = driver.session
        if session.state is not SessionState.BOUND:
            return  # the resumption failed on a bad 'h' and the stream is closing
        managed = session.sm
        assert isinstance(managed, SmSession)
        state = managed.state
        previd = event.request.previd
        driver._handle(event.feature.resumed(driver.stream, session.jid, previd, state.inbound, answer))
        if answer:
            managed.request()
        announce_resumed(server, session)
        return
    if service is None:
        if isinstance(event, EnableRequested):
            el = sm.failed("feature-not-implemented", "stream management is not offered here")
            driver.connection.send_raw(serialize(el).encode())
            return
        driver.close(StreamError("unsupported-stanza-type", "stream management is not enabled"), "error")
        return
    if isinstance(event, EnableRequested):
        service.enable(driver, event.request)
    else:
        service.received_nonza(driver, event.element)


def announce_resumed(server: Server, session: ClientSession) -> None:
    """Fire ``session/resumed`` (per-stream state such as CSI starts over)."""
    host = server.hosts.get(session.jid.domain)
    if host is not None and host.bus.has_handlers(SESSION_RESUMED):
        server.spawn(
            host.bus.fire(SESSION_RESUMED, SessionEvent(session, "resumed")), f"{session.id}-resumed"
        )


def detach(session: ClientSession, reason: str) -> bool:
    """The connection of a managed session ended: True if the session is kept for resumption."""
    managed = session.sm
    if not isinstance(managed, SmSession):
        return False
    return managed.service.detach(session, reason)


def _fire_now(server: Server, result: bool | Awaitable[bool]) -> None:
    if not isinstance(result, bool):
        server.spawn(result, "client-state")
