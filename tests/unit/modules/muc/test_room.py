"""The MUC room engine on its own: state transitions and the rules of XEP-0045, no server, no sockets."""

from __future__ import annotations

import pytest

from roost.modules.muc.model import (
    MODERATE,
    MUC,
    MUC_OWNER,
    MUC_REQUEST,
    MUC_USER,
    OCCUPANT_ID,
    REGISTER,
    RETRACT,
    Affiliation,
    Role,
    ServicePolicy,
)
from roost.modules.muc.room import AffiliationRecord, IdGenerator, Occupant, Room
from roost.stanza import error_condition
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DATA_FORMS, DELAY, DISCO_INFO, PING, STANZA_ID
from tests.unit.modules.muc.world import (
    ADMIN,
    MEMBER,
    OTHER,
    OWNER,
    SERVICE,
    STRANGER,
    J,
    World,
    codes,
    config,
    form,
    item,
    occupant_id,
    to,
)

ROOM = f"coven@{SERVICE}"


@pytest.fixture
def world() -> World:
    w = World()
    w.create()
    return w


def occ_jid(nick: str) -> str:
    return f"{ROOM}/{nick}"


# -- creation (§10.1) ------------------------------------------------------------------------------
def test_creator_becomes_owner_of_a_locked_room_with_status_201() -> None:
    w = World()
    out = w.join(OWNER, "firstwitch")
    me = to(out, OWNER)
    assert me[0].name == "presence"
    assert codes(me[0]) == {"110", "201"}
    assert item(me[0]).attrs["affiliation"] == "owner"
    assert item(me[0]).attrs["role"] == "moderator"
    assert me[-1].name == "message" and me[-1].find("subject") is not None  # join ends with the subject
    assert w.room().locked


def test_locked_room_refuses_everyone_but_owners_with_item_not_found() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    out = w.join(MEMBER, "thirdwitch")
    assert out[0].attrs["type"] == "error"
    assert error_condition(out[0]) == "item-not-found"
    assert out[0].find("x", MUC) is not None
    assert out[0].find("error").attrs["by"] == ROOM  # type: ignore[union-attr]


def test_instant_room_is_unlocked_by_an_empty_submit() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    w.owner_set(OWNER, form())
    assert not w.room().locked
    out = w.join(MEMBER, "thirdwitch")
    assert codes(to(out, MEMBER)[-2]) == {"110"}


def test_reserved_room_gets_the_full_configuration_form() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    query = w.room().owner_get(Element("query", MUC_OWNER), J(OWNER))
    x = query.find("x", DATA_FORMS)
    assert x is not None and x.attrs["type"] == "form"
    fields = {f.attrs.get("var") for f in x.elements("field", DATA_FORMS)}
    for var in (
        "roomname",
        "roomdesc",
        "lang",
        "persistentroom",
        "publicroom",
        "membersonly",
        "allowinvites",
        "moderatedroom",
        "changesubject",
        "allowpm",
        "passwordprotectedroom",
        "roomsecret",
        "whois",
        "maxusers",
        "presencebroadcast",
        "getmemberlist",
        "enablelogging",
        "historylength",
        "roomadmins",
        "roomowners",
    ):
        assert f"muc#roomconfig_{var}" in fields, var
    assert "FORM_TYPE" in fields


def test_submitted_configuration_applies_and_unlocks() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    w.owner_set(
        OWNER,
        config(
            roomname="A Dark Cave",
            persistentroom="1",
            moderatedroom="true",
            whois="anyone",
            maxusers="10",
            allowpm="moderators",
            historylength="5",
            roomadmins=[ADMIN],
        ),
    )
    room = w.room()
    c = room.config
    assert (c.name, c.persistent, c.moderated, c.whois, c.max_users, c.allow_pm, c.history_length) == (
        "A Dark Cave",
        True,
        True,
        "anyone",
        10,
        "moderators",
        5,
    )
    assert room.affiliation_of(J(ADMIN)) == Affiliation.ADMIN
    assert not room.locked and w.last.save


@pytest.mark.parametrize(
    "fields",
    [
        {"passwordprotectedroom": "1", "roomsecret": ""},
        {"maxusers": "100000"},
        {"whois": "none"},
        {"allowpm": "everyone"},
        {"historylength": "1000"},
    ],
)
def test_unacceptable_configuration_is_refused(fields: dict[str, str]) -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    assert w.error_of(w.owner_set, OWNER, config(**fields)) == "not-acceptable"
    assert w.room().locked


def test_cancelling_initial_configuration_destroys_the_room() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    out = w.owner_set(OWNER, form("cancel"))
    assert w.last.destroyed and w.service.get("coven") is None
    assert out[0].attrs["type"] == "unavailable" and out[0].find("x", MUC_USER).find("destroy", MUC_USER)  # type: ignore[union-attr]


def test_cancelling_later_configuration_changes_nothing(world: World) -> None:
    before = world.room().config
    world.owner_set(OWNER, form("cancel"))
    assert world.room().config == before and not world.last.destroyed


def test_creator_leaving_a_locked_room_destroys_it() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    out = w.leave(OWNER, "firstwitch")
    assert w.last.destroyed
    assert out[0].find("x", MUC_USER).find("destroy", MUC_USER) is not None  # type: ignore[union-attr]


