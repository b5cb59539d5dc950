"""RFC 6121 §2 roster management, with roster versioning (§2.6, formerly XEP-0237).

Each account's roster is one map in storage (``roster``): a key per contact's bare JID and one reserved
key (``""``) for the version counter. Rosters of online users stay in memory so that presence broadcast
never waits for storage; changes are applied to that copy synchronously and written behind in order,
coalesced per user (a crash can lose at most the last few milliseconds of changes).

Versions are ``<epoch>-<n>``: ``n`` counts the roster modifications of the account (every change that
yields a roster push, §2.6.3 "Definition"), ``epoch`` is a random tag chosen when the counter is created,
so a version cached for a deleted and re-created account never matches. Every entry remembers the
counter value of its last change and a removed item leaves a tombstone with the value of its removal,
which is all it takes to answer a roster get carrying an older version with just the pushes since then
(§2.6.3 interim pushes: one per changed item, its final state, in order of modification). Tombstones are
bounded (``version_history``); a version older than the oldest one kept gets the full roster.

The subscription state machine itself (RFC 6121 §3, Appendix A) lives in :mod:`roost.modules.presence`,
which edits entries through :meth:`Roster.save`. Other modules read rosters through :meth:`Roster.get_item`,
:meth:`Roster.items` and the helpers beside them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, hook, iq_handler
from roost.core.session import Session
from roost.jid import JID, JIDError, prepare_resource
from roost.stanza.errors import StanzaError
from roost.storage.api import JSON
from roost.xml.element import Element
from roost.xml.ns import CLIENT

if TYPE_CHECKING:
    from roost.core.host import Host

NS_ROSTER: Final = "jabber:iq:roster"
#: RFC 6121 §2.6.1 stream feature.
NS_ROSTERVER: Final = "urn:xmpp:features:rosterver"

SUBSCRIPTIONS: Final = frozenset(("none", "to", "from", "both"))
_META_KEY: Final = ""  # never a JID: the version counter of the roster
#: Seconds a deleted account's roster stays write-protected (see ``Roster.forget``).
_DELETION_GRACE: Final = 60.0


@dataclass(slots=True)
class RosterItem:
    """One contact of a roster, with its subscription state (RFC 6121 §2.1.2, Appendix A).

    ``subscription`` is "none", "to", "from" or "both" ("remove" only appears in pushes); ``ask`` is the
    "Pending Out" sub-state, ``pending_in`` the "Pending In" one (with ``pending_stanza``, the stored
    subscription request, RFC 6121 §3.1.3 rule 4), ``approved`` a pre-approval (§3.4).
    Objects handed out by :class:`Roster` are copies (``peek_item`` excepted): changing them changes nothing.
    """

    jid: JID
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    approved: bool = False
    groups: list[str] = field(default_factory=list)
    pending_in: bool = False
    pending_stanza: Element | None = None

    @property
    def has_to(self) -> bool:
        """The user receives the contact's presence."""
        return self.subscription == "to" or self.subscription == "both"

    @property
    def has_from(self) -> bool:
        """The contact receives the user's presence."""
        return self.subscription == "from" or self.subscription == "both"

    def copy(self) -> RosterItem:
        return dataclasses.replace(self, groups=list(self.groups))

    def to_element(self) -> Element:
        """The ``<item/>`` of a roster result or push (§2.1.2)."""
        attrs = {"jid": str(self.jid)}
        if self.name:
            attrs["name"] = self.name
        attrs["subscription"] = self.subscription
        if self.ask:
            attrs["ask"] = "subscribe"
        if self.approved:
            attrs["approved"] = "true"
        item = Element("item", NS_ROSTER, attrs)
        for group in self.groups:
            item.add("group", text=group)
        return item

    def visible(self) -> tuple[object, ...]:
        """What a roster push shows: a change here is a roster modification (§2.6.3)."""
        return (self.name, self.subscription, self.ask, self.approved, tuple(self.groups))


