"""A small harness around the pure MUC engine: a service, a clock, and stanza builders."""

from __future__ import annotations

from collections.abc import Iterable

from roost.jid import JID
from roost.modules.muc.model import MUC, MUC_ADMIN, MUC_OWNER, MUC_USER, OCCUPANT_ID, ServicePolicy
from roost.modules.muc.room import Broadcast, Outcome, Room
from roost.modules.muc.service import MucService
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DATA_FORMS

SERVICE = "chat.example"
OWNER = "crone@example.org/desktop"
ADMIN = "wicca@example.org/laptop"
MEMBER = "hag@example.org/pda"
OTHER = "hecate@example.org/broom"
STRANGER = "stranger@example.org/x"


def J(text: str) -> JID:
    return JID.parse(text)


def flatten(out: Outcome) -> list[Element]:
    """Every stanza of an outcome, broadcasts expanded to one copy per recipient."""
    stanzas: list[Element] = []
    for item in out.out:
        if isinstance(item, Broadcast):
            for to in item.to:
                copy = item.stanza.shallow_copy()
                copy.attrs["to"] = str(to)
                stanzas.append(copy)
        else:
            stanzas.append(item)
    return stanzas


def to(stanzas: Iterable[Element], jid: str) -> list[Element]:
    return [s for s in stanzas if s.attrs.get("to") == jid]


def codes(stanza: Element) -> set[str]:
    x = stanza.find("x", MUC_USER)
    return set() if x is None else {s.attrs["code"] for s in x.elements("status", MUC_USER)}


def item(stanza: Element) -> Element:
    x = stanza.find("x", MUC_USER)
    assert x is not None, stanza
    found = x.find("item", MUC_USER)
    assert found is not None, stanza
    return found


def occupant_id(stanza: Element) -> str | None:
    el = stanza.find("occupant-id", OCCUPANT_ID)
    return None if el is None else el.attrs["id"]


def form(type_: str = "submit", **fields: str | list[str]) -> Element:
    x = Element("x", DATA_FORMS, {"type": type_})
    for var, value in fields.items():
        fld = x.add("field", attrs={"var": var.replace("__", "#")})
        for v in [value] if isinstance(value, str) else value:
            fld.add("value", text=v)
    return x


def config(**fields: str | list[str]) -> Element:
    """A muc#roomconfig submission; keyword 'persistentroom' means muc#roomconfig_persistentroom."""
    return form(**{f"muc__roomconfig_{k}": v for k, v in fields.items()})


class World:
    def __init__(self, policy: ServicePolicy | None = None, **service_options: object) -> None:
        options: dict[str, object] = {"served_domains": frozenset({"example.org"})}
        options.update(service_options)
        self.service = MucService(SERVICE, policy or ServicePolicy(message_rate=0), **options)  # type: ignore[arg-type]
        self.now = 1_700_000_000.0
        self.last = Outcome()

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds

    def room(self, name: str = "coven") -> Room:
        room = self.service.get(name)
        assert room is not None, f"no room {name}"
        return room

    def apply(self, room: Room | None, out: Outcome) -> list[Element]:
        self.service.apply(room, out)
        self.last = out
        return flatten(out)

    # -- presence -------------------------------------------------------------------------------------
    def presence(
        self,
        frm: str,
        nick: str,
        *,
        room: str = "coven",
        type_: str | None = None,
        x: bool = True,
        password: str | None = None,
        history: dict[str, str] | None = None,
        children: Iterable[Element] = (),
    ) -> list[Element]:
        attrs = {"from": frm, "to": f"{room}@{SERVICE}/{nick}", "id": "p1"}
        if type_:
            attrs["type"] = type_
        p = Element("presence", CLIENT, attrs)
        for child in children:
            p.append(child)
        if x:
            xm = p.add("x", MUC)
            if password is not None:
                xm.add("password", text=password)
            if history is not None:
                xm.add("history", attrs=history)
        target = J(attrs["to"])
        r, out = self.service.presence(p, J(frm), target, self.now)
        return self.apply(r, out)

    def join(self, frm: str, nick: str, **kw: object) -> list[Element]:
        return self.presence(frm, nick, **kw)  # type: ignore[arg-type]

    def leave(self, frm: str, nick: str, room: str = "coven") -> list[Element]:
        return self.presence(frm, nick, room=room, type_="unavailable", x=False)

    def create(
        self, owner: str = OWNER, nick: str = "firstwitch", room: str = "coven", **fields: str | list[str]
    ) -> list[Element]:
        """Create and configure a room (an instant room when no fields are given)."""
        self.join(owner, nick, room=room)
        return self.owner_set(owner, config(**fields) if fields else form(), room=room)

    # -- messages -------------------------------------------------------------------------------------
    def message(
        self,
        frm: str,
        *,
        to_nick: str | None = None,
        room: str = "coven",
        type_: str = "groupchat",
        body: str | None = "hello",
        children: Iterable[Element] = (),
        msg_id: str | None = "m1",
    ) -> list[Element]:
        to_addr = f"{room}@{SERVICE}" + (f"/{to_nick}" if to_nick else "")
        attrs = {"from": frm, "to": to_addr, "type": type_}
        if msg_id:
            attrs["id"] = msg_id
        m = Element("message", CLIENT, attrs)
        if body is not None:
            m.add("body", text=body)
        for child in children:
            m.append(child)
        r = self.room(room)
        if to_nick:
            out = r.private_message(m, J(frm), to_nick, self.now)
        elif type_ == "groupchat":
            out = r.groupchat(m, J(frm), self.now)
        else:
            out = r.room_message(m, J(frm), self.now)
        return self.apply(r, out)

    def say(self, frm: str, body: str = "hello", **kw: object) -> list[Element]:
        return self.message(frm, body=body, **kw)  # type: ignore[arg-type]

    # -- IQs -----------------------------------------------------------------------------------------
    def admin(self, frm: str, *items: dict[str, str], room: str = "coven") -> list[Element]:
        query = Element("query", MUC_ADMIN)
        for attrs in items:
            attrs = dict(attrs)
            reason = attrs.pop("reason", None)
            el = query.add("item", attrs=attrs)
            if reason:
                el.add("reason", text=reason)
        r = self.room(room)
        return self.apply(r, r.admin_set(query, J(frm), self.now))

    def admin_list(self, frm: str, room: str = "coven", **attrs: str) -> Element:
        query = Element("query", MUC_ADMIN)
        query.add("item", attrs=attrs)
        return self.room(room).admin_get(query, J(frm))

    def owner_set(self, frm: str, payload: Element, room: str = "coven") -> list[Element]:
        query = Element("query", MUC_OWNER)
        query.append(payload)
        r = self.room(room)
        return self.apply(r, r.owner_set(query, J(frm), self.now))

    def error_of(self, fn: object, *args: object, **kw: object) -> str:
        """The condition of the StanzaError ``fn`` raises."""
        try:
            fn(*args, **kw)  # type: ignore[operator]
        except StanzaError as e:
            return e.condition
        raise AssertionError("no StanzaError raised")
