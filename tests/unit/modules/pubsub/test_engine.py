"""The pure XEP-0060 engine: access models, affiliations, preconditions, limits, items, subscriptions."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from roost.jid import JID
from roost.modules.pubsub.config import PUBSUB, PUBSUB_ERRORS, PUBSUB_EVENT, PUBSUB_OWNER, Limits, NodeConfig
from roost.modules.pubsub.engine import RSM, Node, Outcome, PubSubService, Requester
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.fragment import parse_element
from roost.xml.ns import DATA_FORMS

OWNER = "juliet@example.org"
SERVICE = JID.parse("pubsub.example.org")


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


def pep(**limits: Any) -> PubSubService:
    clock = itertools.count(1000)
    return PubSubService(
        JID.parse(OWNER), Limits(**limits), pep_owner=OWNER, new_id=ids(), now=lambda: float(next(clock))
    )


def service(**limits: Any) -> PubSubService:
    return PubSubService(SERVICE, Limits(**limits), new_id=ids())


def req(jid: str = OWNER + "/balcony", **kw: Any) -> Requester:
    return Requester(JID.parse(jid), **kw)


def x(xml: str, ns: str = PUBSUB) -> Element:
    return parse_element(f"<pubsub xmlns='{ns}'>{xml}</pubsub>")


def form(form_type: str, **fields: str | list[str]) -> str:
    parts = [f"<x xmlns='{DATA_FORMS}' type='submit'>"]
    parts.append(f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>")
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        inner = "".join(f"<value>{v}</value>" for v in values)
        parts.append(f"<field var='pubsub#{var}'>{inner}</field>")
    parts.append("</x>")
    return "".join(parts)


def publish_options(**fields: str | list[str]) -> str:
    return "<publish-options>" + form(PUBSUB + "#publish-options", **fields) + "</publish-options>"


def publish(
    svc: PubSubService,
    who: Requester,
    node: str,
    item_id: str | None = None,
    body: str = "<geo xmlns='urn:g'/>",
    options: str = "",
) -> Outcome:
    id_attr = f" id='{item_id}'" if item_id else ""
    return svc.handle(
        who, "set", x(f"<publish node='{node}'><item{id_attr}>{body}</item></publish>{options}")
    )


def error(fn: Any, *args: Any) -> StanzaError:
    with pytest.raises(StanzaError) as info:
        fn(*args)
    return info.value


def app(err: StanzaError) -> str | None:
    return err.app.name if err.app is not None and err.app.ns == PUBSUB_ERRORS else None


def get_items(svc: PubSubService, who: Requester, node: str, extra: str = "", attrs: str = "") -> Element:
    out = svc.handle(who, "get", x(f"<items node='{node}'{attrs}>{extra}</items>"))
    assert out.result is not None
    return out.result


def item_ids(result: Element) -> list[str]:
    items = result.find("items", PUBSUB)
    assert items is not None
    return [i.get("id") for i in items.elements("item", PUBSUB)]


# -- publishing and auto-create -----------------------------------------------------------------------
def test_publish_auto_creates_pep_node_with_presence_access() -> None:
    svc = pep()
    out = publish(svc, req(), "urn:xmpp:tune", "current")
    assert out.created == {"urn:xmpp:tune"}
    assert svc.nodes["urn:xmpp:tune"].config.access_model == "presence"  # XEP-0163 §4.5
    result = out.result
    assert result is not None and result.find("publish", PUBSUB).find("item", PUBSUB).get("id") == "current"  # type: ignore[union-attr]
    (notice,) = out.notices
    assert notice.event.ns == PUBSUB_EVENT and notice.item_id == "current"
    assert notice.event.find("items").find("item").find("geo", "urn:g") is not None  # type: ignore[union-attr]
    assert out.items[("urn:xmpp:tune", "current")] is not None


def test_publish_without_id_gets_one_and_republish_overwrites() -> None:
    svc = pep()
    out = publish(svc, req(), "n")
    generated = out.result.find("publish", PUBSUB).find("item", PUBSUB).get("id")  # type: ignore[union-attr]
    assert generated
    publish(svc, req(), "n", "a")
    publish(svc, req(), "n", generated, "<geo xmlns='urn:g'>new</geo>")
    node = svc.nodes["n"]
    assert list(node.items) == ["a", generated]  # §7.1.2: re-publication moves it to the newest place
    assert node.items[generated].payload.text == "new"  # type: ignore[union-attr]


def test_only_the_account_publishes_to_its_pep() -> None:
    svc = pep()
    assert error(publish, svc, req("romeo@example.net/x"), "n").condition == "item-not-found"
    publish(svc, req(), "n")
    assert error(publish, svc, req("romeo@example.net/x"), "n").condition == "forbidden"


def test_publish_payload_rules() -> None:
    svc = pep()
    err = error(
        svc.handle,
        req(),
        "set",
        x("<publish node='n'><item id='1'><a xmlns='u'/><b xmlns='u'/></item></publish>"),
    )
    assert (err.condition, app(err)) == ("bad-request", "invalid-payload")
    err = error(svc.handle, req(), "set", x("<publish node='n'/>"))
    assert (err.condition, app(err)) == ("bad-request", "item-required")
    err = error(svc.handle, req(), "set", x("<publish node='n'><item id='1'/></publish>"))
    assert (err.condition, app(err)) == ("bad-request", "payload-required")
    err = error(svc.handle, req(), "set", x("<publish><item/></publish>"))
    assert (err.condition, app(err)) == ("bad-request", "nodeid-required")
    assert "n" not in svc.nodes  # failed publications create nothing


def test_payload_type_is_enforced() -> None:
    svc = pep()
    svc.handle(
        req(),
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", type="urn:g") + "</configure>"),
    )
    publish(svc, req(), "n")
    err = error(publish, svc, req(), "n", "1", "<other xmlns='urn:o'/>")
    assert (err.condition, app(err)) == ("bad-request", "invalid-payload")


# -- preconditions (§7.1.5) ---------------------------------------------------------------------------
def test_publish_options_configure_a_new_node() -> None:
    svc = pep()
    opts = publish_options(access_model="open", persist_items="true", max_items="max")
    publish(svc, req(), "eu.siacs.conversations.axolotl.devicelist", "current", options=opts)
    config = svc.nodes["eu.siacs.conversations.axolotl.devicelist"].config
    assert config.access_model == "open" and config.max_items is None
    assert config.items_limit(svc.limits) == svc.limits.max_items


def test_precondition_met_and_not_met() -> None:
    svc = pep()
    publish(svc, req(), "n", options=publish_options(access_model="whitelist"))
    publish(svc, req(), "n", options=publish_options(access_model="whitelist"))
    err = error(publish, svc, req(), "n", None, "<geo xmlns='urn:g'/>", publish_options(access_model="open"))
    assert (err.condition, app(err)) == ("conflict", "precondition-not-met")
    assert len(svc.nodes["n"].items) == 2  # the refused item was not stored


def test_precondition_max_items_max_matches_the_service_maximum() -> None:
    svc = pep(max_items=50)
    svc.handle(
        req(),
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", max_items="50") + "</configure>"),
    )
    publish(svc, req(), "n", options=publish_options(max_items="max"))
    err = error(publish, svc, req(), "n", None, "<geo xmlns='urn:g'/>", publish_options(max_items="10"))
    assert app(err) == "precondition-not-met"


def test_unknown_publish_option_is_refused() -> None:
    svc = pep()
    err = error(publish, svc, req(), "n", None, "<geo xmlns='urn:g'/>", publish_options(frobnicate="1"))
    assert (err.condition, app(err)) == ("conflict", "precondition-not-met")
    assert not svc.nodes


def test_bookmarks_and_private_storage_publish_options() -> None:
    """Exactly the fields XEP-0402 §3.1 and XEP-0223 §3 send."""
    svc = pep()
    opts = publish_options(
        persist_items="true", max_items="max", send_last_published_item="never", access_model="whitelist"
    )
    publish(
        svc, req(), "urn:xmpp:bookmarks:1", "room@muc", "<conference xmlns='urn:xmpp:bookmarks:1'/>", opts
    )
    publish(
        svc, req(), "urn:xmpp:bookmarks:1", "room2@muc", "<conference xmlns='urn:xmpp:bookmarks:1'/>", opts
    )
    config = svc.nodes["urn:xmpp:bookmarks:1"].config
    assert config.send_last_published_item == "never" and config.access_model == "whitelist"


# -- max_items and persistence ------------------------------------------------------------------------
def test_max_items_drops_the_oldest() -> None:
    svc = pep()
    svc.handle(
        req(),
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", max_items="2") + "</configure>"),
    )
    for i in range(3):
        out = publish(svc, req(), "n", str(i))
    assert list(svc.nodes["n"].items) == ["1", "2"]
    assert out.items[("n", "0")] is None


def test_full_node_rejects_when_configured() -> None:
    svc = pep()
    conf = form(PUBSUB + "#node_config", max_items="1", publish_full_node="reject")
    svc.handle(req(), "set", x("<create node='n'/><configure>" + conf + "</configure>"))
    publish(svc, req(), "n", "a")
    publish(svc, req(), "n", "a")  # overwriting is not adding
    err = error(publish, svc, req(), "n", "b")
    assert (err.condition, app(err)) == ("conflict", "node-full")


def test_max_items_above_the_limit_is_refused() -> None:
    svc = pep(max_items=10)
    err = error(
        svc.handle,
        req(),
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", max_items="11") + "</configure>"),
    )
    assert err.condition == "not-acceptable" and "max_items" in (err.text or "")


def test_transient_node_keeps_only_the_last_item_and_writes_nothing() -> None:
    svc = pep()
    conf = form(PUBSUB + "#node_config", persist_items="0")
    svc.handle(req(), "set", x("<create node='n'/><configure>" + conf + "</configure>"))
    publish(svc, req(), "n", "a")
    out = publish(svc, req(), "n", "b")
    assert list(svc.nodes["n"].items) == ["b"] and not out.items


# -- limits (§7.1.3, configurable) --------------------------------------------------------------------
def test_payload_too_big() -> None:
    svc = pep(max_payload_bytes=100)
    err = error(publish, svc, req(), "n", "1", "<p xmlns='u'>" + "x" * 200 + "</p>")
    assert (err.condition, app(err)) == ("not-acceptable", "payload-too-big")
    assert "100" in (err.text or "")


def test_node_max_payload_size() -> None:
    svc = pep()
    svc.handle(
        req(),
        "set",
        x(
            "<create node='n'/><configure>"
            + form(PUBSUB + "#node_config", max_payload_size="50")
            + "</configure>"
        ),
    )
    assert app(error(publish, svc, req(), "n", "1", "<p xmlns='u'>" + "x" * 60 + "</p>")) == "payload-too-big"


def test_nodes_per_service_limit() -> None:
    svc = pep(max_nodes=2)
    publish(svc, req(), "a")
    publish(svc, req(), "b")
    err = error(publish, svc, req(), "c")
    assert (err.condition, app(err)) == ("not-allowed", "max-nodes-exceeded")
    err = error(svc.handle, req(), "set", x("<create node='d'/>"))
    assert app(err) == "max-nodes-exceeded"


def test_nodes_per_user_limit_on_a_service_spares_admins() -> None:
    svc = service(max_nodes_per_user=1)
    svc.handle(req("a@x/r"), "set", x("<create node='one'/>"))
    assert app(error(svc.handle, req("a@x/r"), "set", x("<create node='two'/>"))) == "max-nodes-exceeded"
    svc.handle(req("b@x/r"), "set", x("<create node='two'/>"))
    svc.handle(req("a@x/r", admin=True), "set", x("<create node='three'/>"))


def test_subscriptions_per_node_limit() -> None:
    svc = service(max_subscriptions=1)
    svc.handle(req("o@x/r"), "set", x("<create node='n'/>"))
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    err = error(svc.handle, req("b@x/r"), "set", x("<subscribe node='n' jid='b@x'/>"))
    assert (err.condition, app(err)) == ("policy-violation", "too-many-subscriptions")


# -- access models (§4.5) -----------------------------------------------------------------------------
def configure_access(svc: PubSubService, model: str, **extra: str | list[str]) -> None:
    conf = form(PUBSUB + "#node_config", access_model=model, **extra)
    svc.handle(req(), "set", x("<create node='n'/><configure>" + conf + "</configure>"))
    publish(svc, req(), "n", "i")


def test_open_access() -> None:
    svc = pep()
    configure_access(svc, "open")
    assert item_ids(get_items(svc, req("stranger@else.where/r"), "n")) == ["i"]


def test_presence_access() -> None:
    svc = pep()
    configure_access(svc, "presence")
    err = error(get_items, svc, req("stranger@else.where/r"), "n")
    assert (err.condition, app(err)) == ("not-authorized", "presence-subscription-required")
    assert item_ids(get_items(svc, req("romeo@x/r", presence=True), "n")) == ["i"]
    assert item_ids(get_items(svc, req(), "n")) == ["i"]  # the owner


def test_roster_access_by_group() -> None:
    svc = pep()
    configure_access(svc, "roster", roster_groups_allowed=["Friends", "Family"])
    err = error(get_items, svc, req("romeo@x/r", presence=True, groups=frozenset({"Work"})), "n")
    assert (err.condition, app(err)) == ("not-authorized", "not-in-roster-group")
    assert item_ids(get_items(svc, req("romeo@x/r", groups=frozenset({"Family"})), "n")) == ["i"]


def test_whitelist_access() -> None:
    svc = pep()
    configure_access(svc, "whitelist")
    err = error(get_items, svc, req("romeo@x/r", presence=True), "n")
    assert (err.condition, app(err)) == ("not-allowed", "closed-node")
    svc.handle(
        req(),
        "set",
        x(
            "<affiliations node='n'><affiliation jid='romeo@x' affiliation='member'/></affiliations>",
            PUBSUB_OWNER,
        ),
    )
    assert item_ids(get_items(svc, req("romeo@x/r"), "n")) == ["i"]


def test_authorize_access_with_owner_approval() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(
        owner,
        "set",
        x(
            "<create node='n'/><configure>"
            + form(PUBSUB + "#node_config", access_model="authorize")
            + "</configure>"
        ),
    )
    publish(svc, owner, "n", "i")
    out = svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    assert out.result.find("subscription", PUBSUB).get("subscription") == "pending"  # type: ignore[union-attr]
    (request,) = out.notices
    assert request.recipients == ["o@x"] and request.event.ns == DATA_FORMS
    err = error(get_items, svc, req("a@x/r"), "n")
    assert (err.condition, app(err)) == ("not-authorized", "not-subscribed")
    answer = parse_element(
        f"<x xmlns='{DATA_FORMS}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{PUBSUB}#subscribe_authorization</value></field>"
        "<field var='pubsub#node'><value>n</value></field>"
        "<field var='pubsub#subscriber_jid'><value>a@x</value></field>"
        "<field var='pubsub#allow'><value>true</value></field></x>"
    )
    assert error(svc.authorize, req("a@x/r"), answer).condition == "forbidden"
    out = svc.authorize(owner, answer)
    assert svc.nodes["n"].subscriptions["a@x"].state == "subscribed"
    kinds = [n.event.first().name for n in out.notices]  # type: ignore[union-attr]
    assert kinds == ["subscription", "items"]  # approval, then the last item
    assert item_ids(get_items(svc, req("a@x/r"), "n")) == ["i"]


def test_owner_approves_pending_subscription_by_owner_subscriptions_set() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(
        owner,
        "set",
        x(
            "<create node='n'/><configure>"
            + form(PUBSUB + "#node_config", access_model="authorize")
            + "</configure>"
        ),
    )
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    svc.handle(
        owner,
        "set",
        x(
            "<subscriptions node='n'><subscription jid='a@x' subscription='subscribed'/></subscriptions>",
            PUBSUB_OWNER,
        ),
    )
    listed = svc.handle(owner, "get", x("<subscriptions node='n'/>", PUBSUB_OWNER)).result
    sub = listed.find("subscriptions", PUBSUB_OWNER).find("subscription", PUBSUB_OWNER)  # type: ignore[union-attr]
    assert (sub.get("jid"), sub.get("subscription")) == ("a@x", "subscribed")  # type: ignore[union-attr]


def test_service_offers_no_roster_based_models() -> None:
    svc = service()
    err = error(
        svc.handle,
        req("o@x/r"),
        "set",
        x(
            "<create node='n'/><configure>"
            + form(PUBSUB + "#node_config", access_model="presence")
            + "</configure>"
        ),
    )
    assert err.condition == "not-acceptable"


# -- affiliations (§4.1) ------------------------------------------------------------------------------
def affiliate(svc: PubSubService, owner: Requester, jid: str, aff: str) -> None:
    svc.handle(
        owner,
        "set",
        x(
            f"<affiliations node='n'><affiliation jid='{jid}' affiliation='{aff}'/></affiliations>",
            PUBSUB_OWNER,
        ),
    )


def test_affiliation_privileges() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(owner, "set", x("<create node='n'/>"))
    for jid, aff in (("p@x", "publisher"), ("po@x", "publish-only"), ("m@x", "member"), ("bad@x", "outcast")):
        affiliate(svc, owner, jid, aff)
    publish(svc, req("p@x/r"), "n", "by-p")
    publish(svc, req("po@x/r"), "n", "by-po")
    assert error(publish, svc, req("m@x/r"), "n").condition == "forbidden"
    assert error(publish, svc, req("none@x/r"), "n").condition == "forbidden"
    assert error(get_items, svc, req("po@x/r"), "n").condition == "forbidden"
    assert error(get_items, svc, req("bad@x/r"), "n").condition == "forbidden"
    assert (
        error(svc.handle, req("bad@x/r"), "set", x("<subscribe node='n' jid='bad@x'/>")).condition
        == "forbidden"
    )
    # publish-only retracts its own items only; a publisher any
    assert (
        error(svc.handle, req("po@x/r"), "set", x("<retract node='n'><item id='by-p'/></retract>")).condition
        == "forbidden"
    )
    svc.handle(req("po@x/r"), "set", x("<retract node='n'><item id='by-po'/></retract>"))
    svc.handle(req("p@x/r"), "set", x("<retract node='n'><item id='by-p'/></retract>"))
    # only owners configure and delete; publishers may purge
    assert (
        error(svc.handle, req("p@x/r"), "get", x("<configure node='n'/>", PUBSUB_OWNER)).condition
        == "forbidden"
    )
    assert (
        error(svc.handle, req("p@x/r"), "set", x("<delete node='n'/>", PUBSUB_OWNER)).condition == "forbidden"
    )
    svc.handle(req("p@x/r"), "set", x("<purge node='n'/>", PUBSUB_OWNER))
    assert (
        error(svc.handle, req("m@x/r"), "set", x("<purge node='n'/>", PUBSUB_OWNER)).condition == "forbidden"
    )
    own = svc.handle(req("p@x/r"), "get", x("<affiliations/>")).result
    assert [(a.get("node"), a.get("affiliation")) for a in own.find("affiliations", PUBSUB).elements()] == [
        ("n", "publisher")
    ]  # type: ignore[union-attr]


def test_outcast_loses_its_subscription_and_last_owner_stays() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(owner, "set", x("<create node='n'/>"))
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x/r'/>"))
    affiliate(svc, owner, "a@x", "outcast")
    assert not svc.nodes["n"].subscriptions
    assert error(affiliate, svc, owner, "o@x", "none").condition == "not-acceptable"


def test_publish_models() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(
        owner,
        "set",
        x(
            "<create node='n'/><configure>"
            + form(PUBSUB + "#node_config", publish_model="subscribers")
            + "</configure>"
        ),
    )
    assert error(publish, svc, req("a@x/r"), "n").condition == "forbidden"
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    publish(svc, req("a@x/r"), "n")
    svc.handle(
        owner,
        "set",
        x(
            "<configure node='n'>" + form(PUBSUB + "#node_config", publish_model="open") + "</configure>",
            PUBSUB_OWNER,
        ),
    )
    publish(svc, req("anyone@else/r"), "n")


# -- subscriptions (§6.1–6.3) -------------------------------------------------------------------------
def test_subscribe_returns_subid_and_sends_last_item() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(owner, "set", x("<create node='n'/>"))
    publish(svc, owner, "n", "one")
    publish(svc, owner, "n", "two")
    out = svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x/r'/>"))
    sub = out.result.find("subscription", PUBSUB)  # type: ignore[union-attr]
    assert sub.get("subid") and sub.get("subscription") == "subscribed" and sub.get("jid") == "a@x/r"  # type: ignore[union-attr]
    (last,) = out.notices
    assert last.recipients == ["a@x/r"] and last.item_id == "two" and not last.to_notify
    again = svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x/r'/>"))
    assert again.result.find("subscription", PUBSUB).get("subid") == sub.get("subid")  # type: ignore[union-attr]
    (notice,) = publish(svc, owner, "n", "three").notices
    assert notice.recipients == ["a@x/r"]


def test_subscribe_someone_else_and_bad_jid() -> None:
    svc = service()
    svc.handle(req("o@x/r"), "set", x("<create node='n'/>"))
    err = error(svc.handle, req("a@x/r"), "set", x("<subscribe node='n' jid='b@x'/>"))
    assert (err.condition, app(err)) == ("bad-request", "invalid-jid")
    err = error(svc.handle, req("a@x/r"), "set", x("<subscribe node='n'/>"))
    assert app(err) == "jid-required"
    assert (
        error(svc.handle, req("a@x/r"), "set", x("<subscribe node='nope' jid='a@x'/>")).condition
        == "item-not-found"
    )


def test_unsubscribe_rules() -> None:
    svc = service()
    svc.handle(req("o@x/r"), "set", x("<create node='n'/>"))
    err = error(svc.handle, req("a@x/r"), "set", x("<unsubscribe node='n' jid='a@x'/>"))
    assert (err.condition, app(err)) == ("unexpected-request", "not-subscribed")
    out = svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    subid = out.result.find("subscription", PUBSUB).get("subid")  # type: ignore[union-attr]
    err = error(svc.handle, req("a@x/r"), "set", x("<unsubscribe node='n' jid='a@x' subid='wrong'/>"))
    assert (err.condition, app(err)) == ("not-acceptable", "invalid-subid")
    assert (
        error(svc.handle, req("b@x/r"), "set", x("<unsubscribe node='n' jid='a@x'/>")).condition
        == "forbidden"
    )
    svc.handle(req("a@x/r"), "set", x(f"<unsubscribe node='n' jid='a@x' subid='{subid}'/>"))
    assert not svc.nodes["n"].subscriptions


def test_subscription_options_deliver_off() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(owner, "set", x("<create node='n'/>"))
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    got = svc.handle(req("a@x/r"), "get", x("<options node='n' jid='a@x'/>")).result
    assert got.find("options", PUBSUB).find("x", DATA_FORMS) is not None  # type: ignore[union-attr]
    svc.handle(
        req("a@x/r"),
        "set",
        x("<options node='n' jid='a@x'>" + form(PUBSUB + "#subscribe_options", deliver="0") + "</options>"),
    )
    assert svc.nodes["n"].subscriptions["a@x"].options.deliver is False
    (notice,) = publish(svc, owner, "n").notices
    assert notice.recipients == []
    err = error(
        svc.handle,
        req("a@x/r"),
        "set",
        x("<options node='n' jid='a@x'>" + form(PUBSUB + "#subscribe_options", digest="1") + "</options>"),
    )
    assert app(err) == "invalid-options"


def test_subscribe_with_options_in_one_request() -> None:
    svc = service()
    svc.handle(req("o@x/r"), "set", x("<create node='n'/>"))
    svc.handle(
        req("a@x/r"),
        "set",
        x(
            "<subscribe node='n' jid='a@x'/><options>"
            + form(PUBSUB + "#subscribe_options", include_body="1")
            + "</options>"
        ),
    )
    assert svc.nodes["n"].subscriptions["a@x"].options.include_body


def test_subscriptions_disabled() -> None:
    svc = service()
    svc.handle(
        req("o@x/r"),
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", subscribe="0") + "</configure>"),
    )
    err = error(svc.handle, req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    assert (err.condition, app(err)) == ("feature-not-implemented", "unsupported")


# -- notifications ------------------------------------------------------------------------------------
def subscribed_service(**conf: str) -> tuple[PubSubService, Requester]:
    svc = service()
    owner = req("o@x/r")
    svc.handle(
        owner,
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", **conf) + "</configure>"),
    )
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    return svc, owner


def test_notify_retract_and_the_notify_attribute() -> None:
    svc, owner = subscribed_service(notify_retract="1")
    publish(svc, owner, "n", "1")
    publish(svc, owner, "n", "2")
    (notice,) = svc.handle(owner, "set", x("<retract node='n'><item id='1'/></retract>")).notices
    assert notice.event.find("items").find("retract").get("id") == "1"  # type: ignore[union-attr]
    assert not svc.handle(
        owner, "set", x("<retract node='n' notify='false'><item id='2'/></retract>")
    ).notices
    assert (
        error(svc.handle, owner, "set", x("<retract node='n'><item id='9'/></retract>")).condition
        == "item-not-found"
    )


def test_retract_notices_by_default_unless_configured_off() -> None:
    svc, owner = subscribed_service()
    publish(svc, owner, "n", "1")
    assert svc.handle(owner, "set", x("<retract node='n'><item id='1'/></retract>")).notices
    quiet, owner = subscribed_service(notify_retract="0")
    publish(quiet, owner, "n", "1")
    assert not quiet.handle(owner, "set", x("<retract node='n'><item id='1'/></retract>")).notices


def test_notify_delete_with_redirect() -> None:
    svc, owner = subscribed_service(notify_delete="1")
    out = svc.handle(
        owner, "set", x("<delete node='n'><redirect uri='xmpp:other?;node=m'/></delete>", PUBSUB_OWNER)
    )
    (notice,) = out.notices
    assert notice.event.find("delete").find("redirect").get("uri") == "xmpp:other?;node=m"  # type: ignore[union-attr]
    assert out.deleted == {"n"} and "n" not in svc.nodes


def test_notify_config() -> None:
    svc, owner = subscribed_service(notify_config="1")
    out = svc.handle(
        owner,
        "set",
        x("<configure node='n'>" + form(PUBSUB + "#node_config", title="T") + "</configure>", PUBSUB_OWNER),
    )
    (notice,) = out.notices
    assert notice.event.find("configuration").find("x", DATA_FORMS) is not None  # type: ignore[union-attr]


def test_purge_notifies_with_notify_retract() -> None:
    svc, owner = subscribed_service(notify_retract="1")
    publish(svc, owner, "n", "1")
    out = svc.handle(owner, "set", x("<purge node='n'/>", PUBSUB_OWNER))
    assert out.notices[0].event.find("purge") is not None and out.items == {("n", "1"): None}


def test_deliver_payloads_off_sends_ids_only_and_notification_type() -> None:
    svc, owner = subscribed_service(deliver_payloads="0", notification_type="normal")
    (notice,) = publish(svc, owner, "n", "1").notices
    item = notice.event.find("items").find("item")  # type: ignore[union-attr]
    assert item.get("id") == "1" and item.first() is None and notice.message_type == "normal"  # type: ignore[union-attr]


def test_notify_sub_tells_owners() -> None:
    svc = service()
    svc.handle(
        req("o@x/r"),
        "set",
        x("<create node='n'/><configure>" + form(PUBSUB + "#node_config", notify_sub="1") + "</configure>"),
    )
    out = svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>"))
    assert [n.recipients for n in out.notices] == [["o@x"]]


# -- retrieval (§6.5) and RSM -------------------------------------------------------------------------
def test_items_by_id_and_max_items() -> None:
    svc = pep()
    for i in range(5):
        publish(svc, req(), "n", str(i))
    assert item_ids(get_items(svc, req(), "n")) == ["0", "1", "2", "3", "4"]
    assert item_ids(get_items(svc, req(), "n", attrs=" max_items='2'")) == ["3", "4"]
    assert item_ids(get_items(svc, req(), "n", "<item id='1'/><item id='9'/><item id='3'/>")) == ["1", "3"]
    assert error(get_items, svc, req(), "n", "", " max_items='x'").condition == "bad-request"
    assert error(get_items, svc, req(), "missing").condition == "item-not-found"


def test_items_with_rsm() -> None:
    svc = pep()
    for i in range(5):
        publish(svc, req(), "n", str(i))
    page = rsm_query(svc, "<max>2</max>")
    assert item_ids(page) == ["0", "1"]
    rsm = page.find("set", RSM)
    assert rsm.find_text("count", RSM) == "5" and rsm.find_text("last", RSM) == "1"  # type: ignore[union-attr]


def rsm_query(svc: PubSubService, rsm: str) -> Element:
    out = svc.handle(req(), "get", x(f"<items node='n'/><set xmlns='{RSM}'>{rsm}</set>"))
    assert out.result is not None
    return out.result


def test_rsm_paging_forward_and_backward() -> None:
    svc = pep()
    for i in range(5):
        publish(svc, req(), "n", str(i))
    assert item_ids(rsm_query(svc, "<max>2</max>")) == ["0", "1"]
    assert item_ids(rsm_query(svc, "<max>2</max><after>1</after>")) == ["2", "3"]
    assert item_ids(rsm_query(svc, "<max>2</max><before/>")) == ["3", "4"]
    assert item_ids(rsm_query(svc, "<max>2</max><before>3</before>")) == ["1", "2"]
    assert item_ids(rsm_query(svc, "<max>2</max><index>4</index>")) == ["4"]
    assert error(rsm_query, svc, "<after>nope</after>").condition == "item-not-found"


# -- configuration forms (§8.2, §8.3) -----------------------------------------------------------------
def test_config_form_lists_every_field_and_round_trips() -> None:
    svc = pep()
    publish(svc, req(), "n")
    form_el = svc.handle(req(), "get", x("<configure node='n'/>", PUBSUB_OWNER)).result
    x_el = form_el.find("configure", PUBSUB_OWNER).find("x", DATA_FORMS)  # type: ignore[union-attr]
    vars_ = {f.get("var") for f in x_el.elements("field", DATA_FORMS)}  # type: ignore[union-attr]
    for needed in (
        "pubsub#access_model",
        "pubsub#max_items",
        "pubsub#persist_items",
        "pubsub#send_last_published_item",
        "pubsub#notify_retract",
        "pubsub#publish_model",
        "pubsub#deliver_payloads",
        "pubsub#title",
    ):
        assert needed in vars_
    # Submitting the form as received (type changed) changes nothing.
    x_el.attrs["type"] = "submit"  # type: ignore[union-attr]
    before = svc.nodes["n"].config
    svc.handle(req(), "set", _with(x("<configure node='n'/>", PUBSUB_OWNER), x_el))  # type: ignore[arg-type]
    assert svc.nodes["n"].config == before


def _with(pubsub: Element, form_el: Element) -> Element:
    pubsub.find("configure", PUBSUB_OWNER).append(form_el)  # type: ignore[union-attr]
    return pubsub


def test_bad_config_values() -> None:
    svc = pep()
    publish(svc, req(), "n")
    for field, value in (
        ("access_model", "everyone"),
        ("persist_items", "maybe"),
        ("max_items", "lots"),
        ("unknown_thing", "1"),
    ):
        err = error(
            svc.handle,
            req(),
            "set",
            x(
                "<configure node='n'>" + form(PUBSUB + "#node_config", **{field: value}) + "</configure>",
                PUBSUB_OWNER,
            ),
        )
        assert err.condition in ("not-acceptable", "bad-request")
    assert svc.nodes["n"].config.access_model == "presence"


def test_lowering_max_items_trims() -> None:
    svc = pep()
    for i in range(4):
        publish(svc, req(), "n", str(i))
    out = svc.handle(
        req(),
        "set",
        x(
            "<configure node='n'>" + form(PUBSUB + "#node_config", max_items="1") + "</configure>",
            PUBSUB_OWNER,
        ),
    )
    assert list(svc.nodes["n"].items) == ["3"] and out.items[("n", "0")] is None


def test_default_config_and_cancel() -> None:
    svc = pep()
    default = svc.handle(req(), "get", x("<default/>", PUBSUB_OWNER)).result
    assert default.find("default", PUBSUB_OWNER).find("x", DATA_FORMS) is not None  # type: ignore[union-attr]
    publish(svc, req(), "n")
    cancel = f"<configure node='n'><x xmlns='{DATA_FORMS}' type='cancel'/></configure>"
    assert not svc.handle(req(), "set", x(cancel, PUBSUB_OWNER)).changed


# -- create, instant nodes, delete --------------------------------------------------------------------
def test_create_conflict_and_instant_node() -> None:
    svc = service()
    svc.handle(req("o@x/r"), "set", x("<create node='n'/>"))
    assert error(svc.handle, req("o@x/r"), "set", x("<create node='n'/>")).condition == "conflict"
    out = svc.handle(req("o@x/r"), "set", x("<create/>"))
    name = out.result.find("create", PUBSUB).get("node")  # type: ignore[union-attr]
    assert name in svc.nodes
    assert (
        error(svc.handle, req("u@x/r", may_create=False), "set", x("<create node='m'/>")).condition
        == "forbidden"
    )


def test_others_cannot_create_in_pep() -> None:
    assert error(pep().handle, req("romeo@x/r"), "set", x("<create node='n'/>")).condition == "forbidden"


# -- persistence round trip and clean-up --------------------------------------------------------------
def test_node_meta_json_round_trip() -> None:
    svc = service()
    owner = req("o@x/r")
    svc.handle(
        owner,
        "set",
        x(
            "<create node='n'/><configure>"
            + form(PUBSUB + "#node_config", title="T", max_items="max")
            + "</configure>"
        ),
    )
    svc.handle(req("a@x/r"), "set", x("<subscribe node='n' jid='a@x/r'/>"))
    affiliate(svc, owner, "p@x", "publisher")
    node = svc.nodes["n"]
    back = Node.from_json("n", node.meta_json())
    assert back.config == node.config and back.affiliations == node.affiliations
    assert back.subscriptions["a@x/r"].subid == node.subscriptions["a@x/r"].subid
    assert NodeConfig.from_json({"max_items": None, "unknown": 1}).max_items is None


def test_forget_subscriber() -> None:
    svc, owner = subscribed_service()
    affiliate(svc, owner, "a@x", "member")
    out = svc.forget_subscriber("a@x")
    assert out.meta == {"n"} and not svc.nodes["n"].subscriptions and "a@x" not in svc.nodes["n"].affiliations


def test_disco_of_nodes() -> None:
    svc = pep()
    publish(svc, req(), "open-node", "1", options=publish_options(access_model="open"))
    publish(svc, req(), "private", "1", options=publish_options(access_model="whitelist"))
    assert [n.name for n in svc.visible_nodes(req("s@else/r"))] == ["open-node"]
    identities, meta = svc.node_info(req(), "private")
    assert identities == [("pubsub", "leaf", None)] and meta.get("type") == "result"
    assert svc.node_item_ids(req("s@else/r"), "open-node") == ["1"]
    assert error(svc.node_item_ids, req("s@else/r"), "private").condition == "not-allowed"


def test_unknown_request_is_not_implemented() -> None:
    assert error(pep().handle, req(), "set", x("<frob/>")).condition == "feature-not-implemented"
    assert error(pep().handle, req(), "set", x("")).condition == "bad-request"


def test_refused_subscription_options_leave_no_subscription() -> None:
    svc = service()
    svc.handle(req("o@x/r"), "set", x("<create node='n'/>"))
    bad = "<options>" + form(PUBSUB + "#subscribe_options", digest="1") + "</options>"
    err = error(svc.handle, req("a@x/r"), "set", x("<subscribe node='n' jid='a@x'/>" + bad))
    assert app(err) == "invalid-options"
    assert not svc.nodes["n"].subscriptions


def test_owner_subscriptions_beyond_the_limit_change_nothing() -> None:
    svc = service(max_subscriptions=1)
    owner = req("o@x/r")
    svc.handle(owner, "set", x("<create node='n'/>"))
    many = "".join(f"<subscription jid='{j}@x' subscription='subscribed'/>" for j in "ab")
    err = error(svc.handle, owner, "set", x(f"<subscriptions node='n'>{many}</subscriptions>", PUBSUB_OWNER))
    assert app(err) == "too-many-subscriptions" and not svc.nodes["n"].subscriptions
