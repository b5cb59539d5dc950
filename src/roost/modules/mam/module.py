"""Message Archive Management (XEP-0313) for accounts, with search (XEP-0431), preferences (XEP-0441)
and retention; room archives are attached to the MUC service from here (see ``rooms.py``).

What goes into an account's archive (XEP-0313 §6.1.1), once per owner whatever Carbons, forking or
offline storage do:

* messages the account receives: on the ``message/bare`` chain after the message module gave them
  their stanza-id (priority 250) and before anything delivers or stores them (100, 0), and on the
  ``deliver/message`` filter for messages written straight to a bound full JID. The archive id *is*
  the stanza-id the recipient sees (§2.5). Offline messages are archived when they arrive, not when
  delivered later; carbon copies are wrappers and never archived again.
* messages the account sends (``pre/message``): they get an archive id of their own, carried as a
  ``<stanza-id by='sender'/>`` in the stored copy and in the Carbons ``<sent/>`` copies (§2.5: SHOULD)
  but removed before the message leaves (§2.5: MUST NOT reach the contact). A message to oneself is
  archived once, as received.
* only chat and normal messages that :func:`~roost.modules.message.is_archivable` (bodies, encrypted
  payloads, reactions, retractions, corrections, invitations …), not receipts or markers alone, not
  those with XEP-0334 ``<no-store/>``/``<no-permanent-store/>``; never groupchat (rooms keep their own).
* subject to the owner's preferences (XEP-0441): always / never / roster, from ``default_policy``.

Writes never wait: see ``archiver.py``. Queries read storage only.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.core.session import Session
from roost.jid import JID, JIDError
from roost.modules.mam import retention
from roost.modules.mam.archiver import Archiver
from roost.modules.mam.pages import fetch_page, send_page
from roost.modules.mam.protocol import (
    FULLTEXT,
    MAM,
    MAM_EXTENDED,
    Prefs,
    body_text,
    metadata,
    only_receipts,
    parse_prefs,
    parse_query,
    query_form,
    refused_by_hints,
)
from roost.modules.message import MessageDelivery, is_archivable, stanza_id
from roost.modules.roster import Roster
from roost.stanza.errors import StanzaError
from roost.storage.api import ArchiveItem, ArchiveStore
from roost.util.bounded import BoundedDict
from roost.util.ids import time_ordered_id
from roost.xml.element import Element, RawXml
from roost.xml.ns import CLIENT, STANZA_ID
from roost.xml.serializer import serialize, serialize_with_children

if TYPE_CHECKING:
    from roost.modules.mam.rooms import RoomArchive

#: Archive store names (one per kind of owner) and the item kinds in them.
USER_STORE = "mam"
ROOM_STORE = "muc_mam"
PREFS_CACHE_SIZE = 100_000


class RetentionLimit(BaseModel):
    """Own limits of one archive (a user's or a room's bare JID): 0 means no limit."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    days: float = Field(0.0, ge=0, description="Delete messages older than this many days.")
    messages: int = Field(0, ge=0, description="Keep at most this many of the newest messages.")


