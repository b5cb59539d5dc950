"""XEP-0163 Personal Eventing Protocol: every account is a pubsub service, with XEP-0115 caps.

The :class:`PepRuntime` (one per server) holds what accounts share: the caps cache, the node store
and the accounts' :class:`~roost.modules.pubsub.engine.PubSubService` objects (loaded on first use,
bounded in memory). The :class:`Pep` module (one per served domain) answers pubsub IQs addressed to
its accounts and delivers notifications:

* to the full JID of each available resource (the owner's own, and those of contacts allowed by
  the node's access model) whose caps carry ``<node>+notify`` (XEP-0163 §4.2–4.3);
* to explicit subscribers at the JID they subscribed with, unless that bare JID already got it at
  a full JID (§4.3.2 rule 3).

The last item of every node a resource is interested in is sent when it becomes available with
caps, when its caps become known (the disco#info query answered later), when its caps start to
name a node, and when the owner approves its presence subscription (§4.3.1, §4.3.3), so the order
in which caps and subscriptions arrive does not matter.

Contacts on other servers are known from the presence their servers send to local accounts over s2s
(:class:`RemoteResource`): their caps are learnt and verified the same way (the disco#info query goes
over s2s), and they get +notify events and last items like local resources.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union, cast

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import (
    DiscoInfoEvent,
    DiscoItemsEvent,
    ServerEvent,
    SessionEvent,
    StanzaEvent,
    UserEvent,
)
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.jid import JID, JIDError
from roost.modules.muc.forms import add_field, new_form
from roost.modules.pubsub.caps import HASHES, CapsCache, features_of, notify_nodes, read_caps, verify
from roost.modules.pubsub.config import (
    NODE_CONFIG,
    PUBLISH_OPTIONS,
    PUBSUB,
    PUBSUB_OWNER,
    Limits,
    read_publish_options,
    unmet_precondition,
)
from roost.modules.pubsub.engine import FEATURE_SUFFIXES, Node, Notice, Outcome, PubSubService, Requester
from roost.modules.pubsub.store import NodeStore, Owner
from roost.stanza.errors import StanzaError
from roost.util.bounded import BoundedDict
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DISCO_INFO

if TYPE_CHECKING:
    from roost.core.host import Host
    from roost.core.server import Server
    from roost.core.session import Session

#: Ids of notification messages: one per notification (its copies share it, so that one serialization
#: can serve every recipient), unique per server run and cheap.
_MESSAGE_IDS = itertools.count(1)
log = logging.getLogger("roost.mod.pep")

#: disco#info features of a PEP account (XEP-0060 §10, XEP-0163 §6).
PEP_FEATURES = tuple(
    PUBSUB + suffix
    for suffix in (
        *FEATURE_SUFFIXES,
        "#access-presence",
        "#access-roster",
        "#auto-subscribe",
        "#filtered-notifications",
    )
)
_CAPS_QUERY_SECONDS = 30.0
ADDRESS = "http://jabber.org/protocol/address"  # XEP-0033


class PepOptions(ModuleOptions):
    """Personal Eventing (XEP-0163): every account's own pubsub service, and its limits (docs/pubsub.md)."""

    max_items: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most items one PEP node may keep (what pubsub#max_items = 'max' means).",
    )
    default_max_items: int = Field(
        1,
        ge=1,
        le=100_000,
        description="pubsub#max_items of a node created without saying (PEP nodes are mostly singletons).",
    )
    max_payload_bytes: int = Field(
        262_144,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest item payload (bytes of XML) an account may publish; larger ones get "
        "`<not-acceptable/>` with `<payload-too-big/>`. Avatars are the large ones; c2s.max_stanza_bytes "
        "bounds it too.",
    )
    max_nodes: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Most PEP nodes one account may have (`<max-nodes-exceeded/>` beyond).",
    )
    max_subscriptions: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most explicit subscriptions one PEP node accepts (`<too-many-subscriptions/>`).",
    )
    caps_cache_size: int = Field(
        10_000,
        ge=16,
        le=10_000_000,
        description="Verified entity capabilities (XEP-0115 hashes) kept in memory.",
    )
    caps_queries: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most disco#info queries for unknown caps hashes in flight at once; a client's "
        "unknown hash beyond that is ignored until its next presence (bounds what clients inventing "
        "hashes can cost).",
    )
    remote_resources: int = Field(
        100_000,
        ge=16,
        le=10_000_000,
        description="Most resources of contacts on other servers whose presence (and caps) PEP keeps "
        "track of, to send them +notify events; presence from more is not tracked (they miss events "
        "until a tracked one goes offline).",
    )
    cached_accounts: int = Field(
        10_000,
        ge=16,
        le=10_000_000,
        description="Accounts whose PEP nodes stay in memory (others are read again when needed).",
    )


