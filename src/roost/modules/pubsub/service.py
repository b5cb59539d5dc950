"""A XEP-0060 PubSub service on its own domain (``pubsub.example.org``): IoT readings, game state, feeds.

Like the MUC module, the module loaded on each served domain creates the service once per server: a
:class:`~roost.core.host.Host` of kind "service" in ``server.hosts``, whose IQ table takes the
pubsub requests for the service domain. The nodes live in one
:class:`~roost.modules.pubsub.engine.PubSubService`, stored under (service domain, "") by the same
node store as PEP; notifications come from the service domain.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from roost.config.schema import ModuleOptions, ServiceDomain
from roost.core import hooks
from roost.core.hooks import DiscoItemsEvent, ServerEvent, StanzaEvent, UserEvent
from roost.core.host import Host
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook
from roost.jid import JID, JIDError, prepare_domain
from roost.modules.disco import info_element
from roost.modules.pubsub.config import PUBSUB, PUBSUB_OWNER, SUBSCRIBE_AUTHORIZATION, Limits
from roost.modules.pubsub.engine import FEATURE_SUFFIXES, Notice, Outcome, PubSubService, Requester
from roost.modules.pubsub.store import NodeStore
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DATA_FORMS, DISCO_INFO, DISCO_ITEMS, PING

if TYPE_CHECKING:
    from roost.core.server import Server

#: Ids of notification messages: one per notification (its copies share it, so that one serialization
#: can serve every recipient), unique per server run and cheap.
_MESSAGE_IDS = itertools.count(1)
SHIM = "http://jabber.org/protocol/shim"  # XEP-0131 headers
log = logging.getLogger("roost.mod.pubsub")

SERVICE_FEATURES = (
    DISCO_INFO,
    DISCO_ITEMS,
    PING,
    *(
        PUBSUB + suffix
        for suffix in (
            *FEATURE_SUFFIXES,
            "#collections",
            "#get-pending",
            "#instant-nodes",
            "#meta-data",
            "#multi-collection",
        )
    ),
)


class PubSubOptions(ModuleOptions):
    """A XEP-0060 PubSub service on its own domain (docs/pubsub.md)."""

    domain: ServiceDomain = Field(
        "",
        description="Domain of the PubSub service. Empty: 'pubsub.' + the first of server.domains "
        "(pubsub.localhost with the built-in defaults). Clients find it in the server's disco#items.",
        examples=["pubsub.example.org"],
    )
    name: str = Field("Publish-Subscribe", description="Name of the service shown in service discovery.")
    create_nodes: Literal["anyone", "local", "admins"] = Field(
        "local",
        description="Who may create nodes: 'anyone' (also users of other servers), 'local' (users of "
        "server.domains) or 'admins' (server.admins only). Server admins always may, and may manage "
        "every node.",
    )
    max_items: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most items one node may keep (what pubsub#max_items = 'max' means).",
    )
    default_max_items: int = Field(
        32, ge=1, le=1_000_000, description="pubsub#max_items of a node created without saying."
    )
    max_payload_bytes: int = Field(
        65_536,
        ge=256,
        le=16 * 1024 * 1024,
        description="Largest item payload (bytes of XML); larger ones get `<not-acceptable/>` with "
        "`<payload-too-big/>`.",
    )
    max_nodes: int = Field(
        10_000, ge=1, le=10_000_000, description="Most nodes on the service (`<max-nodes-exceeded/>` beyond)."
    )
    max_nodes_per_user: int = Field(
        100,
        ge=0,
        le=1_000_000,
        description="Most nodes one user may own (0: no limit; server admins are exempt).",
    )
    max_subscriptions: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Most subscriptions one node accepts (`<too-many-subscriptions/>`).",
    )


class PubSubRuntime:
    """The one PubSub service of a server: its host, engine, storage and delivery."""

    def __init__(self, server: Server, options: PubSubOptions) -> None:
        domains = server.config.server.domains
        self.server = server
        self.options = options
        self.domain = options.domain or prepare_domain(f"pubsub.{domains[0]}")
        if self.domain in domains:
            raise ValueError(f"[pubsub] domain {self.domain!r} is also in server.domains; pick another")
        self.served = frozenset(domains)
        self.admins = frozenset(server.config.server.admins)
        limits = Limits(
            max_items=options.max_items,
            default_max_items=min(options.default_max_items, options.max_items),
            max_payload_bytes=options.max_payload_bytes,
            max_nodes=options.max_nodes,
            max_subscriptions=options.max_subscriptions,
            max_nodes_per_user=options.max_nodes_per_user,
        )
        self.service = PubSubService(JID(None, self.domain, prepared=True), limits)
        self.host = Host(server, self.domain, kind="service")
        self.store = NodeStore(server.storage, server.spawn)
        self.users = 0
        self._undo: list[Any] = []

    async def start(self) -> None:
        if self.domain in self.server.hosts:
            raise ValueError(f"[pubsub] domain {self.domain!r} is already served by something else")
        await self.store.load((self.domain, ""), self.service)
        iq = self.host.iq
        for type_, ns, name, handler in (
            ("get", PUBSUB, "pubsub", self.pubsub_get),
            ("set", PUBSUB, "pubsub", self.pubsub_set),
            ("get", PUBSUB_OWNER, "pubsub", self.pubsub_get),
            ("set", PUBSUB_OWNER, "pubsub", self.pubsub_set),
            ("get", DISCO_INFO, "query", self.disco_info),
            ("get", DISCO_ITEMS, "query", self.disco_items),
            ("get", PING, "ping", self.pong),
        ):
            self._undo.append(iq.register(type_, ns, name, Target.HOST, handler))
        self._undo.append(self.host.bus.on(hooks.MESSAGE_HOST, self.on_message))
        self._undo.append(self.host.bus.on(hooks.SERVER_STOPPING, self.on_stopping))
        self.server.hosts[self.domain] = self.host
        log.info("PubSub service %s started (%d nodes)", self.domain, len(self.service.nodes))

    async def stop(self) -> None:
        await self.store.flush()
        for undo in self._undo:
            undo()
        self._undo.clear()
        if not self.server.stopping and self.server.hosts.get(self.domain) is self.host:
            del self.server.hosts[self.domain]

    async def on_stopping(self, event: ServerEvent) -> None:
        await self.store.flush()

    # -- requests ----------------------------------------------------------------------------------------
    def requester(self, jid: JID) -> Requester:
        bare = str(jid.bare)
        admin = bare in self.admins
        policy = self.options.create_nodes
        may_create = admin or policy == "anyone" or (policy == "local" and jid.domain in self.served)
        return Requester(jid, admin=admin, may_create=may_create)

    def pubsub_get(self, event: StanzaEvent) -> Element | None:
        return self._run(event, "get")

    def pubsub_set(self, event: StanzaEvent) -> Element | None:
        return self._run(event, "set")

    def _run(self, event: StanzaEvent, type_: str) -> Element | None:
        payload = event.stanza.first()
        assert payload is not None
        outcome = self.service.handle(self.requester(event.frm), type_, payload)
        self.commit(outcome)
        return outcome.result

    def commit(self, outcome: Outcome) -> None:
        self.store.record((self.domain, ""), self.service, outcome)
        for notice in outcome.notices:
            self.send(notice)

    def send(self, notice: Notice) -> None:
        """Each recipient at the JID it subscribed with; ``presence_based_delivery`` skips local
        accounts that are offline (remote ones: the XEP leaves it to presence we do not have)."""
        template = Element(
            "message",
            CLIENT,
            {"from": self.domain, "type": notice.message_type, "id": f"ps-{next(_MESSAGE_IDS):x}"},
        )
        template.append(notice.event)
        if notice.collection is not None:  # XEP-0248 §3.3: delivered through a collection
            headers = template.add("headers", SHIM)
            headers.add("header", attrs={"name": "Collection"}).text = notice.collection
        presence_based = notice.config is not None and notice.config.presence_based_delivery
        sessions = self.server.sessions
        for to in dict.fromkeys(notice.recipients):
            if presence_based:
                try:
                    jid = JID.parse(to)
                except JIDError:
                    continue
                if jid.domain in self.served and not any(
                    s.available for s in sessions.resources(jid.domain, jid.local or "")
                ):
                    continue
            message = template.shallow_copy()
            message.attrs["to"] = to
            self.server.router.send(message)

    def on_message(self, event: StanzaEvent) -> bool:
        """An owner's answer to a subscription approval form (XEP-0060 §8.6.2)."""
        if event.stanza.attrs.get("type") == "error":
            return True
        for x in event.stanza.elements("x", DATA_FORMS):
            form_type = next(
                (
                    f.find_text("value", DATA_FORMS)
                    for f in x.elements("field", DATA_FORMS)
                    if f.get("var") == "FORM_TYPE"
                ),
                None,
            )
            if form_type == SUBSCRIBE_AUTHORIZATION and x.get("type") == "submit":
                try:
                    self.commit(self.service.authorize(self.requester(event.frm), x))
                except StanzaError as e:
                    self.server.router.send(_error_message(event, e))
                return True
        return False

    # -- disco (XEP-0060 §5) -----------------------------------------------------------------------------
    def disco_info(self, event: StanzaEvent) -> Element:
        node = event.stanza.first().get("node")  # type: ignore[union-attr]
        if not node:
            return info_element(None, [("pubsub", "service", self.options.name)], set(SERVICE_FEATURES), [])
        identities, form = self.service.node_info(self.requester(event.frm), node)
        return info_element(node, identities, set(), [form])

    def disco_items(self, event: StanzaEvent) -> Element:
        node = event.stanza.first().get("node")  # type: ignore[union-attr]
        query = Element("query", DISCO_ITEMS, {"node": node} if node else None)
        req = self.requester(event.frm)
        if not node:
            for found in self.service.visible_nodes(req, parent=""):
                attrs = {"jid": self.domain, "node": found.name}
                if found.config.title:
                    attrs["name"] = found.config.title
                query.add("item", attrs=attrs)
        elif self.service.is_collection(node):
            for child in self.service.visible_nodes(req, parent=node):  # XEP-0248 §3.2
                query.add("item", attrs={"jid": self.domain, "node": child.name})
        else:
            for item_id in self.service.node_item_ids(req, node):
                query.add("item", attrs={"jid": self.domain, "name": item_id})
        return query

    def pong(self, event: StanzaEvent) -> None:
        return None

    async def forget(self, bare: str) -> None:
        """An account was deleted: its subscriptions and affiliations go; nodes it alone owned too."""
        outcome = self.service.forget_subscriber(bare)
        for node in list(self.service.nodes.values()):
            if node.affiliations.get(bare) == "owner":
                del node.affiliations[bare]
                if not node.owners():
                    self.service.remove_node(node.name, outcome)
                else:
                    outcome.meta.add(node.name)
        self.commit(outcome)


