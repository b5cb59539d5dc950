"""A XEP-0060 publish-subscribe service: nodes, items, subscriptions, affiliations. Pure.

One :class:`PubSubService` serves either a PEP account (XEP-0163: the account's bare JID is the
service and the owner of every node) or a shared service domain. Its methods take the requester and
the ``<pubsub/>`` payload of an IQ and return an :class:`Outcome`: the result payload, the
notifications to send (each with its recipients) and what changed for storage. The module owns the
I/O: it resolves roster relations into :class:`Requester`, sends, and writes.

Privileges follow the affiliation table of §4.1 and the access models of §4.5; where the XEP leaves
room, the choice is noted at the spot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

from roost.jid import JID, JIDError
from roost.modules.muc.forms import add_field, new_form
from roost.modules.pubsub.config import (
    ACCESS_MODELS,
    META_DATA,
    PUBSUB,
    PUBSUB_EVENT,
    PUBSUB_OWNER,
    Limits,
    NodeConfig,
    SubOptions,
    apply_form,
    apply_options,
    config_form,
    default_config,
    options_form,
    pubsub_error,
    read_publish_options,
    unmet_precondition,
)
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS
from roost.xml.serializer import serialize

RSM: Final = "http://jabber.org/protocol/rsm"
CHILDREN: Final = "pubsub#children"  # XEP-0248: a collection's child nodes (derived, read-only here)
AFFILIATIONS: Final = ("owner", "publisher", "publish-only", "member", "none", "outcast")
#: Affiliations that may retrieve items of a whitelist node (§4.1, §4.5).
_READERS: Final = frozenset({"owner", "publisher", "member"})
_PUBLISHERS: Final = frozenset({"owner", "publisher", "publish-only"})
#: Access models offered by a shared service: presence and roster need an owner's roster (PEP only).
SERVICE_ACCESS_MODELS: Final = ("open", "authorize", "whitelist")


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, and what the module found out about them (the engine does no I/O).

    ``presence``: subscribed to the PEP owner's presence ('from'/'both' in the owner's roster);
    ``groups``: the owner's roster groups the requester is in; ``may_create``: service policy.
    """

    jid: JID
    admin: bool = False
    presence: bool = False
    groups: frozenset[str] = frozenset()
    may_create: bool = True

    @property
    def bare(self) -> str:
        return str(self.jid.bare)


@dataclass(slots=True)
class Item:
    id: str
    payload: Element | None
    publisher: str
    timestamp: float


@dataclass(slots=True)
class Subscription:
    jid: str
    subid: str
    state: str = "subscribed"  # "subscribed" | "pending"
    options: SubOptions = field(default_factory=SubOptions)


@dataclass(slots=True)
class Node:
    name: str
    config: NodeConfig
    affiliations: dict[str, str] = field(default_factory=dict)
    #: Subscriber JID (as subscribed: bare or full) → subscription.
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    #: Items in publication order, oldest first (a re-published id moves to the end, §7.1.2).
    items: dict[str, Item] = field(default_factory=dict)
    created: float = 0.0
    creator: str = ""

    def last_item(self) -> Item | None:
        return next(reversed(self.items.values()), None) if self.items else None

    def owners(self) -> list[str]:
        return [j for j, a in self.affiliations.items() if a == "owner"]

    def meta_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "affiliations": dict(self.affiliations),
            "subscriptions": [
                {"jid": s.jid, "subid": s.subid, "state": s.state, "options": s.options.to_json()}
                for s in self.subscriptions.values()
            ],
            "created": self.created,
            "creator": self.creator,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Node:
        node = cls(name, NodeConfig.from_json(data.get("config") or {}))
        node.affiliations = {str(k): str(v) for k, v in (data.get("affiliations") or {}).items()}
        for sub in data.get("subscriptions") or ():
            s = Subscription(str(sub["jid"]), str(sub["subid"]), str(sub.get("state", "subscribed")))
            s.options = SubOptions.from_json(sub.get("options"))
            node.subscriptions[s.jid] = s
        node.created = float(data.get("created") or 0.0)
        node.creator = str(data.get("creator") or "")
        return node


@dataclass(slots=True)
class Notice:
    """One notification (a ``<message/>`` with ``event``) to send to ``recipients``.

    ``node``/``access`` let a PEP module add the owner's +notify contacts allowed by the access
    model; ``to_notify`` is False for notices meant only for the listed recipients.
    """

    node: str
    event: Element
    recipients: list[str]
    message_type: str = "headline"
    to_notify: bool = True
    #: The requester's presence/groups must still allow access (PEP +notify filtering).
    config: NodeConfig | None = None
    #: For an items event: its item id (PEP last-item bookkeeping, XEP-0163 §4.3).
    item_id: str | None = None
    #: For an items event: the full JID that published it (XEP-0163 §4.3.1 rule 3 'replyto').
    publisher: str | None = None
    #: Delivered through this collection (XEP-0248 §3.3): a SHIM 'Collection' header names it.
    collection: str | None = None


@dataclass(slots=True)
class Outcome:
    """What an operation produced: the IQ result payload, notifications, and what to write."""

    result: Element | None = None
    notices: list[Notice] = field(default_factory=list)
    #: Names of nodes whose meta-data (config, affiliations, subscriptions) changed.
    meta: set[str] = field(default_factory=set)
    #: (node, item id) → item (None: deleted) to write.
    items: dict[tuple[str, str], Item | None] = field(default_factory=dict)
    #: Nodes deleted (their meta and items go).
    deleted: set[str] = field(default_factory=set)
    #: Nodes created by this operation.
    created: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.meta or self.items or self.deleted)


def _bool_attr(value: str | None) -> bool | None:
    if value is None:
        return None
    return value in ("1", "true")


def _subid() -> str:
    return uuid.uuid4().hex