class RosterItemLike(Protocol):
    @property
    def subscription(self) -> str: ...
    @property
    def groups(self) -> list[str]: ...


class UserRosterLike(Protocol):
    def item(self, contact: JID) -> RosterItemLike | None: ...
    def subscribers(self) -> frozenset[JID]: ...
    def subscriptions(self) -> Iterable[JID]: ...


class BlockingLike(Protocol):
    def is_blocked(self, user: JID, other: JID) -> bool: ...


class RosterLike(Protocol):
    def cached(self, user: JID) -> UserRosterLike | None: ...
    async def load(self, user: JID) -> UserRosterLike: ...
    def release(self, user: JID) -> None: ...


@dataclass(slots=True)
class CapsState:
    """What the PEP service knows of one session (kept in ``session.data['pep']``)."""

    caps: tuple[str, str] | None = None
    notify: frozenset[str] = frozenset()


class RemoteResource:
    """An available resource of a contact on another server, learnt from the presence it sent over s2s
    to local accounts (``owners``); it stands in for a session in caps handling and notifications."""

    __slots__ = ("__weakref__", "data", "jid", "jid_str", "owners")

    def __init__(self, jid: JID) -> None:
        self.jid = jid
        self.jid_str = str(jid)
        self.data: dict[str, Any] = {}
        #: Local accounts (bare JIDs) its available presence reached; it is forgotten when none is left.
        self.owners: set[JID] = set()


#: Who may get +notify events: a local session or a remote contact's resource.
Resource = Union["Session", RemoteResource]


def _state(session: Resource) -> CapsState:
    state = session.data.get("pep")
    if state is None:
        state = session.data["pep"] = CapsState()
    return cast(CapsState, state)