def _error_message(event: StanzaEvent, error: StanzaError) -> Element:
    return error_reply(event.stanza, error)


_RUNTIMES: weakref.WeakKeyDictionary[Server, PubSubRuntime] = weakref.WeakKeyDictionary()


def find_runtime(server: Server) -> PubSubRuntime | None:
    return _RUNTIMES.get(server)


class PubSub(Module):
    """XEP-0060 PubSub service on its own domain."""

    name = "pubsub"
    xeps = (
        Xep(
            60,
            "1.30.0",
            status="partial",
            note="leaf and collection nodes on a service domain",
        ),
        Xep(
            248,
            "0.5.0",
            status="partial",
            note="collections with several parents, subscription type and depth, SHIM collection header; "
            "no root collection, children_max or association policies",
        ),
    )
    Options = PubSubOptions
    options: PubSubOptions

    async def start(self) -> None:
        runtime = _RUNTIMES.get(self.server)
        if runtime is None:
            runtime = PubSubRuntime(self.server, self.options)
            await runtime.start()
            _RUNTIMES[self.server] = runtime
        runtime.users += 1
        self.runtime = runtime

    async def stop(self) -> None:
        self.runtime.users -= 1
        if self.runtime.users <= 0:
            await self.runtime.stop()
            _RUNTIMES.pop(self.server, None)

    @hook(hooks.DISCO_ITEMS_HOST)
    def disco_items(self, event: DiscoItemsEvent) -> None:
        if not event.node:
            event.items.append((self.runtime.domain, None, self.options.name))

    @hook(hooks.USER_DELETED)
    async def forget(self, event: UserEvent) -> None:
        await self.runtime.forget(f"{event.username}@{event.domain}")
