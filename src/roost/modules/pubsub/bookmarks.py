"""Bookmarks kept in step in their three homes: XEP-0402 (PEP ``urn:xmpp:bookmarks:1``), XEP-0048 in
PEP (``storage:bookmarks``, XEP-0411) and XEP-0048 in private XML storage (XEP-0049).

Clients use whichever they know. When an account changes one of them itself, this module writes the
other two (as the account, so PEP contacts and its other resources get the notifications, XEP-0411
§3), never widening access: the PEP copies are whitelist nodes (XEP-0411 §5, XEP-0402 §3.1). A
bookmark is keyed by the room JID in every form. Advertised on the account as
``urn:xmpp:bookmarks:1#compat`` and ``#compat-pep`` (XEP-0402 §7) and
``urn:xmpp:bookmarks-conversion:0`` (XEP-0411 §2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent
from roost.core.modules import Module, Xep, hook
from roost.jid import JID, JIDError
from roost.modules.private import PrivateStorage, fragment_key
from roost.modules.pubsub.engine import Outcome, PubSubService
from roost.modules.pubsub.pep import Pep
from roost.xml.element import Element

BOOKMARKS2: Final = "urn:xmpp:bookmarks:1"
LEGACY: Final = "storage:bookmarks"
CONVERSION: Final = "urn:xmpp:bookmarks-conversion:0"
#: XEP-0402 §3.1 / XEP-0223 §3 publish options.
BOOKMARKS2_OPTIONS: Final = {
    "pubsub#persist_items": "true",
    "pubsub#max_items": "max",
    "pubsub#send_last_published_item": "never",
    "pubsub#access_model": "whitelist",
}
LEGACY_OPTIONS: Final = {"pubsub#persist_items": "true", "pubsub#access_model": "whitelist"}


@dataclass(slots=True)
class Bookmark:
    jid: str
    name: str | None = None
    autojoin: bool = False
    nick: str | None = None
    password: str | None = None
    extensions: list[Element] = field(default_factory=list)

    def bookmarks2(self) -> Element:
        """The XEP-0402 item payload (§3)."""
        attrs = {"autojoin": "true" if self.autojoin else "false"}
        if self.name:
            attrs["name"] = self.name
        el = Element("conference", BOOKMARKS2, attrs)
        if self.nick:
            el.add("nick", text=self.nick)
        if self.password:
            el.add("password", text=self.password)
        if self.extensions:
            ext = el.add("extensions")
            for child in self.extensions:
                ext.append(child.copy())
        return el

    def legacy(self) -> Element:
        """A XEP-0048 ``<conference/>``."""
        attrs = {"jid": self.jid, "autojoin": "true" if self.autojoin else "false"}
        if self.name:
            attrs["name"] = self.name
        el = Element("conference", LEGACY, attrs)
        if self.nick:
            el.add("nick", LEGACY, text=self.nick)
        if self.password:
            el.add("password", LEGACY, text=self.password)
        for child in self.extensions:
            el.append(child.copy())
        return el


def _true(value: str | None) -> bool:
    return value in ("1", "true")


def _room(jid: str | None) -> str | None:
    try:
        return str(JID.parse(jid or "")) if jid else None
    except JIDError:
        return None


def from_legacy(storage: Element | None) -> tuple[dict[str, Bookmark], list[Element]]:
    """Bookmarks (by room JID) and the other children (``<url/>``) of a XEP-0048 ``<storage/>``."""
    marks: dict[str, Bookmark] = {}
    others: list[Element] = []
    if storage is None:
        return marks, others
    for child in storage.elements():
        if child.name != "conference" or child.ns != LEGACY:
            others.append(child)
            continue
        room = _room(child.get("jid"))
        if room is None:
            continue
        marks[room] = Bookmark(
            room,
            child.get("name") or None,
            _true(child.get("autojoin")),
            child.find_text("nick", LEGACY) or None,
            child.find_text("password", LEGACY) or None,
            [c for c in child.elements() if c.ns != LEGACY],
        )
    return marks, others


def from_bookmarks2(room: str, conference: Element) -> Bookmark:
    ext = conference.find("extensions", BOOKMARKS2)
    return Bookmark(
        room,
        conference.get("name") or None,
        _true(conference.get("autojoin")),
        conference.find_text("nick", BOOKMARKS2) or None,
        conference.find_text("password", BOOKMARKS2) or None,
        [c.copy() for c in ext.elements()] if ext is not None else [],
    )


def to_legacy(marks: dict[str, Bookmark], others: list[Element]) -> Element:
    storage = Element("storage", LEGACY)
    for mark in marks.values():
        storage.append(mark.legacy())
    for other in others:
        storage.append(other.copy())
    return storage


class BookmarksOptions(ModuleOptions):
    """Bookmarks conversion between XEP-0402, XEP-0048 in PEP and XEP-0048 in private XML (XEP-0411;
    docs/pubsub.md). Needs the pep and private modules."""


class Bookmarks(Module):
    """XEP-0402 compat and XEP-0411 conversion between the three bookmark stores."""

    name = "bookmarks"
    xeps = (
        Xep(402, "1.2.0", note="with #compat and #compat-pep: kept in step with XEP-0048 bookmarks"),
        Xep(411, "1.1.0"),
        Xep(48, "1.2", note="in private XML and in PEP, converted both ways"),
    )
    account_features = (BOOKMARKS2 + "#compat", BOOKMARKS2 + "#compat-pep", CONVERSION)
    Options = BookmarksOptions

    async def start(self) -> None:
        pep = self.host.modules.loaded.get("pep")
        private = self.host.modules.loaded.get("private")
        if not isinstance(pep, Pep) or not isinstance(private, PrivateStorage):
            self.log.warning("bookmarks conversion needs the pep and private modules; it is off")
            self.pep: Pep | None = None
            return
        self.pep, self.private = pep, private
        pep.runtime.listeners.append(self.pep_changed)
        private.listeners.append(self.private_changed)

    async def stop(self) -> None:
        if self.pep is not None:
            if self.pep_changed in self.pep.runtime.listeners:
                self.pep.runtime.listeners.remove(self.pep_changed)
            if self.private_changed in self.private.listeners:
                self.private.listeners.remove(self.private_changed)

    # -- the three directions ----------------------------------------------------------------------------
    async def private_changed(self, account: JID, changes: dict[str, str | None]) -> None:
        """XEP-0049 bookmarks written by a legacy client: to both PEP forms."""
        if fragment_key("storage", LEGACY) not in changes:
            return
        storage = await self.private.read(account, "storage", LEGACY)
        marks, _ = from_legacy(storage)
        await self._to_pep_legacy(account, storage or Element("storage", LEGACY))
        await self._to_bookmarks2(account, marks)

    async def pep_changed(self, account: JID, service: PubSubService, outcome: Outcome) -> None:
        touched = {name for name, _ in outcome.items} | outcome.meta | outcome.deleted
        if BOOKMARKS2 in touched:
            marks = self._bookmarks2_of(service)
            _, others = from_legacy(await self.private.read(account, "storage", LEGACY))
            storage = to_legacy(marks, others)
            await self.private.write(account, storage)
            await self._to_pep_legacy(account, storage)
        elif LEGACY in touched:
            node = service.nodes.get(LEGACY)
            last = node.last_item() if node is not None else None
            published = last.payload if last is not None else None
            if published is None or published.name != "storage" or published.ns != LEGACY:
                return
            await self.private.write(account, published)
            await self._to_bookmarks2(account, from_legacy(published)[0])

    def _bookmarks2_of(self, service: PubSubService) -> dict[str, Bookmark]:
        node = service.nodes.get(BOOKMARKS2)
        marks: dict[str, Bookmark] = {}
        if node is None:
            return marks
        for item in node.items.values():
            room = _room(item.id)
            payload = item.payload
            if room is not None and payload is not None and payload.name == "conference":
                marks[room] = from_bookmarks2(room, payload)
        return marks

    async def _to_pep_legacy(self, account: JID, storage: Element) -> None:
        assert self.pep is not None
        await self.pep.server_publish(account, LEGACY, "current", storage.copy(), LEGACY_OPTIONS)

    async def _to_bookmarks2(self, account: JID, marks: dict[str, Bookmark]) -> None:
        """Publish what changed, retract what went (XEP-0402 §3.2, §3.3)."""
        assert self.pep is not None
        service = await self.pep.runtime.service(account.domain, account.local or "")
        current = self._bookmarks2_of(service)
        for room, mark in marks.items():
            old = current.get(room)
            if old is None or old.bookmarks2() != mark.bookmarks2():
                await self.pep.server_publish(
                    account, BOOKMARKS2, room, mark.bookmarks2(), BOOKMARKS2_OPTIONS
                )
        gone = [room for room in current if room not in marks]
        await self.pep.server_retract(account, BOOKMARKS2, gone)

    @hook(hooks.SESSION_BOUND)
    async def first_login(self, event: SessionEvent) -> None:
        """XEP-0411 §4: bookmarks only in private XML reach PEP before a PEP-only client looks."""
        if self.pep is None:
            return
        account = event.session.jid.bare
        service = await self.pep.runtime.service(account.domain, account.local or "")
        if BOOKMARKS2 in service.nodes or LEGACY in service.nodes:
            return
        storage = await self.private.read(account, "storage", LEGACY)
        if storage is not None and storage.first() is not None:
            await self.private_changed(account, {fragment_key("storage", LEGACY): ""})
