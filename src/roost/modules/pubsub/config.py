"""Node configuration of XEP-0060 (§16.4.3 pubsub#node_config): the fields, their forms, preconditions. Pure.

One table, :data:`FIELDS`, says for every ``pubsub#…`` field its kind, label and allowed values; the
configuration form (§8.2), the default form (§8.3), submitted configurations, ``publish-options``
preconditions (§7.1.5) and the JSON kept in storage are all derived from it, so a field added there
is supported everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from roost.jid import JID, JIDError
from roost.modules.muc.forms import SubmittedForm, add_field, new_form, parse_bool, read_form
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS

PUBSUB: Final = "http://jabber.org/protocol/pubsub"
PUBSUB_EVENT: Final = PUBSUB + "#event"
PUBSUB_OWNER: Final = PUBSUB + "#owner"
PUBSUB_ERRORS: Final = PUBSUB + "#errors"
NODE_CONFIG: Final = PUBSUB + "#node_config"
PUBLISH_OPTIONS: Final = PUBSUB + "#publish-options"
SUBSCRIBE_OPTIONS: Final = PUBSUB + "#subscribe_options"
SUBSCRIBE_AUTHORIZATION: Final = PUBSUB + "#subscribe_authorization"
META_DATA: Final = PUBSUB + "#meta-data"

ACCESS_MODELS: Final = ("open", "presence", "roster", "authorize", "whitelist")
PUBLISH_MODELS: Final = ("publishers", "subscribers", "open")
SEND_LAST: Final = ("never", "on_sub", "on_sub_and_presence")
#: 'max' as pubsub#max_items: the most items the service allows (XEP-0060 §7.1.5, XEP-0223 §3).
MAX: Final = "max"


def pubsub_error(
    condition: str, app: str | None = None, text: str | None = None, **attrs: str
) -> StanzaError:
    """A stanza error with a ``pubsub#errors`` application condition (XEP-0060 §7.1.3 and others)."""
    extra = Element(app, PUBSUB_ERRORS, attrs or None) if app else None
    return StanzaError(condition, text, app=extra)


@dataclass(frozen=True, slots=True)
class Limits:
    """Service policy: what nodes may be configured to and what a service holds (all configurable)."""

    max_items: int = 256
    default_max_items: int = 32
    max_payload_bytes: int = 65_536
    max_nodes: int = 256
    max_subscriptions: int = 1_000
    #: Nodes one user may own on a shared service (0: no limit). PEP uses ``max_nodes``.
    max_nodes_per_user: int = 0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A leaf node's configuration. ``max_items`` None means 'max' (follows ``Limits.max_items``)."""

    title: str = ""
    description: str = ""
    type: str = ""
    language: str = ""
    access_model: str = "open"
    roster_groups_allowed: tuple[str, ...] = ()
    publish_model: str = "publishers"
    max_items: int | None = 32
    max_payload_size: int = 0  # 0: the service limit
    persist_items: bool = True
    deliver_notifications: bool = True
    deliver_payloads: bool = True
    notify_config: bool = False
    notify_delete: bool = False
    notify_retract: bool = True
    notify_sub: bool = False
    presence_based_delivery: bool = False
    send_last_published_item: str = "on_sub_and_presence"
    subscribe: bool = True
    itemreply: str = "owner"
    notification_type: str = "headline"
    publish_full_node: str = "retract"
    node_type: str = "leaf"
    #: XEP-0248: the collection nodes this node is a child of.
    collection: tuple[str, ...] = ()
    contact: tuple[str, ...] = ()
    body_xslt: str = ""
    dataform_xslt: str = ""

    def items_limit(self, limits: Limits) -> int:
        return limits.max_items if self.max_items is None else min(self.max_items, limits.max_items)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One ``pubsub#`` configuration field."""

    attr: str
    kind: str  # XEP-0004 field type
    label: str
    choices: tuple[str, ...] = ()
    labels: tuple[str, ...] = field(default=())