def test_only_owners_configure(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    assert world.error_of(world.room().owner_get, Element("query", MUC_OWNER), J(MEMBER)) == "forbidden"
    assert world.error_of(world.owner_set, MEMBER, config(roomname="x")) == "forbidden"


@pytest.mark.parametrize(
    ("policy", "user", "allowed"),
    [
        ("anyone", "someone@remote.example/r", True),
        ("local", "someone@remote.example/r", False),
        ("local", MEMBER, True),
        ("admins", MEMBER, False),
        ("admins", "boss@example.org/r", True),
        ("nobody", MEMBER, False),
        ("nobody", "boss@example.org/r", True),
    ],
)
def test_who_may_create_rooms(policy: str, user: str, allowed: bool) -> None:
    w = World(ServicePolicy(message_rate=0, admins=frozenset({"boss@example.org"})), create_rooms=policy)
    out = w.join(user, "nick", room="newroom")
    if allowed:
        assert w.service.get("newroom") is not None
    else:
        assert error_condition(out[0]) == "not-allowed" and w.service.get("newroom") is None


def test_rooms_per_user_are_limited() -> None:
    w = World(max_rooms_per_user=2)
    w.create(room="one")
    w.create(room="two")
    out = w.join(OWNER, "x", room="three")
    assert error_condition(out[0]) == "not-allowed"


# -- entering (§7.2) -------------------------------------------------------------------------------
def test_join_sends_roster_then_self_presence_then_history_then_subject(world: World) -> None:
    world.join(ADMIN, "secondwitch")
    world.say(OWNER, "first words")
    world.message(OWNER, body=None, children=[Element("subject", CLIENT, children=["Spells"])])
    out = to(world.join(MEMBER, "thirdwitch"), MEMBER)
    kinds = [(s.name, s.attrs.get("from")) for s in out]
    assert kinds == [
        ("presence", occ_jid("firstwitch")),
        ("presence", occ_jid("secondwitch")),
        ("presence", occ_jid("thirdwitch")),
        ("message", occ_jid("firstwitch")),
        ("message", occ_jid("firstwitch")),
    ]
    assert codes(out[2]) == {"110"} and out[2].attrs["id"] == "p1"
    history, subject = out[3], out[4]
    assert history.find_text("body") == "first words"
    assert history.find("delay", DELAY).attrs["from"] == ROOM  # type: ignore[union-attr]
    assert subject.find_text("subject") == "Spells" and subject.find("body") is None
    assert subject.find("delay", DELAY) is not None


def test_others_see_the_new_occupant(world: World) -> None:
    out = world.join(MEMBER, "thirdwitch")
    seen = to(out, OWNER)
    assert len(seen) == 1 and seen[0].attrs["from"] == occ_jid("thirdwitch")
    assert item(seen[0]).attrs["role"] == "participant"


def test_semi_anonymous_room_shows_real_jids_to_moderators_only(world: World) -> None:
    world.join(OTHER, "hecate")
    out = world.join(MEMBER, "thirdwitch")
    assert item(to(out, OWNER)[0]).attrs["jid"] == MEMBER  # moderator
    assert "jid" not in item(to(out, OTHER)[0]).attrs  # participant
    roster = to(out, MEMBER)
    assert all("jid" not in item(p).attrs for p in roster[:2])
    assert "100" not in codes(roster[2])


def test_non_anonymous_room_shows_real_jids_to_all_and_warns_with_100() -> None:
    w = World()
    w.create(whois="anyone")
    w.join(OTHER, "hecate")
    out = w.join(MEMBER, "thirdwitch")
    assert item(to(out, OTHER)[0]).attrs["jid"] == MEMBER
    assert "100" in codes(to(out, MEMBER)[2])


def test_logged_room_warns_with_170() -> None:
    w = World()
    w.create(enablelogging="1")
    assert "170" in codes(to(w.join(MEMBER, "thirdwitch"), MEMBER)[1])


def test_nickname_in_use_is_a_conflict(world: World) -> None:
    out = world.join(MEMBER, "FirstWitch")  # nicknames clash case-insensitively
    assert error_condition(out[0]) == "conflict" and out[0].attrs["from"] == occ_jid("FirstWitch")


def test_blank_nickname_is_refused(world: World) -> None:
    assert error_condition(world.join(MEMBER, " ")[0]) == "jid-malformed"


def test_password_protected_room() -> None:
    w = World()
    w.create(passwordprotectedroom="1", roomsecret="cauldronburn")
    assert error_condition(w.join(MEMBER, "thirdwitch")[0]) == "not-authorized"
    assert error_condition(w.join(MEMBER, "thirdwitch", password="wrong")[0]) == "not-authorized"
    ok = w.join(MEMBER, "thirdwitch", password="cauldronburn")
    assert codes(to(ok, MEMBER)[-2]) == {"110"}


def test_members_only_room_needs_membership() -> None:
    w = World()
    w.create(membersonly="1")
    assert error_condition(w.join(MEMBER, "thirdwitch")[0]) == "registration-required"
    w.admin(OWNER, {"affiliation": "member", "jid": "hag@example.org"})
    out = w.join(MEMBER, "thirdwitch")
    assert item(to(out, MEMBER)[-2]).attrs["affiliation"] == "member"


def test_banned_user_cannot_enter(world: World) -> None:
    world.admin(OWNER, {"affiliation": "outcast", "jid": "hag@example.org"})
    assert error_condition(world.join(MEMBER, "thirdwitch")[0]) == "forbidden"


def test_domain_ban_applies_to_every_user_of_the_domain(world: World) -> None:
    world.admin(OWNER, {"affiliation": "outcast", "jid": "spam.example"})
    assert error_condition(world.join("bot@spam.example/x", "bot")[0]) == "forbidden"


def test_full_room_refuses_with_service_unavailable_but_admits_admins() -> None:
    w = World(ServicePolicy(message_rate=0, admin_headroom=1))
    w.create(maxusers="2", roomadmins=[ADMIN])
    w.join(MEMBER, "thirdwitch")
    out = w.join(OTHER, "hecate")
    assert error_condition(out[0]) == "service-unavailable" and out[0].find("error").attrs["type"] == "wait"  # type: ignore[union-attr]
    assert not to(w.join(ADMIN, "secondwitch"), ADMIN)[0].attrs.get("type")


def test_reserved_nickname_belongs_to_its_member(world: World) -> None:
    world.admin(OWNER, {"affiliation": "member", "jid": "hag@example.org", "nick": "thirdwitch"})
    assert error_condition(world.join(OTHER, "ThirdWitch")[0]) == "conflict"
    assert not world.join(MEMBER, "thirdwitch")[0].attrs.get("type")


def test_presence_without_muc_element_from_a_non_occupant_is_kicked(world: World) -> None:
    out = world.presence(MEMBER, "thirdwitch", x=False)
    assert out[0].attrs["type"] == "unavailable" and codes(out[0]) == {"110", "307", "333"}
    assert world.room().occupant("thirdwitch") is None


def test_join_again_from_a_joined_client_resends_the_room_state(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.join(MEMBER, "thirdwitch")
    mine = to(out, MEMBER)
    assert [s.name for s in mine] == ["presence", "presence", "message"]
    assert codes(mine[1]) == {"110"}
    assert not to(out, OWNER)  # nothing changed for the others


def test_presence_children_are_reflected_but_not_forged_muc_data(world: World) -> None:
    show = Element("show", CLIENT, children=["away"])
    forged = Element("occupant-id", OCCUPANT_ID, {"id": "forged"})
    out = world.join(MEMBER, "thirdwitch", children=[show, forged])
    seen = to(out, OWNER)[0]
    assert seen.find_text("show") == "away"
    assert occupant_id(seen) == world.room().occupant_id(J(MEMBER))
    assert len(list(seen.elements("occupant-id", OCCUPANT_ID))) == 1


# -- multiple sessions (§7.2.9) --------------------------------------------------------------------
def test_two_sessions_of_one_user_share_one_nickname(world: World) -> None:
    other_session = "hag@example.org/laptop"
    world.join(MEMBER, "thirdwitch")
    out = world.join(other_session, "thirdwitch")
    assert not out[0].attrs.get("type")
    occ = world.room().occupant("thirdwitch")
    assert occ is not None and set(occ.sessions) == {J(MEMBER), J(other_session)}
    said = world.say(OWNER, "to all")
    assert to(said, MEMBER) and to(said, other_session)
    pm = world.message(OWNER, to_nick="thirdwitch", type_="chat")
    assert to(pm, MEMBER) and to(pm, other_session)
    third = "hag@example.org/tablet"
    me = [s for s in to(world.join(third, "ThirdWitch"), third) if "110" in codes(s)]
    assert me[0].attrs["from"] == occ_jid("thirdwitch") and codes(me[0]) == {"110", "210"}
    gone = world.leave(MEMBER, "thirdwitch")
    assert [s.attrs["to"] for s in gone if s.attrs.get("type") == "unavailable"] == [MEMBER]
    assert world.room().occupant("thirdwitch") is not None


# -- changing nickname and status (§7.6, §7.7) -----------------------------------------------------
def test_nick_change_sends_303_then_new_presence(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.presence(MEMBER, "oldhag", x=False)
    mine = to(out, MEMBER)
    assert mine[0].attrs["type"] == "unavailable" and codes(mine[0]) == {"110", "303"}
    assert item(mine[0]).attrs["nick"] == "oldhag"
    assert mine[1].attrs["from"] == occ_jid("oldhag") and codes(mine[1]) == {"110"}
    theirs = to(out, OWNER)
    assert codes(theirs[0]) == {"303"} and theirs[1].attrs["from"] == occ_jid("oldhag")
    assert world.room().occupant("oldhag") is not None and world.room().occupant("thirdwitch") is None


def test_nick_change_to_a_taken_nick_is_a_conflict(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.presence(MEMBER, "firstwitch", x=False)
    assert error_condition(out[0]) == "conflict"
    assert world.room().occupant("thirdwitch") is not None


def test_status_change_is_broadcast(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.presence(MEMBER, "thirdwitch", x=False, children=[Element("show", CLIENT, children=["xa"])])
    assert to(out, OWNER)[0].find_text("show") == "xa"
    assert codes(to(out, MEMBER)[0]) == {"110"}


def test_exit_sends_unavailable_with_role_none(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.leave(MEMBER, "thirdwitch")
    assert codes(to(out, MEMBER)[0]) == {"110"} and item(to(out, OWNER)[0]).attrs["role"] == "none"


def test_unavailable_from_a_non_occupant_is_ignored(world: World) -> None:
    assert world.leave(MEMBER, "thirdwitch") == []


def test_temporary_room_vanishes_with_its_last_occupant(world: World) -> None:
    world.leave(OWNER, "firstwitch")
    assert world.last.destroyed and world.service.get("coven") is None


def test_persistent_room_stays_when_empty() -> None:
    w = World()
    w.create(persistentroom="1")
    w.leave(OWNER, "firstwitch")
    assert not w.last.destroyed and w.service.get("coven") is not None


# -- history (§7.2.13, §7.2.14) --------------------------------------------------------------------
def _history(w: World, **attrs: str) -> list[str]:
    out = to(w.join(MEMBER, "thirdwitch", history=attrs or None), MEMBER)
    w.leave(MEMBER, "thirdwitch")
    return [m.find_text("body") or "" for m in out if m.name == "message" and m.find("body") is not None]


def test_history_limits_requested_on_join(world: World) -> None:
    for i in range(5):
        world.say(OWNER, f"msg{i}")
        world.tick(60)
    assert _history(world) == [f"msg{i}" for i in range(5)]
    assert _history(world, maxstanzas="2") == ["msg3", "msg4"]
    assert _history(world, maxchars="0") == []
    assert _history(world, seconds="150") == ["msg3", "msg4"]
    since = world.now - 190
    from roost.util.datetime import format_datetime

    assert _history(world, since=format_datetime(since)) == ["msg2", "msg3", "msg4"]
    one = len(_history(world, maxchars="1000"))
    assert 0 < one < 5


def test_room_keeps_only_its_history_length() -> None:
    w = World()
    w.create(historylength="2")
    for i in range(4):
        w.say(OWNER, f"m{i}")
    assert _history(w) == ["m2", "m3"]


def test_no_store_hint_keeps_a_message_out_of_history(world: World) -> None:
    world.say(OWNER, "secret", children=[Element("no-store", "urn:xmpp:hints")])
    assert _history(world) == []


# -- subject (§8.1) --------------------------------------------------------------------------------
def _subject(text: str) -> list[Element]:
    return [Element("subject", CLIENT, children=[text] if text else [])]


def test_moderator_changes_subject_and_everyone_sees_it(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.message(OWNER, body=None, children=_subject("Fire Burn"))
    assert {s.attrs["to"] for s in out} == {OWNER, MEMBER}
    assert out[0].attrs["from"] == occ_jid("firstwitch") and out[0].find_text("subject") == "Fire Burn"
    assert world.last.save


def test_participant_may_not_change_subject_unless_allowed(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    assert world.error_of(world.message, MEMBER, body=None, children=_subject("mine")) == "forbidden"
    world.owner_set(OWNER, config(changesubject="1"))
    world.message(MEMBER, body=None, children=_subject("mine"))
    assert world.room().subject is not None and world.room().subject.text == "mine"


def test_message_with_subject_and_body_is_not_a_subject_change(world: World) -> None:
    world.message(OWNER, body="hi", children=_subject("not a subject change"))
    assert world.room().subject is None


def test_empty_subject_clears_it(world: World) -> None:
    world.message(OWNER, body=None, children=_subject("x"))
    world.message(OWNER, body=None, children=_subject(""))
    out = to(world.join(MEMBER, "thirdwitch"), MEMBER)
    assert out[-1].find("subject") is not None and out[-1].find_text("subject") == ""


# -- groupchat messages (§7.4) ---------------------------------------------------------------------
def test_message_is_reflected_to_all_with_the_same_id_and_ids_added(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    forged = Element("stanza-id", STANZA_ID, {"id": "forged", "by": ROOM})
    other = Element("stanza-id", STANZA_ID, {"id": "kept", "by": "hag@example.org"})
    out = world.say(
        MEMBER, "hi all", children=[forged, other, Element("occupant-id", OCCUPANT_ID, {"id": "x"})]
    )
    assert {s.attrs["to"] for s in out} == {OWNER, MEMBER}
    msg = out[0]
    assert (
        msg.attrs["from"] == occ_jid("thirdwitch")
        and msg.attrs["id"] == "m1"
        and msg.attrs["type"] == "groupchat"
    )
    ids = [(e.attrs["id"], e.attrs["by"]) for e in msg.elements("stanza-id", STANZA_ID)]
    assert ("kept", "hag@example.org") in ids and ("forged", ROOM) not in ids
    assert sum(1 for _, by in ids if by == ROOM) == 1
    assert occupant_id(msg) == world.room().occupant_id(J(MEMBER))


def test_message_without_id_gets_one_id_for_every_reflection(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.say(MEMBER, "x", msg_id=None)
    assert out[0].attrs["id"] and out[0].attrs["id"] == out[1].attrs["id"]


def test_non_occupant_message_is_not_acceptable(world: World) -> None:
    assert world.error_of(world.say, STRANGER) == "not-acceptable"


def test_visitor_has_no_voice_in_a_moderated_room() -> None:
    w = World()
    w.create(moderatedroom="1")
    w.join(MEMBER, "thirdwitch")
    assert w.room().occupant("thirdwitch").role == Role.VISITOR  # type: ignore[union-attr]
    assert w.error_of(w.say, MEMBER) == "forbidden"


def test_too_long_message_is_refused() -> None:
    w = World(ServicePolicy(message_rate=0, max_body_chars=10))
    w.create()
    assert w.error_of(w.say, OWNER, "x" * 11) == "policy-violation"


def test_rate_limit_refuses_with_resource_constraint_then_refills() -> None:
    w = World(ServicePolicy(message_rate=1.0, message_burst=3.0))
    w.create()
    for _ in range(3):
        w.say(OWNER)
    assert w.error_of(w.say, OWNER) == "resource-constraint"
    w.tick(1.0)
    w.say(OWNER)


def test_stanza_ids_are_unique_and_time_ordered() -> None:
    ids = IdGenerator()
    made = [ids.stanza_id(1000.0 + i // 3) for i in range(30)]
    assert len(set(made)) == 30
    assert [m[:16] for m in made] == sorted(m[:16] for m in made)


# -- private messages (§7.5) -----------------------------------------------------------------------
def test_private_message_goes_to_the_occupant_with_muc_user_x(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.message(MEMBER, to_nick="firstwitch", type_="chat", body="psst")
    assert [s.attrs["to"] for s in out] == [OWNER]
    assert out[0].attrs["from"] == occ_jid("thirdwitch") and out[0].find("x", MUC_USER) is not None


def test_private_message_errors(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    assert world.error_of(world.message, MEMBER, to_nick="firstwitch", type_="groupchat") == "bad-request"
    assert world.error_of(world.message, MEMBER, to_nick="nobody", type_="chat") == "item-not-found"
    assert world.error_of(world.message, STRANGER, to_nick="firstwitch", type_="chat") == "not-acceptable"


@pytest.mark.parametrize(
    ("allowpm", "sender_role", "allowed"),
    [
        ("anyone", Role.VISITOR, True),
        ("participants", Role.VISITOR, False),
        ("participants", Role.PARTICIPANT, True),
        ("moderators", Role.PARTICIPANT, False),
        ("moderators", Role.MODERATOR, True),
        ("none", Role.MODERATOR, False),
    ],
)
def test_allowpm_controls_who_sends_private_messages(allowpm: str, sender_role: Role, allowed: bool) -> None:
    w = World()
    w.create(allowpm=allowpm)
    w.join(MEMBER, "thirdwitch")
    w.room().occupant("thirdwitch").role = sender_role  # type: ignore[union-attr]
    if allowed:
        assert w.message(MEMBER, to_nick="firstwitch", type_="chat")
    else:
        assert w.error_of(w.message, MEMBER, to_nick="firstwitch", type_="chat") == "forbidden"


def test_delivery_error_removes_the_ghost_occupant(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    err = Element("error", CLIENT, {"type": "cancel"})
    err.add("recipient-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas")
    out = world.message(MEMBER, to_nick="firstwitch", type_="error", body=None, children=[err])
    assert world.room().occupant("thirdwitch") is None
    assert codes(to(out, OWNER)[0]) == {"333"}


# -- roles (§5.1 table, §8) ------------------------------------------------------------------------
A, R = Affiliation, Role


@pytest.mark.parametrize(
    ("actor_aff", "target_aff", "target_role", "new", "expected"),
    [
        # kick (role none): not someone of higher affiliation; moderators only by admins/owners
        (A.NONE, A.NONE, R.PARTICIPANT, R.NONE, None),
        (A.NONE, A.NONE, R.VISITOR, R.NONE, None),
        (A.MEMBER, A.ADMIN, R.MODERATOR, R.NONE, "not-allowed"),
        (A.ADMIN, A.OWNER, R.MODERATOR, R.NONE, "not-allowed"),
        (A.NONE, A.NONE, R.MODERATOR, R.NONE, "not-allowed"),
        (A.ADMIN, A.NONE, R.MODERATOR, R.NONE, None),
        (A.OWNER, A.ADMIN, R.MODERATOR, R.NONE, None),
        (A.NONE, A.MEMBER, R.PARTICIPANT, R.NONE, "not-allowed"),
        # grant voice: any moderator
        (A.NONE, A.NONE, R.VISITOR, R.PARTICIPANT, None),
        # revoke voice: never admins/owners, not at or above the moderator's affiliation
        (A.NONE, A.NONE, R.PARTICIPANT, R.VISITOR, None),
        (A.MEMBER, A.MEMBER, R.PARTICIPANT, R.VISITOR, "not-allowed"),
        (A.ADMIN, A.MEMBER, R.PARTICIPANT, R.VISITOR, None),
        (A.OWNER, A.ADMIN, R.MODERATOR, R.VISITOR, "not-allowed"),
        # grant moderator: admins and owners
        (A.NONE, A.NONE, R.PARTICIPANT, R.MODERATOR, "forbidden"),
        (A.MEMBER, A.NONE, R.VISITOR, R.MODERATOR, "forbidden"),
        (A.ADMIN, A.NONE, R.VISITOR, R.MODERATOR, None),
        (A.OWNER, A.MEMBER, R.PARTICIPANT, R.MODERATOR, None),
        # revoke moderator: admins and owners, never from admins or owners
        (A.NONE, A.NONE, R.MODERATOR, R.PARTICIPANT, "forbidden"),
        (A.ADMIN, A.MEMBER, R.MODERATOR, R.PARTICIPANT, None),
        (A.ADMIN, A.ADMIN, R.MODERATOR, R.PARTICIPANT, "not-allowed"),
        (A.OWNER, A.OWNER, R.MODERATOR, R.PARTICIPANT, "not-allowed"),
        (A.ADMIN, A.NONE, R.MODERATOR, R.VISITOR, None),
        # no change
        (A.NONE, A.OWNER, R.MODERATOR, R.MODERATOR, None),
    ],
)
def test_role_change_rules(
    actor_aff: Affiliation, target_aff: Affiliation, target_role: Role, new: Role, expected: str | None
) -> None:
    room = Room(J(ROOM), ServicePolicy())
    target = Occupant(room.jid, "target", J("target@example.org"), target_role, "id", 1.0)
    if target_aff != A.NONE:
        room.affiliations["target@example.org"] = AffiliationRecord(target_aff)
    if expected is None:
        room.check_role_change(actor_aff, target, new)
    else:
        with pytest.raises(StanzaError) as e:
            room.check_role_change(actor_aff, target, new)
        assert e.value.condition == expected


# -- affiliations (§5.2 table, §9, §10) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("actor_aff", "current", "new", "expected"),
    [
        (A.NONE, A.NONE, A.MEMBER, "forbidden"),
        (A.MEMBER, A.NONE, A.OUTCAST, "forbidden"),
        # admins: ban and edit the member list
        (A.ADMIN, A.NONE, A.OUTCAST, None),
        (A.ADMIN, A.MEMBER, A.OUTCAST, None),
        (A.ADMIN, A.OUTCAST, A.NONE, None),
        (A.ADMIN, A.OUTCAST, A.MEMBER, None),
        (A.ADMIN, A.NONE, A.MEMBER, None),
        (A.ADMIN, A.MEMBER, A.NONE, None),
        # ... but not admins and owners
        (A.ADMIN, A.OWNER, A.OUTCAST, "not-allowed"),
        (A.ADMIN, A.ADMIN, A.OUTCAST, "not-allowed"),
        (A.ADMIN, A.ADMIN, A.MEMBER, "not-allowed"),
        (A.ADMIN, A.NONE, A.ADMIN, "forbidden"),
        (A.ADMIN, A.MEMBER, A.OWNER, "forbidden"),
        # owners: everything
        (A.OWNER, A.NONE, A.ADMIN, None),
        (A.OWNER, A.OUTCAST, A.OWNER, None),
        (A.OWNER, A.ADMIN, A.OUTCAST, None),
        (A.OWNER, A.OWNER, A.MEMBER, None),
        (A.OWNER, A.ADMIN, A.NONE, None),
    ],
)
def test_affiliation_change_rules(
    actor_aff: Affiliation, current: Affiliation, new: Affiliation, expected: str | None
) -> None:
    room = Room(J(ROOM), ServicePolicy())
    if current != A.NONE:
        room.affiliations["target@example.org"] = AffiliationRecord(current)
    actor = J("actor@example.org")
    if expected is None:
        room.check_affiliation_change(actor, actor_aff, J("target@example.org"), new)
    else:
        with pytest.raises(StanzaError) as e:
            room.check_affiliation_change(actor, actor_aff, J("target@example.org"), new)
        assert e.value.condition == expected


def test_self_ban_is_a_conflict(world: World) -> None:
    assert (
        world.error_of(world.admin, OWNER, {"affiliation": "outcast", "jid": "crone@example.org"})
        == "conflict"
    )


def test_last_owner_cannot_step_down_but_one_of_two_can(world: World) -> None:
    assert (
        world.error_of(world.admin, OWNER, {"affiliation": "admin", "jid": "crone@example.org"}) == "conflict"
    )
    world.admin(OWNER, {"affiliation": "owner", "jid": "hecate@example.org"})
    world.admin(OWNER, {"affiliation": "admin", "jid": "crone@example.org"})
    assert world.room().affiliation_of(J(OWNER)) == Affiliation.ADMIN


def test_role_and_affiliation_in_one_item_is_a_bad_request(world: World) -> None:
    item_ = {"affiliation": "member", "role": "participant", "jid": "hag@example.org", "nick": "x"}
    assert world.error_of(world.admin, OWNER, item_) == "bad-request"


def test_list_with_one_forbidden_change_changes_nothing(world: World) -> None:
    world.admin(OWNER, {"affiliation": "admin", "jid": "wicca@example.org"})
    world.admin(OWNER, {"affiliation": "owner", "jid": "boss@example.org"})
    bad = world.error_of(
        world.admin,
        ADMIN,
        {"affiliation": "outcast", "jid": "a@example.org"},
        {"affiliation": "outcast", "jid": "boss@example.org"},
    )
    assert bad == "not-allowed"
    assert world.room().affiliation_of(J("a@example.org")) == Affiliation.NONE


def test_kick_sends_307_with_actor_and_reason(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.admin(OWNER, {"nick": "thirdwitch", "role": "none", "reason": "Avaunt"})
    kicked = to(out, MEMBER)[0]
    assert kicked.attrs["type"] == "unavailable" and codes(kicked) == {"110", "307"}
    assert item(kicked).find("actor", MUC_USER).attrs["nick"] == "firstwitch"  # type: ignore[union-attr]
    assert item(kicked).find_text("reason", MUC_USER) == "Avaunt"
    assert codes(to(out, OWNER)[0]) == {"307"}
    assert world.room().occupant("thirdwitch") is None
    assert not world.join(MEMBER, "thirdwitch")[0].attrs.get("type")  # kicked users may come back


def test_ban_removes_with_301_and_keeps_out(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.admin(OWNER, {"affiliation": "outcast", "jid": "hag@example.org", "reason": "Treason"})
    banned = to(out, MEMBER)[0]
    assert codes(banned) == {"110", "301"} and item(banned).attrs["affiliation"] == "outcast"
    assert error_condition(world.join(MEMBER, "thirdwitch")[0]) == "forbidden"
    listing = world.admin_list(OWNER, affiliation="outcast")
    entries = list(listing.elements("item"))
    assert entries[0].attrs["jid"] == "hag@example.org" and entries[0].find_text("reason") == "Treason"


def test_revoking_membership_in_members_only_room_removes_with_321() -> None:
    w = World()
    w.create(membersonly="1")
    w.admin(OWNER, {"affiliation": "member", "jid": "hag@example.org"})
    w.join(MEMBER, "thirdwitch")
    out = w.admin(OWNER, {"affiliation": "none", "jid": "hag@example.org"})
    assert codes(to(out, MEMBER)[0]) == {"110", "321"}
    assert [s.attrs.get("type") for s in to(out, OWNER)] == [
        "unavailable"
    ]  # no separate affiliation presence


def test_granting_membership_updates_presence_and_members_only_invites() -> None:
    w = World()
    w.create(membersonly="1")
    out = w.admin(OWNER, {"affiliation": "member", "jid": "hecate@example.org"})
    assert out[0].name == "message" and out[0].attrs["to"] == "hecate@example.org"
    assert out[0].find("x", MUC_USER).find("invite", MUC_USER) is not None  # type: ignore[union-attr]


def test_affiliation_change_of_an_occupant_is_announced(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.admin(OWNER, {"affiliation": "admin", "jid": "hag@example.org"})
    seen = item(to(out, OWNER)[0])
    assert (seen.attrs["affiliation"], seen.attrs["role"]) == ("admin", "moderator")
    out = world.admin(OWNER, {"affiliation": "none", "jid": "hag@example.org"})
    seen = item(to(out, OWNER)[0])
    assert (seen.attrs["affiliation"], seen.attrs["role"]) == ("none", "participant")


def test_switching_to_members_only_removes_non_members_with_322(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.owner_set(OWNER, config(membersonly="1"))
    assert codes(to(out, MEMBER)[0]) == {"110", "322"}
    assert world.room().occupant("thirdwitch") is None and world.room().occupant("firstwitch") is not None


def test_voice_grant_and_revoke_in_a_moderated_room_and_remembered() -> None:
    w = World()
    w.create(moderatedroom="1")
    w.join(MEMBER, "thirdwitch")
    out = w.admin(OWNER, {"nick": "thirdwitch", "role": "participant"})
    assert item(to(out, MEMBER)[0]).attrs["role"] == "participant"
    w.say(MEMBER)
    w.leave(MEMBER, "thirdwitch")
    w.join(MEMBER, "thirdwitch")
    assert w.room().occupant("thirdwitch").role == Role.PARTICIPANT  # type: ignore[union-attr]
    w.admin(OWNER, {"nick": "thirdwitch", "role": "visitor"})
    assert w.error_of(w.say, MEMBER) == "forbidden"


def test_unmoderating_a_room_gives_visitors_voice() -> None:
    w = World()
    w.create(moderatedroom="1")
    w.join(MEMBER, "thirdwitch")
    w.owner_set(OWNER, config(moderatedroom="0"))
    assert w.room().occupant("thirdwitch").role == Role.PARTICIPANT  # type: ignore[union-attr]


def test_role_lists_for_moderators(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    listing = world.admin_list(OWNER, role="participant")
    entries = list(listing.elements("item"))
    assert [(e.attrs["nick"], e.attrs["jid"], e.attrs["role"]) for e in entries] == [
        ("thirdwitch", MEMBER, "participant")
    ]
    assert world.error_of(world.admin_list, MEMBER, role="moderator") == "forbidden"


def test_member_list_access(world: World) -> None:
    world.admin(OWNER, {"affiliation": "member", "jid": "hag@example.org", "nick": "thirdwitch"})
    world.join(MEMBER, "thirdwitch")
    members = world.admin_list(OWNER, affiliation="member")
    assert [e.attrs.get("nick") for e in members.elements("item")] == ["thirdwitch"]
    # semi-anonymous: a mere participant may not see member JIDs
    assert world.error_of(world.admin_list, MEMBER, affiliation="member") == "forbidden"
    world.owner_set(OWNER, config(whois="anyone"))
    world.admin_list(MEMBER, affiliation="member")
    assert world.error_of(world.admin_list, MEMBER, affiliation="outcast") == "forbidden"


def test_owner_and_admin_lists_are_for_owners_in_semi_anonymous_rooms(world: World) -> None:
    world.admin(OWNER, {"affiliation": "admin", "jid": "wicca@example.org"})
    assert world.error_of(world.admin_list, ADMIN, affiliation="owner") == "forbidden"
    owners = world.admin_list(OWNER, affiliation="owner")
    assert [e.attrs["jid"] for e in owners.elements("item")] == ["crone@example.org"]


def test_config_form_lists_replace_owners_and_admins(world: World) -> None:
    world.owner_set(OWNER, config(roomowners=["crone@example.org", "hecate@example.org"], roomadmins=[ADMIN]))
    room = world.room()
    assert room.list_affiliation(Affiliation.OWNER) == ["crone@example.org", "hecate@example.org"]
    assert room.list_affiliation(Affiliation.ADMIN) == ["wicca@example.org"]
    world.owner_set(OWNER, config(roomadmins=[]))
    assert room.list_affiliation(Affiliation.ADMIN) == []


def test_server_admins_are_owners_everywhere() -> None:
    w = World(ServicePolicy(message_rate=0, admins=frozenset({"boss@example.org"})))
    w.create()
    w.owner_set("boss@example.org/r", config(roomname="mine now"))
    assert w.room().config.name == "mine now"


# -- configuration changes (§10.2.1) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"whois": "anyone"}, {"172"}),
        ({"enablelogging": "1"}, {"170"}),
        ({"roomname": "new name"}, {"104"}),
    ],
)
def test_configuration_changes_are_announced(
    world: World, fields: dict[str, str], expected: set[str]
) -> None:
    out = world.owner_set(OWNER, config(**fields))
    notes = [s for s in out if s.name == "message"]
    assert notes and codes(notes[0]) == expected and notes[0].attrs["from"] == ROOM


def test_becoming_semi_anonymous_and_unlogged_announces_173_and_171() -> None:
    w = World()
    w.create(whois="anyone", enablelogging="1")
    out = w.owner_set(OWNER, config(whois="moderators", enablelogging="0"))
    assert codes(out[0]) == {"171", "173"}


# -- invitations (§7.8) ----------------------------------------------------------------------------
def _invite(to_jid: str, reason: str = "join us") -> Element:
    x = Element("x", MUC_USER)
    x.add("invite", attrs={"to": to_jid}).add("reason", text=reason)
    return x


def test_mediated_invitation_is_relayed_from_the_room() -> None:
    w = World()
    w.create(passwordprotectedroom="1", roomsecret="cauldronburn")
    out = w.message(OWNER, type_="normal", body=None, children=[_invite("hecate@example.org")])
    msg = out[0]
    assert msg.attrs["from"] == ROOM and msg.attrs["to"] == "hecate@example.org"
    x = msg.find("x", MUC_USER)
    assert x is not None
    invite = x.find("invite", MUC_USER)
    assert invite is not None and invite.attrs["from"] == "crone@example.org"
    assert invite.find_text("reason", MUC_USER) == "join us"
    assert x.find_text("password", MUC_USER) == "cauldronburn"


def test_invitation_rules_in_members_only_rooms() -> None:
    w = World()
    w.create(membersonly="1")
    w.admin(OWNER, {"affiliation": "member", "jid": "hag@example.org"})
    w.join(MEMBER, "thirdwitch")
    assert (
        w.error_of(w.message, MEMBER, type_="normal", body=None, children=[_invite("hecate@example.org")])
        == "forbidden"
    )
    w.owner_set(OWNER, config(allowinvites="1"))
    w.message(MEMBER, type_="normal", body=None, children=[_invite("hecate@example.org")])
    assert w.room().affiliation_of(J("hecate@example.org")) == Affiliation.MEMBER


def test_invitation_from_a_non_occupant_is_refused(world: World) -> None:
    assert (
        world.error_of(
            world.message, STRANGER, type_="normal", body=None, children=[_invite("x@example.org")]
        )
        == "not-acceptable"
    )


def test_decline_goes_back_to_the_inviter(world: World) -> None:
    x = Element("x", MUC_USER)
    x.add("decline", attrs={"to": "crone@example.org"}).add("reason", text="busy")
    out = world.message(OTHER, type_="normal", body=None, children=[x])
    decline = out[0].find("x", MUC_USER).find("decline", MUC_USER)  # type: ignore[union-attr]
    assert out[0].attrs["to"] == "crone@example.org" and out[0].attrs["from"] == ROOM
    assert decline is not None and decline.attrs["from"] == "hecate@example.org"


# -- voice requests (§7.13, §8.6) ------------------------------------------------------------------
def test_voice_request_reaches_moderators_and_approval_grants_voice() -> None:
    w = World()
    w.create(moderatedroom="1")
    w.join(MEMBER, "thirdwitch")
    request = form(FORM_TYPE=MUC_REQUEST, muc__role="participant")
    out = w.message(MEMBER, type_="normal", body=None, children=[request])
    assert [s.attrs["to"] for s in out] == [OWNER]
    approval = out[0].find("x", DATA_FORMS)
    assert approval is not None and approval.attrs["type"] == "form"
    values = {f.attrs.get("var"): f.find_text("value") for f in approval.elements("field")}
    assert values["muc#roomnick"] == "thirdwitch" and values["muc#jid"] == MEMBER
    assert (
        w.error_of(
            w.message,
            MEMBER,
            type_="normal",
            body=None,
            children=[
                form(
                    FORM_TYPE=MUC_REQUEST,
                    muc__role="participant",
                    muc__roomnick="thirdwitch",
                    muc__request_allow="true",
                )
            ],
        )
        == "forbidden"
    )
    w.message(
        OWNER,
        type_="normal",
        body=None,
        children=[
            form(
                FORM_TYPE=MUC_REQUEST,
                muc__role="participant",
                muc__roomnick="thirdwitch",
                muc__request_allow="true",
            )
        ],
    )
    assert w.room().occupant("thirdwitch").role == Role.PARTICIPANT  # type: ignore[union-attr]


# -- destruction (§10.9) ---------------------------------------------------------------------------
def test_destroy_tells_each_occupant_once_with_venue_and_reason() -> None:
    w = World()
    w.create(persistentroom="1")
    w.join(MEMBER, "thirdwitch")
    destroy = Element("destroy", MUC_OWNER, {"jid": f"heath@{SERVICE}"})
    destroy.add("reason", text="Macbeth doth come.")
    query = Element("query", MUC_OWNER, children=[destroy])
    room = w.room()
    out = w.apply(room, room.owner_set(query, J(OWNER), w.now))
    assert sorted(s.attrs["to"] for s in out) == sorted([OWNER, MEMBER])
    d = out[0].find("x", MUC_USER).find("destroy", MUC_USER)  # type: ignore[union-attr]
    assert (
        d is not None
        and d.attrs["jid"] == f"heath@{SERVICE}"
        and d.find_text("reason") == "Macbeth doth come."
    )
    assert w.last.destroyed and w.service.get("coven") is None


def test_only_owners_destroy(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    query = Element("query", MUC_OWNER, children=[Element("destroy", MUC_OWNER)])
    assert world.error_of(world.room().owner_set, query, J(MEMBER), world.now) == "forbidden"


# -- IQs to occupants: self-ping (XEP-0410) and relaying -------------------------------------------
def _iq(frm: str, nick: str, payload: Element, type_: str = "get", iq_id: str = "q1") -> Element:
    return Element("iq", CLIENT, {"from": frm, "to": occ_jid(nick), "type": type_, "id": iq_id}, [payload])


def test_self_ping_is_answered_by_the_room(world: World) -> None:
    room = world.room()
    out = room.occupant_iq(_iq(OWNER, "firstwitch", Element("ping", PING)), J(OWNER), "firstwitch", world.now)
    reply = out.out[0]
    assert isinstance(reply, Element) and reply.attrs["type"] == "result" and reply.attrs["to"] == OWNER
    with pytest.raises(StanzaError) as e:
        room.occupant_iq(
            _iq(STRANGER, "firstwitch", Element("ping", PING)), J(STRANGER), "firstwitch", world.now
        )
    assert e.value.condition == "not-acceptable"


def test_iq_to_an_occupant_is_relayed_and_the_answer_comes_back(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    room = world.room()
    query = Element("query", "jabber:iq:version")
    out = room.occupant_iq(_iq(MEMBER, "firstwitch", query), J(MEMBER), "firstwitch", world.now)
    relayed = out.out[0]
    assert isinstance(relayed, Element)
    assert relayed.attrs["to"] == OWNER and relayed.attrs["from"] == occ_jid("thirdwitch")
    assert relayed.attrs["id"] != "q1"
    answer = Element(
        "iq",
        CLIENT,
        {"type": "result", "id": relayed.attrs["id"], "from": OWNER, "to": occ_jid("thirdwitch")},
    )
    forged = room.occupant_iq(answer.shallow_copy(), J(STRANGER), "thirdwitch", world.now)
    assert forged.out == []
    back = room.occupant_iq(answer, J(OWNER), "thirdwitch", world.now).out[0]
    assert isinstance(back, Element)
    assert (back.attrs["to"], back.attrs["from"], back.attrs["id"]) == (MEMBER, occ_jid("firstwitch"), "q1")


def test_vcard_request_to_an_occupant_goes_to_the_bare_jid(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    out = world.room().occupant_iq(
        _iq(OWNER, "thirdwitch", Element("vCard", "vcard-temp")), J(OWNER), "thirdwitch", world.now
    )
    relayed = out.out[0]
    assert isinstance(relayed, Element) and relayed.attrs["to"] == "hag@example.org"


def test_disco_to_an_occupant_from_outside_is_a_bad_request(world: World) -> None:
    err = world.error_of(
        world.room().occupant_iq,
        _iq(STRANGER, "firstwitch", Element("query", DISCO_INFO)),
        J(STRANGER),
        "firstwitch",
        world.now,
    )
    assert err == "bad-request"


# -- moderation (XEP-0425) -------------------------------------------------------------------------
def test_moderator_retracts_a_message_from_history(world: World) -> None:
    world.join(MEMBER, "thirdwitch")
    said = world.say(MEMBER, "spam!")
    sid = said[0].find("stanza-id", STANZA_ID).attrs["id"]  # type: ignore[union-attr]
    moderate = Element("moderate", MODERATE, {"id": sid})
    moderate.add("retract", RETRACT)
    moderate.add("reason", MODERATE, text="spam")
    room = world.room()
    assert world.error_of(room.moderate, moderate, J(MEMBER), world.now) == "forbidden"
    out = world.apply(room, room.moderate(moderate, J(OWNER), world.now))
    assert {s.attrs["to"] for s in out} == {OWNER, MEMBER}
    retract = out[0].find("retract", RETRACT)
    assert retract is not None and retract.attrs["id"] == sid and out[0].attrs["from"] == ROOM
    moderated = retract.find("moderated", MODERATE)
    assert moderated is not None and moderated.attrs["by"] == occ_jid("firstwitch")
    assert moderated.find("occupant-id", OCCUPANT_ID) is not None
    assert world.last.retracted == [sid]
    world.leave(MEMBER, "thirdwitch")
    assert _history(world) == []
    assert world.error_of(room.moderate, moderate, J(OWNER), world.now) == "item-not-found"


# -- occupant ids (XEP-0421) -----------------------------------------------------------------------
def test_occupant_id_is_stable_per_user_and_room_and_differs_between_rooms() -> None:
    w = World()
    w.create()
    w.create(room="heath")
    first = occupant_id(to(w.join(MEMBER, "a"), MEMBER)[-2])
    w.leave(MEMBER, "a")
    again = occupant_id(to(w.join(MEMBER, "b"), MEMBER)[-2])
    elsewhere = occupant_id(to(w.join(MEMBER, "a", room="heath"), MEMBER)[-2])
    other_user = occupant_id(to(w.join(OTHER, "c"), OTHER)[-2])
    assert first == again and first != elsewhere and first != other_user
    assert first is not None and len(first) <= 128


# -- registration (§7.10) and reserved nicknames (§7.12) -------------------------------------------
def test_registration_reserves_a_nickname_and_grants_membership(world: World) -> None:
    room = world.room()
    query = room.register_get(J(MEMBER))
    assert query.find("x", DATA_FORMS) is not None
    submit = Element(
        "query",
        REGISTER,
        children=[
            form(FORM_TYPE="http://jabber.org/protocol/muc#register", muc__register_roomnick="thirdwitch")
        ],
    )
    world.apply(room, room.register_set(submit, J(MEMBER), world.now))
    assert room.affiliation_of(J(MEMBER)) == Affiliation.MEMBER
    registered = room.register_get(J(MEMBER))
    assert registered.find("registered") is not None and registered.find_text("username") == "thirdwitch"
    info = room.disco_info("x-roomuser-item", J(MEMBER))
    assert info.find("identity").attrs["name"] == "thirdwitch"  # type: ignore[union-attr]
    assert world.error_of(room.register_set, submit, J(OTHER), world.now) == "conflict"


def test_registration_is_closed_in_members_only_rooms() -> None:
    w = World()
    w.create(membersonly="1")
    assert w.error_of(w.room().register_get, J(MEMBER)) == "not-allowed"


# -- service discovery (§6.4) ----------------------------------------------------------------------
def test_room_disco_info_lists_features_and_roominfo() -> None:
    w = World()
    w.create(
        roomname="A Dark Cave",
        roomdesc="Witches",
        publicroom="0",
        persistentroom="1",
        membersonly="1",
        moderatedroom="1",
        whois="anyone",
        passwordprotectedroom="1",
        roomsecret="x",
    )
    info = w.room().disco_info(None, J(STRANGER))
    identity = info.find("identity")
    assert identity is not None and identity.attrs["name"] == "A Dark Cave"
    features = {f.attrs["var"] for f in info.elements("feature")}
    assert {
        "muc_hidden",
        "muc_persistent",
        "muc_membersonly",
        "muc_moderated",
        "muc_nonanonymous",
        "muc_passwordprotected",
        MUC,
        OCCUPANT_ID,
        MODERATE,
        STANZA_ID,
        "http://jabber.org/protocol/muc#self-ping-optimization",
    } <= features
    x = info.find("x", DATA_FORMS)
    values = {f.attrs.get("var"): f.find_text("value") for f in x.elements("field")}  # type: ignore[union-attr]
    assert values["FORM_TYPE"] == "http://jabber.org/protocol/muc#roominfo"
    assert values["muc#roominfo_description"] == "Witches" and values["muc#roominfo_occupants"] == "1"


def test_default_room_features(world: World) -> None:
    features = set(world.room().features())
    assert {
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_unmoderated",
        "muc_semianonymous",
        "muc_unsecured",
    } <= features


def test_locked_room_is_invisible_to_others_in_disco() -> None:
    w = World()
    w.join(OWNER, "firstwitch")
    assert w.error_of(w.room().disco_info, None, J(STRANGER)) == "item-not-found"
    w.room().disco_info(None, J(OWNER))


# -- persistence -----------------------------------------------------------------------------------
def test_room_state_round_trips_through_json() -> None:
    w = World()
    w.create(
        persistentroom="1", roomname="Cave", moderatedroom="1", roomsecret="s", passwordprotectedroom="1"
    )
    w.admin(OWNER, {"affiliation": "member", "jid": "hag@example.org", "nick": "thirdwitch"})
    w.admin(OWNER, {"affiliation": "outcast", "jid": "bad@example.org", "reason": "spam"})
    w.message(OWNER, body=None, children=_subject("Spells"))
    room = w.room()
    copy = Room.from_json(room.jid, room.policy, room.to_json())
    assert copy.config == room.config
    assert copy.list_affiliation(Affiliation.MEMBER) == ["hag@example.org"]
    assert copy.affiliations["bad@example.org"].reason == "spam"
    assert copy.reserved_nick(J(MEMBER)) == "thirdwitch"
    assert copy.subject is not None and copy.subject.text == "Spells"
    assert copy.occupant_id(J(MEMBER)) == room.occupant_id(J(MEMBER))


def test_join_with_x_in_muc_namespace_only_counts(world: World) -> None:
    # an <x xmlns='muc#user'/> is not a join request
    p = world.presence(MEMBER, "thirdwitch", x=False, children=[Element("x", MUC_USER)])
    assert p[0].attrs["type"] == "unavailable" and "333" in codes(p[0])