class MamOptions(ModuleOptions):
    """Message archives (XEP-0313) of accounts and rooms, searchable, with retention limits."""

    default_policy: Literal["always", "never", "roster"] = Field(
        "always",
        description="What is archived for users who set no preference (XEP-0441): 'always', 'never', "
        "or 'roster' (only conversations with roster contacts).",
    )
    default_page: int = Field(50, ge=1, description="Messages per page when a query asks for no RSM <max/>.")
    max_page: int = Field(
        250, ge=1, description="Most messages sent for one query page (larger <max/> is cut)."
    )
    rsm_count: bool = Field(
        True,
        description="Answer each query with the size of the whole result set (RSM <count/>). Free when "
        "the page is the whole set; otherwise an index count per query: turn off for archives of many "
        "millions of messages.",
    )
    search: bool = Field(
        True,
        description="Index message bodies for full-text search (XEP-0431; SQLite FTS5, PostgreSQL "
        "tsvector). Off: nothing is indexed and the search field is not offered.",
    )
    max_search_chars: int = Field(10_000, ge=0, description="Characters of each body that are indexed.")
    max_pref_jids: int = Field(1000, ge=0, description="JIDs allowed in each preference list (always/never).")
    max_waiting: int = Field(
        10_000,
        ge=1,
        description="Messages that may wait for an archiving decision (preferences or roster still "
        "being read); beyond this they are not archived (logged), and delivery never waits.",
    )
    rooms: bool = Field(True, description="Keep archives of MUC rooms (room option 'mam').")
    room_history_from_archive: bool = Field(
        True,
        description="At start, fill each archived room's join history (XEP-0045 §7.2.13) from its archive, "
        "so that history survives restarts.",
    )
    max_days: float = Field(
        0.0, ge=0, description="Default retention of user archives in days (0: keep forever)."
    )
    max_messages: int = Field(
        0, ge=0, description="Default most messages kept per user archive (0: no limit)."
    )
    room_max_days: float = Field(
        0.0, ge=0, description="Default retention of room archives in days (0: forever)."
    )
    room_max_messages: int = Field(
        0, ge=0, description="Default most messages kept per room archive (0: no limit)."
    )
    limits: dict[str, RetentionLimit] = Field(
        default_factory=dict,
        description="Own limits for some archives, by bare JID of the user or room; they replace the "
        "defaults for that archive (longer or shorter).",
        examples=[{"alice@example.org": {"days": 30}, "lobby@conference.example.org": {"messages": 100000}}],
    )
    retention_interval_seconds: float = Field(
        3600.0, gt=0, description="Seconds between two retention sweeps (each deletes in small batches)."
    )
    retention_batch: int = Field(1000, ge=1, description="Messages deleted per transaction by retention.")


def _policy(options: MamOptions, *, rooms: bool) -> retention.RetentionPolicy:
    default = (
        retention.Limit(options.room_max_days, options.room_max_messages)
        if rooms
        else retention.Limit(options.max_days, options.max_messages)
    )
    own: dict[tuple[str, str], retention.Limit] = {}
    for jid_text, limit in options.limits.items():
        try:
            jid = JID.parse(jid_text)
        except JIDError:
            continue
        own[(jid.domain, jid.local or "")] = retention.Limit(limit.days, limit.messages)
    return retention.RetentionPolicy(default, own)