FIELDS: Final[dict[str, FieldSpec]] = {
    "pubsub#title": FieldSpec("title", "text-single", "A friendly name for the node"),
    "pubsub#description": FieldSpec("description", "text-single", "A description of the node"),
    "pubsub#type": FieldSpec(
        "type", "text-single", "The type of node data, usually specified by the namespace"
    ),
    "pubsub#language": FieldSpec("language", "text-single", "The default language of the node"),
    "pubsub#access_model": FieldSpec(
        "access_model", "list-single", "Who may subscribe and retrieve items", ACCESS_MODELS
    ),
    "pubsub#roster_groups_allowed": FieldSpec(
        "roster_groups_allowed", "list-multi", "Roster groups allowed to subscribe"
    ),
    "pubsub#publish_model": FieldSpec(
        "publish_model", "list-single", "Who may publish items", PUBLISH_MODELS
    ),
    "pubsub#max_items": FieldSpec(
        "max_items", "text-single", "Max number of items to persist ('max' for the most allowed)"
    ),
    "pubsub#max_payload_size": FieldSpec("max_payload_size", "text-single", "Max payload size in bytes"),
    "pubsub#persist_items": FieldSpec("persist_items", "boolean", "Persist items to storage"),
    "pubsub#deliver_notifications": FieldSpec(
        "deliver_notifications", "boolean", "Deliver event notifications"
    ),
    "pubsub#deliver_payloads": FieldSpec(
        "deliver_payloads", "boolean", "Deliver payloads with event notifications"
    ),
    "pubsub#notify_config": FieldSpec(
        "notify_config", "boolean", "Notify subscribers when the configuration changes"
    ),
    "pubsub#notify_delete": FieldSpec(
        "notify_delete", "boolean", "Notify subscribers when the node is deleted"
    ),
    "pubsub#notify_retract": FieldSpec(
        "notify_retract", "boolean", "Notify subscribers when items are removed"
    ),
    "pubsub#notify_sub": FieldSpec(
        "notify_sub", "boolean", "Notify owners about new subscribers and unsubscribes"
    ),
    "pubsub#presence_based_delivery": FieldSpec(
        "presence_based_delivery", "boolean", "Deliver notifications only to available users"
    ),
    "pubsub#send_last_published_item": FieldSpec(
        "send_last_published_item", "list-single", "When to send the last published item", SEND_LAST
    ),
    "pubsub#subscribe": FieldSpec("subscribe", "boolean", "Whether to allow subscriptions"),
    "pubsub#itemreply": FieldSpec(
        "itemreply", "list-single", "Whom to send replies to items", ("owner", "publisher")
    ),
    "pubsub#notification_type": FieldSpec(
        "notification_type", "list-single", "Message type of event notifications", ("normal", "headline")
    ),
    "pubsub#publish_full_node": FieldSpec(
        "publish_full_node",
        "list-single",
        "What happens when a full node is published to",
        ("retract", "reject"),
    ),
    "pubsub#node_type": FieldSpec("node_type", "list-single", "Node type", ("leaf", "collection")),
    "pubsub#collection": FieldSpec(
        "collection", "text-multi", "The collections of which this node is a child"
    ),
    "pubsub#contact": FieldSpec("contact", "jid-multi", "People to contact with questions"),
    "pubsub#body_xslt": FieldSpec("body_xslt", "text-single", "XSL transformation for message bodies"),
    "pubsub#dataform_xslt": FieldSpec("dataform_xslt", "text-single", "XSL transformation for data forms"),
}


def default_config(limits: Limits, **overrides: Any) -> NodeConfig:
    """The configuration of a node nobody configured."""
    return replace(NodeConfig(max_items=min(limits.default_max_items, limits.max_items)), **overrides)


def _value_text(spec: FieldSpec, value: Any) -> list[str]:
    if spec.kind == "boolean":
        return ["1" if value else "0"]
    if isinstance(value, tuple):
        return list(value)
    if value is None:
        return [MAX]
    return [str(value)] if value != "" else []


def config_form(
    config: NodeConfig, limits: Limits, node: str | None, *, access_models: Iterable[str], type_: str = "form"
) -> Element:
    """The pubsub#node_config form (§8.2.1) filled with ``config``."""
    x = new_form(type_, NODE_CONFIG)
    allowed = tuple(access_models)
    for var, spec in FIELDS.items():
        choices = allowed if spec.attr == "access_model" else spec.choices
        fld = add_field(
            x,
            var,
            spec.kind,
            spec.label,
            values=_value_text(spec, getattr(config, spec.attr)),
            options=[(c, c) for c in choices],
        )
        if spec.attr == "max_items":
            fld.attrs["label"] = f"{spec.label}; at most {limits.max_items}"
    return x


