"""XEP-0248 collection nodes in the pure engine: association, notifications through collections
(subscription type and depth, SHIM collection name), the graph rules, and what collections refuse."""

from __future__ import annotations

from roost.modules.pubsub.config import PUBSUB, PUBSUB_EVENT, PUBSUB_OWNER, SubOptions
from roost.modules.pubsub.engine import Node, Notice, Outcome, PubSubService
from roost.xml.ns import DATA_FORMS
from tests.unit.modules.pubsub.test_engine import app, error, form, get_items, pep, publish, req, service, x

ADMIN = req("admin@example.org/desk", admin=True)
ALICE = req("alice@example.org/a")
BOB = req("bob@example.org/b")


def create(svc: PubSubService, who: object, name: str, **fields: str | list[str]) -> Outcome:
    configure = f"<configure>{form(PUBSUB + '#node_config', **fields)}</configure>" if fields else ""
    return svc.handle(who, "set", x(f"<create node='{name}'/>{configure}"))  # type: ignore[arg-type]


def subscribe(svc: PubSubService, who: object, node: str, **options: str) -> Outcome:
    opts = f"<options>{form(PUBSUB + '#subscribe_options', **options)}</options>" if options else ""
    jid = str(who.jid.bare)  # type: ignore[attr-defined]
    return svc.handle(who, "set", x(f"<subscribe node='{node}' jid='{jid}'/>{opts}"))  # type: ignore[arg-type]


def tree() -> PubSubService:
    """news (collection) ⊃ sport (collection) ⊃ football (leaf); news ⊃ weather (leaf)."""
    svc = service()
    create(svc, ADMIN, "news", node_type="collection")
    create(svc, ADMIN, "sport", node_type="collection", collection="news")
    create(svc, ADMIN, "football", collection="sport")
    create(svc, ADMIN, "weather", collection="news")
    return svc


def through(out: Outcome, collection: str) -> Notice:
    (notice,) = [n for n in out.notices if n.collection == collection]
    return notice


def test_items_of_a_child_reach_collection_subscribers_named_by_the_collection() -> None:
    svc = tree()
    subscribe(svc, ALICE, "news", subscription_type="items")
    subscribe(svc, BOB, "weather")
    out = publish(svc, ADMIN, "weather", "today", "<w xmlns='urn:w'>sun</w>")
    leaf, via = out.notices
    assert leaf.recipients == ["bob@example.org"] and leaf.collection is None
    assert via.collection == "news" and via.recipients == ["alice@example.org"]
    items = via.event.find("items", PUBSUB_EVENT)
    assert items is not None and items.get("node") == "weather"  # the node that published (§3.3)


def test_depth_and_type_of_a_collection_subscription() -> None:
    svc = tree()
    subscribe(svc, ALICE, "news", subscription_type="items")  # depth 1: football is two levels down
    subscribe(svc, BOB, "news", subscription_type="all", subscription_depth="all")
    carol = req("carol@example.org/c")
    subscribe(svc, carol, "news")  # the default type is "nodes" (XEP-0248 §4.1): no items
    out = publish(svc, ADMIN, "football", "goal")
    assert [(n.collection, n.recipients) for n in out.notices if n.collection] == [
        ("news", ["bob@example.org"])
    ]
    out = publish(svc, ADMIN, "weather", "rain")
    assert sorted(through(out, "news").recipients) == ["alice@example.org", "bob@example.org"]


def test_retract_and_purge_go_through_collections_and_nobody_gets_one_event_twice() -> None:
    svc = tree()
    subscribe(svc, ALICE, "news", subscription_type="items")
    subscribe(svc, ALICE, "weather")  # also subscribed to the leaf itself
    subscribe(svc, BOB, "news", subscription_type="items")
    publish(svc, ADMIN, "weather", "a")
    out = svc.handle(ADMIN, "set", x("<retract node='weather' notify='1'><item id='a'/></retract>"))
    assert out.notices[0].recipients == ["alice@example.org"]
    assert through(out, "news").recipients == ["bob@example.org"]
    out = svc.handle(ADMIN, "set", x("<purge node='weather'/>", PUBSUB_OWNER))
    assert through(out, "news").recipients == ["bob@example.org"]


def test_node_subscribers_hear_of_association_and_dissociation() -> None:
    svc = tree()
    subscribe(svc, ALICE, "news")  # type "nodes"
    out = create(svc, ADMIN, "traffic", collection="news")
    (notice,) = out.notices
    assoc = notice.event.find("collection", PUBSUB_EVENT)
    assert assoc is not None and assoc.get("node") == "news"
    assert assoc.first().name == "associate" and assoc.first().get("node") == "traffic"  # type: ignore[union-attr]
    assert notice.recipients == ["alice@example.org"]
    out = svc.handle(
        ADMIN,
        "set",
        x(
            f"<configure node='traffic'>{form(PUBSUB + '#node_config', collection=[])}</configure>",
            PUBSUB_OWNER,
        ),
    )
    assert svc.nodes["traffic"].config.collection == ()
    dis = out.notices[0].event.find("collection", PUBSUB_EVENT)
    assert dis is not None and dis.first().name == "dissociate"  # type: ignore[union-attr]