class MessageArchive(Module):
    """XEP-0313 user archives (and the room archives of the MUC service)."""

    name = "mam"
    xeps = (
        Xep(
            313,
            "1.1.3",
            note="user and MUC archives, #extended (before-id/after-id/ids, flip-page, metadata)",
        ),
        Xep(59, "1.0", status="partial", note="RSM in archive queries: max/after/before, count, first index"),
        Xep(431, "0.2.0", note="full-text search: SQLite FTS5, PostgreSQL tsvector"),
        Xep(441, "0.2.0", note="always/never/roster preferences"),
    )
    Options = MamOptions
    options: MamOptions

    @property
    def account_features(self) -> tuple[str, ...]:  # type: ignore[override]
        return (MAM, MAM_EXTENDED, FULLTEXT) if self.options.search else (MAM, MAM_EXTENDED)

    async def start(self) -> None:
        storage = self.server.storage
        self.store: ArchiveStore = storage.archive(USER_STORE)
        self.prefs_store = storage.keyvalue("mam_prefs")
        self._prefs: BoundedDict[str, Prefs] = BoundedDict(PREFS_CACHE_SIZE)
        #: The last stanza judged and its stored form (see _stored_form).
        self._memo: (
            tuple[Element, tuple[Element | str, ...], dict[str, str], tuple[str, str, float] | None] | None
        ) = None
        #: The sender's archive id element `sent` added last, for `sent_cleanup` to take off again.
        self._sent_mark: tuple[Element, Element] | None = None
        self.archiver = Archiver(
            self.store,
            prefs=lambda owner: self._prefs.get(owner.bare_str),
            load_prefs=self.load_prefs,
            in_roster=self._peek_roster,
            load_in_roster=self._load_roster,
            account_exists=self.server.account_exists,
            max_waiting=self.options.max_waiting,
            spawn=self.server.spawn,
        )
        self._retention: asyncio.Task[None] | None = None
        self.rooms: RoomArchive | None = None
        if self.host.domain == self.server.config.server.domains[0]:
            # Server-wide work, once: room archives and retention of both stores.
            if self.options.rooms:
                from roost.modules.mam.rooms import attach_rooms

                self.rooms = await attach_rooms(self.server, self.options, storage.archive(ROOM_STORE))
            if _policy(self.options, rooms=False).active or _policy(self.options, rooms=True).active:
                # Its own task, not server.spawn: it never ends, and stop() cancels it.
                self._retention = asyncio.get_running_loop().create_task(
                    self._retention_loop(), name="mam-retention"
                )

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
        if self.rooms is not None:
            self.rooms.detach()
        await self.archiver.stop()

    # -- preferences --------------------------------------------------------------------------------
    async def load_prefs(self, owner: JID) -> Prefs:
        key = owner.bare_str
        cached = self._prefs.get(key)
        if cached is not None:
            return cached
        doc = await self.prefs_store.get(owner.domain, owner.local or "")
        prefs = Prefs.from_json(doc, self.options.default_policy)
        self._prefs[key] = prefs
        return prefs

    def _roster(self) -> Roster | None:
        roster = self.host.modules.loaded.get("roster")
        return roster if isinstance(roster, Roster) else None

    def _peek_roster(self, owner: JID, contact: JID) -> bool | None:
        roster = self._roster()
        if roster is None:
            return False
        if roster.cached(owner) is None:
            return None
        return roster.peek_item(owner, contact) is not None

    async def _load_roster(self, owner: JID, contact: JID) -> bool:
        roster = self._roster()
        return roster is not None and await roster.get_item(owner, contact.bare) is not None

    @hook(hooks.SESSION_BOUND)
    async def prefetch(self, event: SessionEvent) -> None:
        """An online owner's preferences are in memory, so its messages are archived on the hot path."""
        await self.load_prefs(event.session.jid.bare)

    @iq_handler("get", MAM, "prefs", to=Target.SELF)
    async def prefs_get(self, event: StanzaEvent) -> Element:
        return (await self.load_prefs(event.frm.bare)).to_element()

    @iq_handler("set", MAM, "prefs", to=Target.SELF)
    async def prefs_set(self, event: StanzaEvent) -> Element:
        owner = event.frm.bare
        payload = event.stanza.first()
        assert payload is not None
        prefs = parse_prefs(payload, await self.load_prefs(owner), max_jids=self.options.max_pref_jids)
        await self.prefs_store.set(owner.domain, owner.local or "", prefs.to_json())  # type: ignore[arg-type]
        self._prefs[owner.bare_str] = prefs
        return prefs.to_element()

    # -- archiving ----------------------------------------------------------------------------------
    def _worth_archiving(self, stanza: Element) -> bool:
        type_ = stanza.attrs.get("type", "normal")
        if type_ != "chat" and type_ != "normal":
            return False  # groupchat: the room's archive; headline: not suggested (§6.1.1); error
        return is_archivable(stanza) and not only_receipts(stanza) and not refused_by_hints(stanza)

    def _stored_form(self, stanza: Element, archivable: bool | None = None) -> tuple[str, str, float] | None:
        """Whether the message is archived at all and, if so, its archived form: the stanza without
        stanza-ids (they differ per archive and come back from the item's id at query time), its search
        text and its timestamp; None when it is not worth archiving. ``archivable`` is
        :func:`is_archivable`'s answer when the caller has it already.

        One pass, shared by both copies of a message between two local accounts: the verdict depends
        only on the attributes and the children other than stanza-ids (none of the checks reads
        those), so the second time — same stanza, same attributes and children but for stanza-ids —
        the first verdict, serialization and timestamp are reused."""
        kept = tuple(
            c
            for c in stanza.children
            if c.__class__ is str or c.name != "stanza-id" or c.ns != STANZA_ID  # type: ignore[union-attr]
        )
        memo = self._memo
        if memo is not None and memo[0] is stanza and memo[1] == kept and memo[2] == stanza.attrs:
            return memo[3]
        form: tuple[str, str, float] | None = None
        type_ = stanza.attrs.get("type", "normal")
        # groupchat: the room's archive; headline: not suggested (§6.1.1); error: never.
        if (
            (type_ == "chat" or type_ == "normal")
            and (archivable if archivable is not None else is_archivable(stanza))
            and not only_receipts(stanza)
            and not refused_by_hints(stanza)
        ):
            payload = serialize_with_children(stanza, kept, CLIENT)
            search = body_text(stanza, self.options.max_search_chars) if self.options.search else ""
            form = (payload, search, time.time())
        self._memo = (stanza, kept, dict(stanza.attrs), form)
        return form

    def _archive(
        self, owner: JID, with_jid: JID, form: tuple[str, str, float], item_id: str, *, check: bool
    ) -> None:
        payload, search, timestamp = form
        item = ArchiveItem(item_id, timestamp, str(with_jid), payload, "chat")
        self.archiver.add(owner, with_jid, item, search, check)

    @hook(hooks.PRE_MESSAGE, priority=60)
    def sent(self, event: StanzaEvent) -> StanzaEvent:
        """The sender's copy, with its archive id (before Carbons copies it at 50)."""
        origin = event.origin
        if origin is None:
            return event
        owner = origin.jid.bare
        if event.to.bare == owner:
            return event  # to oneself: archived once, as received
        stanza = event.stanza
        form = self._stored_form(stanza)
        if form is None:
            return event
        owner_str = owner.bare_str
        memo = self._memo
        if memo is None or len(memo[1]) != len(stanza.children):
            _strip_ids(stanza, owner_str)  # it came with stanza-ids (_stored_form's pass counted them)
        item_id = time_ordered_id()
        mark = Element("stanza-id", STANZA_ID, {"id": item_id, "by": owner_str})
        stanza.children.append(mark)
        self._sent_mark = (stanza, mark)
        self._archive(owner, event.to, form, item_id, check=False)
        return event

    @hook(hooks.PRE_MESSAGE, priority=40)
    def sent_cleanup(self, event: StanzaEvent) -> StanzaEvent:
        """XEP-0313 §2.5: the contact never sees the sender's archive id (the Carbons copies keep it)."""
        origin = event.origin
        if origin is not None and event.to.bare != origin.jid.bare:
            stanza = event.stanza
            children = stanza.children
            mark = self._sent_mark
            self._sent_mark = None
            if mark is not None and mark[0] is stanza and children and children[-1] is mark[1]:
                # The usual case: ours is still the last child and `sent` removed any other (§5).
                children.pop()
            else:
                _strip_ids(stanza, origin.jid.bare_str)
        return event

    @hook(hooks.MESSAGE_BARE, priority=200)
    def received_bare(self, event: StanzaEvent) -> bool:
        """Between the message module's stanza-id (250) and delivery (100) or offline storage (0)."""
        stanza = event.stanza
        owner = event.to.bare
        item_id, archivable = self._assigned(stanza, owner.bare_str)
        if item_id is not None:
            form = self._stored_form(stanza, archivable)
            if form is not None:
                online = self.server.sessions.is_online(owner.domain, owner.local or "")
                self._archive(owner, event.frm, form, item_id, check=not online)
        return False

    @hook(hooks.DELIVER_MESSAGE, priority=300)
    def received_direct(self, value: tuple[Session, StanzaEvent]) -> tuple[Session, StanzaEvent]:
        """Messages to a bound full JID (after the message module's stanza-id at 500)."""
        session, event = value
        to = event.to
        if to.resource is not None and to == session.jid:
            stanza = event.stanza
            owner = session.jid.bare
            item_id, archivable = self._assigned(stanza, owner.bare_str)
            if item_id is not None:
                form = self._stored_form(stanza, archivable)
                if form is not None:
                    self._archive(owner, event.frm, form, item_id, check=False)
        return value

    def _assigned(self, stanza: Element, by: str) -> tuple[str | None, bool | None]:
        """The stanza-id the message module just gave this message for ``by`` (it is only given to
        :func:`is_archivable` messages, so then that is known too); a search when it is not at hand."""
        message = self.host.modules.loaded.get("message")
        last = message.last_assigned if isinstance(message, MessageDelivery) else None
        if last is not None and last[0] is stanza and last[1] == by:
            return last[2], True
        return stanza_id(stanza, by), None

    # -- queries ------------------------------------------------------------------------------------
    @iq_handler("get", MAM, "query", to=Target.SELF)
    def form(self, event: StanzaEvent) -> Element:
        return query_form(search=self.options.search)

    @iq_handler("set", MAM, "query", to=Target.SELF)
    async def query(self, event: StanzaEvent) -> Element:
        payload = event.stanza.first()
        assert payload is not None
        opts = self.options
        parsed = parse_query(payload, default_page=opts.default_page, max_page=opts.max_page)
        if parsed.archive.text is not None and not opts.search:
            raise StanzaError("feature-not-implemented", "full-text search is off on this server")
        owner = event.frm.bare
        page = await fetch_page(
            self.store, owner.domain, owner.local or "", parsed, with_count=opts.rsm_count
        )
        origin = event.origin
        router = self.server.router

        def send(msg: Element) -> None:
            if origin is not None and origin.jid == event.frm:
                router.to_session(origin, StanzaEvent(msg, None, origin.jid, owner))
            else:
                router.send(msg)

        archive = owner.bare_str

        def show(item: ArchiveItem, stanza: Element) -> Element:
            # XEP-0313 §2.5: the archive id, as the owner's clients saw it (stored without it).
            if stanza_id(stanza, archive) is None:
                stanza.children.append(Element("stanza-id", STANZA_ID, {"id": item.id, "by": archive}))
            return stanza

        def splice(item: ArchiveItem) -> RawXml | None:
            return spliced_with_id(item, archive)

        return send_page(
            page, parsed, to=str(event.frm), archive=archive, show=show, send=send, splice=splice
        )

    @iq_handler("get", MAM, "metadata", to=Target.SELF)
    async def metadata(self, event: StanzaEvent) -> Element:
        owner = event.frm.bare
        first, last = await self.store.ends(owner.domain, owner.local or "")
        return metadata(first, last)

    # -- removal and retention ----------------------------------------------------------------------
    @hook(hooks.USER_DELETED)
    async def forget(self, event: UserEvent) -> None:
        """The account's archive goes in batches (the final delete_user then finds nothing left)."""
        self._prefs.pop(f"{event.username}@{event.domain}", None)
        await retention.delete_archive(
            self.store, event.domain, event.username, batch=self.options.retention_batch
        )

    async def sweep_now(self) -> int:
        """One retention pass over the user and room archives; returns how many messages went."""
        opts = self.options
        total = 0
        for store, policy in (
            (self.store, _policy(opts, rooms=False)),
            (self.server.storage.archive(ROOM_STORE), _policy(opts, rooms=True)),
        ):
            if policy.active:
                total += await retention.sweep(store, policy, time.time(), batch=opts.retention_batch)
        return total

    async def _retention_loop(self) -> None:
        while True:
            try:
                deleted = await self.sweep_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("mam: retention sweep failed; trying again next time")
            else:
                if deleted:
                    self.log.info("mam: retention deleted %d old messages", deleted)
            await asyncio.sleep(self.options.retention_interval_seconds)