def parse_field(var: str, values: list[str], limits: Limits, access_models: Iterable[str]) -> tuple[str, Any]:
    """(attribute, typed value) of one submitted field; StanzaError(not-acceptable) for bad values."""
    spec = FIELDS.get(var)
    if spec is None:
        raise StanzaError("not-acceptable", f"unknown configuration field {var}")
    first = values[0] if values else ""
    if spec.kind == "boolean":
        return spec.attr, parse_bool(first, var)
    if spec.kind in ("list-multi", "text-multi"):
        return spec.attr, tuple(dict.fromkeys(v for v in values if v))
    if spec.kind == "jid-multi":
        try:
            return spec.attr, tuple(str(JID.parse(v)) for v in values if v)
        except JIDError:
            raise StanzaError("not-acceptable", f"{var} holds an invalid JID") from None
    if spec.attr == "access_model":
        if first not in tuple(access_models):
            raise StanzaError("not-acceptable", f"access model {first!r} is not supported here")
        return spec.attr, first
    if spec.choices:
        if first not in spec.choices:
            raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(spec.choices)}")
        return spec.attr, first
    if spec.attr == "max_items":
        if first.strip().lower() == MAX:
            return spec.attr, None
        number = _int(first, var)
        if number < 1 or number > limits.max_items:
            # §7.1.3-style limit error naming the limit.
            raise StanzaError("not-acceptable", f"pubsub#max_items must be 1..{limits.max_items} or 'max'")
        return spec.attr, number
    if spec.attr == "max_payload_size":
        number = _int(first, var)
        if number < 0 or number > limits.max_payload_bytes:
            raise StanzaError(
                "not-acceptable", f"pubsub#max_payload_size must be 0..{limits.max_payload_bytes}"
            )
        return spec.attr, number
    return spec.attr, first


def _int(text: str, var: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise StanzaError("not-acceptable", f"{var} must be a number") from None


def apply_form(config: NodeConfig, x: Element, limits: Limits, access_models: Iterable[str]) -> NodeConfig:
    """``config`` changed by a submitted pubsub#node_config form (§8.2.3)."""
    form = read_form(x)
    if form.form_type not in (None, NODE_CONFIG):
        raise StanzaError("bad-request", f"expected a {NODE_CONFIG} form")
    changes = dict(parse_field(var, values, limits, access_models) for var, values in _fields(form))
    return replace(config, **changes)


def _fields(form: SubmittedForm) -> list[tuple[str, list[str]]]:
    return [(var, values) for var, values in form.values.items() if var != "FORM_TYPE"]


def read_publish_options(x: Element | None, limits: Limits, access_models: Iterable[str]) -> dict[str, Any]:
    """The preconditions of a publish-options form (§7.1.5): attribute → required value.

    Unknown fields make the publication fail (§7.1.5: "MUST reject the publication upon encountering
    unknown fields"), with precondition-not-met like any unmet precondition.
    """
    if x is None:
        return {}
    if x.name != "x" or x.ns != DATA_FORMS:
        raise StanzaError("bad-request", "publish-options must carry a data form")
    form = read_form(x)
    if form.form_type not in (None, PUBLISH_OPTIONS):
        raise StanzaError("bad-request", f"expected a {PUBLISH_OPTIONS} form")
    wanted: dict[str, Any] = {}
    for var, values in _fields(form):
        if var not in FIELDS:
            raise pubsub_error("conflict", "precondition-not-met", f"unknown publish option {var}")
        try:
            attr, value = parse_field(var, values, limits, access_models)
        except StanzaError as e:
            raise pubsub_error("conflict", "precondition-not-met", e.text) from None
        wanted[attr] = value
    return wanted


def unmet_precondition(config: NodeConfig, wanted: Mapping[str, Any], limits: Limits) -> str | None:
    """The first ``pubsub#`` field whose precondition ``config`` does not meet, or None."""
    for attr, value in wanted.items():
        have = getattr(config, attr)
        if attr == "max_items":
            if config.items_limit(limits) != (limits.max_items if value is None else value):
                return "pubsub#max_items"
        elif isinstance(have, tuple):
            if set(have) != set(value):
                return "pubsub#" + attr
        elif have != value:
            return "pubsub#" + attr
    return None


# -- subscription options (§6.3, pubsub#subscribe_options) ---------------------------------------------
@dataclass(frozen=True, slots=True)
class SubOptions:
    """Options of one subscription (§6.3.7)."""

    deliver: bool = True
    include_body: bool = False
    show_values: tuple[str, ...] = ()
    #: XEP-0248 §4.1, for subscriptions to collections: "items", "nodes" (the SHOULD default) or "all".
    subscription_type: str = "nodes"
    #: How many levels below the collection notify: a number ≥ 1, or None for "all".
    subscription_depth: int | None = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "deliver": self.deliver,
            "include_body": self.include_body,
            "show_values": list(self.show_values),
            "subscription_type": self.subscription_type,
            "subscription_depth": self.subscription_depth,
        }

    def reaches(self, kind: str, depth: int) -> bool:
        """Whether a subscription to a collection gets ``kind`` ("items"/"nodes") events of a node
        ``depth`` levels below it (XEP-0248 §4.1)."""
        if self.subscription_type not in (kind, "all"):
            return False
        return self.subscription_depth is None or depth <= self.subscription_depth

    @classmethod
    def from_json(cls, data: Any) -> SubOptions:
        if not isinstance(data, dict):
            return cls()
        depth = data.get("subscription_depth", 1)
        return cls(
            bool(data.get("deliver", True)),
            bool(data.get("include_body", False)),
            tuple(str(v) for v in data.get("show_values", ())),
            str(data.get("subscription_type", "nodes")),
            int(depth) if depth is not None else None,
        )