class PepRuntime:
    """State every domain's PEP shares: caps, the store and the accounts' services."""

    def __init__(self, server: Server, options: PepOptions) -> None:
        self.server = server
        self.options = options
        self.limits = Limits(
            max_items=options.max_items,
            default_max_items=min(options.default_max_items, options.max_items),
            max_payload_bytes=options.max_payload_bytes,
            max_nodes=options.max_nodes,
            max_subscriptions=options.max_subscriptions,
        )
        self.caps = CapsCache(options.caps_cache_size)
        self.store = NodeStore(server.storage, server.spawn)
        self.services: BoundedDict[Owner, PubSubService] = BoundedDict(options.cached_accounts)
        self._loading: dict[Owner, asyncio.Future[PubSubService]] = {}
        #: (hash, ver) → sessions waiting for the answer of a query in flight.
        self._asking: dict[tuple[str, str], list[weakref.ref[Resource]]] = {}
        #: Remote contacts' available resources, by full JID and by bare JID.
        self.remote: dict[str, RemoteResource] = {}
        self.remote_by_bare: dict[JID, dict[str, RemoteResource]] = {}
        self.users = 0
        #: Called after an account's own pubsub request changed its PEP nodes (bridges such as
        #: bookmarks and avatar conversion): ``await listener(owner, service, outcome)``.
        self.listeners: list[Callable[[JID, PubSubService, Outcome], Awaitable[None]]] = []

    async def service(self, domain: str, user: str) -> PubSubService:
        key = (domain, user)
        service = self.services.get(key)
        if service is not None:
            return service
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[PubSubService] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            service = PubSubService(
                JID(user, domain, prepared=True), self.limits, pep_owner=f"{user}@{domain}"
            )
            await self.store.load(key, service)
        except BaseException as e:
            future.set_exception(e)
            future.exception()
            raise
        finally:
            del self._loading[key]
        self.services[key] = service
        future.set_result(service)
        return service

    def cached(self, domain: str, user: str) -> PubSubService | None:
        return self.services.get((domain, user))

    async def forget_account(self, domain: str, user: str) -> None:
        self.services.pop((domain, user), None)
        await self.store.delete_owner((domain, user))
        bare = f"{user}@{domain}"
        for key, service in list(self.services.items()):
            out = service.forget_subscriber(bare)
            self.store.record(key, service, out)

    # -- caps (XEP-0115 §5.4) -------------------------------------------------------------------------
    def remote_available(self, jid: JID, owner: JID) -> tuple[RemoteResource, bool] | None:
        """``jid`` (a remote full JID) sent available presence to local account ``owner``: the
        resource, and whether ``owner`` is new to it; None when over the ``remote_resources`` bound."""
        key = str(jid)
        resource = self.remote.get(key)
        if resource is None:
            if len(self.remote) >= self.options.remote_resources:
                log.warning("remote_resources limit reached; presence of %s not tracked", key)
                return None
            resource = self.remote[key] = RemoteResource(jid)
            self.remote_by_bare.setdefault(jid.bare, {})[key] = resource
        new = owner not in resource.owners
        resource.owners.add(owner)
        return resource, new

    def remote_unavailable(self, jid: JID, owner: JID) -> None:
        """``jid`` (remote, bare or full) told ``owner`` it went offline: forgotten once no local
        account sees it any more."""
        resources = (
            [r for r in [self.remote.get(str(jid))] if r is not None]
            if jid.resource is not None
            else list(self.remote_by_bare.get(jid, {}).values())
        )
        for resource in resources:
            resource.owners.discard(owner)
            if not resource.owners:
                self.forget_remote(resource)

    def forget_remote(self, resource: RemoteResource) -> None:
        if self.remote.pop(resource.jid_str, None) is None:
            return
        by_bare = self.remote_by_bare.get(resource.jid.bare)
        if by_bare is not None:
            by_bare.pop(resource.jid_str, None)
            if not by_bare:
                del self.remote_by_bare[resource.jid.bare]

    def remote_resources(self, contact: JID) -> Iterable[RemoteResource]:
        return self.remote_by_bare.get(contact, {}).values()

    def _current(self, entity: Resource) -> bool:
        """Whether ``entity`` is still the live session (or tracked remote resource) of its JID."""
        if isinstance(entity, RemoteResource):
            return self.remote.get(entity.jid_str) is entity
        return self.server.sessions.get(entity.jid) is entity

    def learn(self, session: Resource, presence: Element, on_change: Any) -> None:
        """An available broadcast presence of ``session``: note its caps; ``on_change(session, new)``
        runs with the nodes it newly wants (at once or once the caps are known)."""
        state = _state(session)
        caps = read_caps(presence)
        if caps is None:
            if state.caps is not None:
                state.caps, state.notify = None, frozenset()
            return
        algo, ver, node = caps
        if state.caps == (algo, ver):
            return  # §4.3.3 note: later presence without a change triggers nothing
        state.caps = (algo, ver)
        known = self.caps.get(algo, ver)
        if known is not None:
            self._apply(session, notify_nodes(known), on_change)
            return
        waiting = self._asking.get((algo, ver))
        if waiting is not None:
            waiting.append(weakref.ref(session))
            return
        if len(self._asking) >= self.options.caps_queries:
            state.caps = None  # asked again at its next presence
            log.warning("too many caps queries in flight; %s %s of %s not asked", algo, ver, session.jid_str)
            return
        self._asking[(algo, ver)] = [weakref.ref(session)]
        self.server.spawn(self._ask(algo, ver, node, on_change), f"caps-{session.jid_str}")

    def _apply(self, session: Resource, nodes: frozenset[str], on_change: Any) -> None:
        state = _state(session)
        new = nodes - state.notify
        state.notify = nodes
        if new:
            on_change(session, new)

    async def _ask(self, algo: str, ver: str, node: str, on_change: Any) -> None:
        """Ask the waiting sessions one by one until one answers with a verified disco#info."""
        try:
            while True:
                waiting = self._asking.get((algo, ver), [])
                session = None
                while waiting and session is None:
                    session = waiting.pop(0)()
                    if session is not None and (
                        not self._current(session) or _state(session).caps != (algo, ver)
                    ):
                        session = None
                if session is None:
                    return
                query = await self._disco(session, f"{node}#{ver}")
                if query is None:
                    continue
                features = features_of(query)
                if algo in HASHES and verify(query, algo, ver):
                    nodes = notify_nodes(self.caps.put(algo, ver, features))
                    for ref in [weakref.ref(session), *waiting]:
                        other = ref()
                        if other is not None and _state(other).caps == (algo, ver):
                            self._apply(other, nodes, on_change)
                    return
                # Unverified or unknown hash: these features hold for this session alone (§5.4).
                if algo in HASHES:
                    log.info("caps of %s do not match their hash %s %s", session.jid_str, algo, ver)
                self._apply(session, notify_nodes(features), on_change)
        finally:
            self._asking.pop((algo, ver), None)

    async def _disco(self, session: Resource, node: str) -> Element | None:
        """disco#info of a client's resource: sent from a local domain (the session's, or that of a
        local account a remote resource sent presence to) to the full JID, answered by it."""
        tracker = self.server.iq_tracker
        iq_id = tracker.new_id()
        if isinstance(session, RemoteResource):
            if not session.owners:
                return None
            frm = next(iter(session.owners)).domain
        else:
            frm = session.jid.domain
        iq = Element("iq", CLIENT, {"type": "get", "id": iq_id, "from": frm, "to": session.jid_str})
        iq.add("query", DISCO_INFO, {"node": node})
        future = tracker.expect(iq_id, session.jid)
        self.server.router.send(iq)
        try:
            response = await asyncio.wait_for(future, _CAPS_QUERY_SECONDS)
        except TimeoutError:
            return None
        if response.get("type") != "result" or response.get("from", session.jid_str) != session.jid_str:
            return None
        return response.find("query", DISCO_INFO)