_OPEN: Final = "<message "
_CLOSE: Final = "</message>"


def spliced_with_id(item: ArchiveItem, archive: str) -> RawXml | None:
    """The stored stanza as it goes into a result, without parsing it: ``jabber:client`` declared (it
    sits inside ``<forwarded/>``) and the archive's ``<stanza-id/>`` added last — what ``show`` makes
    of the parsed stanza, written as the serializer would write it. None for a row in another shape
    (no children, or stanza-ids stored with it, as older rows may have): those are parsed.

    Parsing a stored stanza and serializing it again was most of the cost of a full page (measured,
    50-message pages: ~30 µs to parse and ~40 µs to write each result)."""
    payload = item.payload
    if not payload.startswith(_OPEN) or not payload.endswith(_CLOSE) or STANZA_ID in payload:
        return None
    if payload.startswith("<message xmlns="):
        return None
    sid = serialize(Element("stanza-id", STANZA_ID, {"id": item.id, "by": archive}), CLIENT)
    return RawXml(f'<message xmlns="{CLIENT}" {payload[len(_OPEN) : -len(_CLOSE)]}{sid}{_CLOSE}')


def _strip_ids(stanza: Element, by: str) -> None:
    """Remove stanza-ids claiming to be ``by``'s (XEP-0359 §5)."""
    children = stanza.children
    for i in range(len(children) - 1, -1, -1):
        child = children[i]
        if (
            not isinstance(child, str)
            and child.name == "stanza-id"
            and child.ns == STANZA_ID
            and child.attrs.get("by") == by
        ):
            del children[i]


__all__ = ["MamOptions", "MessageArchive", "RetentionLimit"]
