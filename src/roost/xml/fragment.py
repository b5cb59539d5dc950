"""Parse one stored XML element back into an :class:`Element` (vCards, private XML, offline stanzas).

Stored XML was written by :func:`roost.xml.serializer.serialize`, but it is read back through the same
hardened parser as network input (no DTDs, entities, comments; bounded size and depth), so a damaged
or tampered database cannot do more than a client could.
"""

from __future__ import annotations

from typing import Final

from roost.xml.element import Element
from roost.xml.parser import StreamParser, XmlStreamError
from roost.xml.serializer import escape_attr

_WRAPPER_NS: Final = "urn:roost:fragment"
_OPEN: Final = b"<fragment xmlns='urn:roost:fragment'>"
_CLOSE: Final = b"</fragment>"


class FragmentError(ValueError):
    """The text is not exactly one well-formed XML element."""


def parse_element(text: str, max_bytes: int = 1_048_576) -> Element:
    """The single element serialized in ``text``; :class:`FragmentError` otherwise."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FragmentError(f"not valid Unicode: {e}") from None
    return parse_bytes(data, max_bytes=max_bytes)


def parse_bytes(data: bytes, default_ns: str | None = None, max_bytes: int = 1_048_576) -> Element:
    """The single element in ``data`` (UTF-8), read where ``default_ns`` is the namespace in scope
    (a stanza as written on a stream whose content namespace it did not repeat)."""
    if len(data) > max_bytes:
        raise FragmentError(f"larger than {max_bytes} bytes")
    opening = _OPEN
    if default_ns:
        declared = escape_attr(default_ns).encode()  # escaped for double quotes
        opening = b'<f:fragment xmlns:f="urn:roost:fragment" xmlns="' + declared + b'">'
    parser = StreamParser(max_stanza_bytes=max_bytes, root=(_WRAPPER_NS, "fragment"))
    try:
        events = parser.feed(opening + data + (_CLOSE if not default_ns else b"</f:fragment>"))
    except XmlStreamError as e:
        raise FragmentError(f"not well-formed XML: {e}") from None
    elements = [e for e in events if isinstance(e, Element)]
    if len(elements) != 1:
        raise FragmentError(f"expected one element, found {len(elements)}")
    return elements[0]
