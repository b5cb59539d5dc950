"""One stanza to many recipients, serialized once: the router's fan-out (``Router.fanout``).

MUC broadcasts (a groupchat message, an occupant's presence) and presence broadcast to a user's
contacts send the same stanza to many JIDs, each copy differing only in ``to``. A local session whose
exit needs no element (:meth:`ClientSession.raw_exit`: no stream management, no held CSI state) gets
the stanza serialized once per framing with its own ``to`` spliced in. Everything else (bare JIDs,
remote JIDs, services, a session with a delivery queue) takes the router's ordinary way, one copy
each. The ``deliver/<kind>`` filters of the recipient's domain (blocking, …) still see every copy; a
copy a filter changed or replaced is serialized on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.jid import JID
from roost.xml.element import Element
from roost.xml.serializer import escape_attr, serialize

if TYPE_CHECKING:
    from roost.core.host import Host
    from roost.core.server import Server


def fanout(server: Server, template: Element, to: Iterable[JID], frm: JID) -> None:
    """Send ``template`` (``from`` set, no ``to``) to each JID of ``to``, serialized once."""
    sessions = server.sessions
    hosts = server.hosts
    router = server.router
    filter_name = hooks.DELIVER_MESSAGE if template.name == "message" else hooks.DELIVER_PRESENCE
    filtering: dict[str, Host | None] = {}
    parts: dict[str | None, tuple[bytes, bytes]] = {}
    nchildren = len(template.children)
    for jid in to:
        session = sessions.get(jid)
        target = str(jid)
        if session is None:
            copy = template.shallow_copy()
            copy.attrs["to"] = target
            pending = router.deliver(StanzaEvent(copy, None, jid, frm))
            if pending is not None:
                server.spawn(pending, "fanout-deliver")
            continue
        domain = jid.domain
        if domain in filtering:
            host = filtering[domain]
        else:
            candidate = hosts.get(domain)
            host = candidate if candidate is not None and candidate.bus.has_handlers(filter_name) else None
            filtering[domain] = host
        exit_ = session.raw_exit()
        if host is not None or exit_ is None or session.delivery_queue is not None:
            copy = template.shallow_copy()
            copy.attrs["to"] = target
            event = StanzaEvent(copy, None, jid, frm)
            if host is None or exit_ is None:
                router.to_session(session, event)  # through the filters, the session's exit
                continue
            result = host.bus.fold(filter_name, (session, event))
            if result is None:
                continue
            if result.__class__ is not tuple:
                router.to_session(session, event)  # a filter must wait: the ordered way
                continue
            recipient, event = result
            if (
                recipient is not session
                or event.stanza is not copy
                or len(copy.children) != nchildren
                or len(copy.attrs) != len(template.attrs) + 1
                or copy.attrs.get("to") != target
            ):
                recipient.send(event.stanza)
                continue
        # Serialized once per framing; each recipient only gets its own 'to' spliced in.
        ns = exit_.stanza_ns
        cut = parts.get(ns)
        if cut is None:
            cut = parts[ns] = _split(template, ns)
        exit_.send_stanza(b"".join((cut[0], escape_attr(target).encode(), cut[1])))


def _split(template: Element, ns: str | None) -> tuple[bytes, bytes]:
    """The serialized ``template`` cut where each recipient's ``to`` attribute goes."""
    probe = template.shallow_copy()
    probe.attrs["to"] = "\x00"  # cannot occur in XML text, so the marker is unique
    text = serialize(probe, ns)
    marker = ' to="\x00"'
    i = text.index(marker)
    return (text[:i] + ' to="').encode(), ('"' + text[i + len(marker) :]).encode()