@dataclass(slots=True)
class Entry:
    """What the server keeps per contact: the item, whether it is in the roster, and its version.

    An entry not in the roster is a stored inbound subscription request from someone the user has not
    added ("None + Pending In" without an item, RFC 6121 Appendix A.1 state 3), a tombstone of a removed
    item (``version`` > 0: the version of its removal), or both.
    """

    item: RosterItem
    in_roster: bool
    version: int = 0

    @property
    def needed(self) -> bool:
        return self.in_roster or self.version > 0 or self.item.pending_in


class UserRoster:
    """One account's roster in memory. Never hold one across an ``await``: it may be evicted."""

    __slots__ = ("_subscribers", "count", "entries", "epoch", "floor", "tombstones", "user", "ver")

    def __init__(self, user: JID, epoch: str, ver: int = 0, floor: int = 0) -> None:
        self.user = user
        self.epoch = epoch
        self.ver = ver
        #: The oldest version from which changes can still be replayed.
        self.floor = floor
        self.entries: dict[JID, Entry] = {}
        self.count = 0  # items in the roster
        self.tombstones = 0
        self._subscribers: frozenset[JID] | None = None

    def item(self, contact: JID) -> RosterItem | None:
        """The roster item for ``contact`` (bare), not a copy; None if not in the roster."""
        entry = self.entries.get(contact)
        return entry.item if entry is not None and entry.in_roster else None

    def in_roster(self, contact: JID) -> bool:
        entry = self.entries.get(contact)
        return entry is not None and entry.in_roster

    def state(self, contact: JID) -> RosterItem:
        """A copy of everything known about ``contact``, roster item or not (for the state machine)."""
        entry = self.entries.get(contact)
        if entry is None:
            return RosterItem(contact)
        item = entry.item.copy()
        if not entry.in_roster:  # a tombstone keeps no item data
            return RosterItem(contact, pending_in=item.pending_in, pending_stanza=item.pending_stanza)
        return item

    def items(self) -> Iterator[RosterItem]:
        for entry in self.entries.values():
            if entry.in_roster:
                yield entry.item

    def subscribers(self) -> frozenset[JID]:
        """Contacts that receive the user's presence (subscription from/both); kept between changes,
        since every presence broadcast asks."""
        if self._subscribers is None:
            self._subscribers = frozenset(
                jid for jid, entry in self.entries.items() if entry.in_roster and entry.item.has_from
            )
        return self._subscribers

    def changed(self) -> None:
        """Entries were modified: forget derived data."""
        self._subscribers = None

    def subscriptions(self) -> Iterator[JID]:
        """Contacts whose presence the user receives (subscription to/both)."""
        for jid, entry in self.entries.items():
            if entry.in_roster and entry.item.has_to:
                yield jid

    def pending_requests(self) -> Iterator[RosterItem]:
        """Stored inbound subscription requests (RFC 6121 §3.1.3 rule 4)."""
        for entry in self.entries.values():
            if entry.item.pending_in:
                yield entry.item

    def version_string(self, n: int | None = None) -> str:
        return f"{self.epoch}-{self.ver if n is None else n}"

    def changes_since(self, ver: str) -> list[tuple[int, Element]] | None:
        """The interim pushes for a client holding ``ver`` (§2.6.3), oldest first; None if unknown."""
        epoch, _, number = ver.rpartition("-")
        if epoch != self.epoch or not number.isdigit():
            return None
        since = int(number)
        if since < self.floor or since > self.ver:
            return None
        changes: list[tuple[int, Element]] = []
        for jid, entry in self.entries.items():
            if entry.version > since:
                if entry.in_roster:
                    changes.append((entry.version, entry.item.to_element()))
                else:
                    changes.append(
                        (
                            entry.version,
                            Element(
                                "item",
                                NS_ROSTER,
                                {
                                    "jid": str(jid),
                                    "subscription": "remove",
                                },
                            ),
                        )
                    )
        changes.sort(key=lambda change: change[0])
        return changes


