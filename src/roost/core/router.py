"""Stanza routing: the delivery rules of RFC 6120 §8 and §10 for the server's own domains.

This is the hot path. :meth:`Router.process` validates a stanza from a local session, stamps its
``from`` (§8.1.2.1), runs the ``pre/<kind>`` filters, and :meth:`Router.deliver` hands it to the
recipient's session (serialized once, written in a batch) or to the handler chain for its kind and
target. Work that must wait for storage is returned as an awaitable; the caller (the session) keeps
its stanzas in order (§10.1) by holding later ones until it completes. Everything else is synchronous:
no task, no coroutine, no extra object per routed message.

Error boundary: a filter or handler that fails fails that stanza alone. Its sender gets an error
(``internal-server-error`` unless the failure was a :class:`StanzaError`); no other session, and not
the sender's connection, notices. Delivery filters that wait keep each recipient's stanzas in order
(``ClientSession.delivery_queue``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from roost.core import hooks
from roost.core.fanout import fanout
from roost.core.hooks import FireHook, Origin, StanzaEvent
from roost.core.iq import Target
from roost.core.session import ClientSession as Session
from roost.jid import JID, JIDError
from roost.stanza import IQ_TYPES, MESSAGE_TYPES, PRESENCE_TYPES, error_reply
from roost.stanza.errors import StanzaError, StreamError
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.host import Host
    from roost.core.routes import Link
    from roost.core.server import Server

log = logging.getLogger("roost.router")

_PRE = {"message": hooks.PRE_MESSAGE, "presence": hooks.PRE_PRESENCE, "iq": hooks.PRE_IQ}
_DELIVER = {"message": hooks.DELIVER_MESSAGE, "presence": hooks.DELIVER_PRESENCE, "iq": hooks.DELIVER_IQ}
_BARE = {"message": hooks.MESSAGE_BARE, "presence": hooks.PRESENCE_BARE, "iq": hooks.IQ_BARE}
_FULL = {"message": hooks.MESSAGE_FULL, "presence": hooks.PRESENCE_FULL, "iq": hooks.IQ_FULL}
#: Presence types a server handles itself even when addressed to a connected resource (RFC 6121 §8.5.3.1).
_SERVER_PRESENCE_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe"))
_VALID_TYPES = {"message": MESSAGE_TYPES, "presence": PRESENCE_TYPES, "iq": IQ_TYPES}

_SELF_TARGETS = (Target.SELF, Target.ACCOUNT)
_ACCOUNT_TARGETS = (Target.ACCOUNT,)
_HOST_TARGETS = (Target.HOST,)
#: RFC 6120 §10.3.3: an IQ without 'to' is handled on behalf of the account — by the account's own
#: handlers first, else the server's (a ping with no 'to' gets a result, as from Prosody and ejabberd).
_NO_TO_TARGETS = (Target.SELF, Target.ACCOUNT, Target.HOST)


class Router:
    """Routes stanzas between local sessions, modules and (later) remote domains."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sessions = server.sessions
        self.hosts = server.hosts
        self.route_table = server.route_table

    # -- entry points --------------------------------------------------------------------------------
    def process(self, origin: Session, stanza: Element) -> Awaitable[None] | None:
        """A stanza from a bound local client session (``from_client``)."""
        attrs = stanza.attrs
        frm_attr = attrs.get("from")
        if frm_attr is not None and frm_attr != origin.jid_str:
            # RFC 6120 §8.1.2.1: the server stamps 'from'; a different claimed identity is an error.
            try:
                claimed = JID.parse(frm_attr)
            except JIDError:
                claimed = None
            if claimed is None or (claimed != origin.jid and claimed != origin.jid.bare):
                origin.close(
                    StreamError("invalid-from", "'from' does not match your address"), reason="error"
                )
                return None
        attrs["from"] = origin.jid_str
        kind = stanza.name
        to_attr = attrs.get("to")
        type_ = attrs.get("type")
        if to_attr is None:
            # RFC 6120 §10.3: no 'to' means the account itself (presence: broadcast, RFC 6121 §4.2.2).
            to = origin.jid.bare
        else:
            try:
                to = JID.parse(to_attr)
            except JIDError:
                if kind == "iq" and (type_ == "result" or type_ == "error"):
                    return None  # RFC 6120 §8.2.3: a response is never answered; nowhere to go
                return self._bounce(
                    stanza, StanzaError("jid-malformed", "the 'to' address is not a valid JID")
                )
        if type_ is not None and type_ not in _VALID_TYPES[kind]:
            return self._bounce(stanza, StanzaError("bad-request", f"invalid type {type_!r} for <{kind}/>"))
        if kind == "iq":
            error = self._check_iq(stanza, type_)
            if error is not None:
                return self._bounce(stanza, error)
        event = StanzaEvent(stanza, origin, to, origin.jid, Origin.CLIENT)
        host = self.hosts.get(origin.jid.domain)
        if host is not None:
            pre = _PRE[kind]
            if host.bus.has_handlers(pre):
                try:
                    folded = host.bus.fold(pre, event)
                except StanzaError as e:
                    return self._bounce_event(event, e)
                except Exception:
                    log.exception("filter failed on %r", stanza)
                    return self._bounce_event(event, StanzaError("internal-server-error"))
                if folded is None:
                    return None
                if folded.__class__ is not StanzaEvent and not isinstance(folded, StanzaEvent):
                    return self._after_filters(folded, event)  # a filter is waiting for storage
                event = folded
        return self._deliver_guarded(event)

    async def _after_filters(self, pending: Awaitable[StanzaEvent | None], event: StanzaEvent) -> None:
        try:
            folded = await pending
        except StanzaError as e:
            self._bounce_event(event, e)
            return
        except Exception:
            log.exception("filter failed on %r", event.stanza)
            self._bounce_event(event, StanzaError("internal-server-error"))
            return
        if folded is not None:
            more = self._deliver_guarded(folded)
            if more is not None:
                await more

    def _deliver_guarded(self, event: StanzaEvent) -> Awaitable[None] | None:
        """:meth:`deliver` inside the error boundary: a failure answers this stanza only."""
        try:
            pending = self.deliver(event)
        except StanzaError as e:
            return self._bounce_event(event, e)
        except Exception:
            log.exception("routing failed on %r", event.stanza)
            return self._bounce_event(event, StanzaError("internal-server-error"))
        if pending is None:
            return None
        return self._guard_pending(pending, event)

    async def _guard_pending(self, pending: Awaitable[None], event: StanzaEvent) -> None:
        try:
            await pending
        except StanzaError as e:
            self._bounce_event(event, e)
        except Exception:
            log.exception("routing failed on %r", event.stanza)
            self._bounce_event(event, StanzaError("internal-server-error"))

    def from_remote(self, link: Link, stanza: Element) -> Awaitable[None] | None:
        """A stanza from a remote link (s2s or component): ``from`` is checked, never stamped.

        RFC 6120 §8.1.1.1 and §8.1.2.1: both addresses are required on a server-to-server stream, and
        ``from`` must belong to a domain the link authenticated (XEP-0114 §3: the component's domain
        or a subdomain); otherwise the link ends with ``<improper-addressing/>`` or
        ``<invalid-from/>``. No local-user filters run (``pre/*`` are for local senders): the
        recipient's delivery filters still do.
        """
        attrs = stanza.attrs
        frm_attr = attrs.get("from")
        to_attr = attrs.get("to")
        if frm_attr is None or to_attr is None:
            link.close(StreamError("improper-addressing", "stanzas need 'from' and 'to'"), reason="error")
            return None
        try:
            frm = JID.parse(frm_attr)
        except JIDError:
            link.close(StreamError("invalid-from", "'from' is not a valid JID"), reason="error")
            return None
        if not link.may_send_from(frm.domain):
            link.close(StreamError("invalid-from", f"{frm.domain} is not authenticated here"), reason="error")
            return None
        kind = stanza.name
        type_ = attrs.get("type")
        try:
            to = JID.parse(to_attr)
        except JIDError:
            if type_ == "error" or (kind == "iq" and type_ == "result"):
                return None  # RFC 6120 §8.3.1: never an error in reply to an error
            link.send(
                error_reply(stanza, StanzaError("jid-malformed", "the 'to' address is not a valid JID"))
            )
            return None
        if not link.may_send_to(to.domain):
            link.close(StreamError("host-unknown", f"{to.domain} is not served here"), reason="error")
            return None
        event = StanzaEvent(stanza, None, to, frm, Origin.REMOTE)
        if type_ is not None and type_ not in _VALID_TYPES[kind]:
            return self._bounce_event(
                event, StanzaError("bad-request", f"invalid type {type_!r} for <{kind}/>")
            )
        if kind == "iq":
            error = self._check_iq(stanza, type_)
            if error is not None:
                return self._bounce_event(event, error)
        return self._deliver_guarded(event)

    def route(self, stanza: Element, origin: Session | None = None) -> Awaitable[None] | None:
        """A stanza generated by the server or a module (``from`` and ``to`` already set, trusted)."""
        try:
            to = JID.parse(stanza.attrs["to"])
            frm = JID.parse(stanza.attrs["from"])
        except (KeyError, JIDError):
            log.warning("dropping internal stanza with bad addresses: %r", stanza)
            return None
        return self.deliver(StanzaEvent(stanza, origin, to, frm))

    def send(self, stanza: Element) -> None:
        """Route a server-generated stanza; storage work it needs runs in the background."""
        pending = self.route(stanza)
        if pending is not None:
            self.server.spawn(pending, "route")

    def fanout(self, stanza: Element, to: Iterable[JID], frm: JID) -> None:
        """One stanza (``from`` set, no ``to``) to many recipients, serialized once per framing
        (:mod:`roost.core.fanout`): MUC broadcasts and presence broadcasts. Not for subscription
        stanzas or probes, which the recipient's server handles (RFC 6121 §8.5.3.1)."""
        fanout(self.server, stanza, to, frm)

    # -- delivery ------------------------------------------------------------------------------------
    def deliver(self, event: StanzaEvent) -> Awaitable[None] | None:
        """Deliver to a local session or handler chain (RFC 6120 §10.3-§10.5)."""
        to = event.to
        host = self.hosts.get(to.domain)
        if host is None:
            return self._remote(event)
        kind = event.stanza.name
        if to.local is None:
            return self._to_host(host, event, kind)
        if to.resource is None:
            return self._to_bare(host, event, kind)
        session = self.sessions.get(to)
        if session is not None:
            if kind == "presence" and event.stanza.attrs.get("type") in _SERVER_PRESENCE_TYPES:
                return self._server_presence(host, event)
            self.to_session(session, event)
            return None
        # RFC 6120 §10.5.3.2 / RFC 6121 §8.5.3.2: no such resource.
        result = self._fire(host, _FULL[kind], event)
        if result is True:
            return None
        if result is not False:
            return self._guard(result, event, lambda: self._unclaimed_full(host, event, kind))
        return self._unclaimed_full(host, event, kind)

    def _server_presence(self, host: Host, event: StanzaEvent) -> Awaitable[None] | None:
        """RFC 6121 §8.5.3.1: subscription stanzas and probes to a connected resource are not the
        client's to see: subscription stanzas are processed as if sent to the bare JID (§3), probes
        are answered by the server (§4.3, through the ``presence/full`` chain)."""
        stanza = event.stanza
        if stanza.attrs.get("type") == "probe":
            result = self._fire(host, hooks.PRESENCE_FULL, event)
            if result is True or result is False:
                return None
            return self._guard(result, event, None)
        bare = event.to.bare
        copy = stanza.shallow_copy()
        copy.attrs["to"] = str(bare)
        return self._to_bare(host, StanzaEvent(copy, event.origin, bare, event.frm), "presence")

    def _unclaimed_full(self, host: Host, event: StanzaEvent, kind: str) -> Awaitable[None] | None:
        if kind == "iq":
            return self._bounce_event(event, StanzaError("service-unavailable"))
        if kind == "message":
            return self._to_bare(host, event, kind)
        return None  # presence to an unavailable resource: silently dropped

    def to_session(self, session: Session, event: StanzaEvent) -> None:
        """Write a stanza to one session, through the ``deliver/<kind>`` filters.

        A filter may wait (storage): that stanza, and every later one to the same session, then
        goes out when it is done, in order. A filter that fails answers the sender with an error.
        """
        queue = session.delivery_queue
        if queue is not None:
            queue.append(event)
            return
        pending = self._filter_and_send(session, event)
        if pending is not None:
            session.delivery_queue = deque()
            self.server.spawn(self._deliver_later(session, pending, event), f"{session.id}-deliver")

    def _filter_and_send(
        self, session: Session, event: StanzaEvent
    ) -> Awaitable[tuple[Session, StanzaEvent] | None] | None:
        """Run the delivery filters and send what passes; the filters' awaitable if one waits."""
        host = self.hosts.get(session.jid.domain)
        if host is not None:
            name = _DELIVER[event.stanza.name]
            if host.bus.has_handlers(name):
                try:
                    filtered = host.bus.fold(name, (session, event))
                except StanzaError as e:
                    self._bounce_event(event, e)
                    return None
                except Exception:
                    log.exception("delivery filter failed on %r", event.stanza)
                    self._bounce_event(event, StanzaError("internal-server-error"))
                    return None
                if filtered is None:
                    return None
                if filtered.__class__ is not tuple:
                    return filtered  # type: ignore[return-value]
                session, event = filtered
        session.send(event.stanza)
        return None

    async def _deliver_later(
        self,
        session: Session,
        pending: Awaitable[tuple[Session, StanzaEvent] | None],
        event: StanzaEvent,
    ) -> None:
        """Finish a delivery whose filters waited, then the stanzas that queued behind it, in order."""
        while True:
            try:
                filtered = await pending
            except StanzaError as e:
                self._bounce_event(event, e)
                filtered = None
            except Exception:
                log.exception("delivery filter failed on %r", event.stanza)
                self._bounce_event(event, StanzaError("internal-server-error"))
                filtered = None
            if filtered is not None:
                target, out = filtered
                target.send(out.stanza)
            queue = session.delivery_queue
            while queue:
                event = queue.popleft()
                more = self._filter_and_send(session, event)
                if more is not None:
                    pending = more
                    break
            else:
                session.delivery_queue = None
                return

    def _to_host(self, host: Host, event: StanzaEvent, kind: str) -> Awaitable[None] | None:
        if kind == "iq":
            return self._iq(host, event, _HOST_TARGETS)
        name = hooks.MESSAGE_HOST if kind == "message" else hooks.PRESENCE_HOST
        result = self._fire(host, name, event)
        if result is True:
            return None
        if result is not False:
            return self._guard(result, event, lambda: self._unclaimed_host(event, kind))
        return self._unclaimed_host(event, kind)

    def _unclaimed_host(self, event: StanzaEvent, kind: str) -> Awaitable[None] | None:
        if kind == "message" and event.stanza.attrs.get("type") not in ("error", "groupchat", "headline"):
            return self._bounce_event(event, StanzaError("service-unavailable"))
        return None

    def _to_bare(self, host: Host, event: StanzaEvent, kind: str) -> Awaitable[None] | None:
        if kind == "iq":
            targets: tuple[Target, ...]
            if event.frm.bare == event.to:
                targets = _NO_TO_TARGETS if "to" not in event.stanza.attrs else _SELF_TARGETS
            else:
                targets = _ACCOUNT_TARGETS
            return self._iq(host, event, targets)
        result = self._fire(host, _BARE[kind], event)
        if result is True:
            return None
        if kind != "message":
            return None if result is False else self._guard(result, event, None)
        if result is not False:
            return self._guard(result, event, lambda: self._unhandled_message(host, event))
        return self._unhandled_message(host, event)

    def _unhandled_message(self, host: Host, event: StanzaEvent) -> Awaitable[None] | None:
        """No module claimed a message to a bare JID: RFC 6120 §10.5.3.1 and §10.5.4 defaults."""
        if event.stanza.attrs.get("type") in ("error", "headline", "groupchat"):
            return None
        return self._bounce_event(event, StanzaError("service-unavailable"))

    # -- IQ ------------------------------------------------------------------------------------------
    def _iq(self, host: Host, event: StanzaEvent, targets: tuple[Target, ...]) -> Awaitable[None] | None:
        stanza = event.stanza
        type_ = stanza.attrs.get("type")
        if type_ == "result" or type_ == "error":
            # Responses to IQs the server or a module sent.
            self.server.iq_tracker.resolve(stanza)
            return None
        payload = stanza.first()
        assert payload is not None and type_ is not None  # checked in _check_iq / by senders
        entry = host.iq.lookup(type_, payload, targets)
        if entry is None:
            if targets is not _HOST_TARGETS:
                result = self._fire(host, hooks.IQ_BARE, event)
                if result is True:
                    return None
                if result is not False:
                    unavailable = StanzaError("service-unavailable")
                    return self._guard(result, event, lambda: self._bounce_event(event, unavailable))
            # RFC 6120 §8.4: unknown payload namespace.
            return self._bounce_event(event, StanzaError("service-unavailable"))
        handler, is_async = entry
        if is_async:
            return self._run_iq(handler, event)
        try:
            payload_out = handler(event)
        except StanzaError as e:
            return self._bounce_event(event, e)
        except Exception:
            log.exception("IQ handler %r failed on %r", handler, stanza)
            return self._bounce_event(event, StanzaError("internal-server-error"))
        self._reply(event, payload_out)  # type: ignore[arg-type]
        return None

    async def _run_iq(self, handler: Any, event: StanzaEvent) -> None:
        try:
            result = await handler(event)
        except StanzaError as e:
            await self._bounce_async(event, e)
            return
        except Exception:
            log.exception("IQ handler %r failed on %r", handler, event.stanza)
            await self._bounce_async(event, StanzaError("internal-server-error"))
            return
        self._reply(event, result)

    def _reply(self, event: StanzaEvent, payload: Element | None) -> None:
        stanza = event.stanza
        attrs = {"type": "result", "id": stanza.attrs["id"], "to": str(event.frm)}
        to_attr = stanza.attrs.get("to")
        if to_attr is not None:
            attrs["from"] = str(event.to)
        reply = Element("iq", stanza.ns, attrs)
        if payload is not None:
            reply.children.append(payload)
        self._send_back(event, reply)

    @staticmethod
    def _check_iq(stanza: Element, type_: str | None) -> StanzaError | None:
        # RFC 6120 §8.2.3: id and type are required; get/set carry exactly one payload.
        if "id" not in stanza.attrs:
            return StanzaError("bad-request", "an IQ needs an 'id'")
        if type_ is None:
            return StanzaError("bad-request", "an IQ needs a 'type'")
        if type_ == "get" or type_ == "set":
            count = 0
            for c in stanza.children:
                if c.__class__ is Element:
                    count += 1
            if count != 1:
                return StanzaError("bad-request", "an IQ get/set carries exactly one payload element")
        return None

    # -- errors ---------------------------------------------------------------------------------------
    def _bounce(self, stanza: Element, error: StanzaError) -> Awaitable[None] | None:
        """Answer ``stanza`` (from a local session, 'from' stamped) with an error."""
        if stanza.attrs.get("type") == "error":
            return None  # RFC 6120 §8.3.1: never an error in reply to an error
        reply = error_reply(stanza, error)
        reply.attrs.pop("from", None)  # from the server; the recipient's own session
        try:
            to = JID.parse(stanza.attrs["from"])
        except (KeyError, JIDError):
            return None
        session = self.sessions.get(to)
        if session is not None:
            session.send(reply)
        return None

    def _bounce_event(self, event: StanzaEvent, error: StanzaError) -> Awaitable[None] | None:
        stanza = event.stanza
        if stanza.attrs.get("type") == "error":
            return None
        if stanza.name == "presence":
            return None  # presence errors are not sent back for undeliverable presence
        reply = error_reply(stanza, error)
        reply.attrs["to"] = str(event.frm)
        if "to" in stanza.attrs:
            reply.attrs["from"] = str(event.to)
        else:
            reply.attrs.pop("from", None)
        self._send_back(event, reply)
        return None

    async def _bounce_async(self, event: StanzaEvent, error: StanzaError) -> None:
        self._bounce_event(event, error)

    def _send_back(self, event: StanzaEvent, reply: Element) -> None:
        """Send a reply to the originator of ``event`` (a local session or anyone routable)."""
        origin = event.origin
        if origin is not None and origin.jid == event.frm:
            origin.send(reply)
            return
        if "from" not in reply.attrs:
            reply.attrs["from"] = event.to.domain
        pending = self.deliver(StanzaEvent(reply, None, event.frm, event.to))
        if pending is not None:
            self.server.spawn(pending, "reply")

    def _remote(self, event: StanzaEvent) -> Awaitable[None] | None:
        """Other domains: a component, a service, or federation (RFC 6120 §10.4)."""
        if self.route_table.route_remote(event):
            return None
        return self._bounce_event(event, StanzaError("remote-server-not-found"))

    def _fire(self, host: Host, name: FireHook[StanzaEvent], event: StanzaEvent) -> bool | Awaitable[bool]:
        """Run a delivery chain; a StanzaError from a synchronous handler is answered here."""
        try:
            return host.bus.fire_sync(name, event)
        except StanzaError as e:
            self._bounce_event(event, e)
            return True

    def _guard(
        self,
        pending: Awaitable[bool],
        event: StanzaEvent,
        unclaimed: Callable[[], Awaitable[None] | None] | None,
    ) -> Awaitable[None]:
        return self._await_handler(pending, event, unclaimed)

    async def _await_handler(
        self,
        pending: Awaitable[bool],
        event: StanzaEvent,
        unclaimed: Callable[[], Awaitable[None] | None] | None,
    ) -> None:
        """Finish an async delivery chain; if nobody claimed the stanza, apply the default rule."""
        try:
            claimed = await pending
        except StanzaError as e:
            self._bounce_event(event, e)
            return
        except Exception:
            log.exception("stanza handler failed on %r", event.stanza)
            self._bounce_event(event, StanzaError("internal-server-error"))
            return
        if claimed is not True and unclaimed is not None:
            more = unclaimed()
            if more is not None:
                await more