class PubSubService:
    """The nodes of one service: a PEP account (``pep_owner``) or a service domain."""

    def __init__(
        self,
        jid: JID,
        limits: Limits,
        *,
        pep_owner: str | None = None,
        access_models: Iterable[str] | None = None,
        default_access: str | None = None,
        new_id: Callable[[], str] = _subid,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.jid = jid
        self.limits = limits
        self.pep_owner = pep_owner
        self.access_models = tuple(access_models or (ACCESS_MODELS if pep_owner else SERVICE_ACCESS_MODELS))
        #: XEP-0163 §4.5: PEP nodes default to the presence access model.
        self.default_access = default_access or ("presence" if pep_owner else "open")
        self.new_id = new_id
        self.now = now
        self.nodes: dict[str, Node] = {}

    # -- helpers ----------------------------------------------------------------------------------------
    def default_config(self) -> NodeConfig:
        return default_config(self.limits, access_model=self.default_access)

    def affiliation(self, node: Node, bare: str) -> str:
        if self.pep_owner is not None and bare == self.pep_owner:
            return "owner"
        return node.affiliations.get(bare, "none")

    def _node(self, name: str | None) -> Node:
        if not name:
            raise pubsub_error("bad-request", "nodeid-required")
        node = self.nodes.get(name)
        if node is None:
            raise StanzaError("item-not-found", f"no node {name!r}")
        return node

    def access_error(self, node: Node, req: Requester) -> StanzaError | None:
        """Why ``req`` may not retrieve items of (or subscribe to) ``node`` (§4.5, §6.1.3, §6.5.9)."""
        aff = self.affiliation(node, req.bare)
        if aff == "outcast":
            return StanzaError("forbidden", "you are banned from this node")
        if aff in _READERS or req.admin:
            return None
        if aff == "publish-only":
            return StanzaError("forbidden", "publish-only entities may not retrieve items")
        model = node.config.access_model
        if model == "open":
            return None
        if model == "presence":
            if req.presence:
                return None
            return pubsub_error("not-authorized", "presence-subscription-required")
        if model == "roster":
            if req.groups & set(node.config.roster_groups_allowed):
                return None
            return pubsub_error("not-authorized", "not-in-roster-group")
        if model == "authorize":
            subs = [s for s in self._subs_of(node, req.jid) if s.state == "subscribed"]
            if subs:
                return None
            return pubsub_error("not-authorized", "not-subscribed")
        return pubsub_error("not-allowed", "closed-node")  # whitelist

    def may_access(self, node: Node, req: Requester) -> bool:
        return self.access_error(node, req) is None

    def _subs_of(self, node: Node, jid: JID) -> list[Subscription]:
        out = []
        for key in (str(jid), str(jid.bare)):
            sub = node.subscriptions.get(key)
            if sub is not None and sub not in out:
                out.append(sub)
        return out

    def _may_publish(self, node: Node, req: Requester) -> bool:
        aff = self.affiliation(node, req.bare)
        if aff == "outcast":
            return False
        if aff in _PUBLISHERS or req.admin:
            return True
        model = node.config.publish_model
        if model == "open":
            return True
        if model == "subscribers":
            return any(s.state == "subscribed" for s in self._subs_of(node, req.jid))
        return False

    def _is_owner(self, node: Node, req: Requester) -> bool:
        return req.admin or self.affiliation(node, req.bare) == "owner"

    def owned_by(self, bare: str) -> int:
        return sum(1 for n in self.nodes.values() if n.affiliations.get(bare) == "owner")

    # -- dispatch ---------------------------------------------------------------------------------------
    def handle(self, req: Requester, iq_type: str, payload: Element) -> Outcome:
        """Carry out one ``<pubsub/>`` or ``<pubsub xmlns='…#owner'/>`` IQ payload."""
        children = list(payload.elements())
        if not children:
            raise StanzaError("bad-request", "empty pubsub request")
        first = children[0]
        owner_ns = payload.ns == PUBSUB_OWNER
        key = (iq_type, owner_ns, first.name)
        if key == ("set", False, "create"):
            return self.create(req, first, payload.find("configure", PUBSUB))
        if key == ("set", False, "publish"):
            return self.publish(req, first, payload.find("publish-options", PUBSUB))
        if key == ("set", False, "retract"):
            return self.retract(req, first)
        if key == ("set", False, "subscribe"):
            return self.subscribe(req, first, payload.find("options", PUBSUB))
        if key == ("set", False, "unsubscribe"):
            return self.unsubscribe(req, first)
        if key == ("get", False, "items"):
            return Outcome(self.items(req, first, payload.find("set", RSM)))
        if key == ("get", False, "subscriptions"):
            return Outcome(self.own_subscriptions(req, first.get("node")))
        if key == ("get", False, "affiliations"):
            return Outcome(self.own_affiliations(req, first.get("node")))
        if first.name == "options" and not owner_ns:
            return self.options(req, first, iq_type)
        if key == ("get", False, "default"):
            return Outcome(self._sub_default())
        if key == ("get", True, "configure"):
            return Outcome(self.get_config(req, first.get("node")))
        if key == ("set", True, "configure"):
            return self.set_config(req, first)
        if key == ("get", True, "default"):
            return Outcome(self.node_default())
        if key == ("set", True, "delete"):
            return self.delete(req, first)
        if key == ("set", True, "purge"):
            return self.purge(req, first.get("node"))
        if key == ("get", True, "subscriptions"):
            return Outcome(self.get_subscriptions(req, first.get("node")))
        if key == ("set", True, "subscriptions"):
            return self.set_subscriptions(req, first)
        if key == ("get", True, "affiliations"):
            return Outcome(self.get_affiliations(req, first.get("node")))
        if key == ("set", True, "affiliations"):
            return self.set_affiliations(req, first)
        raise StanzaError("feature-not-implemented", f"pubsub {iq_type} <{first.name}/> is not supported")

    # -- create (§8.1) ----------------------------------------------------------------------------------
    def create(self, req: Requester, create: Element, configure: Element | None) -> Outcome:
        name = create.get("node")
        instant = not name
        if self.pep_owner is not None and req.bare != self.pep_owner:
            raise StanzaError("forbidden", "only the account may create nodes in its PEP service")
        if not req.may_create and not req.admin:
            raise StanzaError("forbidden", "you may not create nodes on this service")
        if instant:
            name = self.new_id()
        assert name is not None
        if name in self.nodes:
            raise StanzaError("conflict", f"node {name!r} already exists")
        self._check_quota(req)
        config = self.default_config()
        form = configure.find("x", DATA_FORMS) if configure is not None else None
        if form is not None:
            config = apply_form(config, form, self.limits, self.access_models)
        self._check_graph(req, name, config)
        out = Outcome()
        self._add_node(name, config, req, out)
        self._association_notices(name, (), config.collection, out)
        if instant:
            out.result = _wrap(PUBSUB, Element("create", PUBSUB, {"node": name}))
        return out

    def _check_quota(self, req: Requester) -> None:
        if req.admin:
            return
        if len(self.nodes) >= self.limits.max_nodes:
            raise pubsub_error(
                "not-allowed", "max-nodes-exceeded", f"at most {self.limits.max_nodes} nodes here"
            )
        per_user = self.limits.max_nodes_per_user
        if per_user and self.pep_owner is None and self.owned_by(req.bare) >= per_user:
            raise pubsub_error("not-allowed", "max-nodes-exceeded", f"at most {per_user} nodes per user")

    def _add_node(self, name: str, config: NodeConfig, req: Requester, out: Outcome) -> Node:
        node = Node(name, config, created=self.now(), creator=req.bare)
        node.affiliations[self.pep_owner or req.bare] = "owner"
        self.nodes[name] = node
        out.meta.add(name)
        out.created.add(name)
        return node

    # -- publish (§7.1) ---------------------------------------------------------------------------------
    def publish(self, req: Requester, publish: Element, publish_options: Element | None) -> Outcome:
        name = publish.get("node")
        if not name:
            raise pubsub_error("bad-request", "nodeid-required")
        items = list(publish.elements("item", PUBSUB))
        if len(items) > 1:
            raise pubsub_error("bad-request", "invalid-payload", "publish one item per request")
        wanted: dict[str, Any] = {}
        if publish_options is not None:
            wanted = read_publish_options(
                publish_options.find("x", DATA_FORMS), self.limits, self.access_models
            )
        out = Outcome()
        node = self.nodes.get(name)
        if node is None:
            # §7.1.4 auto-create, with the preconditions as configuration (§7.1.5 rule 3).
            if self.pep_owner is not None and req.bare != self.pep_owner:
                raise StanzaError("item-not-found", f"no node {name!r}")
            if not req.may_create and not req.admin:
                raise StanzaError("item-not-found", f"no node {name!r}")
            self._check_quota(req)
            config = replace(self.default_config(), **wanted)
            if config.node_type == "collection":
                raise _unsupported("publish", "collections hold nodes, not items (XEP-0248 §2)")
            self._check_graph(req, name, config)
        else:
            if node.config.node_type == "collection":
                raise _unsupported("publish", "collections hold nodes, not items (XEP-0248 §2)")
            if not self._may_publish(node, req):
                raise StanzaError("forbidden", "you may not publish to this node")
            unmet = unmet_precondition(node.config, wanted, self.limits)
            if unmet is not None:
                raise pubsub_error("conflict", "precondition-not-met", f"the node's {unmet} differs")
            config = node.config
        element = items[0] if items else None
        payload = self._check_payload(config, element)
        item_id = (element.get("id") if element is not None else None) or self.new_id()
        limit_items = config.items_limit(self.limits)
        if (
            node is not None
            and config.persist_items
            and config.publish_full_node == "reject"
            and item_id not in node.items
            and len(node.items) >= limit_items
        ):
            raise pubsub_error("conflict", "node-full", f"the node holds at most {limit_items} items")
        if node is None:  # nothing can fail any more: create it now
            node = self._add_node(name, config, req, out)
            self._association_notices(name, (), config.collection, out)
        item = Item(item_id, payload.copy() if payload is not None else None, str(req.jid), self.now())
        if config.persist_items:
            node.items.pop(item_id, None)
            node.items[item_id] = item
            out.items[(name, item_id)] = item
            while len(node.items) > limit_items:
                oldest = next(iter(node.items))
                del node.items[oldest]
                out.items[(name, oldest)] = None
        else:
            # A transient node keeps nothing but the last item, for send_last_published_item (§4.3).
            node.items = {item_id: item}
        out.result = _wrap(PUBSUB, Element("publish", PUBSUB, {"node": name}))
        out.result.first().add("item", attrs={"id": item_id})  # type: ignore[union-attr]
        if config.deliver_notifications:
            notice = self._item_notice(node, [item])
            out.notices.append(notice)
            out.notices += self._collection_notices(node, notice.event, "items", notice.recipients)
        return out

    def _check_payload(self, config: NodeConfig, element: Element | None) -> Element | None:
        """The item's one payload, checked against the node and the limits (§7.1.3)."""
        payloads = list(element.elements()) if element is not None else []
        if len(payloads) > 1:
            raise pubsub_error("bad-request", "invalid-payload", "an item carries exactly one payload")
        payload = payloads[0] if payloads else None
        if payload is None:
            if config.persist_items or config.deliver_payloads:
                raise pubsub_error("bad-request", "item-required" if element is None else "payload-required")
            return None
        if config.type and payload.ns != config.type:
            raise pubsub_error("bad-request", "invalid-payload", f"payloads here are {config.type}")
        size = _size(payload)
        limit = self.limits.max_payload_bytes
        if config.max_payload_size:
            limit = min(limit, config.max_payload_size)
        if size > limit:
            raise pubsub_error(
                "not-acceptable", "payload-too-big", f"payload is {size} bytes; the limit is {limit}"
            )
        return payload

    def item_event(self, node: Node, items: list[Item]) -> Element:
        """``<event><items node=…><item id=…>payload</item></items></event>`` (§7.1.2.1)."""
        event = Element("event", PUBSUB_EVENT)
        wrapper = event.add("items", attrs={"node": node.name})
        for item in items:
            attrs = {"id": item.id}
            el = wrapper.add("item", attrs=attrs)
            if node.config.deliver_payloads and item.payload is not None:
                el.append(item.payload.copy())
        return event

    def _item_notice(self, node: Node, items: list[Item]) -> Notice:
        return Notice(
            node.name,
            self.item_event(node, items),
            self._delivery_targets(node),
            node.config.notification_type,
            config=node.config,
            item_id=items[-1].id if items else None,
            publisher=items[-1].publisher if items else None,
        )

    def _delivery_targets(self, node: Node) -> list[str]:
        """Subscribers who get notifications (subscribed, pubsub#deliver on, not outcast)."""
        out = []
        for sub in node.subscriptions.values():
            if sub.state != "subscribed" or not sub.options.deliver:
                continue
            try:
                bare = str(JID.parse(sub.jid).bare)
            except JIDError:
                continue
            if self.affiliation(node, bare) == "outcast":
                continue
            out.append(sub.jid)
        return out

    # -- retract (§7.2) and purge (§8.5) ----------------------------------------------------------------
    def retract(self, req: Requester, retract: Element) -> Outcome:
        node = self._node(retract.get("node"))
        elements = list(retract.elements("item", PUBSUB))
        if not elements or not elements[0].get("id"):
            raise pubsub_error("bad-request", "item-required")
        aff = self.affiliation(node, req.bare)
        out = Outcome()
        removed = []
        for element in elements:
            item_id = element.get("id", "")
            item = node.items.get(item_id)
            if item is None:
                raise StanzaError("item-not-found", f"no item {item_id!r}")
            own = JID.parse(item.publisher).bare == req.jid.bare if item.publisher else False
            allowed = req.admin or aff in ("owner", "publisher") or (aff == "publish-only" and own)
            if not allowed:
                raise StanzaError("forbidden", "you may not retract this item")
            removed.append(item)
        for item in removed:
            del node.items[item.id]
            out.items[(node.name, item.id)] = None
        notify = _bool_attr(retract.get("notify"))
        if (node.config.notify_retract if notify is None else notify) and node.config.deliver_notifications:
            event = Element("event", PUBSUB_EVENT)
            wrapper = event.add("items", attrs={"node": node.name})
            for item in removed:
                wrapper.add("retract", attrs={"id": item.id})
            targets = self._delivery_targets(node)
            out.notices.append(
                Notice(node.name, event, targets, node.config.notification_type, config=node.config)
            )
            out.notices += self._collection_notices(node, event, "items", targets)
        return out

    def purge(self, req: Requester, name: str | None) -> Outcome:
        node = self._node(name)
        if node.config.node_type == "collection":
            raise _unsupported("persistent-items", "collections hold no items (XEP-0248 §2)")
        aff = self.affiliation(node, req.bare)
        if not (req.admin or aff in ("owner", "publisher")):
            raise StanzaError("forbidden", "only owners and publishers may purge")
        out = Outcome()
        for item_id in node.items:
            out.items[(node.name, item_id)] = None
        node.items.clear()
        if node.config.notify_retract and node.config.deliver_notifications:
            event = Element("event", PUBSUB_EVENT)
            event.add("purge", attrs={"node": node.name})
            targets = self._delivery_targets(node)
            out.notices.append(
                Notice(node.name, event, targets, node.config.notification_type, config=node.config)
            )
            out.notices += self._collection_notices(node, event, "items", targets)
        return out

    # -- delete (§8.4) ----------------------------------------------------------------------------------
    def delete(self, req: Requester, delete: Element) -> Outcome:
        node = self._node(delete.get("node"))
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may delete a node")
        out = Outcome()
        if node.config.notify_delete:
            event = Element("event", PUBSUB_EVENT)
            d = event.add("delete", attrs={"node": node.name})
            redirect = delete.find("redirect", PUBSUB_OWNER)
            if redirect is not None and redirect.get("uri"):
                d.add("redirect", attrs={"uri": redirect.get("uri")})
            out.notices.append(
                Notice(
                    node.name,
                    event,
                    self._delivery_targets(node),
                    node.config.notification_type,
                    config=node.config,
                )
            )
        self._association_notices(node.name, node.config.collection, (), out)
        self.remove_node(node.name, out)
        for child in self.children(node.name):  # XEP-0248 §7.3: children are left without this parent
            child.config = replace(
                child.config, collection=tuple(c for c in child.config.collection if c != node.name)
            )
            out.meta.add(child.name)
        return out

    def remove_node(self, name: str, out: Outcome) -> None:
        self.nodes.pop(name, None)
        out.deleted.add(name)
        out.meta.discard(name)
        for key in [k for k in out.items if k[0] == name]:
            del out.items[key]

    # -- subscribe (§6.1), unsubscribe (§6.2), options (§6.3) ------------------------------------------
    def subscribe(self, req: Requester, subscribe: Element, options: Element | None) -> Outcome:
        name = subscribe.get("node")
        jid = self._subscriber_jid(req, subscribe.get("jid"))
        node = self._node(name)
        if not node.config.subscribe:
            raise pubsub_error(
                "feature-not-implemented", "unsupported", "subscriptions are off here", feature="subscribe"
            )
        aff = self.affiliation(node, req.bare)
        error = self.access_error(node, req)
        pending = False
        if error is not None:
            if node.config.access_model != "authorize" or aff in ("outcast", "publish-only"):
                raise error
            pending = True
        existing = node.subscriptions.get(str(jid))
        # Options are checked before anything changes: a refused request leaves no trace.
        form = options.find("x", DATA_FORMS) if options is not None else None
        chosen = (
            apply_options(existing.options if existing else SubOptions(), form) if form is not None else None
        )
        out = Outcome()
        if existing is None:
            if len(node.subscriptions) >= self.limits.max_subscriptions:
                raise pubsub_error(
                    "policy-violation",
                    "too-many-subscriptions",
                    f"the node has {self.limits.max_subscriptions} subscribers already",
                )
            existing = Subscription(str(jid), self.new_id(), "pending" if pending else "subscribed")
            node.subscriptions[existing.jid] = existing
            out.meta.add(node.name)
            if pending:
                out.notices.append(self._authorization_request(node, existing))
            elif node.config.notify_sub:
                out.notices.append(self._sub_notice(node, existing))
        if chosen is not None:
            existing.options = chosen
            out.meta.add(node.name)
        result = _wrap(PUBSUB, _subscription_el(existing, node.name))
        out.result = result
        if existing.state == "subscribed" and node.config.send_last_published_item != "never":
            last = node.last_item()
            if last is not None and existing.options.deliver:
                out.notices.append(
                    Notice(
                        node.name,
                        self.item_event(node, [last]),
                        [existing.jid],
                        node.config.notification_type,
                        to_notify=False,
                        item_id=last.id,
                    )
                )
        return out

    def _subscriber_jid(self, req: Requester, text: str | None) -> JID:
        if not text:
            raise pubsub_error("bad-request", "jid-required")
        try:
            jid = JID.parse(text)
        except JIDError:
            raise pubsub_error("bad-request", "invalid-jid") from None
        if jid.bare != req.jid.bare and not req.admin:
            raise pubsub_error("bad-request", "invalid-jid", "the JID must be your own")  # §6.1.3.1
        return jid

    def _authorization_request(self, node: Node, sub: Subscription) -> Notice:
        """The subscription approval form sent to the owners (§8.6.1)."""
        x = new_form(
            "form",
            "http://jabber.org/protocol/pubsub#subscribe_authorization",
            title="PubSub subscriber request",
        )
        add_field(x, "pubsub#subid", "hidden", values=[sub.subid])
        add_field(x, "pubsub#node", "text-single", "Node ID", values=[node.name])
        add_field(x, "pubsub#subscriber_jid", "jid-single", "Subscriber Address", values=[sub.jid])
        add_field(
            x, "pubsub#allow", "boolean", "Allow this JID to subscribe to this pubsub node?", values=["0"]
        )
        owners = [self.pep_owner] if self.pep_owner else node.owners()
        return Notice(node.name, x, owners, "normal", to_notify=False)

    def _sub_notice(self, node: Node, sub: Subscription) -> Notice:
        event = Element("event", PUBSUB_EVENT)
        event.add("subscription", attrs={"node": node.name, "jid": sub.jid, "subscription": sub.state})
        owners = [self.pep_owner] if self.pep_owner else node.owners()
        return Notice(node.name, event, owners, node.config.notification_type, to_notify=False)

    def authorize(self, req: Requester, form: Element) -> Outcome:
        """An owner's answer to a subscription request (§8.6.2)."""
        values = {
            f.get("var"): f.find_text("value", DATA_FORMS) or "" for f in form.elements("field", DATA_FORMS)
        }
        node = self._node(values.get("pubsub#node"))
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners approve subscriptions")
        sub = node.subscriptions.get(values.get("pubsub#subscriber_jid") or "")
        subid = values.get("pubsub#subid")
        if sub is None or sub.state != "pending" or (subid and subid != sub.subid):
            raise StanzaError("item-not-found", "no such pending subscription")
        out = Outcome()
        allow = (values.get("pubsub#allow") or "").lower() in ("1", "true")
        self._set_state(node, sub, "subscribed" if allow else "none", out)
        return out

    def _set_state(self, node: Node, sub: Subscription, state: str, out: Outcome) -> None:
        """Change a subscription and tell the subscriber (§8.8.4)."""
        if state == "none":
            node.subscriptions.pop(sub.jid, None)
        else:
            sub.state = state
        out.meta.add(node.name)
        event = Element("event", PUBSUB_EVENT)
        attrs = {"node": node.name, "jid": sub.jid, "subscription": state}
        if state != "none":
            attrs["subid"] = sub.subid
        event.add("subscription", attrs=attrs)
        out.notices.append(Notice(node.name, event, [sub.jid], "normal", to_notify=False))
        if state == "subscribed" and node.config.send_last_published_item != "never":
            last = node.last_item()
            if last is not None:
                out.notices.append(
                    Notice(
                        node.name,
                        self.item_event(node, [last]),
                        [sub.jid],
                        node.config.notification_type,
                        to_notify=False,
                        item_id=last.id,
                    )
                )

    def unsubscribe(self, req: Requester, unsubscribe: Element) -> Outcome:
        node = self._node(unsubscribe.get("node"))
        text = unsubscribe.get("jid")
        if not text:
            raise pubsub_error("bad-request", "jid-required")
        try:
            jid = JID.parse(text)
        except JIDError:
            raise pubsub_error("bad-request", "invalid-jid") from None
        if jid.bare != req.jid.bare and not self._is_owner(node, req):
            raise StanzaError("forbidden", "you may not unsubscribe someone else")  # §6.2.3.3
        sub = node.subscriptions.get(str(jid))
        if sub is None:
            raise pubsub_error("unexpected-request", "not-subscribed")
        subid = unsubscribe.get("subid")
        if subid and subid != sub.subid:
            raise pubsub_error("not-acceptable", "invalid-subid")
        del node.subscriptions[sub.jid]
        out = Outcome(meta={node.name})
        if node.config.notify_sub:
            event = Element("event", PUBSUB_EVENT)
            event.add("subscription", attrs={"node": node.name, "jid": sub.jid, "subscription": "none"})
            owners = [self.pep_owner] if self.pep_owner else node.owners()
            out.notices.append(
                Notice(node.name, event, owners, node.config.notification_type, to_notify=False)
            )
        return out

    def options(self, req: Requester, options: Element, iq_type: str) -> Outcome:
        node = self._node(options.get("node"))
        jid = self._subscriber_jid(req, options.get("jid"))
        sub = node.subscriptions.get(str(jid))
        if sub is None:
            raise pubsub_error("unexpected-request", "not-subscribed")
        subid = options.get("subid")
        if subid and subid != sub.subid:
            raise pubsub_error("not-acceptable", "invalid-subid")
        if iq_type == "get":
            el = Element("options", PUBSUB, {"node": node.name, "jid": sub.jid, "subid": sub.subid})
            el.append(options_form(sub.options))
            return Outcome(_wrap(PUBSUB, el))
        form = options.find("x", DATA_FORMS)
        if form is None:
            raise pubsub_error("bad-request", "invalid-options", "no form")
        sub.options = apply_options(sub.options, form)
        return Outcome(meta={node.name})

    def _sub_default(self) -> Element:
        el = Element("default", PUBSUB)
        el.append(options_form(SubOptions()))
        return _wrap(PUBSUB, el)

    # -- retrieve items (§6.5) with RSM (XEP-0059) ------------------------------------------------------
    def items(self, req: Requester, items: Element, rsm: Element | None = None) -> Element:
        node = self._node(items.get("node"))
        if node.config.node_type == "collection":
            raise _unsupported("retrieve-items", "collections hold no items (XEP-0060 §6.5.9.5)")
        error = self.access_error(node, req)
        if error is not None:
            raise error
        wanted_ids = [el.get("id") for el in items.elements("item", PUBSUB) if el.get("id")]
        selected: list[Item]
        if wanted_ids:
            selected = [node.items[i] for i in wanted_ids if i in node.items]
        else:
            selected = list(node.items.values())
            max_items = items.get("max_items")
            if max_items is not None:
                try:
                    count = int(max_items)
                except ValueError:
                    raise StanzaError("bad-request", "max_items must be a number") from None
                if count < 0:
                    raise StanzaError("bad-request", "max_items must not be negative")
                selected = selected[-count:] if count else []
        page, set_el = _rsm_page(selected, rsm) if rsm is not None else (selected, None)
        wrapper = Element("items", PUBSUB, {"node": node.name})
        for item in page:
            el = wrapper.add("item", attrs={"id": item.id})
            if item.payload is not None:
                el.append(item.payload.copy())
        result = _wrap(PUBSUB, wrapper)
        if set_el is not None:
            result.append(set_el)
        return result

    # -- entity use cases (§5.6, §5.7) ------------------------------------------------------------------
    def own_subscriptions(self, req: Requester, name: str | None) -> Element:
        el = Element("subscriptions", PUBSUB, {"node": name} if name else None)
        for node in self._selected(name):
            for sub in node.subscriptions.values():
                if JID.parse(sub.jid).bare == req.jid.bare:
                    el.append(_subscription_el(sub, node.name))
        return _wrap(PUBSUB, el)

    def own_affiliations(self, req: Requester, name: str | None) -> Element:
        el = Element("affiliations", PUBSUB, {"node": name} if name else None)
        for node in self._selected(name):
            aff = self.affiliation(node, req.bare)
            if aff != "none":
                el.add("affiliation", attrs={"node": node.name, "affiliation": aff})
        return _wrap(PUBSUB, el)

    def _selected(self, name: str | None) -> list[Node]:
        if name:
            return [self._node(name)]
        return list(self.nodes.values())

    # -- configuration (§8.2, §8.3) ---------------------------------------------------------------------
    def get_config(self, req: Requester, name: str | None) -> Element:
        node = self._node(name)
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may configure a node")
        el = Element("configure", PUBSUB_OWNER, {"node": node.name})
        form = config_form(node.config, self.limits, node.name, access_models=self.access_models)
        el.append(form)
        if node.config.node_type == "collection":
            # XEP-0248 §8: the configuration reflects the graph; children follow their pubsub#collection.
            children = [c.name for c in self.children(node.name)]
            add_field(
                form, CHILDREN, "text-multi", "The nodes of which this node is a parent", values=children
            )
        return _wrap(PUBSUB_OWNER, el)

    def node_default(self) -> Element:
        el = Element("default", PUBSUB_OWNER)
        el.append(config_form(self.default_config(), self.limits, None, access_models=self.access_models))
        return _wrap(PUBSUB_OWNER, el)

    def set_config(self, req: Requester, configure: Element) -> Outcome:
        node = self._node(configure.get("node"))
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may configure a node")
        form = configure.find("x", DATA_FORMS)
        if form is None:
            raise StanzaError("bad-request", "no configuration form")
        if form.get("type") == "cancel":
            return Outcome()
        if form.get("type") != "submit":
            raise StanzaError("bad-request", "submit the form with type='submit'")
        form = self._without_children(node, form)
        config = apply_form(node.config, form, self.limits, self.access_models)
        if config.node_type != node.config.node_type:
            raise StanzaError("not-allowed", "pubsub#node_type cannot change after creation")
        self._check_graph(req, node.name, config)
        before = node.config.collection
        node.config = config
        out = Outcome(meta={node.name})
        self._association_notices(node.name, before, config.collection, out)
        self.trim(node, out)
        if node.config.notify_config and node.config.deliver_notifications:
            event = Element("event", PUBSUB_EVENT)
            c = event.add("configuration", attrs={"node": node.name})
            if node.config.deliver_payloads:
                c.append(
                    config_form(
                        node.config, self.limits, node.name, access_models=self.access_models, type_="result"
                    )
                )
            out.notices.append(
                Notice(
                    node.name,
                    event,
                    self._delivery_targets(node),
                    node.config.notification_type,
                    config=node.config,
                )
            )
        return out

    def trim(self, node: Node, out: Outcome) -> None:
        """Drop the oldest items beyond max_items (after a configuration change)."""
        limit = node.config.items_limit(self.limits) if node.config.persist_items else 1
        while len(node.items) > limit:
            oldest = next(iter(node.items))
            del node.items[oldest]
            out.items[(node.name, oldest)] = None

    # -- owner management of subscriptions (§8.8) and affiliations (§8.9) ---------------------------------
    def get_subscriptions(self, req: Requester, name: str | None) -> Element:
        node = self._node(name)
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may list subscriptions")
        el = Element("subscriptions", PUBSUB_OWNER, {"node": node.name})
        for sub in node.subscriptions.values():
            el.add("subscription", attrs={"jid": sub.jid, "subscription": sub.state, "subid": sub.subid})
        return _wrap(PUBSUB_OWNER, el)

    def set_subscriptions(self, req: Requester, subscriptions: Element) -> Outcome:
        node = self._node(subscriptions.get("node"))
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may change subscriptions")
        changes = []
        for el in subscriptions.elements("subscription", PUBSUB_OWNER):
            try:
                jid = JID.parse(el.get("jid", ""))
            except JIDError:
                raise StanzaError("bad-request", "invalid JID in subscription") from None
            state = el.get("subscription", "")
            if state not in ("subscribed", "pending", "none"):
                raise StanzaError("bad-request", f"unknown subscription state {state!r}")
            changes.append((str(jid), state))
        added = {j for j, state in changes if state != "none" and j not in node.subscriptions}
        if len(node.subscriptions) + len(added) > self.limits.max_subscriptions:
            raise pubsub_error("policy-violation", "too-many-subscriptions")
        out = Outcome()
        for jid_text, state in changes:
            sub = node.subscriptions.get(jid_text)
            if sub is None:
                if state == "none":
                    continue
                sub = Subscription(jid_text, self.new_id(), "none")
                node.subscriptions[jid_text] = sub
            if sub.state != state:
                self._set_state(node, sub, state, out)
        return out

    def get_affiliations(self, req: Requester, name: str | None) -> Element:
        node = self._node(name)
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may list affiliations")
        el = Element("affiliations", PUBSUB_OWNER, {"node": node.name})
        affs = dict(node.affiliations)
        if self.pep_owner is not None:
            affs[self.pep_owner] = "owner"
        for jid, aff in affs.items():
            el.add("affiliation", attrs={"jid": jid, "affiliation": aff})
        return _wrap(PUBSUB_OWNER, el)

    def set_affiliations(self, req: Requester, affiliations: Element) -> Outcome:
        node = self._node(affiliations.get("node"))
        if not self._is_owner(node, req):
            raise StanzaError("forbidden", "only owners may change affiliations")
        changes: dict[str, str] = {}
        for el in affiliations.elements("affiliation", PUBSUB_OWNER):
            try:
                jid = str(JID.parse(el.get("jid", "")).bare)
            except JIDError:
                raise StanzaError("bad-request", "invalid JID in affiliation") from None
            aff = el.get("affiliation", "")
            if aff not in AFFILIATIONS:
                raise StanzaError("bad-request", f"unknown affiliation {aff!r}")
            if self.pep_owner is not None and jid == self.pep_owner and aff != "owner":
                raise StanzaError("not-acceptable", "the account always owns its PEP nodes")
            changes[jid] = aff
        after = {**node.affiliations, **changes}
        if self.pep_owner is None and not any(a == "owner" for a in after.values()):
            raise StanzaError("not-acceptable", "a node keeps at least one owner")  # §8.9.2.4
        out = Outcome(meta={node.name})
        for jid, aff in changes.items():
            if aff == "none":
                node.affiliations.pop(jid, None)
            else:
                node.affiliations[jid] = aff
            if aff == "outcast":
                # §4.1: an outcast is no longer subscribed.
                for key in [k for k in node.subscriptions if JID.parse(k).bare == JID.parse(jid)]:
                    del node.subscriptions[key]
        return out

    # -- disco (§5) -------------------------------------------------------------------------------------
    def visible_nodes(self, req: Requester, parent: str | None = None) -> Iterator[Node]:
        """Nodes shown in disco#items (§5.2): those the requester may access; ``parent``: only the
        children of that collection ("": the nodes at the top, in no collection; XEP-0248 §3.2)."""
        for node in self.nodes.values():
            if parent is not None:
                parents = node.config.collection
                if (parent not in parents) if parent else bool(parents):
                    continue
            if self.may_access(node, req) or self._is_owner(node, req):
                yield node

    def is_collection(self, name: str) -> bool:
        node = self._node(name)
        return node.config.node_type == "collection"

    def node_info(self, req: Requester, name: str) -> tuple[list[tuple[str, str, str | None]], Element]:
        """Identity and meta-data form of a node (§5.3, §5.4)."""
        node = self._node(name)
        x = new_form("result", META_DATA)
        c = node.config
        add_field(x, "pubsub#title", values=[c.title] if c.title else [])
        add_field(x, "pubsub#description", values=[c.description] if c.description else [])
        add_field(x, "pubsub#type", values=[c.type] if c.type else [])
        add_field(x, "pubsub#access_model", values=[c.access_model])
        add_field(x, "pubsub#publish_model", values=[c.publish_model])
        add_field(
            x, "pubsub#owner", "jid-multi", values=[self.pep_owner] if self.pep_owner else node.owners()
        )
        add_field(x, "pubsub#num_subscribers", values=[str(len(node.subscriptions))])
        return [("pubsub", c.node_type, c.title or None)], x

    def node_item_ids(self, req: Requester, name: str) -> list[str]:
        """Item ids of a node for disco#items (§5.5)."""
        node = self._node(name)
        error = self.access_error(node, req)
        if error is not None:
            raise error
        return list(node.items)

    # -- collections (XEP-0248) -------------------------------------------------------------------------
    def children(self, name: str) -> list[Node]:
        """Nodes associated with the collection ``name``."""
        return [n for n in self.nodes.values() if name in n.config.collection]

    def _check_graph(self, req: Requester, name: str, config: NodeConfig) -> None:
        """A node's type and parents are acceptable: collections exist only on a service (not PEP),
        parents are existing collections the requester owns, and the graph stays acyclic (§8.1)."""
        if self.pep_owner is not None:
            if config.node_type == "collection" or config.collection:
                raise _unsupported("collections", "PEP services have leaf nodes only")
            return
        current = self.nodes.get(name)
        if current is not None and set(current.config.collection) == set(config.collection):
            return
        for parent_name in config.collection:
            parent = self.nodes.get(parent_name)
            if parent is None:
                raise StanzaError("item-not-found", f"no collection {parent_name!r}")
            if parent.config.node_type != "collection":
                raise pubsub_error("not-allowed", "invalid-options", f"{parent_name!r} is not a collection")
            if not self._is_owner(parent, req):
                raise StanzaError("forbidden", f"only owners of {parent_name!r} may add nodes to it")
            if parent_name == name or name in self._ancestors(parent_name):
                raise pubsub_error("not-allowed", "invalid-options", "that would make a cycle of collections")

    def _ancestors(self, name: str) -> dict[str, int]:
        """Collections above ``name``, each with its shortest distance (1: a direct parent)."""
        found: dict[str, int] = {}
        level = [name]
        depth = 0
        while level:
            depth += 1
            upper = []
            for current in level:
                node = self.nodes.get(current)
                for parent in node.config.collection if node is not None else ():
                    if parent not in found and parent in self.nodes:
                        found[parent] = depth
                        upper.append(parent)
            level = upper
        return found

    def _collection_notices(self, node: Node, event: Element, kind: str, already: list[str]) -> list[Notice]:
        """Copies of a node's event for subscribers of the collections above it whose subscription
        type and depth reach it (XEP-0248 §4.1), with the leaf's delivery options (§3.3); nobody
        gets one event twice."""
        if not node.config.collection:
            return []
        sent = set(already)
        out = []
        for name, depth in self._ancestors(node.name).items():
            collection = self.nodes[name]
            targets = []
            for sub in collection.subscriptions.values():
                if sub.jid in sent or sub.state != "subscribed" or not sub.options.deliver:
                    continue
                if not sub.options.reaches(kind, depth):
                    continue
                try:
                    jid = JID.parse(sub.jid)
                except JIDError:
                    continue
                if self.affiliation(collection, str(jid.bare)) == "outcast":
                    continue
                if kind == "items" and not self.may_access(node, Requester(jid)):
                    continue  # the leaf's own access model still decides who sees its items
                targets.append(sub.jid)
                sent.add(sub.jid)
            if targets:
                out.append(
                    Notice(
                        node.name,
                        event,
                        targets,
                        node.config.notification_type,
                        to_notify=False,
                        collection=name,
                    )
                )
        return out

    def _association_notices(
        self, name: str, before: Iterable[str], after: Iterable[str], out: Outcome
    ) -> None:
        """``<collection><associate/></collection>`` (or dissociate) events to the "nodes"
        subscribers of each collection a node joined or left (XEP-0248 §3.3.2)."""
        old, new = set(before), set(after)
        for parent_name, what in [(p, "associate") for p in new - old] + [
            (p, "dissociate") for p in old - new
        ]:
            parent = self.nodes.get(parent_name)
            if parent is None:
                continue
            targets = [
                s.jid
                for s in parent.subscriptions.values()
                if s.state == "subscribed" and s.options.deliver and s.options.reaches("nodes", 1)
            ]
            if targets:
                event = Element("event", PUBSUB_EVENT)
                event.add("collection", attrs={"node": parent_name}).add(what, attrs={"node": name})
                out.notices.append(
                    Notice(parent_name, event, targets, parent.config.notification_type, to_notify=False)
                )

    def _without_children(self, node: Node, form: Element) -> Element:
        """The submitted form without ``pubsub#children``, which may only repeat the current children:
        they join or leave through their own ``pubsub#collection``."""
        fields = [f for f in form.elements("field", DATA_FORMS) if f.get("var") == CHILDREN]
        if not fields:
            return form
        wanted = {v.text for f in fields for v in f.elements("value", DATA_FORMS) if v.text}
        if wanted != {c.name for c in self.children(node.name)}:
            raise StanzaError(
                "not-acceptable", "set pubsub#collection on the child nodes to change a collection's children"
            )
        copy = form.copy()
        for f in [f for f in copy.elements("field", DATA_FORMS) if f.get("var") == CHILDREN]:
            copy.remove(f)
        return copy

    # -- account / subscriber clean-up ------------------------------------------------------------------
    def forget_subscriber(self, bare: str) -> Outcome:
        """Remove every subscription and affiliation of ``bare`` (the account was deleted)."""
        out = Outcome()
        for node in self.nodes.values():
            for key in list(node.subscriptions):
                if key == bare or key.startswith(bare + "/"):
                    del node.subscriptions[key]
                    out.meta.add(node.name)
            if bare in node.affiliations and node.affiliations[bare] != "owner":
                del node.affiliations[bare]
                out.meta.add(node.name)
        return out


def _unsupported(feature: str, text: str) -> StanzaError:
    return pubsub_error("feature-not-implemented", "unsupported", text, feature=feature)


def _subscription_el(sub: Subscription, node: str) -> Element:
    return Element(
        "subscription", PUBSUB, {"node": node, "jid": sub.jid, "subid": sub.subid, "subscription": sub.state}
    )


def _wrap(ns: str, child: Element) -> Element:
    el = Element("pubsub", ns)
    el.append(child)
    return el


def _size(payload: Element) -> int:
    return len(serialize(payload).encode("utf-8"))


def _rsm_page(items: list[Item], rsm: Element) -> tuple[list[Item], Element]:
    """One XEP-0059 page of ``items`` (chronological) and its ``<set/>``."""
    max_text = rsm.find_text("max", RSM)
    after = rsm.find_text("after", RSM)
    before_el = rsm.find("before", RSM)
    index_text = rsm.find_text("index", RSM)
    try:
        limit = int(max_text) if max_text is not None else len(items)
        index = int(index_text) if index_text is not None else None
    except ValueError:
        raise StanzaError("bad-request", "RSM max and index are numbers") from None
    if limit < 0:
        raise StanzaError("bad-request", "RSM max must not be negative")
    ids = [i.id for i in items]
    start, end = 0, len(items)
    if after is not None:
        if after not in ids:
            raise StanzaError("item-not-found", "RSM 'after' is not in the result set")  # XEP-0059 §2.6
        start = ids.index(after) + 1
    if before_el is not None:
        if before_el.text:
            if before_el.text not in ids:
                raise StanzaError("item-not-found", "RSM 'before' is not in the result set")
            end = ids.index(before_el.text)
        page = items[start:end][-limit:] if limit else []
    elif index is not None:
        page = items[index : index + limit]
    else:
        page = items[start:end][:limit]
    set_el = Element("set", RSM)
    if page:
        set_el.add("first", attrs={"index": str(ids.index(page[0].id))}, text=page[0].id)
        set_el.add("last", text=page[-1].id)
    set_el.add("count", text=str(len(items)))
    return page, set_el


#: XEP-0060 §10 features (suffixes of the pubsub namespace) both PEP and the service implement.
FEATURE_SUFFIXES: Final = (
    "",
    "#access-authorize",
    "#access-open",
    "#access-whitelist",
    "#auto-create",
    "#config-node",
    "#create-and-configure",
    "#create-nodes",
    "#delete-items",
    "#delete-nodes",
    "#item-ids",
    "#last-published",
    "#manage-subscriptions",
    "#member-affiliation",
    "#modify-affiliations",
    "#outcast-affiliation",
    "#persistent-items",
    "#presence-notifications",
    "#publish",
    "#publish-options",
    "#publish-only-affiliation",
    "#publisher-affiliation",
    "#purge-nodes",
    "#retract-items",
    "#retrieve-affiliations",
    "#retrieve-default",
    "#retrieve-items",
    "#retrieve-subscriptions",
    "#subscribe",
    "#subscription-options",
    "#rsm",
)
