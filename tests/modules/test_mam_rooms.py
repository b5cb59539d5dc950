"""Room archives (XEP-0313 on MUC): what rooms keep, who reads it, moderation, history across restarts."""

from __future__ import annotations

from pathlib import Path

from roost.modules.mam.module import ROOM_STORE
from roost.stanza import error_condition as condition
from roost.xml.element import Element
from tests.modules.test_mam import MAM, bodies, fin_ids, form, query, rsm
from tests.support.scenario import Harness, ScriptedSession

SERVICE = "conference.localhost"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
SID = "urn:xmpp:sid:0"


async def join(session: ScriptedSession, room: str, nick: str, history: str = "") -> None:
    await session.submit(f"<presence to='{room}@{SERVICE}/{nick}'><x xmlns='{MUC}'>{history}</x></presence>")


async def make_room(h: Harness, owner: ScriptedSession, room: str = "coven", **fields: str) -> None:
    """Create and configure a room (persistent unless told otherwise), owner joined as 'owner'."""
    await join(owner, room, "owner")
    values = {"muc#roomconfig_persistentroom": "1", **fields}
    x = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in values.items())
    answer = await owner.iq(
        f"<query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'>{x}</x></query>",
        "set",
        to=f"{room}@{SERVICE}",
    )
    assert answer.attrs["type"] == "result", answer
    owner.clear()


async def say(h: Harness, session: ScriptedSession, room: str, body: str) -> None:
    await session.submit(f"<message to='{room}@{SERVICE}' type='groupchat'><body>{body}</body></message>")
    await h.server.storage.flush()


async def test_persistent_rooms_archive_groupchat_once_as_relayed(h: Harness) -> None:
    owner = await h.login("crone")
    hag = await h.login("hag")
    await make_room(h, owner)
    await join(hag, "coven", "thirdwitch")
    hag.clear()
    await say(h, hag, "coven", "Harpier cries")
    relayed = hag.next()
    room_sid = next(s for s in relayed.elements("stanza-id", SID) if s.attrs["by"] == f"coven@{SERVICE}")

    outsider = await h.login("outsider")
    items, answer = await query(outsider, to=f"coven@{SERVICE}")
    assert bodies(items) == ["Harpier cries"]
    msg = items[0]
    assert msg.attrs["archive-id"] == room_sid.attrs["id"]
    assert msg.attrs["from"] == f"coven@{SERVICE}/thirdwitch" and "to" not in msg.attrs
    assert msg.find("occupant-id", OCCUPANT_ID) is not None
    assert msg.find("x", MUC_USER) is None  # semi-anonymous: no real JID for a visitor
    assert fin_ids(answer)[3] is True
    # the user archives do not get groupchat copies
    assert (await query(hag))[0] == []

    owned, _ = await query(owner, to=f"coven@{SERVICE}")
    item = owned[0].find("x", MUC_USER).find("item", MUC_USER)  # type: ignore[union-attr]
    assert item is not None and item.attrs["jid"] == "hag@localhost"


async def test_subject_changes_are_archived_but_are_not_join_history(h: Harness) -> None:
    owner = await h.login("crone")
    await make_room(h, owner)
    await say(h, owner, "coven", "before")
    await owner.submit(f"<message to='coven@{SERVICE}' type='groupchat'><subject>Spells</subject></message>")
    await h.server.storage.flush()
    items, _ = await query(owner, to=f"coven@{SERVICE}")
    assert [m.find_text("subject") for m in items] == [None, "Spells"]
    hag = await h.login("hag")
    await join(hag, "coven", "thirdwitch")
    history = [
        m for m in hag.received if m.name == "message" and m.find("delay", "urn:xmpp:delay") is not None
    ]
    assert [m.find_text("body") for m in history] == ["before", None]  # the message, then the subject


async def test_with_filters_real_jids_only_for_those_who_may_see_them(h: Harness) -> None:
    owner = await h.login("crone")
    hag = await h.login("hag")
    await make_room(h, owner)
    await join(hag, "coven", "thirdwitch")
    await say(h, hag, "coven", "one")
    await say(h, owner, "coven", "two")

    items, _ = await query(owner, form(**{"with": "hag@localhost"}), to=f"coven@{SERVICE}")
    assert bodies(items) == ["one"]
    _, answer = await query(hag, form(**{"with": "crone@localhost"}), to=f"coven@{SERVICE}")
    assert condition(answer) == "forbidden"
    items, _ = await query(hag, form(**{"{urn:xmpp:fulltext:0}fulltext": "TWO"}), to=f"coven@{SERVICE}")
    assert bodies(items) == ["two"]
    items, answer = await query(hag, rsm(max="1", before=""), to=f"coven@{SERVICE}")
    assert bodies(items) == ["two"] and fin_ids(answer)[2] == "2"


async def disco_features(session: ScriptedSession, jid: str) -> set[str]:
    info = await session.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=jid)
    return {f.attrs["var"] for f in info.find("query").elements("feature")}  # type: ignore[union-attr]


async def test_temporary_rooms_and_rooms_with_mam_off_keep_no_archive(h: Harness) -> None:
    owner = await h.login("crone")
    await make_room(h, owner, "temp", **{"muc#roomconfig_persistentroom": "0"})
    await make_room(h, owner, "off", mam="0")
    await make_room(h, owner, "off2", **{"muc#roomconfig_enablearchiving": "false"})
    await make_room(h, owner, "on")
    for room in ("temp", "off", "off2", "on"):
        await say(h, owner, room, "hello")

    for room in ("temp", "off", "off2"):
        _, answer = await query(owner, to=f"{room}@{SERVICE}")
        assert condition(answer) == "feature-not-implemented"
        assert MAM not in await disco_features(owner, f"{room}@{SERVICE}")
    assert {MAM, MAM + "#extended"} <= await disco_features(owner, f"on@{SERVICE}")
    assert bodies((await query(owner, to=f"on@{SERVICE}"))[0]) == ["hello"]

    got = await owner.iq(f"<query xmlns='{MUC}#owner'/>", to=f"off@{SERVICE}")
    field = next(
        f
        for f in got.find("query").find("x", "jabber:x:data").elements("field")
        if f.attrs.get("var") == "mam"
    )  # type: ignore[union-attr]
    assert field.find_text("value") == "0"