class RosterFull(StanzaError):
    """A new roster item would exceed ``[roster] max_items``."""

    def __init__(self, limit: int) -> None:
        # RFC 6121 §2.3.3 allows other conditions such as <not-allowed/>; RFC 6120 §8.3.3.10 not-allowed
        # (type cancel: retrying will not help) fits a fixed limit better than resource-constraint
        # (§8.3.3.18, type wait: a temporary shortage).
        super().__init__("not-allowed", f"the roster is full ({limit} items at most)")


class RosterOptions(ModuleOptions):
    """Options of [roster]."""

    max_items: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most items a roster may hold; adding one more is refused with <not-allowed/>.",
    )
    max_name_length: int = Field(
        1023,
        ge=1,
        le=65536,
        description="Longest item 'name' (handle), in characters; longer is <not-acceptable/> "
        "(RFC 6121 §2.3.3).",
    )
    max_group_length: int = Field(
        1023,
        ge=1,
        le=65536,
        description="Longest <group/> name, in characters; longer is <not-acceptable/> (RFC 6121 §2.3.3).",
    )
    max_groups: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Most groups one item may be in; more is <not-acceptable/>.",
    )
    versioning: bool = Field(
        True,
        description="Roster versioning (RFC 6121 §2.6): advertise it and answer 'ver' with pushes.",
    )
    version_history: int = Field(
        250,
        ge=1,
        le=100_000,
        description="Removed items remembered for versioning; a client whose version predates the "
        "oldest one gets the full roster instead of pushes.",
    )


