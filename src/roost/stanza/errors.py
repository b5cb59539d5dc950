"""XMPP errors as exceptions carrying RFC 6120 conditions (§4.9 stream errors, §8.3 stanza errors)."""

from __future__ import annotations

from typing import Final

from roost.xml.element import Element
from roost.xml.ns import STANZA_ERRORS, STREAMS_ERRORS

#: RFC 6120 §8.3.3: each defined condition with the error type the RFC shows for it.
STANZA_ERROR_TYPES: Final[dict[str, str]] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

#: RFC 6120 §4.9.3: the defined stream error conditions.
STREAM_ERROR_CONDITIONS: Final = frozenset(
    (
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    )
)


class StanzaError(Exception):
    """A stanza-level error (RFC 6120 §8.3); raised by handlers, turned into an error reply."""

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        *,
        type: str | None = None,
        app: Element | None = None,
        uri: str | None = None,
    ) -> None:
        if condition not in STANZA_ERROR_TYPES:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = type or STANZA_ERROR_TYPES[condition]
        self.app = app
        #: For <gone/> and <redirect/>: the new address (§8.3.3.5, §8.3.3.14).
        self.uri = uri

    def to_element(self, by: str | None = None, ns: str = "jabber:client") -> Element:
        """The ``<error/>`` child of an error stanza."""
        attrs = {"type": self.type}
        if by:
            attrs["by"] = by
        error = Element("error", ns, attrs)
        cond = error.add(self.condition, STANZA_ERRORS)
        if self.uri:
            cond.children.append(self.uri)
        if self.text:
            error.add("text", STANZA_ERRORS, {"xml:lang": "en"}, self.text)
        if self.app is not None:
            error.append(self.app)
        return error

    @classmethod
    def from_element(cls, error: Element) -> StanzaError:
        """Parse an ``<error/>`` element (e.g. from a remote reply)."""
        condition = "undefined-condition"
        text = None
        for child in error.elements(ns=STANZA_ERRORS):
            if child.name == "text":
                text = child.text
            elif child.name in STANZA_ERROR_TYPES:
                condition = child.name
        return cls(condition, text, type=error.get("type"))


class StreamError(Exception):
    """A stream-level error (RFC 6120 §4.9): the stream is closed after sending it."""

    def __init__(self, condition: str, text: str | None = None, *, app: Element | None = None) -> None:
        if condition not in STREAM_ERROR_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        #: An application-specific condition (RFC 6120 §4.9.4), e.g. XEP-0198's <handled-count-too-high/>.
        self.app = app

    def to_element(self) -> Element:
        """The ``<stream:error/>`` element."""
        error = Element("error", "http://etherx.jabber.org/streams")
        error.add(self.condition, STREAMS_ERRORS)
        if self.text:
            error.add("text", STREAMS_ERRORS, {"xml:lang": "en"}, self.text)
        if self.app is not None:
            error.append(self.app)
        return error
