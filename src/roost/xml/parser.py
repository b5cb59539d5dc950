"""Incremental, hardened XML stream parser on expat.

RFC 6120 §11.1 restricts XMPP to a subset of XML: no comments, processing instructions, DTDs or
entity references other than the predefined ones. This parser refuses them with the stream error
conditions the RFC names (``restricted-xml``, ``not-well-formed``, ``bad-namespace-prefix``,
``unsupported-encoding``) and enforces a maximum stanza size *while* parsing, so an oversized stanza
is refused (``policy-violation``, RFC 6120 §4.9.3.14 / XEP-0205) before it is held in memory.

Expat does the byte-level work in C; Python runs only once per start tag, end tag and text run.
"""

from __future__ import annotations

import pyexpat
import re
from dataclasses import dataclass
from typing import Final

from roost.xml.element import Element
from roost.xml.ns import STREAM, XML

_XML_ATTR_PREFIX: Final = XML + " "

#: A lone empty element with its own default namespace and plain attributes, e.g. XEP-0198's
#: ``<a xmlns='urn:xmpp:sm:3' h='12'/>`` or XEP-0352's ``<active xmlns='urn:xmpp:csi:0'/>``: the shape
#: of the nonzas a client sends most, recognised byte-exactly so they skip expat (see
#: :meth:`StreamParser._lone_empty`). Anything else (prefixes, entities, other characters) goes to expat.
_LONE_EMPTY: Final = re.compile(
    rb"<([A-Za-z][\w.-]{0,31}) xmlns=(?:'([\w.:/#+-]{1,128})'|\"([\w.:/#+-]{1,128})\")"
    rb"((?: [A-Za-z][\w.-]{0,31}=(?:'[\w.:/+=@-]{0,128}'|\"[\w.:/+=@-]{0,128}\"))*) ?/>"
)
_ATTR: Final = re.compile(rb" ([\w.-]+)=(?:'([^']*)'|\"([^\"]*)\")")

# expat error codes (pyexpat.errors.codes) mapped to RFC 6120 §4.9.3 stream error conditions.
_codes = pyexpat.errors.codes
_ERROR_CONDITIONS: Final[dict[int, str]] = {
    _codes[pyexpat.errors.XML_ERROR_UNBOUND_PREFIX]: "bad-namespace-prefix",
    _codes[pyexpat.errors.XML_ERROR_UNDEFINED_ENTITY]: "restricted-xml",
    _codes[pyexpat.errors.XML_ERROR_INCORRECT_ENCODING]: "unsupported-encoding",
    _codes[pyexpat.errors.XML_ERROR_UNKNOWN_ENCODING]: "unsupported-encoding",
}


class XmlStreamError(Exception):
    """The peer sent XML that ends the stream; ``condition`` is an RFC 6120 §4.9.3 stream error."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """The stream header arrived: its element (attributes), its default namespace and stream prefix."""

    header: Element
    content_ns: str | None
    prefix: str | None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The peer closed its stream (``</stream:stream>``)."""


ParseEvent = Element | StreamOpen | StreamEnd


