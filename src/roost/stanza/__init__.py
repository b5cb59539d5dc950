"""Stanza helpers: kinds, error replies and result replies (pure)."""

from __future__ import annotations

from typing import Final

from roost.stanza.errors import StanzaError, StreamError
from roost.xml.element import Element
from roost.xml.ns import STANZA_ERRORS, STANZA_NAMESPACES

STANZA_KINDS: Final = frozenset(("message", "presence", "iq"))
IQ_TYPES: Final = frozenset(("get", "set", "result", "error"))
MESSAGE_TYPES: Final = frozenset(("chat", "error", "groupchat", "headline", "normal"))
PRESENCE_TYPES: Final = frozenset(
    ("error", "probe", "subscribe", "subscribed", "unavailable", "unsubscribe", "unsubscribed")
)


def is_stanza(el: Element) -> bool:
    """True for <message/>, <presence/> and <iq/> in a stanza namespace."""
    return el.name in STANZA_KINDS and el.ns in STANZA_NAMESPACES


def error_condition(stanza: Element) -> str | None:
    """The defined condition of an error stanza (RFC 6120 §8.3.3), or None if it carries no <error/>.

    The first child of <error/> in the stanza-errors namespace other than <text/> (§8.3.2).
    """
    error = stanza.find("error")
    if error is None:
        return None
    for child in error.elements(ns=STANZA_ERRORS):
        if child.name != "text":
            return child.name
    return None


def error_reply(stanza: Element, error: StanzaError, by: str | None = None) -> Element:
    """The error stanza answering ``stanza`` (RFC 6120 §8.3.1): addresses swapped, type='error'.

    The original payload is not echoed back (§8.3.1 makes that optional; it keeps replies small).
    """
    attrs = {"type": "error"}
    sid = stanza.attrs.get("id")
    if sid is not None:
        attrs["id"] = sid
    reply = Element(stanza.name, stanza.ns, _addressed_back(stanza, attrs))
    reply.children.append(error.to_element(by, stanza.ns))
    return reply


def iq_result(iq: Element, payload: Element | None = None) -> Element:
    """The result IQ answering ``iq`` (addresses swapped)."""
    reply = Element("iq", iq.ns, _addressed_back(iq, {"type": "result", "id": iq.attrs.get("id", "")}))
    if payload is not None:
        reply.children.append(payload)
    return reply


def _addressed_back(stanza: Element, attrs: dict[str, str]) -> dict[str, str]:
    """``attrs`` plus the addresses of a reply to ``stanza``: its 'from' as 'to', its 'to' as 'from'."""
    to = stanza.attrs.get("from")
    if to is not None:
        attrs["to"] = to
    frm = stanza.attrs.get("to")
    if frm is not None:
        attrs["from"] = frm
    return attrs


__all__ = [
    "IQ_TYPES",
    "MESSAGE_TYPES",
    "PRESENCE_TYPES",
    "STANZA_KINDS",
    "StanzaError",
    "StreamError",
    "error_condition",
    "error_reply",
    "iq_result",
    "is_stanza",
]