SHOW_VALUES: Final = ("away", "chat", "dnd", "online", "xa")
SUBSCRIPTION_TYPES: Final = ("items", "nodes", "all")


def options_form(options: SubOptions, type_: str = "form") -> Element:
    x = new_form(type_, SUBSCRIBE_OPTIONS)
    add_field(x, "pubsub#deliver", "boolean", "Enable delivery?", values=["1" if options.deliver else "0"])
    add_field(
        x, "pubsub#digest", "boolean", "Receive digest notifications (approx. one per day)?", values=["0"]
    )
    add_field(
        x,
        "pubsub#include_body",
        "boolean",
        "Receive message body in addition to payload?",
        values=["1" if options.include_body else "0"],
    )
    add_field(
        x,
        "pubsub#show-values",
        "list-multi",
        "Select the presence types which are allowed to receive event notifications",
        values=list(options.show_values),
        options=[(v, v) for v in SHOW_VALUES],
    )
    add_field(
        x,
        "pubsub#subscription_type",
        "list-single",
        "What a subscription to a collection is notified of",
        values=[options.subscription_type],
        options=[(v, v) for v in SUBSCRIPTION_TYPES],
    )
    depth = options.subscription_depth
    add_field(
        x,
        "pubsub#subscription_depth",
        "list-single",
        "How far to traverse the node graph for notifications",
        values=["all" if depth is None else str(depth)],
        options=[("1", "1"), ("all", "all")],
    )
    return x


def apply_options(options: SubOptions, x: Element) -> SubOptions:
    """Submitted subscription options (§6.3.5); unsupported values → not-acceptable (§6.3.6)."""
    form = read_form(x)
    if form.form_type not in (None, SUBSCRIBE_OPTIONS):
        raise StanzaError("bad-request", f"expected a {SUBSCRIBE_OPTIONS} form")
    for var, values in _fields(form):
        first = values[0] if values else ""
        if var == "pubsub#deliver":
            options = replace(options, deliver=parse_bool(first, var))
        elif var == "pubsub#include_body":
            options = replace(options, include_body=parse_bool(first, var))
        elif var == "pubsub#digest":
            if parse_bool(first, var):
                raise pubsub_error("not-acceptable", "invalid-options", "digests are not supported")
        elif var == "pubsub#show-values":
            if any(v not in SHOW_VALUES for v in values):
                raise pubsub_error("not-acceptable", "invalid-options", "unknown presence value")
            options = replace(options, show_values=tuple(values))
        elif var == "pubsub#subscription_type":
            if first not in SUBSCRIPTION_TYPES:
                raise pubsub_error(
                    "not-acceptable", "invalid-options", "subscription_type: items, nodes or all"
                )
            options = replace(options, subscription_type=first)
        elif var == "pubsub#subscription_depth":
            if first == "all":
                options = replace(options, subscription_depth=None)
            elif first.isdigit() and int(first) >= 1:
                options = replace(options, subscription_depth=int(first))
            else:
                raise pubsub_error(
                    "not-acceptable", "invalid-options", "subscription_depth: a number ≥ 1 or all"
                )
        else:
            raise pubsub_error("not-acceptable", "invalid-options", f"unknown option {var}")
    return options