class StreamParser:
    """Feed bytes, get stream events: a :class:`StreamOpen`, then one :class:`Element` per top-level
    stanza, then :class:`StreamEnd`.

    ``root`` is the (namespace, name) the first element must have.

    No reference cycle: expat holds its handlers, bound to a :class:`_Builder` that holds the stream
    state but reaches the expat parser only while :meth:`feed` runs. A parser that is dropped (its
    connection closed, cleanly or not) is freed by reference counting alone, with no work left for the
    cyclic garbage collector, whose full collections stall the event loop for every session.
    """

    __slots__ = ("__weakref__", "_b", "_clean_tail", "_head", "_parser")

    def __init__(
        self,
        max_stanza_bytes: int = 262144,
        max_depth: int = 64,
        root: tuple[str, str] = (STREAM, "stream"),
    ) -> None:
        self._b = _Builder(max_stanza_bytes, max_depth, root)
        self.reset()

    @property
    def max_stanza_bytes(self) -> int:
        return self._b.max_stanza_bytes

    @property
    def max_depth(self) -> int:
        return self._b.max_depth

    def reset(self) -> None:
        """Start afresh (stream restart after STARTTLS or SASL, RFC 6120 §5.4.3.3 / §6.4.6)."""
        self._parser: pyexpat.XMLParserType | None = self._b.new_expat()
        self._clean_tail = True
        self._head = b""
        self._b.reset()

    def release_parser(self) -> bool:
        """Free the expat parser of an idle stream, between stanzas; True if it was freed.

        An expat parser holds ~10 KiB; a server holds many idle sessions. The next :meth:`feed`
        builds a new parser and replays the stream header's namespace declarations first, so the
        stream continues exactly where it was. (Named apart from stream management's "hibernation",
        XEP-0198, which is about sessions, not memory.)
        """
        if self._parser is None:
            return True
        b = self._b
        if len(b._stack) != 1 or not self._clean_tail or b._events:
            return False
        self._parser = None
        return True

    @property
    def released(self) -> bool:
        """Whether the expat parser is released (:meth:`release_parser`) until more input comes."""
        return self._parser is None

    @property
    def between_elements(self) -> bool:
        """Whether the parser is inside the root, outside any top-level element (a message boundary)."""
        return len(self._b._stack) == 1 and not self._b._events

    # Former names, kept until every caller has moved (core/server.py).
    hibernate = release_parser

    @property
    def hibernating(self) -> bool:
        return self._parser is None

    def _wake(self) -> pyexpat.XMLParserType:
        b = self._b
        parser = b.new_expat()
        self._parser = parser
        root = b._stack.pop()
        prefix = b._stream_prefix
        qname = f"{prefix}:{root.name}" if prefix else root.name
        header = Element(qname, "")
        for decl_prefix, uri in b._declarations:
            header.attrs["xmlns:" + decl_prefix if decl_prefix else "xmlns"] = uri
        from roost.xml.serializer import serialize

        replay = serialize(header).replace("/>", ">").encode()
        events, b._events = b._events, []
        declarations = b._declarations
        b._expat = parser
        try:
            parser.Parse(replay, False)
        finally:
            b._expat = None
        b._events = events  # the replayed StreamOpen is not news
        b._declarations = declarations
        b._stack[0] = root
        b._fed = b._boundary = len(replay)
        return parser

    def feed(self, data: bytes) -> list[ParseEvent]:
        """Parse ``data``; return the events it completed. Raises :class:`XmlStreamError`."""
        if data[-2:] == b"/>" and data[:1] == b"<" and len(data) < 512:
            lone = self._lone_empty(data)
            if lone is not None:
                return [lone]
        parser = self._parser or self._wake()
        b = self._b
        if b._fed < 4:
            self._check_encoding(data)
        b._fed += len(data)
        self._clean_tail = data.rstrip(b" \t\r\n").endswith(b">") or (self._clean_tail and data.isspace())
        b._expat = parser
        try:
            parser.Parse(data, False)
        except pyexpat.ExpatError as e:
            condition = _ERROR_CONDITIONS.get(e.code, "not-well-formed")
            raise XmlStreamError(condition, pyexpat.ErrorString(e.code)) from None
        finally:
            b._expat = None
        # Bytes held since the current stanza (or the last boundary) began, including a tag that
        # expat is still buffering: bound it, so a never-ending tag cannot grow without limit.
        if b._fed - b._boundary > b.max_stanza_bytes:
            raise XmlStreamError("policy-violation", "stanza too large")
        events = b._events
        if events:
            b._events = []
        return events

    def _lone_empty(self, data: bytes) -> Element | None:
        """``data`` as one top-level empty element without expat, when that is exactly what expat
        would build; None otherwise (expat then parses it as usual).

        Only between top-level elements: the stream is open, nothing is pending, and expat has
        consumed every byte fed so far (no partial tag buffered, whatever the last byte was). The
        bytes skipped are not counted in ``_fed`` so expat's positions stay aligned with it.
        """
        b = self._b
        if len(b._stack) != 1 or b._events:
            return None
        parser = self._parser
        if parser is not None and parser.CurrentByteIndex != b._fed:
            return None
        m = _LONE_EMPTY.fullmatch(data)
        if m is None:
            return None
        attrs: dict[str, str] = {}
        raw = m.group(4)
        if raw:
            for name, single, double in _ATTR.findall(raw):
                key = name.decode()
                if key in attrs or key == "xmlns":
                    return None  # a duplicate attribute: expat reports the error
                attrs[key] = (single or double).decode()
        return Element(m.group(1).decode(), (m.group(2) or m.group(3)).decode(), attrs)

    def _check_encoding(self, data: bytes) -> None:
        """RFC 6120 §11.6: UTF-8 only. Expat would honour a UTF-16 (or UTF-32) byte-order mark even
        with UTF-8 forced, so the first bytes of a stream are looked at before expat sees them: a
        UTF-16/32 BOM, or a NUL among them (UTF-16/32 without a BOM), is another encoding. A UTF-8
        BOM is left to expat."""
        head = (self._head + data)[:4]
        self._head = head
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
            raise XmlStreamError("unsupported-encoding", "the stream is not UTF-8")


