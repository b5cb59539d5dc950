"""XML layer: element tree, hardened incremental parser and serializer (pure, no I/O)."""

from roost.xml.element import Element
from roost.xml.parser import StreamParser, XmlStreamError
from roost.xml.serializer import serialize, serialize_open_tag

__all__ = ["Element", "StreamParser", "XmlStreamError", "serialize", "serialize_open_tag"]