def test_collections_hold_no_items() -> None:
    svc = tree()
    err = error(publish, svc, ADMIN, "news", "x")
    assert (err.condition, app(err)) == ("feature-not-implemented", "unsupported")
    assert err.app is not None and err.app.get("feature") == "publish"
    err = error(get_items, svc, ADMIN, "news")
    assert err.app is not None and err.app.get("feature") == "retrieve-items"
    err = error(svc.handle, ADMIN, "set", x("<purge node='news'/>", PUBSUB_OWNER))
    assert err.app is not None and err.app.get("feature") == "persistent-items"


def test_graph_rules() -> None:
    svc = tree()
    err = error(lambda: create(svc, ADMIN, "x", collection="weather"))  # a leaf is no collection
    assert (err.condition, app(err)) == ("not-allowed", "invalid-options")
    assert error(lambda: create(svc, ADMIN, "x", collection="nowhere")).condition == "item-not-found"
    # news ⊃ sport, so news under sport would be a cycle.
    configure = f"<configure node='news'>{form(PUBSUB + '#node_config', collection='sport')}</configure>"
    err = error(svc.handle, ADMIN, "set", x(configure, PUBSUB_OWNER))
    assert (err.condition, app(err)) == ("not-allowed", "invalid-options")
    # Only a collection's owners add nodes to it.
    create(svc, ALICE, "mine")
    err = error(
        svc.handle,
        ALICE,
        "set",
        x(
            f"<configure node='mine'>{form(PUBSUB + '#node_config', collection='news')}</configure>",
            PUBSUB_OWNER,
        ),
    )
    assert err.condition == "forbidden"
    configure = (
        f"<configure node='weather'>{form(PUBSUB + '#node_config', node_type='collection')}</configure>"
    )
    assert error(svc.handle, ADMIN, "set", x(configure, PUBSUB_OWNER)).condition == "not-allowed"


def test_pep_has_leaf_nodes_only() -> None:
    svc = pep()
    err = error(lambda: create(svc, req(), "c", node_type="collection"))
    assert err.condition == "feature-not-implemented" and err.app is not None
    assert err.app.get("feature") == "collections"


def test_deleting_a_collection_leaves_its_children_without_it() -> None:
    svc = tree()
    out = svc.handle(ADMIN, "set", x("<delete node='sport'/>", PUBSUB_OWNER))
    assert "sport" in out.deleted and "football" in out.meta
    assert svc.nodes["football"].config.collection == ()
    assert [n.name for n in svc.visible_nodes(ADMIN, parent="")] == ["news", "football"]
    assert [n.name for n in svc.visible_nodes(ADMIN, parent="news")] == ["weather"]


def test_configuration_shows_children_which_follow_the_children_own_collection_field() -> None:
    svc = tree()
    result = svc.handle(ADMIN, "get", x("<configure node='news'/>", PUBSUB_OWNER)).result
    assert result is not None
    fields = {
        f.get("var"): [v.text for v in f.elements("value", DATA_FORMS)]
        for f in result.find("configure", PUBSUB_OWNER).find("x", DATA_FORMS).elements("field", DATA_FORMS)  # type: ignore[union-attr]
    }
    assert sorted(fields["pubsub#children"]) == ["sport", "weather"] and fields["pubsub#node_type"] == [
        "collection"
    ]
    same = form(PUBSUB + "#node_config", children=["weather", "sport"], title="News")
    svc.handle(ADMIN, "set", x(f"<configure node='news'>{same}</configure>", PUBSUB_OWNER))
    assert svc.nodes["news"].config.title == "News"
    other = form(PUBSUB + "#node_config", children=["weather"])
    err = error(svc.handle, ADMIN, "set", x(f"<configure node='news'>{other}</configure>", PUBSUB_OWNER))
    assert err.condition == "not-acceptable"


def test_leaf_access_model_still_applies_through_a_collection() -> None:
    svc = tree()
    create(svc, ADMIN, "secret", collection="news", access_model="whitelist")
    subscribe(svc, ALICE, "news", subscription_type="items")
    out = publish(svc, ADMIN, "secret", "s")
    assert not [n for n in out.notices if n.collection]


def test_collection_configuration_and_subscription_options_survive_storage() -> None:
    svc = tree()
    subscribe(svc, ALICE, "news", subscription_type="all", subscription_depth="all")
    news = Node.from_json("news", svc.nodes["news"].meta_json())
    assert news.subscriptions["alice@example.org"].options == SubOptions(
        subscription_type="all", subscription_depth=None
    )
    football = Node.from_json("football", svc.nodes["football"].meta_json())
    assert football.config.collection == ("sport",)
    err = error(lambda: subscribe(svc, BOB, "news", subscription_depth="0"))
    assert (err.condition, app(err)) == ("not-acceptable", "invalid-options")
