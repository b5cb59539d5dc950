"""Resource binding (RFC 6120 §7), both roles, and the advertise-only features that come with it
on a c2s stream: RFC 3921 sessions (answered by roost.modules.session_legacy), XEP-0478 limits,
and whatever modules contribute (e.g. stream management).

Receiving role: the session table is the driver's, so the feature emits :class:`NeedBind` and holds
the stream until :meth:`BindServer.bound` or :meth:`BindServer.bind_failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from roost.jid import JID, JIDError, prepare_resource
from roost.stanza import error_reply, iq_result
from roost.stanza.errors import StanzaError, StreamError
from roost.stream.core import Feature, Phase, Role, Stream, StreamEvent
from roost.stream.events import Bound, NeedBind
from roost.util.ids import random_token
from roost.xml.element import Element
from roost.xml.ns import BIND, LIMITS, SESSION

_STANZAS = frozenset(("message", "presence", "iq"))


class BindServer(Feature):
    """Receiving role: after authentication, the only thing a client may do is bind (RFC 6120 §7.1)."""

    __slots__ = ("_iq", "failures", "max_failures")

    def __init__(self, *, max_failures: int = 5) -> None:
        self.max_failures = max_failures
        self.failures = 0
        self._iq: Element | None = None

    def advertise(self, stream: Stream) -> Element | None:
        return Element("bind", BIND) if stream.authenticated else None

    def handle(self, stream: Stream, stanza: Element) -> list[StreamEvent] | None:
        if not stream.authenticated or stanza.name not in _STANZAS or stanza.ns != stream.content_ns:
            return None
        to = stanza.attrs.get("to")
        if to and to != stream.domain:
            # RFC 6120 §7.1: nothing leaves before a resource is bound.
            return stream.close(StreamError("not-authorized", "bind a resource first"))
        if stanza.name != "iq" or stanza.attrs.get("type") not in ("get", "set"):
            if stanza.attrs.get("type") in ("error", "result"):
                return []
            return self._reply_error(stream, stanza, StanzaError("not-authorized", "bind a resource first"))
        payload = stanza.first()
        is_bind = payload is not None and payload.ns == BIND and payload.name == "bind"
        if payload is None or not is_bind or stanza.attrs.get("type") != "set":
            return self._reply_error(stream, stanza, StanzaError("not-authorized", "bind a resource first"))
        if "id" not in stanza.attrs:
            return self._reply_error(stream, stanza, StanzaError("bad-request", "an IQ needs an id"))
        resource_el = payload.find("resource", BIND)
        resource: str | None = None
        if resource_el is not None:
            try:
                resource = prepare_resource(resource_el.text)
            except JIDError:
                # RFC 6120 §7.7.2.1
                self.failures += 1
                self._reply_error(stream, stanza, StanzaError("bad-request", "resourcepart is not valid"))
                if self.failures >= self.max_failures:
                    return stream.close(StreamError("policy-violation", "too many failed resource bindings"))
                return []
        self._iq = stanza
        stream.wait(self)
        return [NeedBind(resource)]

    def bound(self, stream: Stream, jid: JID) -> list[StreamEvent]:
        """The driver bound ``jid``: answer the IQ; the stream is established."""
        iq = self._iq
        self._iq = None
        if stream.pending_on is not self or iq is None:
            return []
        stream.jid = jid
        payload = Element("bind", BIND)
        payload.add("jid", text=str(jid))
        stream.send(iq_result(iq, payload))
        stream.establish()
        return stream.resume(Phase.ESTABLISHED)

    def bind_failed(self, stream: Stream, error: StanzaError) -> list[StreamEvent]:
        """The driver could not bind (RFC 6120 §7.6.2, §7.7.2): answer with ``error``."""
        iq = self._iq
        self._iq = None
        if stream.pending_on is not self or iq is None:
            return []
        stream.send(error_reply(iq, error))
        self.failures += 1
        if self.failures >= self.max_failures:
            # RFC 6120 §7.7.3
            return stream.close(StreamError("policy-violation", "too many failed resource bindings"))
        return stream.resume()

    def _reply_error(self, stream: Stream, stanza: Element, error: StanzaError) -> list[StreamEvent]:
        stream.send(error_reply(stanza, error))
        return []


class BindClient(Feature):
    """Initiating role: bind ``resource`` (None: let the server choose)."""

    __slots__ = ("_id", "resource")

    def __init__(self, resource: str | None = None) -> None:
        self.resource = resource
        self._id = ""

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        if not stream.authenticated or features.find("bind", BIND) is None:
            return None
        self._id = "bind-" + random_token(6)
        iq = Element("iq", stream.content_ns, {"type": "set", "id": self._id})
        bind = iq.add("bind", BIND)
        if self.resource is not None:
            bind.add("resource", text=self.resource)
        stream.send(iq)
        return []

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if stream.role is not Role.INITIATING or el.name != "iq" or el.attrs.get("id") != self._id:
            return None
        if el.attrs.get("type") == "result":
            bind = el.find("bind", BIND)
            jid_text = bind.find_text("jid", BIND) if bind is not None else None
            try:
                jid = JID.parse(jid_text or "")
            except JIDError:
                return stream.close(StreamError("invalid-xml", "the bind result carries no valid JID"))
            stream.jid = jid
            return [Bound(jid), *stream.establish()]
        condition = "bind failed"
        error = el.find("error", stream.content_ns)
        if error is not None:
            condition = next((c.name for c in error.elements() if c.name != "text"), condition)
        return stream.close(StreamError("undefined-condition", f"resource binding failed: {condition}"))


class LegacySession(Feature):
    """RFC 3921 ``<session/>``, marked optional (RFC 6121 Appendix E) for clients that still ask."""

    __slots__ = ()

    def advertise(self, stream: Stream) -> Element | None:
        if not stream.authenticated:
            return None
        session = Element("session", SESSION)
        session.add("optional")
        return session


class Limits(Feature):
    """XEP-0478 stream limits: what the server enforces, so clients need not guess."""

    __slots__ = ("idle_seconds", "max_bytes")

    def __init__(self, max_bytes: int, idle_seconds: int) -> None:
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds

    def advertise(self, stream: Stream) -> Element | None:
        if not stream.authenticated:
            return None
        limits = Element("limits", LIMITS)
        limits.add("max-bytes", text=str(self.max_bytes))
        limits.add("idle-seconds", text=str(self.idle_seconds))
        return limits


class ExtraFeatures(Feature):
    """Post-authentication features contributed by modules. ``extra()`` returns the same object
    until modules change; each new object gets a new version number, which keys the features cache.
    Shared by the streams of a listener (it keeps no per-stream state)."""

    __slots__ = ("_current", "_version", "extra")

    def __init__(self, extra: Callable[[], Sequence[Element]]) -> None:
        self.extra = extra
        self._current: Sequence[Element] | None = None
        self._version = 0

    def cache_key(self, stream: Stream) -> Hashable:
        if not stream.authenticated:
            return None
        extras = self.extra()
        if extras is not self._current:
            self._current = extras
            self._version += 1
        return self._version

    def advertise(self, stream: Stream) -> Sequence[Element]:
        return (self._current or ()) if stream.authenticated else ()