class Roster(Module):
    """jabber:iq:roster get/set/remove, pushes to interested resources, versioning, storage."""

    name = "roster"
    Options = RosterOptions
    options: RosterOptions

    def __init__(self, host: Host, options: ModuleOptions) -> None:
        super().__init__(host, options)
        self._cache: dict[str, UserRoster] = {}
        self._loading: dict[str, asyncio.Future[UserRoster]] = {}
        self._pending_writes: dict[str, dict[str, JSON | None]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        #: Accounts being deleted: their rosters read as empty and are never written.
        self._deleted: set[str] = set()

    async def start(self) -> None:
        self.store = self.server.storage.map("roster")

    async def stop(self) -> None:
        writers = list(self._writers.values())
        if writers:
            _, pending = await asyncio.wait(writers, timeout=10)
            if pending:
                self.log.error("%d roster writes still pending at shutdown", len(pending))

    def stream_features(self) -> tuple[Element, ...]:
        return (Element("ver", NS_ROSTERVER),) if self.options.versioning else ()

    # -- API for other modules ----------------------------------------------------------------------
    async def get_item(self, user: JID, contact: JID) -> RosterItem | None:
        """A copy of ``user``'s roster item for ``contact`` (both bare), or None."""
        roster = await self.load(user.bare)
        item = roster.item(contact.bare)
        result = None if item is None else item.copy()
        self.release(user.bare)
        return result

    async def items(self, user: JID) -> list[RosterItem]:
        """Copies of every item of ``user``'s roster."""
        roster = await self.load(user.bare)
        result = [item.copy() for item in roster.items()]
        self.release(user.bare)
        return result

    async def subscription(self, user: JID, contact: JID) -> str:
        """ "none", "to", "from" or "both" (also "none" when ``contact`` is not in the roster)."""
        item = await self.get_item(user, contact)
        return "none" if item is None else item.subscription

    async def is_subscribed_from(self, user: JID, contact: JID) -> bool:
        """Whether ``contact`` may see ``user``'s presence (from/both; an account always sees its own)."""
        if user.bare == contact.bare:
            return True
        item = await self.get_item(user, contact)
        return item is not None and item.has_from

    async def is_subscribed_to(self, user: JID, contact: JID) -> bool:
        """Whether ``user`` receives ``contact``'s presence (to/both)."""
        item = await self.get_item(user, contact)
        return item is not None and item.has_to

    def cached(self, user: JID) -> UserRoster | None:
        """The in-memory roster of ``user`` (bare) if loaded: always so while the user is online."""
        return self._cache.get(user.local or "")

    def peek_item(self, user: JID, contact: JID) -> RosterItem | None:
        """Synchronous lookup for hot paths (filters): the cached item itself (read-only), or None when
        not in the roster *or* not loaded (check :meth:`cached` to tell the two apart)."""
        roster = self._cache.get(user.local or "")
        return None if roster is None else roster.item(contact.bare)

    # -- loading and eviction -------------------------------------------------------------------------
    async def load(self, user: JID) -> UserRoster:
        """``user``'s roster, loaded into memory if needed; call :meth:`release` when done with an
        offline user's roster so it does not stay cached."""
        key = user.local or ""
        roster = self._cache.get(key)
        if roster is not None:
            return roster
        if key in self._deleted:
            return UserRoster(user.bare, secrets.token_hex(4))  # empty, not cached
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[UserRoster] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            data = await self.store.items(self.host.domain, key)
            roster = _decode(user.bare, data)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters get it, nobody warns
            raise
        finally:
            del self._loading[key]
        self._cache[key] = roster
        future.set_result(roster)
        return roster

    def release(self, user: JID) -> None:
        """Forget ``user``'s roster from memory unless still needed (online, writes pending)."""
        key = user.local or ""
        if (
            key in self._cache
            and key not in self._writers
            and key not in self._loading
            and not self.server.route_table.is_online(self.host.domain, key)
        ):
            del self._cache[key]

    @hook(hooks.SESSION_BOUND)
    async def preload(self, event: SessionEvent) -> None:
        """Online users' rosters live in memory: the presence hot path never waits for storage."""
        jid = event.session.jid
        self._deleted.discard(jid.local or "")  # logging in, so it exists (again)
        await self.load(jid.bare)
        self.release(jid.bare)  # in case the session ended meanwhile

    @hook(hooks.SESSION_CLOSED, priority=-100)
    def unload(self, event: SessionEvent) -> None:
        self.release(event.session.jid.bare)

    @hook(hooks.USER_DELETED)
    async def forget(self, event: UserEvent) -> None:
        """XEP-0077 §3.2: a removed account's subscriptions are cancelled with every contact.

        Fired before the account's data is deleted; from here on nothing is written for it, so that no
        late write (a contact's auto-reply, say) brings rows back after the deletion.
        """
        if event.domain != self.host.domain:
            return
        key = event.username
        user = JID(key, self.host.domain, prepared=True)
        try:
            roster = await self.load(user)
        except Exception:
            self.log.exception("cannot read the roster of deleted account %s", user)
            roster = None
        self._deleted.add(key)
        # Until it is created again or logs in; at the latest once the deletion is long done (an
        # account created by other means, e.g. the CLI, is not announced).
        asyncio.get_running_loop().call_later(_DELETION_GRACE, self._deleted.discard, key)
        self._cache.pop(key, None)
        self._pending_writes.pop(key, None)
        writer = self._writers.get(key)
        if writer is not None:
            await asyncio.wait([writer])  # the write in flight lands before the deletion
        if roster is None:
            return
        outgoing: list[Element] = []
        for contact, entry in roster.entries.items():
            item = entry.item
            if entry.in_roster and (item.has_to or item.ask):
                outgoing.append(_presence(str(user), str(contact), "unsubscribe"))
            if (entry.in_roster and item.has_from) or item.pending_in:
                outgoing.append(_presence(str(user), str(contact), "unsubscribed"))
        router = self.server.router
        for stanza in outgoing:
            pending = router.route(stanza)
            if pending is not None:
                await pending

    @hook(hooks.USER_CREATED)
    def created(self, event: UserEvent) -> None:
        if event.domain == self.host.domain:
            self._deleted.discard(event.username)

    # -- changing entries (used by the roster IQs and the presence state machine) ---------------------
    def save(self, roster: UserRoster, state: RosterItem, *, in_roster: bool, force: bool = False) -> None:
        """Store ``state`` as the entry for ``state.jid``; push it if the roster changed.

        ``in_roster`` False keeps (or makes) it a non-roster entry, only meaningful with ``pending_in``.
        ``force`` counts it as a modification (new version, push) even if nothing visible changed.
        Raises :class:`RosterFull` when this would add an item past ``max_items``.
        """
        contact = state.jid
        entry = roster.entries.get(contact)
        was_in = entry is not None and entry.in_roster
        roster.changed()
        if in_roster and not was_in and roster.count >= self.options.max_items:
            raise RosterFull(self.options.max_items)
        if not state.pending_in:
            state.pending_stanza = None
        visible_change = (
            force
            or in_roster != was_in
            or (in_roster and entry is not None and entry.item.visible() != state.visible())
        )
        if entry is None:
            entry = Entry(state, in_roster)
            roster.entries[contact] = entry
        else:
            if entry.version > 0 and not entry.in_roster:
                roster.tombstones -= 1
            entry.item = state
            entry.in_roster = in_roster
        roster.count += int(in_roster) - int(was_in)
        if visible_change:
            roster.ver += 1
            entry.version = roster.ver
        if entry.version > 0 and not entry.in_roster:
            roster.tombstones += 1
        changes: dict[str, JSON | None] = {str(contact): _encode_entry(entry) if entry.needed else None}
        if not entry.needed:
            del roster.entries[contact]
        if visible_change:
            self._trim(roster, changes)
            changes[_META_KEY] = _encode_meta(roster.epoch, roster.ver, roster.floor)
        self._write(roster.user, changes)
        if visible_change:
            self.push(
                roster,
                entry.item.to_element()
                if in_roster
                else Element("item", NS_ROSTER, {"jid": str(contact), "subscription": "remove"}),
            )

    def remove(self, roster: UserRoster, contact: JID) -> RosterItem:
        """Remove ``contact`` from the roster (pending request included); its former state."""
        old = roster.state(contact)
        self.save(roster, RosterItem(contact), in_roster=False)
        return old

    def _trim(self, roster: UserRoster, changes: dict[str, JSON | None]) -> None:
        """Forget the oldest tombstones past ``version_history``; older versions then get full rosters."""
        excess = roster.tombstones - self.options.version_history
        if excess <= 0:
            return
        stones = sorted(
            (e.version, jid) for jid, e in roster.entries.items() if e.version > 0 and not e.in_roster
        )
        for version, jid in stones[:excess]:
            entry = roster.entries[jid]
            entry.version = 0
            roster.tombstones -= 1
            roster.floor = max(roster.floor, version)
            if entry.needed:
                changes[str(jid)] = _encode_entry(entry)
            else:
                del roster.entries[jid]
                changes[str(jid)] = None

    def _write(self, user: JID, changes: dict[str, JSON | None]) -> None:
        """Queue a write; one writer per user keeps them in order and coalesces bursts."""
        key = user.local or ""
        if key in self._deleted:
            return
        self._pending_writes.setdefault(key, {}).update(changes)
        if key not in self._writers:
            self._writers[key] = self.server.spawn(self._write_loop(key), f"roster-write-{user}")

    async def _write_loop(self, key: str) -> None:
        failures = 0
        try:
            while True:
                batch = self._pending_writes.pop(key, None)
                if not batch:
                    return
                try:
                    await self.store.set_many(self.host.domain, key, batch)
                    failures = 0
                except Exception:
                    failures += 1
                    self.log.exception(
                        "writing the roster of %s@%s failed (attempt %d)", key, self.host.domain, failures
                    )
                    newer = self._pending_writes.get(key, {})
                    self._pending_writes[key] = {**batch, **newer}
                    if self.server.stopping and failures >= 3:
                        return
                    await asyncio.sleep(min(0.1 * 2 ** min(failures, 6), 5.0))
        finally:
            self._writers.pop(key, None)
            self.release(JID(key, self.host.domain, prepared=True))

    # -- pushes ----------------------------------------------------------------------------------------
    def interested(self, user: JID) -> list[Session]:
        """Sessions that requested the roster (RFC 6121 §2.2 "interested resources")."""
        sessions = self.server.route_table.resources(self.host.domain, user.local or "")
        return [s for s in sessions if s.interested]

    def push(
        self,
        roster: UserRoster,
        item: Element,
        sessions: list[Session] | None = None,
        version: int | None = None,
    ) -> None:
        """A roster push (§2.1.6) of ``item`` to the interested resources (or ``sessions``)."""
        targets = self.interested(roster.user) if sessions is None else sessions
        if not targets:
            return
        bare = str(roster.user)
        router = self.server.router
        for session in targets:
            iq = Element(
                "iq",
                CLIENT,
                {
                    "type": "set",
                    "id": self.server.iq_tracker.new_id(),
                    "from": bare,
                    "to": session.jid_str,
                },
            )
            query = iq.add("query", NS_ROSTER)
            if self.options.versioning:
                query.attrs["ver"] = roster.version_string(version)
            query.append(item)
            router.to_session(session, StanzaEvent(iq, None, session.jid, roster.user))

    # -- IQ handlers -------------------------------------------------------------------------------------
    @iq_handler("get", NS_ROSTER, "query", to=Target.SELF)
    async def roster_get(self, event: StanzaEvent) -> Element | None:
        query = event.stanza.first()
        assert query is not None
        if query.find("item") is not None:
            # RFC 6121 §2.1.3: a roster get MUST NOT contain items.
            raise StanzaError("bad-request", "a roster get carries no items")
        user = event.frm.bare
        session = event.origin
        roster = await self.load(user)
        if session is not None:
            session.interested = True  # §2.2: from now on it receives pushes
        ver = query.get("ver")
        if self.options.versioning and ver is not None:
            if ver == roster.version_string():
                self.release(user)
                return None  # §2.6.3: up to date, no pushes
            changes = roster.changes_since(ver)
            # Pushes unless the whole roster is smaller (§2.6.3 "use less bandwidth").
            if changes is not None and session is not None and len(changes) <= roster.count:
                asyncio.get_running_loop().call_soon(self._interim_pushes, session, ver)
                return None
        result = Element("query", NS_ROSTER)
        if self.options.versioning:
            result.attrs["ver"] = roster.version_string()
        for item in roster.items():
            result.append(item.to_element())
        self.release(user)
        return result

    def _interim_pushes(self, session: Session, ver: str) -> None:
        """After the empty result: one push per item changed since ``ver`` (computed now, so current)."""
        roster = self.cached(session.jid.bare)
        if roster is None or self.server.route_table.session(session.jid) is not session:
            return
        for version, item in roster.changes_since(ver) or ():
            self.push(roster, item, [session], version)

    @iq_handler("set", NS_ROSTER, "query", to=Target.SELF)
    async def roster_set(self, event: StanzaEvent) -> None:
        query = event.stanza.first()
        assert query is not None
        item_el = self._single_item(query)
        contact = self._item_jid(item_el, event.frm.bare)
        user = event.frm.bare
        if item_el.get("subscription") == "remove":
            await self._remove(user, contact)
            return None
        # §2.1.2.5: other 'subscription' values, and 'ask'/'approved' (§2.1.2.1-2), are ignored in a set.
        name = item_el.get("name") or None  # §2.4.1: an empty name is no name
        if name is not None and len(name) > self.options.max_name_length:
            limit = self.options.max_name_length
            raise StanzaError("not-acceptable", f"the name is longer than {limit} characters")
        groups = self._groups(item_el)
        roster = await self.load(user)
        state = roster.state(contact)
        state.name = name
        state.groups = groups
        # §2.4.2: every successful set is pushed, even one that changes nothing.
        self.save(roster, state, in_roster=True, force=True)  # RosterFull → <not-allowed/>
        return None

    @iq_handler("get", NS_ROSTER, "query", to=Target.ACCOUNT)
    @iq_handler("set", NS_ROSTER, "query", to=Target.ACCOUNT)
    def other_roster(self, event: StanzaEvent) -> None:
        # RFC 6121 §2.1.5 security warning and §2.3.3: only the account itself may touch its roster.
        raise StanzaError("forbidden", "you may only access your own roster")

    @staticmethod
    def _single_item(query: Element) -> Element:
        children = list(query.elements())
        items = [c for c in children if c.name == "item" and c.ns == NS_ROSTER]
        if len(items) != 1:
            # §2.1.5 rule 1, §2.3.3 bad-request case 1
            raise StanzaError("bad-request", "a roster set carries exactly one <item/>")
        return items[0]

    @staticmethod
    def _item_jid(item: Element, user: JID) -> JID:
        text = item.get("jid")
        if not text:
            raise StanzaError("bad-request", "the item has no 'jid'")  # §2.1.2.3: REQUIRED
        try:
            jid = JID.parse(text)
        except JIDError:
            raise StanzaError("jid-malformed", "the item's 'jid' is not a valid JID")
        if jid.resource is not None:
            # Subscriptions and pushes are per bare JID (RFC 6121 §3.1.1); we keep items that way.
            raise StanzaError("bad-request", "roster items are bare JIDs")
        if jid == user:
            # §2.3.3 interoperability note: an account is implicitly subscribed to itself.
            raise StanzaError("not-allowed", "you cannot add yourself to your roster")
        return jid

    def _groups(self, item: Element) -> list[str]:
        groups: list[str] = []
        seen: set[str] = set()
        for group in item.elements("group", NS_ROSTER):
            name = group.text
            if not name:
                raise StanzaError("not-acceptable", "a group name cannot be empty")  # §2.3.3 not-acceptable 2
            limit = self.options.max_group_length
            if len(name) > limit:  # §2.3.3 not-acceptable 3
                raise StanzaError("not-acceptable", f"a group name is longer than {limit} characters")
            try:
                # §2.3.3 bad-request 2 suggests comparing as resourceparts (RFC 7622 §3.4).
                folded = prepare_resource(name)
            except JIDError:
                folded = name
            if folded in seen:
                raise StanzaError("bad-request", f"duplicate group {name!r}")
            seen.add(folded)
            groups.append(name)
        if len(groups) > self.options.max_groups:
            raise StanzaError("not-acceptable", f"an item can be in {self.options.max_groups} groups at most")
        return groups

    async def _remove(self, user: JID, contact: JID) -> None:
        """§2.5: remove the item, push it, then cancel subscriptions in both directions (§2.5.2)."""
        roster = await self.load(user)
        if not roster.in_roster(contact):
            raise StanzaError("item-not-found", "no such item in your roster")  # §2.5.3
        old = self.remove(roster, contact)
        outgoing: list[Element] = []
        bare = str(user)
        if old.has_to or old.ask:
            # Rule 1 (also withdraws a pending request, which would otherwise stay at the contact).
            outgoing.append(_presence(bare, str(contact), "unsubscribe"))
        if old.has_from or old.pending_in:
            # Rule 2 (also denies a pending request). RFC 6121 §3.2.2: unavailable first, while the
            # contact is still subscribed.
            if old.has_from:
                for session in self.server.route_table.resources(self.host.domain, user.local or ""):
                    if session.available:
                        outgoing.append(_presence(session.jid_str, str(contact), "unavailable"))
            outgoing.append(_presence(bare, str(contact), "unsubscribed"))
        router = self.server.router
        for stanza in outgoing:
            pending = router.route(stanza)
            if pending is not None:
                await pending


# -- storage encoding ---------------------------------------------------------------------------------
def _presence(frm: str, to: str, type_: str) -> Element:
    return Element("presence", CLIENT, {"from": frm, "to": to, "type": type_})


def element_to_json(el: Element) -> JSON:
    """An element as JSON (storage of a pending subscription request, RFC 6121 §3.1.3 rule 4)."""
    attrs: dict[str, JSON] = {k: v for k, v in el.attrs.items()}
    children: list[JSON] = [c if isinstance(c, str) else element_to_json(c) for c in el.children]
    return [el.name, el.ns, attrs, children]


def element_from_json(data: JSON) -> Element:
    if not (isinstance(data, list) and len(data) == 4):
        raise ValueError("not an encoded element")
    name, ns, attrs, children = data
    if not (
        isinstance(name, str)
        and isinstance(ns, str)
        and isinstance(attrs, dict)
        and isinstance(children, list)
    ):
        raise ValueError("not an encoded element")
    return Element(
        name,
        ns,
        {str(k): str(v) for k, v in attrs.items()},
        [c if isinstance(c, str) else element_from_json(c) for c in children],
    )


def _encode_entry(entry: Entry) -> JSON:
    item = entry.item
    data: dict[str, JSON] = {"roster": entry.in_roster, "v": entry.version}
    if entry.in_roster:
        data.update(
            {
                "name": item.name,
                "subscription": item.subscription,
                "ask": item.ask,
                "approved": item.approved,
                "groups": list(item.groups),
            }
        )
    if item.pending_in:
        data["pending"] = element_to_json(item.pending_stanza) if item.pending_stanza is not None else True
    return data


def _encode_meta(epoch: str, ver: int, floor: int) -> JSON:
    return {"epoch": epoch, "ver": ver, "floor": floor}


def roster_rows(items: Iterable[RosterItem], epoch: str | None = None) -> dict[str, JSON]:
    """The ``roster`` map rows of an account whose roster holds exactly ``items``, for writing with
    ``MapStore.set_many(domain, localpart, rows)`` while the server is not running (bulk provisioning,
    imports). The module reads them back as if the items had been added one after the other: each gets
    the next version, and the counter row holds the last one (under ``epoch``, random if not given).

    Items must have distinct bare JIDs and a known subscription; pending-in state is kept as is.
    """
    rows: dict[str, JSON] = {}
    ver = 0
    for item in items:
        key = str(item.jid)
        if item.jid.resource is not None:
            raise ValueError(f"roster items are bare JIDs, not {key}")
        if item.subscription not in SUBSCRIPTIONS:
            raise ValueError(f"unknown subscription {item.subscription!r} for {key}")
        if key in rows:
            raise ValueError(f"{key} is listed twice")
        ver += 1
        rows[key] = _encode_entry(Entry(item, in_roster=True, version=ver))
    rows[_META_KEY] = _encode_meta(epoch or secrets.token_hex(4), ver, 0)
    return rows


def _decode(user: JID, data: dict[str, JSON]) -> UserRoster:
    meta = data.get(_META_KEY)
    if isinstance(meta, dict) and isinstance(meta.get("epoch"), str):
        roster = UserRoster(user, str(meta["epoch"]), _int(meta.get("ver")), _int(meta.get("floor")))
    else:
        roster = UserRoster(user, secrets.token_hex(4))
    for key, value in data.items():
        if key == _META_KEY or not isinstance(value, dict):
            continue
        try:
            jid = JID.parse(key)
        except JIDError:
            continue
        in_roster = value.get("roster") is True
        subscription = value.get("subscription")
        groups = value.get("groups")
        name = value.get("name")
        item = RosterItem(
            jid,
            name=name if isinstance(name, str) and name else None,
            subscription=subscription
            if isinstance(subscription, str) and subscription in SUBSCRIPTIONS
            else "none",
            ask=value.get("ask") is True,
            approved=value.get("approved") is True,
            groups=[g for g in groups if isinstance(g, str)] if isinstance(groups, list) else [],
        )
        pending = value.get("pending")
        if pending is not None and pending is not False:
            item.pending_in = True
            if pending is not True:
                try:
                    item.pending_stanza = element_from_json(pending)
                except ValueError:
                    item.pending_stanza = None
        entry = Entry(item, in_roster, _int(value.get("v")))
        if not entry.needed:
            continue
        roster.entries[jid] = entry
        if in_roster:
            roster.count += 1
        elif entry.version > 0:
            roster.tombstones += 1
        roster.ver = max(roster.ver, entry.version)
    return roster


def _int(value: JSON) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
