"""Multi-User Chat with real clients (slixmpp): XEP-0045 and the extensions used with it today.

Each test runs a server on real sockets with SQLite storage and several slixmpp clients that have
slixmpp's own MUC plugins loaded; the clients use those plugins where they cover a use case and raw
stanzas elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError, PresenceError

from roost.modules.muc.model import MODERATE, MUC_OWNER, MUC_USER, OCCUPANT_ID, RETRACT
from roost.stanza import error_condition
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS, DELAY, DISCO_INFO, DISCO_ITEMS, STANZA_ID
from tests.support.muc import (
    MUC_CONFIG,
    SERVICE,
    MucPeer,
    close_all,
    codes,
    from_,
    item,
    login,
    room_jid,
)
from tests.support.server import RunningServer, running_server, start_server

Login = Callable[[str], Awaitable[MucPeer]]
DISCO_ITEMS_Q = "<query xmlns='http://jabber.org/protocol/disco#items'/>"
DISCO_INFO_Q = "<query xmlns='http://jabber.org/protocol/disco#info'/>"


@pytest.fixture
async def muc(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, MUC_CONFIG) as running:
        yield running


@pytest.fixture
async def peers(muc: RunningServer) -> AsyncIterator[Login]:
    made: list[MucPeer] = []

    async def make(jid: str) -> MucPeer:
        peer = await login(muc, jid)
        made.append(peer)
        return peer

    try:
        yield make
    finally:
        await close_all(made)


def occupant(room: str, nick: str) -> str:
    return f"{room_jid(room)}/{nick}"


def presence_of(room: str, nick: str, type_: str | None = None) -> Callable[[Element], bool]:
    return from_(occupant(room, nick), "presence", type_)


def groupchat_from(room: str, nick: str) -> Callable[[Element], bool]:
    return from_(occupant(room, nick), "message", "groupchat")


def error_from(jid: str, name: str = "message") -> Callable[[Element], bool]:
    return from_(jid, name, "error")


def features(info: Element) -> set[str]:
    query = info.find("query", DISCO_INFO)
    assert query is not None, info
    return {f.attrs["var"] for f in query.elements("feature", DISCO_INFO)}


# -- discovery (§6) --------------------------------------------------------------------------------
async def test_service_is_found_through_the_server_and_lists_public_rooms(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    items = await crone.iq(DISCO_ITEMS_Q, to="localhost")
    assert SERVICE in [i.attrs["jid"] for i in items.find("query", DISCO_ITEMS).elements("item")]  # type: ignore[union-attr]
    info = await crone.iq(DISCO_INFO_Q, to=SERVICE)
    identity = info.find("query", DISCO_INFO).find("identity")  # type: ignore[union-attr]
    assert identity is not None and (identity.attrs["category"], identity.attrs["type"]) == (
        "conference",
        "text",
    )
    assert "http://jabber.org/protocol/muc" in features(info)

    await crone.create("coven", "firstwitch", roomname="A Dark Cave", roomdesc="For all good witches")
    await crone.create("hideout", "firstwitch", publicroom="0")
    items = await crone.iq(DISCO_ITEMS_Q, to=SERVICE)
    listed = [(i.attrs["jid"], i.attrs.get("name")) for i in items.find("query").elements("item")]  # type: ignore[union-attr]
    assert listed == [(room_jid("coven"), "A Dark Cave")]

    info = await crone.iq(DISCO_INFO_Q, to=room_jid("coven"))
    assert {
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_unmoderated",
        "muc_semianonymous",
        "muc_unsecured",
        "http://jabber.org/protocol/muc#self-ping-optimization",
        OCCUPANT_ID,
        MODERATE,
        STANZA_ID,
    } <= features(info)
    form = info.find("query", DISCO_INFO).find("x", DATA_FORMS)  # type: ignore[union-attr]
    values = {
        f.attrs.get("var"): f.find_text("value", DATA_FORMS) for f in form.elements("field", DATA_FORMS)
    }  # type: ignore[union-attr]
    assert values["FORM_TYPE"] == "http://jabber.org/protocol/muc#roominfo"
    assert values["muc#roominfo_description"] == "For all good witches"
    assert values["muc#roominfo_occupants"] == "1"
    hidden = await crone.iq(DISCO_INFO_Q, to=room_jid("hideout"))
    assert "muc_hidden" in features(hidden)
    missing = await crone.iq(DISCO_INFO_Q, to=room_jid("nowhere"))
    assert error_condition(missing) == "item-not-found"


# -- creating rooms (§10.1) ------------------------------------------------------------------------
async def test_instant_room_then_join_talk_history_and_subject(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    joined = await crone.join("coven", "firstwitch")
    me = joined[-2]
    assert codes(me) == {"110", "201"} and item(me).attrs["affiliation"] == "owner"

    hag = await peers("hag@localhost/pda")
    locked = await hag.join("coven", "thirdwitch")
    assert error_condition(locked[-1]) == "item-not-found"  # §7.2.11: locked until configured

    assert (await crone.configure("coven")).attrs["type"] == "result"  # instant room
    crone.send(f"<message to='{room_jid('coven')}' type='groupchat'><subject>Spells</subject></message>")
    await crone.expect(groupchat_from("coven", "firstwitch"))
    crone.say("coven", "Thrice the brinded cat hath mew'd.", "m1")
    await crone.expect(groupchat_from("coven", "firstwitch"))

    # slixmpp's own join: occupants, self-presence, history, subject, in the order of §7.1
    self_presence, subject, occupants, history = await hag.muc.join_muc_wait(
        JID(room_jid("coven")), "thirdwitch", maxstanzas=10, timeout=5
    )
    assert self_presence["muc"]["role"] == "participant"
    assert subject["subject"] == "Spells"
    assert [p["from"].resource for p in occupants] == ["firstwitch", "thirdwitch"]
    assert [m["body"] for m in history] == ["Thrice the brinded cat hath mew'd."]
    hag.clear()

    new = await crone.expect(presence_of("coven", "thirdwitch"))
    assert "jid" in item(new).attrs  # the owner is a moderator and sees real JIDs

    hag.say("coven", "Harpier cries: 'tis time.", "h1")
    seen = [await p.expect(groupchat_from("coven", "thirdwitch")) for p in (crone, hag)]
    for msg in seen:
        assert msg.attrs["id"] == "h1" and msg.find_text("body") == "Harpier cries: 'tis time."
        sid = msg.find("stanza-id", STANZA_ID)
        assert sid is not None and sid.attrs["by"] == room_jid("coven")
        assert msg.find("occupant-id", OCCUPANT_ID) is not None
    assert (
        seen[0].find("stanza-id", STANZA_ID).attrs["id"] == seen[1].find("stanza-id", STANZA_ID).attrs["id"]
    )  # type: ignore[union-attr]


async def test_reserved_room_is_configured_with_the_form(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    await crone.join("coven", "firstwitch")
    form = await crone.muc.get_room_config(room_jid("coven"))
    fields = form.get_fields()
    for name in (
        "roomname",
        "roomdesc",
        "persistentroom",
        "publicroom",
        "membersonly",
        "moderatedroom",
        "passwordprotectedroom",
        "roomsecret",
        "whois",
        "maxusers",
        "allowpm",
        "changesubject",
        "allowinvites",
        "presencebroadcast",
        "getmemberlist",
        "enablelogging",
        "historylength",
        "roomadmins",
        "roomowners",
        "lang",
    ):
        assert f"muc#roomconfig_{name}" in fields, name
    reply = await crone.configure(
        "coven",
        roomname="A Dark Cave",
        moderatedroom="1",
        membersonly="1",
        whois="anyone",
        persistentroom="1",
        roomadmins="wicca@localhost",
    )
    assert reply.attrs["type"] == "result"
    info = await crone.iq(DISCO_INFO_Q, to=room_jid("coven"))
    assert {"muc_moderated", "muc_membersonly", "muc_nonanonymous", "muc_persistent"} <= features(info)
    admins = await crone.muc.get_affiliation_list(room_jid("coven"), "admin")
    assert [str(j) for j in admins] == ["wicca@localhost"]

    hag = await peers("hag@localhost/pda")
    denied = await hag.iq("<query xmlns='http://jabber.org/protocol/muc#owner'/>", to=room_jid("coven"))
    assert error_condition(denied) == "forbidden"
    bad = await crone.configure("coven", passwordprotectedroom="1", roomsecret="")
    assert error_condition(bad) == "not-acceptable"


async def test_cancelled_creation_destroys_the_room(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    await crone.join("coven", "firstwitch")
    await crone.muc.cancel_config(room_jid("coven"))
    gone = await crone.expect(presence_of("coven", "firstwitch", "unavailable"))
    assert gone.find("x", MUC_USER).find("destroy", MUC_USER) is not None  # type: ignore[union-attr]
    assert error_condition(await crone.iq(DISCO_INFO_Q, to=room_jid("coven"))) == "item-not-found"


# -- entering: denials (§7.2.6-§7.2.11) ------------------------------------------------------------
async def test_entry_is_refused_for_the_reasons_of_the_spec(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("secret", "firstwitch", passwordprotectedroom="1", roomsecret="cauldronburn")
    await crone.create("members", "firstwitch", membersonly="1")
    await crone.create("open", "firstwitch")

    assert error_condition((await hag.join("secret", "thirdwitch"))[-1]) == "not-authorized"
    assert error_condition((await hag.join("secret", "thirdwitch", password="wrong"))[-1]) == "not-authorized"
    ok = await hag.join("secret", "thirdwitch", password="cauldronburn")
    assert codes(ok[-2]) == {"110"}

    refused = (await hag.join("members", "thirdwitch"))[-1]
    assert error_condition(refused) == "registration-required"
    assert refused.find("x", "http://jabber.org/protocol/muc") is not None

    conflict = (await hag.join("open", "firstwitch"))[-1]
    assert error_condition(conflict) == "conflict"
    assert conflict.attrs["from"] == occupant("open", "firstwitch")

    reply = await crone.admin("open", "<item affiliation='outcast' jid='hag@localhost'/>")
    assert reply.attrs["type"] == "result"
    assert error_condition((await hag.join("open", "thirdwitch"))[-1]) == "forbidden"

    with pytest.raises(PresenceError) as e:
        await hag.muc.join_muc_wait(JID(room_jid("open")), "other", timeout=5)
    assert e.value.condition == "forbidden"

    nonick = await hag.iq(DISCO_INFO_Q, to=room_jid("open"))  # disco still works for outsiders
    assert nonick.attrs["type"] == "result"
    hag.send(f"<presence to='{room_jid('open')}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    assert error_condition(await hag.expect(error_from(room_jid("open"), "presence"))) == "jid-malformed"


async def test_visitor_without_voice_is_refused_then_requests_and_gets_voice(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("coven", "firstwitch", moderatedroom="1")
    joined = await hag.join("coven", "thirdwitch")
    assert item(joined[-2]).attrs["role"] == "visitor"
    hag.say("coven", "may I speak?", "v1")
    refused = await hag.expect(error_from(room_jid("coven")))
    assert error_condition(refused) == "forbidden" and refused.attrs["id"] == "v1"

    # §7.13 voice request → §8.6 approval form to the moderators
    hag.send(
        f"<message to='{room_jid('coven')}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
        "<field var='muc#role' type='list-single'><value>participant</value></field></x></message>"
    )
    approval = await crone.expect(lambda s: s.name == "message" and s.find("x", DATA_FORMS) is not None)
    values = {
        f.attrs.get("var"): f.find_text("value", DATA_FORMS)
        for f in approval.find("x", DATA_FORMS).elements("field", DATA_FORMS)
    }  # type: ignore[union-attr]
    assert values["muc#roomnick"] == "thirdwitch" and values["muc#jid"] == hag.jid
    crone.send(
        f"<message to='{room_jid('coven')}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
        "<field var='muc#role'><value>participant</value></field>"
        f"<field var='muc#jid'><value>{hag.jid}</value></field>"
        "<field var='muc#roomnick'><value>thirdwitch</value></field>"
        "<field var='muc#request_allow'><value>true</value></field></x></message>"
    )
    voiced = await hag.expect(presence_of("coven", "thirdwitch"))
    assert item(voiced).attrs["role"] == "participant" and "110" in codes(voiced)
    hag.say("coven", "thank you", "v2")
    assert (await crone.expect(groupchat_from("coven", "thirdwitch"))).find_text("body") == "thank you"

    await crone.muc.set_role(room_jid("coven"), "thirdwitch", "visitor", reason="enough")
    devoiced = await hag.expect(presence_of("coven", "thirdwitch"))
    assert item(devoiced).attrs["role"] == "visitor"


async def test_full_room_refuses_newcomers(tmp_path: Path) -> None:
    running = await start_server(tmp_path, MUC_CONFIG)
    peers: list[MucPeer] = []
    try:
        crone = await login(running, "crone@localhost/desktop")
        hag = await login(running, "hag@localhost/pda")
        hecate = await login(running, "hecate@localhost/broom")
        peers += [crone, hag, hecate]
        await crone.create("coven", "firstwitch", maxusers="2")
        await hag.join("coven", "thirdwitch")
        full = (await hecate.join("coven", "hecate"))[-1]
        assert error_condition(full) == "service-unavailable"
        assert full.find("error").attrs["type"] == "wait"  # type: ignore[union-attr]
    finally:
        await close_all(peers)
        await running.stop()


# -- occupants: nick changes, presence, private messages, several sessions (§7.5-§7.7, §7.2.9) -----
async def test_nick_change_status_change_and_private_messages(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("coven", "firstwitch")
    await hag.join("coven", "thirdwitch")
    await crone.expect(presence_of("coven", "thirdwitch"))

    hag.send(f"<presence to='{occupant('coven', 'oldhag')}'/>")
    old = await hag.expect(presence_of("coven", "thirdwitch", "unavailable"))
    assert codes(old) == {"110", "303"} and item(old).attrs["nick"] == "oldhag"
    new = await hag.expect(presence_of("coven", "oldhag"))
    assert codes(new) == {"110"}
    assert codes(await crone.expect(presence_of("coven", "thirdwitch", "unavailable"))) == {"303"}
    await crone.expect(presence_of("coven", "oldhag"))

    hag.send(f"<presence to='{occupant('coven', 'firstwitch')}'/>")
    refused = await hag.expect(error_from(occupant("coven", "firstwitch"), "presence"))
    assert error_condition(refused) == "conflict"

    hag.send(f"<presence to='{occupant('coven', 'oldhag')}'><show>xa</show><status>away</status></presence>")
    status = await crone.expect(presence_of("coven", "oldhag"))
    assert status.find_text("show") == "xa" and status.find_text("status") == "away"

    hag.send(
        f"<message to='{occupant('coven', 'firstwitch')}' type='chat' id='pm1'><body>psst</body></message>"
    )
    pm = await crone.expect(from_(occupant("coven", "oldhag"), "message", "chat"))
    assert pm.find_text("body") == "psst" and pm.find("x", MUC_USER) is not None
    hag.send(f"<message to='{occupant('coven', 'nobody')}' type='chat'><body>?</body></message>")
    assert error_condition(await hag.expect(error_from(occupant("coven", "nobody")))) == "item-not-found"
    hag.send(f"<message to='{occupant('coven', 'firstwitch')}' type='groupchat'><body>?</body></message>")
    assert error_condition(await hag.expect(error_from(occupant("coven", "firstwitch")))) == "bad-request"

    assert (await crone.configure("coven", allowpm="none")).attrs["type"] == "result"
    hag.send(f"<message to='{occupant('coven', 'firstwitch')}' type='chat'><body>again</body></message>")
    assert error_condition(await hag.expect(error_from(occupant("coven", "firstwitch")))) == "forbidden"

    hag.send(
        f"<presence to='{occupant('coven', 'oldhag')}' type='unavailable'><status>bye</status></presence>"
    )
    gone = await crone.expect(presence_of("coven", "oldhag", "unavailable"))
    assert item(gone).attrs["role"] == "none" and gone.find_text("status") == "bye"


async def test_two_sessions_of_one_user_share_a_nickname(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    phone = await peers("hag@localhost/phone")
    laptop = await peers("hag@localhost/laptop")
    await crone.create("coven", "firstwitch")
    await phone.join("coven", "hag")
    await crone.expect(presence_of("coven", "hag"))
    joined = await laptop.join("coven", "hag")
    assert codes(joined[-2]) == {"110"}
    crone.say("coven", "both of you", "b1")
    for session in (phone, laptop):
        assert (await session.expect(groupchat_from("coven", "firstwitch"))).attrs["id"] == "b1"
    crone.send(f"<message to='{occupant('coven', 'hag')}' type='chat'><body>pm</body></message>")
    for session in (phone, laptop):
        await session.expect(from_(occupant("coven", "firstwitch"), "message", "chat"))
    phone.say("coven", "from the phone", "p1")
    assert (await laptop.expect(groupchat_from("coven", "hag"))).attrs["id"] == "p1"

    phone.send(f"<presence to='{occupant('coven', 'hag')}' type='unavailable'/>")
    await phone.expect(presence_of("coven", "hag", "unavailable"))
    await crone.nothing(presence_of("coven", "hag", "unavailable"))
    crone.say("coven", "still there?", "b2")
    assert (await laptop.expect(groupchat_from("coven", "firstwitch"))).attrs["id"] == "b2"


async def test_vanished_session_is_removed_from_the_room(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("coven", "firstwitch")
    await hag.join("coven", "thirdwitch")
    await crone.expect(presence_of("coven", "thirdwitch"))
    hag.client.abort()  # the connection just drops: no unavailable presence from the client
    gone = await crone.expect(presence_of("coven", "thirdwitch", "unavailable"))
    assert item(gone).attrs["role"] == "none" and codes(gone) == {"333"}  # §12.1: lost, not left
    await crone.nothing(presence_of("coven", "thirdwitch"))  # the presence module's unavailable is ignored


# -- moderator and admin use cases (§8, §9, §10) ---------------------------------------------------
async def test_kick_ban_membership_and_moderator_status(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    wicca = await peers("wicca@localhost/laptop")
    hag = await peers("hag@localhost/pda")
    rogue = await peers("rogue@localhost/x")
    room = room_jid("coven")
    await crone.create("coven", "firstwitch")
    await crone.muc.set_affiliation(room, "admin", jid="wicca@localhost")
    await crone.muc.set_affiliation(room, "member", jid="hag@localhost", nick="thirdwitch")
    await wicca.join("coven", "secondwitch")
    joined = await hag.join("coven", "thirdwitch")
    assert item(joined[-2]).attrs["affiliation"] == "member"
    await rogue.join("coven", "rogue")

    await wicca.muc.set_role(room, "rogue", "none", reason="Avaunt")  # §8.2 kick
    kicked = await rogue.expect(presence_of("coven", "rogue", "unavailable"))
    assert codes(kicked) == {"110", "307"} and item(kicked).find_text("reason", MUC_USER) == "Avaunt"
    assert codes(await hag.expect(presence_of("coven", "rogue", "unavailable"))) == {"307"}

    await rogue.join("coven", "rogue")  # a kicked user may come back
    await crone.muc.set_affiliation(room, "outcast", jid="rogue@localhost", reason="Treason")  # §9.1 ban
    banned = await rogue.expect(presence_of("coven", "rogue", "unavailable"))
    assert codes(banned) == {"110", "301"} and item(banned).attrs["affiliation"] == "outcast"
    assert error_condition((await rogue.join("coven", "rogue"))[-1]) == "forbidden"
    assert [str(j) for j in await wicca.muc.get_affiliation_list(room, "outcast")] == ["rogue@localhost"]
    members = await wicca.iq(
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query>", to=room
    )
    entries = list(members.find("query", "http://jabber.org/protocol/muc#admin").elements("item"))  # type: ignore[union-attr]
    assert [(e.attrs["jid"], e.attrs.get("nick")) for e in entries] == [("hag@localhost", "thirdwitch")]

    await wicca.muc.set_role(room, "thirdwitch", "moderator")  # §9.6
    promoted = await hag.expect(presence_of("coven", "thirdwitch"))
    assert item(promoted).attrs["role"] == "moderator"
    await wicca.muc.set_role(room, "thirdwitch", "participant")  # §9.7
    assert item(await hag.expect(presence_of("coven", "thirdwitch"))).attrs["role"] == "participant"

    with pytest.raises(IqError) as e:
        await wicca.muc.set_affiliation(room, "outcast", jid="crone@localhost")
    assert e.value.condition == "not-allowed"  # an admin cannot ban an owner
    with pytest.raises(IqError) as e:
        await hag.muc.set_affiliation(room, "outcast", jid="wicca@localhost")
    assert e.value.condition == "forbidden"
    with pytest.raises(IqError) as e:
        await crone.muc.set_affiliation(room, "outcast", jid="crone@localhost")
    assert e.value.condition == "conflict"
    with pytest.raises(IqError) as e:
        await hag.muc.set_role(room, "secondwitch", "none")
    assert e.value.condition == "forbidden"

    await crone.muc.set_affiliation(room, "owner", jid="wicca@localhost")  # §10.3
    assert item(await hag.expect(presence_of("coven", "secondwitch"))).attrs["affiliation"] == "owner"
    await crone.muc.set_affiliation(room, "none", jid="hag@localhost")  # §9.4 revoke membership
    assert item(await hag.expect(presence_of("coven", "thirdwitch"))).attrs["affiliation"] == "none"
    assert (await crone.configure("coven", membersonly="1")).attrs["type"] == "result"
    removed = await hag.expect(presence_of("coven", "thirdwitch", "unavailable"))
    assert codes(removed) == {"110", "322"}


async def test_mediated_invitation_decline_and_direct_invitation(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hecate = await peers("hecate@localhost/broom")
    await crone.create(
        "coven", "firstwitch", membersonly="1", passwordprotectedroom="1", roomsecret="cauldron"
    )
    crone.muc.invite(room_jid("coven"), "hecate@localhost", "the place for all good witches")
    invitation = await hecate.expect(from_(room_jid("coven"), "message"))
    invite = invitation.find("x", MUC_USER).find("invite", MUC_USER)  # type: ignore[union-attr]
    assert invite is not None and invite.attrs["from"] == "crone@localhost"
    assert invite.find_text("reason", MUC_USER) == "the place for all good witches"
    assert invitation.find("x", MUC_USER).find_text("password", MUC_USER) == "cauldron"  # type: ignore[union-attr]
    joined = await hecate.join("coven", "hecate", password="cauldron")  # invited: now a member
    assert item(joined[-2]).attrs["affiliation"] == "member"
    hecate.send(f"<presence to='{occupant('coven', 'hecate')}' type='unavailable'/>")

    hecate.muc.decline(room_jid("coven"), "crone@localhost", "too busy")
    declined = await crone.expect(
        lambda s: (
            s.name == "message"
            and s.find("x", MUC_USER) is not None
            and s.find("x", MUC_USER).find("decline", MUC_USER) is not None
        )
    )  # type: ignore[union-attr]
    decline = declined.find("x", MUC_USER).find("decline", MUC_USER)  # type: ignore[union-attr]
    assert decline.attrs["from"] == "hecate@localhost" and decline.find_text("reason", MUC_USER) == "too busy"  # type: ignore[union-attr]

    hag = await peers("hag@localhost/pda")
    await crone.admin("coven", "<item affiliation='member' jid='hag@localhost'/>")
    await hag.join("coven", "thirdwitch", password="cauldron")
    hag.muc.invite(room_jid("coven"), "rogue@localhost")  # members may not invite by default
    assert error_condition(await hag.expect(error_from(room_jid("coven")))) == "forbidden"

    # XEP-0249: client to client; the server only routes it
    crone.client.plugin["xep_0249"].send_invitation(
        JID(hecate.jid), JID(room_jid("coven")), password="cauldron", reason="come"
    )
    direct = await hecate.expect(from_(crone.jid, "message"))
    x = direct.find("x", "jabber:x:conference")
    assert x is not None and x.attrs["jid"] == room_jid("coven") and x.attrs["password"] == "cauldron"


async def test_destroy_with_alternate_venue(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("heath", "firstwitch", persistentroom="1")
    await hag.join("heath", "thirdwitch")
    with pytest.raises(IqError) as e:
        await hag.muc.destroy(room_jid("heath"), reason="mine")
    assert e.value.condition == "forbidden"
    await crone.muc.destroy(room_jid("heath"), reason="Macbeth doth come.", altroom=room_jid("coven"))
    for peer, nick in ((crone, "firstwitch"), (hag, "thirdwitch")):
        gone = await peer.expect(presence_of("heath", nick, "unavailable"))
        destroy = gone.find("x", MUC_USER).find("destroy", MUC_USER)  # type: ignore[union-attr]
        assert destroy is not None and destroy.attrs["jid"] == room_jid("coven")
        assert destroy.find_text("reason", MUC_USER) == "Macbeth doth come."
    await crone.nothing(presence_of("heath", "thirdwitch", "unavailable"))  # one presence each (§10.9)
    assert error_condition(await crone.iq(DISCO_INFO_Q, to=room_jid("heath"))) == "item-not-found"


async def test_temporary_room_is_gone_when_the_last_occupant_leaves(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    await crone.create("coven", "firstwitch")
    crone.send(f"<presence to='{occupant('coven', 'firstwitch')}' type='unavailable'/>")
    await crone.expect(presence_of("coven", "firstwitch", "unavailable"))
    assert error_condition(await crone.iq(DISCO_INFO_Q, to=room_jid("coven"))) == "item-not-found"


async def test_registration_reserves_a_nickname(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    hecate = await peers("hecate@localhost/broom")
    await crone.create("coven", "firstwitch")
    form = await hag.iq("<query xmlns='jabber:iq:register'/>", to=room_jid("coven"))
    assert form.find("query", "jabber:iq:register").find("x", DATA_FORMS) is not None  # type: ignore[union-attr]
    reply = await hag.iq(
        "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
        "<field var='muc#register_roomnick'><value>thirdwitch</value></field></x></query>",
        "set",
        room_jid("coven"),
    )
    assert reply.attrs["type"] == "result"
    nick = await hag.iq(
        "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>", to=room_jid("coven")
    )
    assert nick.find("query", DISCO_INFO).find("identity").attrs["name"] == "thirdwitch"  # type: ignore[union-attr]
    assert error_condition((await hecate.join("coven", "thirdwitch"))[-1]) == "conflict"
    joined = await hag.join("coven", "thirdwitch")
    assert item(joined[-2]).attrs["affiliation"] == "member"


# -- modern extensions: self-ping, moderation ------------------------------------------------------
async def test_self_ping_is_answered_by_the_room(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    await crone.create("coven", "firstwitch")
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    assert (await crone.iq(ping, to=occupant("coven", "firstwitch"))).attrs["type"] == "result"
    outsider = await peers("hag@localhost/pda")
    assert error_condition(await outsider.iq(ping, to=occupant("coven", "firstwitch"))) == "not-acceptable"
    assert error_condition(await outsider.iq(ping, to=occupant("nowhere", "x"))) == "not-acceptable"
    status = await crone.client.plugin["xep_0410"].send_self_ping(
        JID(occupant("coven", "firstwitch")), timeout=5
    )
    assert status.name == "JOINED"


async def test_iq_to_an_occupant_is_relayed(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("coven", "firstwitch")
    await hag.join("coven", "thirdwitch")
    reply = await hag.iq("<query xmlns='jabber:iq:version'/>", to=occupant("coven", "firstwitch"))
    assert reply.attrs["type"] == "result" and reply.attrs["from"] == occupant("coven", "firstwitch")


async def test_moderator_retracts_a_message(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("coven", "firstwitch")
    await hag.join("coven", "spammer")
    hag.say("coven", "DM me for free magic potions!", "spam1")
    spam = await crone.expect(groupchat_from("coven", "spammer"))
    sid = spam.find("stanza-id", STANZA_ID).attrs["id"]  # type: ignore[union-attr]
    with pytest.raises(IqError) as e:
        await hag.client.plugin["xep_0425"].moderate(JID(room_jid("coven")), sid, "no")
    assert e.value.condition == "forbidden"
    await crone.client.plugin["xep_0425"].moderate(JID(room_jid("coven")), sid, "spam")
    for peer in (crone, hag):
        note = await peer.expect(lambda s: s.name == "message" and s.find("retract", RETRACT) is not None)
        retract = note.find("retract", RETRACT)
        assert note.attrs["from"] == room_jid("coven") and retract.attrs["id"] == sid  # type: ignore[union-attr]
        assert retract.find("moderated", MODERATE).attrs["by"] == occupant("coven", "firstwitch")  # type: ignore[union-attr]
    late = await peers("hecate@localhost/broom")
    joined = await late.join("coven", "hecate")
    assert not [s for s in joined if s.find("body") is not None]  # the spam is not in the history


# -- limits (rate, size, occupants, rooms per user) ------------------------------------------------
async def test_limits(tmp_path: Path) -> None:
    running = await start_server(
        tmp_path,
        "\n[muc]\nmessage_rate = 0.01\nmessage_burst = 2\nmax_body_chars = 20\nmax_rooms_per_user = 1\n",
    )
    peers: list[MucPeer] = []
    try:
        crone = await login(running, "crone@localhost/desktop")
        peers.append(crone)
        await crone.create("coven", "firstwitch")
        crone.say("coven", "x" * 21, "long")
        assert error_condition(await crone.expect(error_from(room_jid("coven")))) == "policy-violation"
        crone.say("coven", "one", "1")
        await crone.expect(groupchat_from("coven", "firstwitch"))
        crone.say("coven", "two", "2")
        refused = await crone.expect(error_from(room_jid("coven")))
        assert error_condition(refused) == "resource-constraint" and refused.attrs["id"] == "2"
        second = await crone.join("heath", "firstwitch")
        assert error_condition(second[-1]) == "not-allowed"
    finally:
        await close_all(peers)
        await running.stop()


async def test_room_creation_can_be_restricted_to_admins(tmp_path: Path) -> None:
    running = await start_server(tmp_path, '\n[muc]\ncreate_rooms = "admins"\nmessage_rate = 0\n')
    peers: list[MucPeer] = []
    try:
        hag = await login(running, "hag@localhost/pda")
        peers.append(hag)
        assert error_condition((await hag.join("coven", "thirdwitch"))[-1]) == "not-allowed"
    finally:
        await close_all(peers)
        await running.stop()


# -- shutdown and restart --------------------------------------------------------------------------
async def test_persistent_room_survives_a_restart(tmp_path: Path) -> None:
    running = await start_server(tmp_path, MUC_CONFIG)
    crone = await login(running, "crone@localhost/desktop")
    hag = await login(running, "hag@localhost/pda")
    try:
        await crone.create(
            "coven",
            "firstwitch",
            persistentroom="1",
            roomname="A Dark Cave",
            moderatedroom="1",
            passwordprotectedroom="1",
            roomsecret="cauldron",
        )
        await crone.admin(
            "coven",
            "<item affiliation='member' jid='hag@localhost' nick='thirdwitch'/>",
            "<item affiliation='outcast' jid='rogue@localhost'><reason>spam</reason></item>",
        )
        crone.send(f"<message to='{room_jid('coven')}' type='groupchat'><subject>Spells</subject></message>")
        await crone.expect(groupchat_from("coven", "firstwitch"))
        joined = await hag.join("coven", "thirdwitch", password="cauldron")
        occupant_id = joined[-2].find("occupant-id", OCCUPANT_ID).attrs["id"]  # type: ignore[union-attr]
    finally:
        await running.stop()
    # §12.2: the occupants heard that the service went down
    assert codes(await hag.expect(presence_of("coven", "thirdwitch", "unavailable"))) == {"110", "332"}
    await close_all([crone, hag])

    async with running_server(tmp_path, MUC_CONFIG) as running:
        hag = await login(running, "hag@localhost/pda")
        info = await hag.iq(DISCO_INFO_Q, to=room_jid("coven"))
        assert {"muc_persistent", "muc_moderated", "muc_passwordprotected"} <= features(info)
        identity = info.find("query", DISCO_INFO).find("identity")  # type: ignore[union-attr]
        assert identity.attrs["name"] == "A Dark Cave"  # type: ignore[union-attr]
        joined = await hag.join("coven", "thirdwitch", password="cauldron")
        me = joined[-2]
        assert item(me).attrs["affiliation"] == "member" and item(me).attrs["role"] == "participant"
        assert me.find("occupant-id", OCCUPANT_ID).attrs["id"] == occupant_id  # type: ignore[union-attr]
        subject = joined[-1]
        assert subject.find_text("subject") == "Spells" and subject.find("delay", DELAY) is not None
        rogue = await login(running, "rogue@localhost/x")
        assert error_condition((await rogue.join("coven", "rogue", password="cauldron"))[-1]) == "forbidden"
        crone = await login(running, "crone@localhost/desktop")
        owner = await crone.iq("<query xmlns='http://jabber.org/protocol/muc#owner'/>", to=room_jid("coven"))
        assert owner.find("query", MUC_OWNER) is not None  # still the owner
        await close_all([hag, rogue, crone])


async def test_blocking_a_room_stops_its_messages(peers: Login) -> None:
    crone = await peers("crone@localhost/desktop")
    hag = await peers("hag@localhost/pda")
    await crone.create("coven", "firstwitch")
    await hag.join("coven", "thirdwitch")
    blocked = await hag.iq(
        f"<block xmlns='urn:xmpp:blocking'><item jid='{occupant('coven', 'firstwitch')}'/></block>", "set"
    )
    assert blocked.attrs["type"] == "result"
    crone.say("coven", "can you hear me?", "b1")
    await crone.expect(groupchat_from("coven", "firstwitch"))
    await hag.nothing(groupchat_from("coven", "firstwitch"))