class _Builder:
    """The expat handlers and the tree they build; the expat parser is reachable only during a feed."""

    __slots__ = (
        "_boundary",
        "_content_ns",
        "_declarations",
        "_events",
        "_expat",
        "_fed",
        "_names",
        "_root",
        "_stack",
        "_stream_prefix",
        "max_depth",
        "max_stanza_bytes",
    )

    def __init__(self, max_stanza_bytes: int, max_depth: int, root: tuple[str, str]) -> None:
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self._root = root
        self._names: dict[str, tuple[str, str, str | None]] = {}
        self._expat: pyexpat.XMLParserType | None = None
        self.reset()

    def reset(self) -> None:
        self._stack: list[Element] = []
        self._events: list[ParseEvent] = []
        self._fed = 0
        self._boundary = 0
        self._content_ns: str | None = None
        self._stream_prefix: str | None = None
        self._declarations: list[tuple[str | None, str]] = []
        self._names.clear()

    def new_expat(self) -> pyexpat.XMLParserType:
        p = pyexpat.ParserCreate("UTF-8", " ")
        p.namespace_prefixes = True
        p.buffer_text = True
        p.buffer_size = 2048  # per-connection memory: text runs longer than this arrive in pieces
        p.ordered_attributes = False
        p.specified_attributes = True
        p.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.StartNamespaceDeclHandler = self._ns_decl
        p.XmlDeclHandler = _xml_decl
        p.StartDoctypeDeclHandler = _restricted
        p.EntityDeclHandler = _restricted
        p.UnparsedEntityDeclHandler = _restricted
        p.NotationDeclHandler = _restricted
        p.ElementDeclHandler = _restricted
        p.AttlistDeclHandler = _restricted
        p.ProcessingInstructionHandler = _restricted
        p.CommentHandler = _restricted
        p.SkippedEntityHandler = _restricted
        p.ExternalEntityRefHandler = _restricted  # type: ignore[assignment]
        return p

    # -- expat callbacks --------------------------------------------------------------------------
    # They run only during a feed, so ``self._expat`` is set: its ``CurrentByteIndex`` (the byte
    # offset of the current event) is read inline, as a method call per element and text node
    # showed in the per-message instruction count.
    def _split(self, qname: str) -> tuple[str, str, str | None]:
        """("ns", "local", prefix) for an expat name, cached (a stream reuses a few names)."""
        parts = qname.split(" ")
        if len(parts) == 1:
            result: tuple[str, str, str | None] = ("", parts[0], None)
        elif len(parts) == 2:
            result = (parts[0], parts[1], None)
        else:
            result = (parts[0], parts[1], parts[2])
        if len(self._names) < 4096:
            self._names[qname] = result
        return result

    def _start(self, qname: str, attrs: dict[str, str]) -> None:
        split = self._names.get(qname) or self._split(qname)
        stack = self._stack
        depth = len(stack)
        if attrs:
            for key in attrs:
                if " " in key:
                    attrs = self._fix_attrs(attrs)
                    break
        el = Element(split[1], split[0], attrs)
        if depth == 0:
            if (split[0], split[1]) != self._root:
                if split[1] == self._root[1]:
                    raise XmlStreamError("invalid-namespace", "wrong stream namespace")
                raise XmlStreamError("not-well-formed", "not an XMPP stream")
            self._stream_prefix = split[2]
            # The header's declarations are all _ns_decl keeps: inside the stream, a Python call per
            # xmlns (several per client message: chat states, receipts, ids) would learn nothing.
            self._expat.StartNamespaceDeclHandler = None  # type: ignore[union-attr]
            stack.append(el)
            self._events.append(StreamOpen(el, self._content_ns, split[2]))
            self._boundary = self._expat.CurrentByteIndex  # type: ignore[union-attr]
            return
        if depth >= self.max_depth:
            raise XmlStreamError("policy-violation", "XML nested too deeply")
        if depth == 1:
            self._boundary = self._expat.CurrentByteIndex  # type: ignore[union-attr]
        else:
            if self._expat.CurrentByteIndex - self._boundary > self.max_stanza_bytes:  # type: ignore[union-attr]
                raise XmlStreamError("policy-violation", "stanza too large")
            stack[-1].children.append(el)
        stack.append(el)

    def _fix_attrs(self, attrs: dict[str, str]) -> dict[str, str]:
        fixed: dict[str, str] = {}
        for key, value in attrs.items():
            if " " not in key:
                fixed[key] = value
            elif key.startswith(_XML_ATTR_PREFIX):
                fixed["xml:" + key.split(" ")[1]] = value
            else:
                uri, local = key.split(" ")[:2]
                fixed["{" + uri + "}" + local] = value
        return fixed

    def _end(self, qname: str) -> None:
        stack = self._stack
        el = stack.pop()
        depth = len(stack)
        if depth == 1:
            position = self._expat.CurrentByteIndex  # type: ignore[union-attr]
            # A long text node parsed in one go reaches no other check: measure the whole stanza here.
            if position - self._boundary > self.max_stanza_bytes:
                raise XmlStreamError("policy-violation", "stanza too large")
            self._events.append(el)
            self._boundary = position
        elif depth == 0:
            self._events.append(StreamEnd())

    def _text(self, data: str) -> None:
        stack = self._stack
        depth = len(stack)
        if depth > 1:
            if self._expat.CurrentByteIndex - self._boundary > self.max_stanza_bytes:  # type: ignore[union-attr]
                raise XmlStreamError("policy-violation", "stanza too large")
            children = stack[-1].children
            if children and children[-1].__class__ is str:
                children[-1] += data
            else:
                children.append(data)
        elif depth == 1:
            # Between stanzas only whitespace may appear (keepalives, RFC 6120 §4.6.1).
            if not data.isspace():
                raise XmlStreamError("bad-format", "text between stanzas")
            self._boundary = self._expat.CurrentByteIndex  # type: ignore[union-attr]
        else:
            raise XmlStreamError("not-well-formed", "text outside the stream")

    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if not self._stack:
            self._declarations.append((prefix, uri or ""))
            if prefix is None:
                self._content_ns = uri


def _xml_decl(version: str | None, encoding: str | None, standalone: int) -> None:
    # RFC 6120 §11.6: UTF-8 only.
    if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
        raise XmlStreamError("unsupported-encoding", f"encoding {encoding!r} is not UTF-8")


def _restricted(*args: object) -> None:
    # RFC 6120 §11.1: comments, PIs, DTDs and entity declarations are not allowed.
    raise XmlStreamError(
        "restricted-xml", "comments, processing instructions, DTDs and entities are not allowed"
    )