async def test_who_may_read_a_room_archive(h: Harness) -> None:
    owner = await h.login("crone")
    stranger = await h.login("stranger")
    member = await h.login("member")
    await make_room(h, owner, "private", **{"muc#roomconfig_membersonly": "1"})
    await owner.iq(
        f"<query xmlns='{MUC}#admin'><item affiliation='member' jid='member@localhost'/>"
        "<item affiliation='outcast' jid='stranger@localhost'/></query>",
        "set",
        to=f"private@{SERVICE}",
    )
    await say(h, owner, "private", "secret")
    assert condition((await query(stranger, to=f"private@{SERVICE}"))[1]) == "forbidden"
    assert bodies((await query(member, to=f"private@{SERVICE}"))[0]) == ["secret"]
    assert condition((await query(stranger, to=f"nosuchroom@{SERVICE}"))[1]) == "item-not-found"
    meta = await member.iq(f"<metadata xmlns='{MAM}'/>", to=f"private@{SERVICE}")
    assert meta.find("metadata", MAM).find("start", MAM) is not None  # type: ignore[union-attr]


def retracted(msg: Element) -> Element | None:
    return msg.find("retracted", "urn:xmpp:message-retract:1")


async def test_moderated_messages_become_tombstones(h: Harness) -> None:
    owner = await h.login("crone")
    hag = await h.login("hag")
    await make_room(h, owner, **{"muc#roomconfig_historylength": "1"})
    await join(hag, "coven", "thirdwitch")
    await say(h, hag, "coven", "rude words")
    await say(h, hag, "coven", "kind words")  # the room's own history now holds only this one
    items, _ = await query(owner, to=f"coven@{SERVICE}")
    target = items[0].attrs["archive-id"]

    answer = await owner.iq(
        f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{target}'>"
        "<retract xmlns='urn:xmpp:message-retract:1'/><reason>Language</reason></moderate>",
        "set",
        to=f"coven@{SERVICE}",
    )
    assert answer.attrs["type"] == "result", answer
    await h.settle()

    items, _ = await query(hag, to=f"coven@{SERVICE}")
    stone, kept = items
    assert stone.attrs["archive-id"] == target and stone.find("body") is None
    mark = retracted(stone)
    assert mark is not None and mark.find_text("reason", "urn:xmpp:message-retract:1") == "Language"
    moderated = mark.find("moderated", "urn:xmpp:message-moderate:1")
    assert moderated is not None and moderated.find("occupant-id", OCCUPANT_ID) is not None
    assert stone.find("occupant-id", OCCUPANT_ID) is not None  # the author's, XEP-0425 §5
    assert bodies([kept]) == ["kind words"]
    assert (await query(hag, form(**{"{urn:xmpp:fulltext:0}fulltext": "rude"}), to=f"coven@{SERVICE}"))[
        0
    ] == []

    unknown = await owner.iq(
        "<moderate xmlns='urn:xmpp:message-moderate:1' id='nope'>"
        "<retract xmlns='urn:xmpp:message-retract:1'/></moderate>",
        "set",
        to=f"coven@{SERVICE}",
    )
    assert condition(unknown) == "item-not-found"


async def test_join_history_comes_from_the_archive_after_a_restart(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, storage=f"sqlite:///{tmp_path / 'roost.db'}") as h:
        owner = await h.login("crone")
        await make_room(h, owner)
        for n in range(4):
            await say(h, owner, "coven", f"before restart {n}")
        await h.restart()
        hag = await h.login("hag")
        await join(hag, "coven", "thirdwitch", "<history maxstanzas='3'/>")
        history = [m for m in hag.received if m.name == "message" and m.find("body") is not None]
        assert bodies(history) == ["before restart 1", "before restart 2", "before restart 3"]
        assert all(m.find("delay", "urn:xmpp:delay") is not None for m in history)
        items, _ = await query(hag, to=f"coven@{SERVICE}")
        assert len(items) == 4


async def test_destroying_a_room_deletes_its_archive(h: Harness) -> None:
    owner = await h.login("crone")
    await make_room(h, owner)
    await say(h, owner, "coven", "soon gone")
    store = h.server.storage.archive(ROOM_STORE)
    assert await store.count(SERVICE, "coven") == 1
    answer = await owner.iq(f"<query xmlns='{MUC}#owner'><destroy/></query>", "set", to=f"coven@{SERVICE}")
    assert answer.attrs["type"] == "result"
    await h.settle()
    assert await store.count(SERVICE, "coven") == 0


async def test_private_messages_stay_out_of_the_room_archive(h: Harness) -> None:
    owner = await h.login("crone")
    hag = await h.login("hag")
    await make_room(h, owner)
    await join(hag, "coven", "thirdwitch")
    await owner.submit(f"<message to='coven@{SERVICE}/thirdwitch' type='chat'><body>psst</body></message>")
    await h.server.storage.flush()
    assert (await query(owner, to=f"coven@{SERVICE}"))[0] == []
    assert bodies((await query(hag))[0]) == ["psst"]  # but in the recipient's own archive
