"""Room archives (XEP-0313 §3.2.2, §6.1.2) on the MUC service: one archive per room JID.

The MUC module calls :meth:`RoomArchive.record` with every outcome of a room engine:

* each groupchat message it relayed (as relayed: from the occupant JID, with the room's stanza-id —
  which is the archive id — and the XEP-0421 occupant-id, no 'to') is kept once, with the sender's
  real bare JID as its 'with', while the room's ``mam`` option is on;
* a message a moderator retracted (XEP-0425) becomes a tombstone: the same message with its content
  replaced by ``<retracted><moderated/></retracted>``, id, time and author kept (XEP-0313 §3.2);
* a destroyed room loses its archive (in batches).

Queries go to the room's bare JID. Who may read is the room's rule (whoever may enter it now); real
JIDs — and the 'with' filter, which matches them — only for those who may see them (XEP-0313
§6.1.2). At start, each archived room's join history is filled from its archive, so that history
survives a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.jid import JID, JIDError
from roost.modules.mam import retention
from roost.modules.mam.archiver import DROP_LOG_INTERVAL
from roost.modules.mam.pages import fetch_page, send_page
from roost.modules.mam.protocol import MAM, body_text, metadata, parse_query, query_form
from roost.modules.muc.model import MODERATE, MUC_USER, OCCUPANT_ID, RETRACT
from roost.modules.muc.module import MucRuntime, find_runtime
from roost.modules.muc.room import Broadcast, HistoryEntry, Outcome, Room
from roost.modules.offline import parse_stored
from roost.stanza.errors import StanzaError
from roost.storage.api import ArchiveItem, ArchiveQuery, ArchiveStore, NoSuchItem, StorageError
from roost.util.datetime import format_datetime
from roost.xml.element import Element
from roost.xml.ns import CLIENT, STANZA_ID
from roost.xml.parser import XmlStreamError
from roost.xml.serializer import serialize

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.modules.mam.module import MamOptions

log = logging.getLogger("roost.mod.mam")

KIND = "groupchat"


def tombstone(original: Element, retract: Element, now: float) -> Element:
    """XEP-0425 §5: the message with its content replaced; author, ids and occupant-id stay."""
    stone = Element("message", original.ns or CLIENT, dict(original.attrs))
    for child in original.elements():
        if child.ns in (OCCUPANT_ID, STANZA_ID):
            stone.children.append(child)
    retracted = stone.add("retracted", RETRACT, {"stamp": format_datetime(now)})
    moderated = retract.find("moderated", MODERATE)
    if moderated is not None:
        retracted.children.append(moderated.copy())
    reason = retract.find("reason", RETRACT)
    if reason is not None:
        retracted.children.append(reason.copy())
    return stone


class RoomArchive:
    """The archives of one MUC service's rooms."""

    def __init__(self, server: Server, runtime: MucRuntime, options: MamOptions, store: ArchiveStore) -> None:
        self.server = server
        self.runtime = runtime
        self.options = options
        self.store = store
        self.domain = runtime.domain
        self._undo: list[Callable[[], None]] = []
        self.dropped = 0
        self._last_log = -DROP_LOG_INTERVAL

    # -- wiring --------------------------------------------------------------------------------------
    def attach(self) -> None:
        iq = self.runtime.host.iq
        for type_, name, handler in (
            ("set", "query", self.query),
            ("get", "query", self.form),
            ("get", "metadata", self.metadata),
        ):
            self._undo.append(iq.register(type_, MAM, name, Target.ACCOUNT, handler))
        self.runtime.archive = self

    def detach(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()
        if self.runtime.archive is self:
            self.runtime.archive = None

    async def preload_history(self) -> int:
        """Fill the join history of every archived room from its archive; returns rooms filled."""
        filled = 0
        for room in self.runtime.service:
            length = room.history.maxlen or 0
            if not room.config.archiving or length == 0 or room.history:
                continue
            try:
                items, _ = await self.store.query(
                    self.domain, room.name, ArchiveQuery(limit=length, reverse=True)
                )
            except StorageError:
                log.exception("mam: cannot read the archive of %s for its history", room.jid_str)
                continue
            for item in items:
                entry = _history_entry(item)
                if entry is not None:
                    room.history.append(entry)
            filled += 1
        return filled

    # -- writing -------------------------------------------------------------------------------------
    def record(self, room: Room, outcome: Outcome) -> None:
        if outcome.archive and room.config.archiving:
            search = self.options.search
            limit = self.options.max_search_chars
            for entry in outcome.archive:
                stanza = entry.stanza
                item = ArchiveItem(entry.stanza_id, entry.time, entry.sender, serialize(stanza, CLIENT), KIND)
                text = body_text(stanza, limit) if search else ""
                try:
                    ok = self.store.offer(self.domain, room.name, item, search=text)
                except (StorageError, ValueError, TypeError):
                    ok = False
                if not ok:
                    self._drop(room)
        for target in outcome.retracted:
            retract = _retraction(outcome, target)
            if retract is not None:
                self.server.spawn(self._tombstone(room, target, retract), f"mam-tombstone-{room.name}")
        if outcome.destroyed:
            self.server.spawn(self._forget(room.name), f"mam-forget-{room.name}")

    def _drop(self, room: Room) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_log >= DROP_LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "mam: message of %s not archived: storage write queue full (database slow or down?); "
                "%d so far",
                room.jid_str,
                self.dropped,
            )

    async def contains(self, room: Room, stanza_id: str) -> bool:
        if not room.config.archiving:
            return False
        try:
            items, _ = await self.store.query(self.domain, room.name, ArchiveQuery(ids=[stanza_id], limit=1))
        except NoSuchItem:
            return False
        return bool(items)

    async def _tombstone(self, room: Room, target: str, retract: Element) -> None:
        try:
            items, _ = await self.store.query(self.domain, room.name, ArchiveQuery(ids=[target], limit=1))
        except NoSuchItem:
            return
        for item in items:
            try:
                original = parse_stored(item.payload)
            except XmlStreamError:
                continue
            stone = tombstone(original, retract, time.time())
            await self.store.replace(self.domain, room.name, target, serialize(stone, CLIENT))

    async def _forget(self, name: str) -> None:
        if self.runtime.service.get(name) is not None:
            return  # a new room of that name already exists
        deleted = await retention.delete_archive(
            self.store, self.domain, name, batch=self.options.retention_batch
        )
        if deleted:
            log.info("mam: archive of destroyed room %s@%s deleted (%d messages)", name, self.domain, deleted)

    # -- reading -------------------------------------------------------------------------------------
    def _room(self, event: StanzaEvent) -> Room:
        room = self.runtime.service.get(event.to.local)
        if room is None:
            raise StanzaError("item-not-found", "no such room")
        room.check_archive_access(event.frm)
        return room

    def form(self, event: StanzaEvent) -> Element:
        self._room(event)
        return query_form(search=self.options.search)

    async def metadata(self, event: StanzaEvent) -> Element:
        room = self._room(event)
        first, last = await self.store.ends(self.domain, room.name)
        return metadata(first, last)

    async def query(self, event: StanzaEvent) -> Element:
        room = self._room(event)
        payload = event.stanza.first()
        assert payload is not None
        opts = self.options
        parsed = parse_query(payload, default_page=opts.default_page, max_page=opts.max_page)
        sees_jids = room.sees_real_jids(event.frm)
        q = parsed.archive
        if q.with_jid is not None and not sees_jids:
            raise StanzaError("forbidden", "you may not filter this room's archive by real JIDs")
        if q.text is not None and not opts.search:
            raise StanzaError("feature-not-implemented", "full-text search is off on this server")
        page = await fetch_page(self.store, self.domain, room.name, parsed, with_count=opts.rsm_count)
        origin = event.origin
        router = self.server.router

        def show(item: ArchiveItem, stanza: Element) -> Element:
            # XEP-0313 §6.1.2: no 'to'; any <x/> of muc#user stripped, the real JID added if allowed.
            stanza.attrs.pop("to", None)
            stanza.children[:] = [c for c in stanza.children if isinstance(c, str) or c.ns != MUC_USER]
            if sees_jids and item.with_jid:
                stanza.add("x", MUC_USER).add("item", MUC_USER, {"jid": item.with_jid})
            return stanza

        def send(msg: Element) -> None:
            if origin is not None and origin.jid == event.frm:
                router.to_session(origin, StanzaEvent(msg, None, origin.jid, room.jid))
            else:
                router.send(msg)

        return send_page(page, parsed, to=str(event.frm), archive=room.jid_str, show=show, send=send)


