"""The MUC module: runs a :class:`MucService` on its own service domain and connects it to the router.

Loaded on each served domain, the module creates the service host (``conference.<domain>``) once per
server: a :class:`~roost.core.host.Host` of kind "service" in ``server.hosts``, whose bus and IQ table
receive every stanza for ``room@service`` and ``room@service/nick`` (see ``Router.deliver``). It feeds
those to the pure engines, sends what they return — a broadcast to many occupants goes through
``Router.fanout``, serialized once — and keeps persistent rooms in the
``muc_rooms`` map store.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from roost.config.schema import ModuleOptions, ServiceDomain
from roost.core import hooks
from roost.core.hooks import DiscoItemsEvent, ServerEvent, SessionEvent, StanzaEvent
from roost.core.host import Host
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook
from roost.core.session import Session
from roost.jid import prepare_domain
from roost.modules.muc.model import MODERATE, MUC, MUC_ADMIN, MUC_OWNER, REGISTER, ServicePolicy
from roost.modules.muc.room import Broadcast, Outcome, Room, presence_error
from roost.modules.muc.service import MucService, RoomArchiveHooks
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DISCO_INFO, DISCO_ITEMS, PING

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.mod.muc")

_SWEEP_SECONDS = 30.0
#: Why a session ended → status codes for the room (333: removed for a technical reason, §12.1).
_GONE_CODES = {"disconnect": ("333",), "timeout": ("333",), "error": ("333",)}


class MucOptions(ModuleOptions):
    """Multi-User Chat (XEP-0045): chat rooms on their own service domain."""

    domain: ServiceDomain = Field(
        "",
        description="Domain of the chat service. Empty: 'conference.' + the first of server.domains "
        "(conference.localhost with the built-in defaults). Clients find it in the server's disco#items.",
        examples=["conference.example.org"],
    )
    name: str = Field("Chatrooms", description="Name of the service shown in service discovery.")
    create_rooms: Literal["anyone", "local", "admins", "nobody"] = Field(
        "local",
        description="Who may create rooms: 'anyone' (also users of other servers), 'local' (users of "
        "server.domains), 'admins' (server.admins only) or 'nobody'. Server admins always may.",
    )
    max_rooms_per_user: int = Field(
        20, ge=0, description="Rooms one user may own at once (0: no limit; server admins are exempt)."
    )
    lock_new_rooms: bool = Field(
        True,
        description="A new room stays locked until its creator accepts the default configuration or "
        "submits one (XEP-0045 §10.1); off: new rooms open at once with the defaults.",
    )
    lock_timeout_seconds: float = Field(
        300.0, gt=0, description="A room still locked this long after creation is destroyed."
    )
    max_occupants: int = Field(1000, ge=1, description="Most occupants a room may be configured to hold.")
    default_max_occupants: int = Field(200, ge=1, description="muc#roomconfig_maxusers of new rooms.")
    default_history: int = Field(20, ge=0, description="Messages of discussion history new rooms keep.")
    max_history: int = Field(100, ge=0, description="Most history a room may be configured to keep.")
    message_rate: float = Field(
        2.0,
        ge=0,
        description="Messages per second an occupant may send on average (a token bucket; 0: no limit). "
        "Excess messages are refused with <resource-constraint/>.",
    )
    message_burst: int = Field(10, ge=1, description="Messages an occupant may send in a quick burst.")
    max_body_chars: int = Field(
        10_000, ge=1, description="Longest message body (characters) a room relays; longer ones are refused."
    )


class MucRuntime:
    """The one MUC service of a server: its host, engines, storage and delivery."""

    def __init__(self, server: Server, options: MucOptions) -> None:
        domains = server.config.server.domains
        self.server = server
        self.domain = options.domain or prepare_domain(f"conference.{domains[0]}")
        if self.domain in domains:
            raise ValueError(f"[muc] domain {self.domain!r} is also in server.domains; pick another")
        policy = ServicePolicy(
            admins=frozenset(server.config.server.admins),
            max_occupants=options.max_occupants,
            default_max_occupants=min(options.default_max_occupants, options.max_occupants),
            message_rate=options.message_rate,
            message_burst=float(options.message_burst),
            max_body_chars=options.max_body_chars,
            default_history=min(options.default_history, options.max_history),
            max_history=options.max_history,
        )
        self.service = MucService(
            self.domain,
            policy,
            name=options.name,
            served_domains=frozenset(domains),
            create_rooms=options.create_rooms,
            max_rooms_per_user=options.max_rooms_per_user,
            lock_new_rooms=options.lock_new_rooms,
            lock_timeout=options.lock_timeout_seconds,
        )
        self.name = options.name
        self.host = Host(server, self.domain, kind="service")
        self.users = 0
        self._undo: list[Any] = []
        self._stored: set[str] = set()
        self._dirty: dict[str, Room] = {}
        self._save_lock = asyncio.Lock()
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopped = False
        #: The room archive (XEP-0313), attached by the mam module when it archives rooms.
        self.archive: RoomArchiveHooks | None = None

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        server = self.server
        if self.domain in server.hosts:
            raise ValueError(f"[muc] domain {self.domain!r} is already served by something else")
        self.store = server.storage.map("muc_rooms")
        loaded = 0
        for name, doc in (await self.store.items(self.domain, "")).items():
            try:
                assert isinstance(doc, dict)
                self.service.load(name, doc)
            except Exception:
                log.exception("cannot load room %s@%s; it is skipped", name, self.domain)
                continue
            self._stored.add(name)
            loaded += 1
        bus = self.host.bus
        self._undo = [
            bus.on(hooks.PRESENCE_FULL, self.on_presence_full),
            bus.on(hooks.PRESENCE_BARE, self.on_presence_bare),
            bus.on(hooks.MESSAGE_BARE, self.on_message_bare),
            bus.on(hooks.MESSAGE_FULL, self.on_message_full),
            bus.on(hooks.IQ_FULL, self.on_iq_full),
            bus.on(hooks.SERVER_STOPPING, self.on_stopping),
        ]
        iq = self.host.iq
        for type_, ns, name, target, handler in (
            ("get", DISCO_INFO, "query", Target.HOST, self.service_info),
            ("get", DISCO_ITEMS, "query", Target.HOST, self.service_items),
            ("get", PING, "ping", Target.HOST, self.pong),
            ("get", DISCO_INFO, "query", Target.ACCOUNT, self.room_info),
            ("get", DISCO_ITEMS, "query", Target.ACCOUNT, self.room_items),
            ("get", PING, "ping", Target.ACCOUNT, self.room_ping),
            ("get", MUC_ADMIN, "query", Target.ACCOUNT, self.admin_get),
            ("set", MUC_ADMIN, "query", Target.ACCOUNT, self.admin_set),
            ("get", MUC_OWNER, "query", Target.ACCOUNT, self.owner_get),
            ("set", MUC_OWNER, "query", Target.ACCOUNT, self.owner_set),
            ("get", REGISTER, "query", Target.ACCOUNT, self.register_get),
            ("set", REGISTER, "query", Target.ACCOUNT, self.register_set),
            ("set", MODERATE, "moderate", Target.ACCOUNT, self.moderate),
        ):
            self._undo.append(iq.register(type_, ns, name, target, handler))
        server.hosts[self.domain] = self.host
        self._schedule_sweep()
        log.info("MUC service %s started (%d persistent rooms)", self.domain, loaded)

    async def stop(self) -> None:
        self._stopped = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.flush()
        for undo in self._undo:
            undo()
        self._undo.clear()
        # During server shutdown the server is iterating its hosts; it forgets them all anyway.
        if not self.server.stopping and self.server.hosts.get(self.domain) is self.host:
            del self.server.hosts[self.domain]

    async def flush(self) -> None:
        """Write every room whose persistent state changed and is not saved yet."""
        for room in list(self._dirty.values()):
            await self._save(room)

    def _schedule_sweep(self) -> None:
        if not self._stopped:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        try:
            for room, outcome in self.service.sweep(time.time()):
                self.emit(room, outcome)
        except Exception:
            log.exception("MUC sweep failed")
        self._schedule_sweep()

    # -- persistence ------------------------------------------------------------------------------------
    def _schedule_save(self, room: Room) -> None:
        self._dirty[room.name] = room
        self.server.spawn(self._save(room), f"muc-save-{room.name}")

    async def _save(self, room: Room) -> None:
        """Write (or delete) a room's document; one writer at a time keeps the last state last."""
        async with self._save_lock:
            name = room.name
            if self._dirty.get(name) is room:
                del self._dirty[name]
            try:
                if room.config.persistent and not room.destroyed and not room.locked:
                    await self.store.set(self.domain, "", name, room.to_json())
                    self._stored.add(name)
                elif name in self._stored and self.service.rooms.get(name) in (None, room):
                    await self.store.set(self.domain, "", name, None)
                    self._stored.discard(name)
            except Exception:
                self._dirty.setdefault(name, room)  # flushed again at the next change or at stop
                raise

    # -- carrying out outcomes ---------------------------------------------------------------------------
    def emit(self, room: Room | None, outcome: Outcome, *, save: bool = True) -> None:
        """Send what an engine returned, update the directory, and schedule persistence."""
        self.service.apply(room, outcome)
        if self.archive is not None and room is not None:
            self.archive.record(room, outcome)
        for item in outcome.out:
            if isinstance(item, Broadcast):
                self.server.router.fanout(item.stanza, item.to, item.frm)
            else:
                self.send(item)
        if save and room is not None and (outcome.save or outcome.destroyed):
            self._schedule_save(room)

    def send(self, stanza: Element) -> None:
        pending = self.server.router.route(stanza)
        if pending is not None:
            self.server.spawn(pending, "muc-route")

    # -- stanzas to rooms and occupants ------------------------------------------------------------------
    def on_presence_full(self, event: StanzaEvent) -> bool:
        if event.to.local is None:
            return False
        room, outcome = self.service.presence(event.stanza, event.frm, event.to, time.time())
        self.emit(room, outcome)
        return True

    def on_presence_bare(self, event: StanzaEvent) -> bool:
        """§7.2.1: entering needs a nickname; a join sent to the bare room JID is refused. Other
        presence to a room (probes, subscriptions, broadcasts to a room in someone's roster) is ignored."""
        stanza = event.stanza
        if event.to.local is None or stanza.attrs.get("type") is not None or stanza.find("x", MUC) is None:
            return True
        error = StanzaError("jid-malformed", "join with room@service/nickname")
        self.send(presence_error(str(event.to), stanza, event.frm, None, error))
        return True

    def on_message_bare(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        type_ = stanza.attrs.get("type", "normal")
        room = self.service.get(event.to.local)
        if room is None:
            if type_ == "error":
                return True
            raise StanzaError("item-not-found", "no such room")  # §17.2 rule 3
        now = time.time()
        if type_ == "groupchat":
            outcome = room.groupchat(stanza, event.frm, now)
        else:
            outcome = room.room_message(stanza, event.frm, now)
        self.emit(room, outcome)
        return True

    def on_message_full(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        room = self.service.get(event.to.local)
        if room is None:
            if stanza.attrs.get("type") == "error":
                return True
            raise StanzaError("item-not-found", "no such room")
        outcome = room.private_message(stanza, event.frm, event.to.resource or "", time.time())
        self.emit(room, outcome)
        return True

    def on_iq_full(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        room = self.service.get(event.to.local)
        if room is None:
            if stanza.attrs.get("type") in ("result", "error"):
                return True
            payload = stanza.first()
            if payload is not None and payload.ns == PING:
                raise StanzaError("not-acceptable", "you are not in this room")  # XEP-0410 §3.2
            raise StanzaError("item-not-found", "no such room")
        outcome = room.occupant_iq(stanza, event.frm, event.to.resource or "", time.time())
        self.emit(room, outcome)
        return True

    def on_stopping(self, event: ServerEvent) -> None:
        for room, outcome in self.service.shutdown():
            self.emit(room, outcome)

    def session_closed(self, session: Session, reason: str) -> None:
        """A local session ended: it leaves every room it was in, unavailable presence and all."""
        jid = session.jid
        current = self.server.sessions.get(jid)
        if current is not None and current is not session:
            return  # a new session took over this resource; it inherits the rooms
        codes = _GONE_CODES.get(reason, ())
        for room, outcome in self.service.session_closed(jid, time.time(), codes):
            self.emit(room, outcome)

    # -- IQs -------------------------------------------------------------------------------------------
    def _room(self, event: StanzaEvent) -> Room:
        room = self.service.get(event.to.local)
        if room is None:
            raise StanzaError("item-not-found", "no such room")
        return room

    @staticmethod
    def _payload(event: StanzaEvent) -> Element:
        payload = event.stanza.first()
        assert payload is not None  # the router checks IQ payloads
        return payload

    def service_info(self, event: StanzaEvent) -> Element:
        return self.service.disco_info(self._payload(event).attrs.get("node"))

    def service_items(self, event: StanzaEvent) -> Element:
        return self.service.disco_items(self._payload(event).attrs.get("node"))

    def pong(self, event: StanzaEvent) -> None:
        return None

    def room_info(self, event: StanzaEvent) -> Element:
        return self._room(event).disco_info(self._payload(event).attrs.get("node"), event.frm)

    def room_items(self, event: StanzaEvent) -> Element:
        return self._room(event).disco_items(self._payload(event).attrs.get("node"), event.frm)

    def room_ping(self, event: StanzaEvent) -> None:
        self._room(event)

    def admin_get(self, event: StanzaEvent) -> Element:
        return self._room(event).admin_get(self._payload(event), event.frm)

    async def admin_set(self, event: StanzaEvent) -> None:
        room = self._room(event)
        await self._apply_and_save(room, room.admin_set(self._payload(event), event.frm, time.time()))

    def owner_get(self, event: StanzaEvent) -> Element:
        return self._room(event).owner_get(self._payload(event), event.frm)

    async def owner_set(self, event: StanzaEvent) -> None:
        room = self._room(event)
        await self._apply_and_save(room, room.owner_set(self._payload(event), event.frm, time.time()))

    def register_get(self, event: StanzaEvent) -> Element:
        return self._room(event).register_get(event.frm)

    async def register_set(self, event: StanzaEvent) -> None:
        room = self._room(event)
        await self._apply_and_save(room, room.register_set(self._payload(event), event.frm, time.time()))

    async def moderate(self, event: StanzaEvent) -> None:
        room = self._room(event)
        payload = self._payload(event)
        target = payload.attrs.get("id") or ""
        archived = self.archive is not None and bool(target) and await self.archive.contains(room, target)
        self.emit(room, room.moderate(payload, event.frm, time.time(), archived=archived))

    async def _apply_and_save(self, room: Room, outcome: Outcome) -> None:
        """Owner and admin changes are on disk before the IQ result says they are done."""
        self.emit(room, outcome, save=False)
        if outcome.save or outcome.destroyed:
            self._dirty[room.name] = room
            await self._save(room)


#: The MUC runtime of each server (the module is loaded once per served domain; the service is one).
_RUNTIMES: weakref.WeakKeyDictionary[Server, MucRuntime] = weakref.WeakKeyDictionary()


class MultiUserChat(Module):
    """XEP-0045 Multi-User Chat service with the extensions clients use today."""

    name = "muc"
    xeps = (
        Xep(45, "1.35.5"),
        Xep(249, "1.2", note="direct invitations are routed like any message"),
        Xep(410, "1.1.0"),
        Xep(421, "1.0.1"),
        Xep(425, "0.3.0", note="retraction from the room history; the archive follows with MAM"),
        Xep(359, "0.7.0", status="partial", note="stanza-id on groupchat messages"),
        Xep(128, "1.0.1", note="muc#roominfo"),
        Xep(4, "2.13.2", status="partial", note="MUC forms"),
    )
    Options = MucOptions
    options: MucOptions

    async def start(self) -> None:
        runtime = _RUNTIMES.get(self.server)
        if runtime is None:
            runtime = MucRuntime(self.server, self.options)
            await runtime.start()
            _RUNTIMES[self.server] = runtime
        runtime.users += 1
        self.runtime = runtime

    async def stop(self) -> None:
        runtime = self.runtime
        runtime.users -= 1
        if runtime.users <= 0:
            await runtime.stop()
            _RUNTIMES.pop(self.server, None)

    @hook(hooks.DISCO_ITEMS_HOST)
    def disco_items(self, event: DiscoItemsEvent) -> None:
        """§6.1: the service is listed among the server's items."""
        if not event.node:
            event.items.append((self.runtime.domain, None, self.runtime.name))

    @hook(hooks.SESSION_CLOSED, priority=20)
    def session_closed(self, event: SessionEvent) -> None:
        """Before the presence module undoes directed presence (priority 10): the room can then say why
        the occupant went (status 333 for a lost connection), and ignores the unavailable that follows."""
        self.runtime.session_closed(event.session, event.reason)


def find_runtime(server: Server) -> MucRuntime | None:
    """The server's MUC runtime (tests and admin tools)."""
    return _RUNTIMES.get(server)


__all__ = ["MucOptions", "MucRuntime", "MultiUserChat", "find_runtime"]
