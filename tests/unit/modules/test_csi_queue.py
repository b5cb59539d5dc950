"""XEP-0352 hold-back policy without a server: what an inactive client gets now, later, or never."""

from __future__ import annotations

from roost.modules.csi import CARBONS, FORWARD, MUC_USER, PUBSUB_EVENT, CsiPolicy, CsiQueue
from roost.modules.message import CHATSTATES
from roost.xml.element import Element

C = "jabber:client"
ME = "juliet@example.com/balcony"


def presence(frm: str, show: str | None = None, type_: str | None = None, n: str = "") -> Element:
    el = Element("presence", C, {"from": frm, "to": ME, "id": n or frm})
    if type_:
        el.attrs["type"] = type_
    if show:
        el.add("show", text=show)
    return el


def chat(
    frm: str, body: str | None = None, state: str | None = None, type_: str = "chat", n: str = ""
) -> Element:
    el = Element("message", C, {"from": frm, "to": ME, "type": type_, "id": n})
    if body is not None:
        el.add("body", text=body)
    if state is not None:
        el.add(state, CHATSTATES)
    return el


def carbon(direction: str, inner: Element, n: str = "") -> Element:
    outer = Element("message", C, {"from": "juliet@example.com", "to": ME, "type": "chat", "id": n})
    outer.add(direction, CARBONS).add("forwarded", FORWARD).append(inner)
    return outer


def own_room_presence(room: str, nick: str, type_: str | None = None) -> Element:
    el = presence(f"{room}/{nick}", type_=type_)
    x = el.add("x", MUC_USER)
    x.add("item", attrs={"affiliation": "none", "role": "participant"})
    x.add("status", attrs={"code": "110"})
    return el


def ids(items: list[Element]) -> list[str]:
    return [e.attrs["id"] for e in items]


def test_active_client_gets_everything_at_once() -> None:
    queue = CsiQueue(CsiPolicy())
    p = presence("romeo@example.net/orchard")
    assert queue.offer(p) == [p]
    assert not queue.held


def test_inactive_holds_presence_updates_latest_per_contact_and_flushes_on_active() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    assert queue.offer(presence("romeo@example.net/orchard", "away", n="r1")) == []
    assert queue.offer(presence("nurse@example.com/house", "dnd", n="n1")) == []
    assert queue.offer(presence("romeo@example.net/orchard", "xa", n="r2")) == []
    assert queue.offer(presence("romeo@example.net/car", n="c1")) == []
    assert queue.offer(presence("nurse@example.com/house", type_="unavailable", n="n2")) == []
    # The latest per sender full JID, in the order of their last update.
    assert ids(queue.set_active()) == ["r2", "c1", "n2"]
    assert queue.offer(presence("romeo@example.net/orchard", n="r3")) != []


def test_chat_states_held_latest_per_contact_bodies_go_at_once_after_what_is_held() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    assert queue.offer(chat("romeo@example.net/orchard", state="composing", n="s1")) == []
    assert queue.offer(presence("nurse@example.com/house", "away", n="p1")) == []
    assert queue.offer(chat("romeo@example.net/orchard", state="paused", n="s2")) == []
    out = queue.offer(chat("romeo@example.net/orchard", body="Juliet?", state="active", n="m1"))
    assert ids(out) == ["p1", "s2", "m1"]  # flushed first, order kept, the superseded state gone
    assert not queue.held
    assert queue.inactive  # an urgent stanza does not make the client active


def test_urgent_stanzas() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    iq = Element("iq", C, {"type": "get", "id": "i1", "from": "example.com", "to": ME})
    urgent = [
        iq,
        presence("romeo@example.net", type_="subscribe", n="sub"),
        presence("romeo@example.net", type_="unsubscribed", n="unsub"),
        presence("romeo@example.net/orchard", type_="error", n="perr"),
        chat("romeo@example.net/orchard", state="composing", type_="error", n="merr"),
        own_room_presence("room@muc.example.com", "jules"),
    ]
    unknown = Element("message", C, {"from": "example.com", "to": ME, "id": "x"})
    unknown.add("x", "urn:example:unknown")  # a payload we know nothing of: it may matter
    urgent.append(unknown)
    receipt = Element("message", C, {"from": "romeo@example.net/orchard", "to": ME, "id": "rcpt2"})
    receipt.add("received", "urn:xmpp:receipts", {"id": "m1"})
    urgent.append(receipt)
    for stanza in urgent:
        assert queue.offer(stanza) == [stanza], stanza


