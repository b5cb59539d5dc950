"""The MUC service: directory, disco, cleanup of vanished sessions, shutdown and the lock timeout."""

from __future__ import annotations

from roost.modules.muc.model import MUC, OCCUPANT_ID
from tests.unit.modules.muc.world import MEMBER, OTHER, OWNER, SERVICE, J, World, codes, flatten, to


def test_disco_items_list_public_unlocked_rooms_only() -> None:
    w = World()
    w.create(roomname="Open Cave")
    w.create(room="hidden", publicroom="0")
    w.join(OWNER, "x", room="locked")  # created, not configured
    items = w.service.disco_items(None)
    assert [(i.attrs["jid"], i.attrs.get("name")) for i in items.elements("item")] == [
        (f"coven@{SERVICE}", "Open Cave")
    ]


def test_service_disco_info_identity_and_features() -> None:
    info = World().service.disco_info(None)
    identity = info.find("identity")
    assert (
        identity is not None
        and identity.attrs["category"] == "conference"
        and identity.attrs["type"] == "text"
    )
    assert {MUC, OCCUPANT_ID} <= {f.attrs["var"] for f in info.elements("feature")}


def test_vanished_session_leaves_every_room() -> None:
    w = World()
    w.create()
    w.create(room="heath")
    w.join(MEMBER, "a")
    w.join(MEMBER, "a", room="heath")
    results = w.service.session_closed(J(MEMBER), w.now, ("333",))
    assert {room.name for room, _ in results} == {"coven", "heath"}
    for room, out in results:
        w.service.apply(room, out)
        seen = to(flatten(out), OWNER)
        assert seen[0].attrs["type"] == "unavailable" and codes(seen[0]) == {"333"}
        assert room.occupant("a") is None
    assert J(MEMBER) not in w.service.by_session


def test_shutdown_sends_332_and_keeps_persistent_rooms() -> None:
    w = World()
    w.create(persistentroom="1")
    w.create(room="temp")
    w.join(OTHER, "h")
    results = w.service.shutdown()
    for room, out in results:
        w.service.apply(room, out)
        for stanza in flatten(out):
            assert stanza.attrs["type"] == "unavailable" and codes(stanza) == {"110", "332"}
    assert w.service.get("coven") is not None and w.service.get("temp") is None


def test_rooms_left_locked_are_destroyed_after_the_timeout() -> None:
    w = World(lock_timeout=300)
    w.join(OWNER, "x", room="forgotten")
    assert w.service.sweep(w.now + 10) == []
    results = w.service.sweep(w.now + 301)
    room, out = results[0]
    w.service.apply(room, out)
    assert out.destroyed and w.service.get("forgotten") is None


def test_rooms_can_be_created_unlocked() -> None:
    w = World(lock_new_rooms=False)
    w.join(OWNER, "x")
    assert not w.room().locked
    assert not w.join(MEMBER, "y")[0].attrs.get("type")
