"""Pubsub nodes and items on the map stores, for every backend: written in batches, read back whole."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.jid import JID
from roost.modules.pubsub.config import PUBSUB, Limits
from roost.modules.pubsub.engine import PubSubService, Requester
from roost.modules.pubsub.store import NodeStore
from roost.storage import StorageManager
from roost.xml.fragment import parse_element

OWNER = ("example.org", "juliet")


def spawner(tasks: list[asyncio.Task[Any]]) -> Any:
    def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.append(task)
        return task

    return spawn


def pep() -> PubSubService:
    return PubSubService(JID.parse("juliet@example.org"), Limits(), pep_owner="juliet@example.org")


def publish(svc: PubSubService, node: str, item_id: str, text: str) -> Any:
    req = Requester(JID.parse("juliet@example.org/balcony"))
    item = f"<item id='{item_id}'><p xmlns='u'>{text}</p></item>"
    xml = f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish></pubsub>"
    return svc.handle(req, "set", parse_element(xml))


async def test_nodes_items_and_subscriptions_round_trip(storage: StorageManager) -> None:
    tasks: list[asyncio.Task[Any]] = []
    store = NodeStore(storage, spawner(tasks))
    svc = pep()
    conf = (
        f"<pubsub xmlns='{PUBSUB}'><create node='n'/><configure><x xmlns='jabber:x:data' type='submit'>"
        "<field var='pubsub#max_items'><value>3</value></field>"
        "<field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub>"
    )
    store.record(
        OWNER, svc, svc.handle(Requester(JID.parse("juliet@example.org/b")), "set", parse_element(conf))
    )
    for i in range(5):
        store.record(OWNER, svc, publish(svc, "n", f"i{i}", f"text {i} ✓"))
    sub = f"<pubsub xmlns='{PUBSUB}'><subscribe node='n' jid='romeo@example.net'/></pubsub>"
    store.record(
        OWNER, svc, svc.handle(Requester(JID.parse("romeo@example.net/o")), "set", parse_element(sub))
    )
    await store.flush()

    back = pep()
    await store.load(OWNER, back)
    node = back.nodes["n"]
    assert node.config == svc.nodes["n"].config and node.config.access_model == "open"
    assert list(node.items) == ["i2", "i3", "i4"]  # oldest dropped, order kept
    assert node.items["i4"].payload is not None and node.items["i4"].payload.text == "text 4 ✓"
    assert (
        node.subscriptions["romeo@example.net"].subid
        == svc.nodes["n"].subscriptions["romeo@example.net"].subid
    )


async def test_loading_writes_what_is_queued_first(storage: StorageManager) -> None:
    tasks: list[asyncio.Task[Any]] = []
    store = NodeStore(storage, spawner(tasks))
    svc = pep()
    store.record(OWNER, svc, publish(svc, "n", "a", "x"))
    back = pep()
    await store.load(OWNER, back)  # no explicit flush
    assert list(back.nodes["n"].items) == ["a"]


async def test_deleted_node_and_deleted_owner(storage: StorageManager) -> None:
    tasks: list[asyncio.Task[Any]] = []
    store = NodeStore(storage, spawner(tasks))
    svc = pep()
    store.record(OWNER, svc, publish(svc, "gone", "a", "x"))
    store.record(OWNER, svc, publish(svc, "kept", "b", "y"))
    await store.flush()
    delete = parse_element(f"<pubsub xmlns='{PUBSUB}#owner'><delete node='gone'/></pubsub>")
    store.record(OWNER, svc, svc.handle(Requester(JID.parse("juliet@example.org/b")), "set", delete))
    await asyncio.gather(*tasks)
    await store.flush()
    back = pep()
    await store.load(OWNER, back)
    assert set(back.nodes) == {"kept"}
    assert all("gone" not in key for key in await storage.map("pubsub_items").items(*OWNER))

    await store.delete_owner(OWNER)
    empty = pep()
    await store.load(OWNER, empty)
    assert not empty.nodes


async def test_unreadable_records_are_skipped(storage: StorageManager) -> None:
    await storage.map("pubsub_nodes").set(*OWNER, "bad", "not an object")
    await storage.map("pubsub_nodes").set(*OWNER, "ok", {"config": {}, "affiliations": {}})
    await storage.map("pubsub_items").set(*OWNER, '["ok","1"]', {"xml": "<broken", "ts": 1})
    await storage.map("pubsub_items").set(*OWNER, '["ok","2"]', {"xml": "<p xmlns='u'/>", "ts": 2})
    await storage.map("pubsub_items").set(*OWNER, "not json", {"xml": None})
    svc = pep()
    await NodeStore(storage, spawner([])).load(OWNER, svc)
    assert set(svc.nodes) == {"ok"} and list(svc.nodes["ok"].items) == ["2"]