_RUNTIMES: weakref.WeakKeyDictionary[Server, PepRuntime] = weakref.WeakKeyDictionary()


def find_runtime(server: Server) -> PepRuntime | None:
    return _RUNTIMES.get(server)


class Pep(Module):
    """Each account's PEP service: pubsub IQs to the bare JID, notifications, caps."""

    name = "pep"
    xeps = (
        Xep(163, "1.2.2"),
        Xep(60, "1.30.0", status="partial", note="leaf nodes (collections: on the PubSub service)"),
        Xep(
            115,
            "1.6.0",
            note="clients' caps verified and cached by hash; the server's own in stream features",
        ),
        Xep(59, "1.0", note="RSM on pubsub items"),
        Xep(223, "1.1.1", note="publish-options with whitelist access"),
        Xep(384, "0.9.1", note="device lists and bundles in PEP with open access"),
        Xep(84, "1.1.4"),
        Xep(172, "1.1"),
        Xep(292, "0.12.0", status="partial", note="vCard4 kept in PEP; not mapped to vcard-temp"),
    )
    account_features = PEP_FEATURES
    Options = PepOptions
    options: PepOptions

    async def start(self) -> None:
        runtime = _RUNTIMES.get(self.server)
        if runtime is None:
            runtime = _RUNTIMES[self.server] = PepRuntime(self.server, self.options)
        runtime.users += 1
        self.runtime = runtime

    async def stop(self) -> None:
        self.runtime.users -= 1
        await self.runtime.store.flush()
        if self.runtime.users <= 0:
            _RUNTIMES.pop(self.server, None)

    @hook(hooks.SERVER_STOPPING)
    async def stopping(self, event: ServerEvent) -> None:
        await self.runtime.store.flush()

    # -- roster relations --------------------------------------------------------------------------------
    def _roster(self, host: Host) -> RosterLike | None:
        module = host.modules.loaded.get("roster")
        return cast(RosterLike, module) if module is not None else None

    async def requester(self, owner: JID, jid: JID) -> Requester:
        """Who asks, with their relation to ``owner`` (presence subscription, roster groups)."""
        if jid.bare == owner.bare:
            return Requester(jid, presence=True)
        roster = self._roster(self.host)
        if roster is None:
            return Requester(jid)
        item = (await roster.load(owner.bare)).item(jid.bare)
        roster.release(owner.bare)  # an offline owner's roster does not stay in memory
        if item is None:
            return Requester(jid)
        return Requester(jid, presence=item.subscription in ("from", "both"), groups=frozenset(item.groups))

    # -- the IQs -----------------------------------------------------------------------------------------
    @iq_handler("get", PUBSUB, "pubsub", to=Target.ACCOUNT)
    async def pubsub_get(self, event: StanzaEvent) -> Element | None:
        return await self._handle(event, "get")

    @iq_handler("set", PUBSUB, "pubsub", to=Target.ACCOUNT)
    async def pubsub_set(self, event: StanzaEvent) -> Element | None:
        return await self._handle(event, "set")

    @iq_handler("get", PUBSUB_OWNER, "pubsub", to=Target.ACCOUNT)
    async def owner_get(self, event: StanzaEvent) -> Element | None:
        return await self._handle(event, "get")

    @iq_handler("set", PUBSUB_OWNER, "pubsub", to=Target.ACCOUNT)
    async def owner_set(self, event: StanzaEvent) -> Element | None:
        return await self._handle(event, "set")

    async def _handle(self, event: StanzaEvent, type_: str) -> Element | None:
        owner = event.to.bare
        if owner != event.frm.bare and not await self.server.account_exists(owner.domain, owner.local or ""):
            raise StanzaError("service-unavailable")  # RFC 6120 §10.5.3.1
        payload = event.stanza.first()
        assert payload is not None
        service = await self.runtime.service(owner.domain, owner.local or "")
        req = await self.requester(owner, event.frm)
        outcome = service.handle(req, type_, payload)
        await self.commit(service, outcome, event.frm)
        if outcome.changed and owner == event.frm.bare:
            for listener in self.runtime.listeners:
                try:
                    await listener(owner, service, outcome)
                except Exception:
                    log.exception("PEP listener %r failed for %s", listener, owner)
        return outcome.result

    # -- the server publishing for an account (bridges) --------------------------------------------------
    async def server_publish(
        self, owner: JID, node: str, item_id: str, payload: Element, options: dict[str, str]
    ) -> None:
        """Publish as the account itself; ``options`` configure a new node, and an existing node is
        reconfigured to them first (the bridge must not widen access, XEP-0411 §5)."""
        service = await self.runtime.service(owner.domain, owner.local or "")
        req = Requester(owner.bare, presence=True)  # the server, for the account: no resource
        existing = service.nodes.get(node)
        wanted = read_publish_options(
            _form("submit", PUBLISH_OPTIONS, options), service.limits, service.access_models
        )
        if existing is not None and unmet_precondition(existing.config, wanted, service.limits) is not None:
            configure = Element("configure", PUBSUB_OWNER, {"node": node})
            configure.append(_form("submit", NODE_CONFIG, options))
            await self.commit(service, service.set_config(req, configure))
        publish = Element("publish", PUBSUB, {"node": node})
        publish.add("item", attrs={"id": item_id}).append(payload)
        publish_options = None
        if existing is None and options:
            publish_options = Element("publish-options", PUBSUB)
            publish_options.append(_form("submit", PUBLISH_OPTIONS, options))
        await self.commit(service, service.publish(req, publish, publish_options))

    async def server_retract(self, owner: JID, node: str, item_ids: Iterable[str]) -> None:
        service = await self.runtime.service(owner.domain, owner.local or "")
        found = service.nodes.get(node)
        ids = [i for i in item_ids if found is not None and i in found.items]
        if not ids:
            return
        retract = Element("retract", PUBSUB, {"node": node, "notify": "true"})
        for item_id in ids:
            retract.add("item", attrs={"id": item_id})
        req = Requester(owner.bare, presence=True)  # the server, for the account: no resource
        await self.commit(service, service.retract(req, retract))

    async def commit(self, service: PubSubService, outcome: Outcome, publisher: JID | None = None) -> None:
        """Queue the writes of ``outcome`` and send its notifications."""
        owner = service.jid
        self.runtime.store.record((owner.domain, owner.local or ""), service, outcome)
        if outcome.notices:
            await self.notify(service, outcome.notices)

    # -- notifications -----------------------------------------------------------------------------------
    async def notify(self, service: PubSubService, notices: list[Notice]) -> None:
        owner = service.jid
        interested: list[tuple[Resource, Requester]] | None = None
        for notice in notices:
            contacts: dict[str, JID | None] = {}
            if notice.to_notify and notice.config is not None:
                if interested is None:
                    interested = await self._interested(owner)
                node = service.nodes.get(notice.node) or Node(notice.node, notice.config)
                for session, req in interested:
                    if notice.node in _state(session).notify and service.may_access(node, req):
                        contacts[session.jid_str] = session.jid
            covered = {r.split("/", 1)[0] for r in contacts}
            others: dict[str, JID | None] = {}
            for jid in notice.recipients:
                if ("/" in jid or jid not in covered) and jid not in contacts:
                    others[jid] = None
            # XEP-0163 §4.3.1 rule 3: 'replyto' names the publishing resource, but only for those
            # who share presence with the owner (the +notify recipients all do).
            publisher = notice.publisher if notice.publisher and "/" in notice.publisher else None
            self.send(owner, notice, contacts, replyto=publisher)
            self.send(owner, notice, others)

    async def _interested(self, owner: JID) -> list[tuple[Resource, Requester]]:
        """Available resources that may get +notify events of ``owner``: its own, and those of
        contacts subscribed to its presence (XEP-0163 §4.1 cases 2 and 3), local or remote."""
        sessions = self.server.sessions
        runtime = self.runtime
        out: list[tuple[Resource, Requester]] = []
        for session in sessions.resources(owner.domain, owner.local or ""):
            if session.available:
                out.append((session, Requester(session.jid, presence=True)))
        roster = self._roster(self.host)
        if roster is None:
            return out
        user_roster = await roster.load(owner.bare)
        roster.release(owner.bare)
        hosts = self.server.hosts
        for contact in user_roster.subscribers():
            item = user_roster.item(contact)
            groups = frozenset(item.groups) if item is not None else frozenset()
            if contact.domain not in hosts:
                # Remote contacts: known from the presence their server sent us.
                for remote in runtime.remote_resources(contact):
                    if "pep" in remote.data:
                        out.append((remote, Requester(remote.jid, presence=True, groups=groups)))
                continue
            for session in sessions.resources(contact.domain, contact.local or ""):
                if session.available and "pep" in session.data:
                    out.append((session, Requester(session.jid, presence=True, groups=groups)))
        return out

    def send(
        self, owner: JID, notice: Notice, recipients: dict[str, JID | None], *, replyto: str | None = None
    ) -> None:
        """One ``<message/>`` per recipient (JID text → parsed JID if known), from the owner's bare JID
        (§4.3.1 rule 1), built once; none to a JID the owner blocks (§4.3.3 rule 3, XEP-0191)."""
        if not recipients:
            return
        template = Element(
            "message",
            CLIENT,
            {"from": str(owner), "type": notice.message_type, "id": f"pep-{next(_MESSAGE_IDS):x}"},
        )
        template.append(notice.event)
        if replyto:
            template.add("addresses", ADDRESS).add("address", attrs={"type": "replyto", "jid": replyto})
        router = self.server.router
        module = self.host.modules.loaded.get("blocking")
        blocking = (
            cast(BlockingLike, module) if module is not None and hasattr(module, "is_blocked") else None
        )
        for to, jid in recipients.items():
            if blocking is not None:
                try:
                    if blocking.is_blocked(owner, jid or JID.parse(to)):
                        continue
                except JIDError:
                    continue
            message = template.shallow_copy()
            message.attrs["to"] = to
            router.send(message)

    # -- presence: caps, last items ------------------------------------------------------------------------
    @hook(hooks.PRE_PRESENCE, priority=50)
    def outbound_presence(self, event: StanzaEvent) -> StanzaEvent | None:
        session = event.origin
        if session is None:
            return event
        stanza = event.stanza
        type_ = stanza.attrs.get("type")
        if "to" not in stanza.attrs:
            if type_ is None:
                self.runtime.learn(session, stanza, self._wants)
            elif type_ == "unavailable":
                session.data.pop("pep", None)
        elif type_ == "subscribed" and event.to.bare != session.jid.bare:
            # The owner lets a contact see its presence: its resources now get the last items (§8.3).
            self.server.spawn(self._approved(session.jid.bare, event.to.bare), f"pep-approved-{session.id}")
        return event

    @hook(hooks.PRESENCE_BARE, priority=50)  # after blocking and privacy lists, before delivery
    def inbound_presence(self, event: StanzaEvent) -> bool:
        """Presence from a remote contact to a local account: track the contact's resource and its
        caps, as for a local session (XEP-0163 §4.1, contacts on other servers). Never claims."""
        frm, owner = event.frm, event.to
        if event.origin is not None or frm.domain in self.server.hosts or owner.local is None:
            return False
        type_ = event.stanza.attrs.get("type")
        runtime = self.runtime
        if type_ is None:
            if frm.resource is None:
                return False
            roster = self._roster(self.host)
            user_roster = roster.cached(owner) if roster is not None else None
            item = user_roster.item(frm.bare) if user_roster is not None else None
            if item is None:
                # Not in the owner's roster (or the owner is offline, and its contacts' presence
                # comes again in answer to its probes at login). Whether the contact may see events
                # (a 'from' or 'both' subscription) is checked when they are sent, since it may
                # change while the resource stays online.
                return False
            tracked = runtime.remote_available(frm, owner)
            if tracked is None:
                return False
            resource, new_owner = tracked
            runtime.learn(resource, event.stanza, self._wants)
            notify = _state(resource).notify
            if new_owner and notify:
                # Caps already known from its presence to another account: this owner's last items.
                self.server.spawn(self._last_items(owner, resource, notify), f"pep-last-{resource.jid_str}")
        elif type_ == "unavailable" or type_ == "error":
            runtime.remote_unavailable(frm, owner)
        return False

    def _wants(self, session: Resource, nodes: frozenset[str]) -> None:
        self.server.spawn(self._send_last(session, nodes), f"pep-last-{session.jid_str}")

    async def _send_last(self, session: Resource, nodes: frozenset[str]) -> None:
        """The last items of ``nodes`` of the account and of its contacts, to a resource now interested
        (a remote resource: of the local accounts it sends presence to)."""
        if isinstance(session, RemoteResource):
            for owner in list(session.owners):
                await self._last_items(owner, session, nodes)
            return
        user = session.jid.bare
        owners = [user]
        roster = self._roster(self.host)
        if roster is not None:
            owners += [c for c in (await roster.load(user)).subscriptions() if c.domain in self.server.hosts]
            roster.release(user)
        for owner in owners:
            await self._last_items(owner, session, nodes)

    async def _approved(self, owner: JID, contact: JID) -> None:
        resources: Iterable[Resource] = (
            list(self.runtime.remote_resources(contact))
            if contact.domain not in self.server.hosts
            else self.server.sessions.resources(contact.domain, contact.local or "")
        )
        for session in resources:
            state = session.data.get("pep")
            if state is not None and (isinstance(session, RemoteResource) or session.available):
                await self._last_items(owner, session, state.notify, approved=True)

    async def _last_items(
        self, owner: JID, session: Resource, nodes: Iterable[str], *, approved: bool = False
    ) -> None:
        """The last item of each of ``nodes`` of ``owner`` the resource may see (``approved``: the owner
        just approved its presence subscription, which the roster may not show yet)."""
        host = self.server.hosts.get(owner.domain)
        pep = host.modules.loaded.get("pep") if host is not None else None
        if not isinstance(pep, Pep):
            return
        service = await self.runtime.service(owner.domain, owner.local or "")
        if not service.nodes:
            return
        req = await pep.requester(owner, session.jid)
        if approved:
            req = Requester(req.jid, presence=True, groups=req.groups)
        for name in nodes:
            node = service.nodes.get(name)
            if node is None or node.config.send_last_published_item != "on_sub_and_presence":
                continue
            last = node.last_item()
            if last is None or not service.may_access(node, req):
                continue
            notice = Notice(node.name, service.item_event(node, [last]), [], node.config.notification_type)
            replyto = last.publisher if "/" in last.publisher else None
            pep.send(owner, notice, {session.jid_str: session.jid}, replyto=replyto)

    @hook(hooks.SESSION_CLOSED)
    def closed(self, event: SessionEvent) -> None:
        event.session.data.pop("pep", None)

    # -- disco (XEP-0163 §6; XEP-0060 §5) ------------------------------------------------------------------
    @hook(hooks.DISCO_INFO_ACCOUNT)
    async def disco_info(self, event: DiscoInfoEvent) -> None:
        owner = event.target.bare
        if event.node is None:
            event.identities.append(("pubsub", "pep", None))
            return
        service = await self.runtime.service(owner.domain, owner.local or "")
        if event.node not in service.nodes:
            return
        req = await self.requester(owner, event.requester)
        identities, form = service.node_info(req, event.node)
        event.identities.extend(identities)
        event.forms.append(form)

    @hook(hooks.DISCO_ITEMS_ACCOUNT)
    async def disco_items(self, event: DiscoItemsEvent) -> None:
        owner = event.target.bare
        service = await self.runtime.service(owner.domain, owner.local or "")
        req = await self.requester(owner, event.requester)
        if event.node is None:
            for node in service.visible_nodes(req):
                event.items.append((str(owner), node.name, node.config.title or None))
        elif event.node in service.nodes:
            for item_id in service.node_item_ids(req, event.node):
                event.items.append((str(owner), None, item_id))  # XEP-0060 §5.5: the id is the name

    # -- account removal ---------------------------------------------------------------------------------
    @hook(hooks.USER_DELETED)
    async def forget(self, event: UserEvent) -> None:
        await self.runtime.forget_account(event.domain, event.username)


def _form(type_: str, form_type: str, values: dict[str, str]) -> Element:
    x = new_form(type_, form_type)
    for var, value in values.items():
        add_field(x, var, values=[value])
    return x