def test_carbon_copies_of_chat_states_are_held_but_of_messages_are_not() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    inner = chat("romeo@example.net/orchard", state="composing")
    assert queue.offer(carbon("received", inner, n="c1")) == []
    inner2 = chat("romeo@example.net/orchard", state="paused")
    assert queue.offer(carbon("received", inner2, n="c2")) == []
    sent_state = Element("message", C, {"from": "juliet@example.com/phone", "to": "romeo@example.net"})
    sent_state.add("active", CHATSTATES)
    assert queue.offer(carbon("sent", sent_state, n="c3")) == []
    out = queue.offer(carbon("received", chat("romeo@example.net/orchard", body="hi"), n="c4"))
    assert ids(out) == ["c2", "c3", "c4"]


def test_groupchat_not_held_by_default() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    msg = chat("room@muc.example.com/romeo", body="hello all", type_="groupchat", n="g1")
    assert queue.offer(msg) == [msg]


def test_groupchat_held_when_configured_unless_it_mentions_my_nick() -> None:
    queue = CsiQueue(CsiPolicy(hold_groupchat=True))
    join = own_room_presence("room@muc.example.com", "Jules")
    assert queue.offer(join) == [join]
    queue.set_inactive()
    assert queue.offer(chat("room@muc.example.com/romeo", body="hello", type_="groupchat", n="g1")) == []
    assert queue.offer(chat("room@muc.example.com/romeo", body="hello", type_="groupchat", n="g2")) == []
    # Not a mention: the nick inside another word.
    assert queue.offer(chat("room@muc.example.com/romeo", body="julesburg", type_="groupchat", n="g3")) == []
    assert queue.offer(chat("other@muc.example.com/romeo", body="jules!", type_="groupchat", n="g4")) == []
    out = queue.offer(chat("room@muc.example.com/romeo", body="hey JULES, look", type_="groupchat", n="g5"))
    assert ids(out) == ["g1", "g2", "g3", "g4", "g5"]  # every groupchat message kept, in order
    subject = Element("message", C, {"from": "room@muc.example.com", "type": "groupchat", "id": "subj"})
    subject.add("subject", text="Balcony")
    assert queue.offer(subject) == [subject]


def test_leaving_a_room_forgets_the_nick() -> None:
    queue = CsiQueue(CsiPolicy(hold_groupchat=True))
    queue.offer(own_room_presence("room@muc.example.com", "jules"))
    queue.offer(own_room_presence("room@muc.example.com", "jules", type_="unavailable"))
    assert queue.nicks == {}


def test_policy_switches() -> None:
    queue = CsiQueue(CsiPolicy(hold_presence=False, hold_chat_states=False))
    queue.set_inactive()
    p = presence("romeo@example.net/orchard", "away")
    s = chat("romeo@example.net/orchard", state="composing")
    assert queue.offer(p) == [p]
    assert queue.offer(s) == [s]


def test_held_stanzas_bounded() -> None:
    queue = CsiQueue(CsiPolicy(max_held=3))
    queue.set_inactive()
    for n in range(3):
        assert queue.offer(presence(f"c{n}@example.net/r", n=f"p{n}")) == []
    assert ids(queue.offer(presence("c9@example.net/r", n="p9"))) == ["p0", "p1", "p2", "p9"]
    assert not queue.held


def pep(frm: str, node: str, item: str, n: str, retract: bool = False) -> Element:
    el = Element("message", C, {"from": frm, "to": ME, "type": "headline", "id": n})
    items = el.add("event", PUBSUB_EVENT).add("items", attrs={"node": node})
    items.add("retract" if retract else "item", attrs={"id": item})
    return el


def test_pep_notifications_held_latest_per_contact_node_and_item() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    nick = "http://jabber.org/protocol/nick"
    bookmarks = "urn:xmpp:bookmarks:1"
    assert queue.offer(pep("romeo@example.net", nick, "current", "n1")) == []
    assert queue.offer(pep("romeo@example.net", nick, "current", "n2")) == []
    assert queue.offer(pep("juliet@example.com", bookmarks, "room1@muc", "b1")) == []
    assert queue.offer(pep("juliet@example.com", bookmarks, "room2@muc", "b2")) == []
    assert queue.offer(pep("juliet@example.com", bookmarks, "room1@muc", "b3", retract=True)) == []
    assert ids(queue.set_active()) == ["n2", "b2", "b3"]  # other items of a node are kept


def test_pep_purge_goes_at_once_and_can_be_switched_off() -> None:
    queue = CsiQueue(CsiPolicy())
    queue.set_inactive()
    purge = Element("message", C, {"from": "juliet@example.com", "to": ME, "id": "p"})
    purge.add("event", PUBSUB_EVENT).add("purge", attrs={"node": "urn:xmpp:bookmarks:1"})
    assert queue.offer(purge) == [purge]
    off = CsiQueue(CsiPolicy(hold_pep=False))
    off.set_inactive()
    notification = pep("romeo@example.net", "http://jabber.org/protocol/nick", "current", "n1")
    assert off.offer(notification) == [notification]