def _retraction(outcome: Outcome, target: str) -> Element | None:
    """The <retract/> the room broadcast for ``target`` (it carries <moderated/> and the reason)."""
    for item in outcome.out:
        stanza = item.stanza if isinstance(item, Broadcast) else item
        retract = stanza.find("retract", RETRACT)
        if retract is not None and retract.attrs.get("id") == target:
            return retract
    return None


def _history_entry(item: ArchiveItem) -> HistoryEntry | None:
    try:
        stanza = parse_stored(item.payload)
        nick = JID.parse(stanza.attrs.get("from", "")).resource or ""
    except (XmlStreamError, JIDError):
        return None
    if stanza.find("body", stanza.ns) is None:
        return None  # tombstones and subject changes are not discussion history
    stanza.attrs.pop("to", None)
    return HistoryEntry(stanza, item.timestamp, item.id, item.with_jid, nick)


async def attach_rooms(server: Server, options: MamOptions, store: ArchiveStore) -> RoomArchive | None:
    """Attach room archives to the server's MUC service, if it runs; fill join histories."""
    runtime = find_runtime(server)
    if runtime is None:
        return None
    rooms = RoomArchive(server, runtime, options, store)
    rooms.attach()
    if options.room_history_from_archive:
        filled = await rooms.preload_history()
        if filled:
            log.info("mam: join history of %d rooms read from their archives", filled)
    return rooms


__all__ = ["RoomArchive", "attach_rooms", "tombstone"]
