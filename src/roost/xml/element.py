"""A small, fast XML element tree.

Why not ``xml.etree``: XMPP needs namespace-aware names without ``{ns}tag`` string juggling on the hot
path, stanza-namespace-aware serialization (``jabber:client`` vs ``jabber:server``), and cheap copies.
An :class:`Element` is a slotted object with a local ``name``, a namespace ``ns``, a plain ``attrs``
dict (``xml:lang`` is stored under that key; other namespaced attributes as ``{uri}name``) and a list
of children that are elements or text strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class RawXml(str):
    """A child that is already serialized XML: well-formed, declaring its own namespace, written out as
    is. Everything else sees a string (text-walking code skips or joins it; nothing parses it). Made
    only from XML Roost wrote itself: an archived stanza spliced into a MAM result without parsing it
    and serializing it again (``modules/mam/module.py``)."""

    __slots__ = ()


class Element:
    """An XML element: ``Element("message", "jabber:client", {"type": "chat"})``."""

    __slots__ = ("attrs", "children", "name", "ns")

    def __init__(
        self,
        name: str,
        ns: str = "",
        attrs: dict[str, str] | None = None,
        children: list[Element | str] | None = None,
    ) -> None:
        self.name = name
        self.ns = ns
        self.attrs: dict[str, str] = {} if attrs is None else attrs
        self.children: list[Element | str] = [] if children is None else children

    # -- attributes -------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default``."""
        return self.attrs.get(key, default)

    def set(self, key: str, value: str | None) -> None:
        """Set an attribute; ``None`` removes it."""
        if value is None:
            self.attrs.pop(key, None)
        else:
            self.attrs[key] = value

    # -- children ---------------------------------------------------------------------------------
    def append(self, child: Element | str) -> None:
        """Append an element or text (adjacent text is merged)."""
        children = self.children
        if isinstance(child, str):
            if not child:
                return
            if children and isinstance(children[-1], str):
                children[-1] += child
                return
        children.append(child)

    def add(
        self,
        name: str,
        ns: str | None = None,
        attrs: dict[str, str] | None = None,
        text: str | None = None,
    ) -> Element:
        """Create, append and return a child; ``ns`` defaults to this element's namespace."""
        child = Element(name, self.ns if ns is None else ns, attrs)
        if text:
            child.children.append(text)
        self.children.append(child)
        return child

    def remove(self, child: Element) -> None:
        """Remove ``child`` (by identity)."""
        for i, c in enumerate(self.children):
            if c is child:
                del self.children[i]
                return
        raise ValueError("not a child of this element")

    def elements(self, name: str | None = None, ns: str | None = None) -> Iterator[Element]:
        """Child elements, optionally filtered by local name and namespace."""
        for c in self.children:
            if c.__class__ is Element and (name is None or c.name == name) and (ns is None or c.ns == ns):
                yield c

    def find(self, name: str, ns: str | None = None) -> Element | None:
        """First child element with this name (and namespace, if given)."""
        for c in self.children:
            if c.__class__ is Element and c.name == name and (ns is None or c.ns == ns):
                return c
        return None

    def find_text(self, name: str, ns: str | None = None) -> str | None:
        """Text of the first matching child, or None if there is no such child."""
        child = self.find(name, ns)
        return None if child is None else child.text

    def first(self) -> Element | None:
        """The first child element (an IQ's payload)."""
        for c in self.children:
            if c.__class__ is Element:
                return c
        return None

    @property
    def text(self) -> str:
        """Concatenated text children (not descendants)."""
        children = self.children
        if len(children) == 1 and children[0].__class__ is str:
            return children[0]
        return "".join(c for c in children if isinstance(c, str))

    @text.setter
    def text(self, value: str) -> None:
        self.children = [c for c in self.children if not isinstance(c, str)]
        if value:
            self.children.insert(0, value)

    # -- misc -------------------------------------------------------------------------------------
    def copy(self) -> Element:
        """A deep copy (attributes and all descendants)."""
        return Element(
            self.name,
            self.ns,
            dict(self.attrs),
            [c if isinstance(c, str) else c.copy() for c in self.children],
        )

    def shallow_copy(self) -> Element:
        """A copy with its own attribute dict and child list, sharing the child elements.

        Enough for re-addressing a stanza for another recipient (only top-level attributes change).
        """
        return Element(self.name, self.ns, dict(self.attrs), list(self.children))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (
            self.name == other.name
            and self.ns == other.ns
            and self.attrs == other.attrs
            and self.children == other.children
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        from roost.xml.serializer import serialize

        return f"<Element {serialize(self)[:200]}>"
