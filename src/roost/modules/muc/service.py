"""A MUC service (XEP-0045 §6): the directory of its rooms, who may create them, and its disco. Pure.

The service owns the :class:`~roost.modules.muc.room.Room` engines and an index of which rooms each
real session is in (to clean up after sessions that vanish). Like the rooms, it returns what to send;
the module carries it out and calls :meth:`MucService.apply` with each outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import Any, Final, Protocol

from roost.jid import JID
from roost.modules.muc.model import MUC, MUC_STABLE_ID, OCCUPANT_ID, Affiliation, ServicePolicy
from roost.modules.muc.room import AffiliationRecord, IdGenerator, Outcome, Room, presence_error
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DISCO_INFO, DISCO_ITEMS, PING

CREATE_POLICIES: Final = ("anyone", "local", "admins", "nobody")


class RoomArchiveHooks(Protocol):
    """What the MUC module tells a room archive (XEP-0313; attached by the mam module)."""

    def record(self, room: Room, outcome: Outcome) -> None:
        """After each outcome: keep what it relayed, tombstone what it retracted, drop a destroyed room's."""
        ...

    def contains(self, room: Room, stanza_id: str) -> Awaitable[bool]:
        """Whether the room's archive holds the message with that stanza-id (moderation beyond history)."""
        ...


class MucService:
    """Rooms of one service domain (``conference.example.org``)."""

    def __init__(
        self,
        domain: str,
        policy: ServicePolicy,
        *,
        name: str = "Chatrooms",
        served_domains: frozenset[str] = frozenset(),
        create_rooms: str = "local",
        max_rooms_per_user: int = 0,
        lock_new_rooms: bool = True,
        lock_timeout: float = 300.0,
    ) -> None:
        if create_rooms not in CREATE_POLICIES:
            raise ValueError(f"create_rooms must be one of {', '.join(CREATE_POLICIES)}")
        self.domain = domain
        self.jid = JID(None, domain, prepared=True)
        self.policy = policy
        self.name = name
        self.served_domains = served_domains
        self.create_rooms = create_rooms
        self.max_rooms_per_user = max_rooms_per_user
        self.lock_new_rooms = lock_new_rooms
        self.lock_timeout = lock_timeout
        self.ids = IdGenerator()
        self.rooms: dict[str, Room] = {}
        #: Real full JID → names of the rooms that session is in.
        self.by_session: dict[JID, set[str]] = {}

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self.rooms.values()))

    def get(self, name: str | None) -> Room | None:
        return self.rooms.get(name or "")

    def room_jid(self, name: str) -> JID:
        return JID(name, self.domain, prepared=True)

    def load(self, name: str, doc: dict[str, Any]) -> Room:
        """A persistent room from storage."""
        room = Room.from_json(self.room_jid(name), self.policy, doc, ids=self.ids)
        self.rooms[name] = room
        return room

    # -- creation -----------------------------------------------------------------------------------
    def creation_refused(self, frm: JID) -> StanzaError | None:
        """Why ``frm`` may not create a room (§10.1.1: not-allowed), or None."""
        bare = frm.bare_str
        if bare in self.policy.admins:
            return None
        policy = self.create_rooms
        if policy == "nobody" or policy == "admins":
            return StanzaError("not-allowed", "room creation is restricted on this service")
        if policy == "local" and frm.domain not in self.served_domains:
            return StanzaError("not-allowed", "only users of this server may create rooms")
        limit = self.max_rooms_per_user
        if limit and sum(1 for r in self.rooms.values() if r.owned_by(bare)) >= limit:
            return StanzaError("not-allowed", f"you already own {limit} rooms, the most allowed")
        return None

    def presence(self, stanza: Element, frm: JID, to: JID, now: float) -> tuple[Room | None, Outcome]:
        """Presence to ``room@service/nick``; a join to a room that does not exist creates it (§10.1)."""
        name = to.local or ""
        nick = to.resource or ""
        room = self.rooms.get(name)
        if room is not None:
            return room, room.presence(stanza, frm, nick, now)
        if stanza.attrs.get("type") is not None:
            return None, Outcome()
        new = Room(
            self.room_jid(name),
            self.policy,
            created=now,
            ids=self.ids,
            locked=self.lock_new_rooms,
            creator=frm.bare_str,
        )
        if stanza.find("x", MUC) is None:
            return None, new.not_in_room(stanza, frm, nick)
        refused = self.creation_refused(frm)
        if refused is not None:
            out = Outcome()
            out.send(presence_error(new.jid_str, stanza, frm, nick, refused))
            return None, out
        new.affiliations[frm.bare_str] = AffiliationRecord(Affiliation.OWNER)
        outcome = new.presence(stanza, frm, nick, now, creating=True)
        if not new.occupants:
            return None, outcome  # the join failed (bad nickname …): the room never existed
        self.rooms[name] = new
        return new, outcome

    # -- bookkeeping ---------------------------------------------------------------------------------
    def apply(self, room: Room | None, outcome: Outcome) -> None:
        """Keep the session index and the directory in step with what ``outcome`` did."""
        if room is None:
            return
        name = room.name
        for jid in outcome.joined:
            self.by_session.setdefault(jid, set()).add(name)
        for jid in outcome.left:
            names = self.by_session.get(jid)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.by_session[jid]
        if outcome.destroyed and self.rooms.get(name) is room:
            del self.rooms[name]

    def session_closed(
        self, session: JID, now: float, codes: tuple[str, ...] = ()
    ) -> list[tuple[Room, Outcome]]:
        """A real session is gone: take it out of every room it was in (§18.1)."""
        results: list[tuple[Room, Outcome]] = []
        for name in sorted(self.by_session.get(session, ())):
            room = self.rooms.get(name)
            if room is not None:
                results.append((room, room.remove_session(session, now, codes=codes)))
        return results

    def sweep(self, now: float) -> list[tuple[Room, Outcome]]:
        """Periodic work: rooms left locked too long are destroyed (§20.6); stale relayed IQs expire."""
        results: list[tuple[Room, Outcome]] = []
        for room in list(self.rooms.values()):
            room.expire_pending(now)
            if room.locked and now - room.created > self.lock_timeout:
                results.append((room, room.destroy("The room was not configured in time.", None, None)))
        return results

    def shutdown(self) -> list[tuple[Room, Outcome]]:
        """Every occupant hears that the service is going down (status 332)."""
        return [(room, room.shutdown()) for room in list(self.rooms.values()) if room.occupants]

    # -- service discovery (§6.1-§6.3) ------------------------------------------------------------------
    def disco_info(self, node: str | None) -> Element:
        if node:
            raise StanzaError("item-not-found", "no such node")
        query = Element("query", DISCO_INFO)
        query.add("identity", attrs={"category": "conference", "type": "text", "name": self.name})
        # XEP-0421 §4: occupant ids are on in every room, so the service says so too.
        for feature in sorted((MUC, MUC_STABLE_ID, OCCUPANT_ID, DISCO_INFO, DISCO_ITEMS, PING)):
            query.add("feature", attrs={"var": feature})
        return query

    def disco_items(self, node: str | None) -> Element:
        """§6.3: the public rooms (hidden and still-locked rooms are left out)."""
        if node:
            raise StanzaError("item-not-found", "no such node")
        query = Element("query", DISCO_ITEMS)
        for name in sorted(self.rooms):
            room = self.rooms[name]
            if room.config.public and not room.locked:
                query.add("item", attrs={"jid": room.jid_str, "name": room.config.name or name})
        return query
