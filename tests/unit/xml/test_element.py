"""The element tree API used by every module."""

from __future__ import annotations

from roost.xml.element import Element


def test_builder_find_and_text() -> None:
    iq = Element("iq", "jabber:client", {"type": "get"})
    query = iq.add("query", "jabber:iq:roster")
    query.add("item", attrs={"jid": "a@b"})
    query.add("item", attrs={"jid": "c@d"}, text="x")
    assert iq.first() is query
    assert iq.find("query", "jabber:iq:roster") is query
    assert iq.find("query", "other") is None
    assert [i.attrs["jid"] for i in query.elements("item")] == ["a@b", "c@d"]
    assert query.find_text("item") == ""
    assert query.find_text("missing") is None


def test_text_merging_and_setter() -> None:
    el = Element("body")
    el.append("a")
    el.append("b")
    assert el.children == ["ab"]
    el.append(Element("x"))
    el.text = "new"
    assert el.text == "new" and len(el.children) == 2


def test_copies() -> None:
    el = Element("message", "jabber:client", {"to": "a"})
    body = el.add("body", text="hi")
    deep = el.copy()
    shallow = el.shallow_copy()
    deep.attrs["to"] = "b"
    shallow.attrs["to"] = "c"
    assert el.attrs["to"] == "a"
    assert deep.find("body") is not body and deep == Element(
        "message", "jabber:client", {"to": "b"}, [Element("body", "jabber:client", None, ["hi"])]
    )
    assert shallow.find("body") is body


def test_remove_and_get_set() -> None:
    el = Element("x")
    child = el.add("y")
    el.remove(child)
    assert el.first() is None
    el.set("a", "1")
    assert el.get("a") == "1"
    el.set("a", None)
    assert el.get("a", "default") == "default"
