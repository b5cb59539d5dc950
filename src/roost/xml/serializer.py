"""Serialize :class:`Element` trees to XML text.

Namespaces are emitted as default-namespace declarations (``xmlns='…'``) only where an element's
namespace differs from its parent's. Stanza namespaces (``jabber:client``, ``jabber:server``,
``jabber:component:accept``) are interchangeable at the top level: a stanza received on an s2s
stream can be written to a c2s stream as-is and ends up in the stream's content namespace
(RFC 6120 §4.8.3), which is what lets the router serialize each stanza once, without rewriting.
"""

from __future__ import annotations

from collections.abc import Sequence

from roost.xml.element import Element, RawXml
from roost.xml.ns import STANZA_NAMESPACES, STREAM, XML


def escape_text(s: str) -> str:
    """Escape character data (``&``, ``<``, ``>`` and ``\\r``, which XML would otherwise normalize)."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "\r" in s:
        s = s.replace("\r", "&#13;")
    return s


def escape_attr(s: str) -> str:
    """Escape an attribute value for use inside double quotes."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "\n" in s or "\r" in s or "\t" in s:
        s = s.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return s


def _attrs(el: Element, out: list[str]) -> None:
    extra_prefixes: dict[str, str] | None = None
    for key, value in el.attrs.items():
        if key[0] == "{":
            # Namespaced attribute other than xml:*: declare a prefix for it on this element.
            uri, _, local = key[1:].partition("}")
            if uri == XML:
                out.append(f' xml:{local}="{escape_attr(value)}"')
                continue
            if extra_prefixes is None:
                extra_prefixes = {}
            prefix = extra_prefixes.get(uri)
            if prefix is None:
                prefix = extra_prefixes[uri] = f"a{len(extra_prefixes)}"
                out.append(f' xmlns:{prefix}="{escape_attr(uri)}"')
            out.append(f' {prefix}:{local}="{escape_attr(value)}"')
        else:
            out.append(f' {key}="{escape_attr(value)}"')


def _write(
    el: Element, parent_ns: str, out: list[str], children: Sequence[Element | str] | None = None
) -> None:
    """``el`` (with ``children`` in place of its own, if given) appended to ``out``."""
    ns = el.ns
    name = el.name
    if ns == STREAM:
        # Stream-level elements (<stream:features/>, <stream:error/>) use the stream's "stream"
        # prefix; the default namespace in scope stays the stream's content namespace.
        name = "stream:" + name
        out.append("<" + name)
        ns = parent_ns
    else:
        out.append("<" + name)
        if ns != parent_ns:
            out.append(f' xmlns="{escape_attr(ns)}"')
    if el.attrs:
        _attrs(el, out)
    if children is None:
        children = el.children
    if not children:
        out.append("/>")
        return
    out.append(">")
    for child in children:
        if child.__class__ is str:
            out.append(escape_text(child))
        elif child.__class__ is RawXml:
            out.append(child)
        else:
            _write(child, ns, out)  # type: ignore[arg-type]
    out.append(f"</{name}>")


def serialize(el: Element, parent_ns: str | None = None) -> str:
    """XML text of ``el``.

    ``parent_ns`` is the namespace in scope where the element is written; for a stanza on a stream,
    the stream's content namespace. A stanza-namespace element under a stanza-namespace parent needs no
    declaration, and its children inherit the stream's namespace.
    """
    out: list[str] = []
    ns = el.ns
    if parent_ns is not None and ns in STANZA_NAMESPACES and parent_ns in STANZA_NAMESPACES:
        parent_ns = ns
    _write(el, "" if parent_ns is None else parent_ns, out)
    return "".join(out)


def serialize_with_children(
    el: Element, children: Sequence[Element | str], parent_ns: str | None = None
) -> str:
    """XML text of ``el`` with ``children`` in place of its own (e.g. a stanza without some of its
    children), without building a copy of the element to serialize it."""
    out: list[str] = []
    ns = el.ns
    if parent_ns is not None and ns in STANZA_NAMESPACES and parent_ns in STANZA_NAMESPACES:
        parent_ns = ns
    _write(el, "" if parent_ns is None else parent_ns, out, children)
    return "".join(out)


def serialize_open_tag(el: Element, prefixes: dict[str, str] | None = None) -> str:
    """The opening tag only (for ``<stream:stream>``), with ``prefixes`` declared (prefix → uri).

    ``el.ns`` is written with the prefix mapped to it in ``prefixes`` if there is one, otherwise as the
    default namespace.
    """
    prefixes = prefixes or {}
    prefix = next((p for p, uri in prefixes.items() if uri == el.ns and p), None)
    qname = f"{prefix}:{el.name}" if prefix else el.name
    out = ["<" + qname]
    for p, uri in prefixes.items():
        out.append(f' xmlns:{p}="{escape_attr(uri)}"' if p else f' xmlns="{escape_attr(uri)}"')
    if not prefix and "" not in prefixes:
        out.append(f' xmlns="{escape_attr(el.ns)}"')
    _attrs(el, out)
    out.append(">")
    return "".join(out)
