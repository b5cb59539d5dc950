"""RFC 6121 §2 roster management and §2.6 versioning, with a real core and no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.jid import JID
from roost.modules.roster import NS_ROSTER, NS_ROSTERVER, Roster
from roost.stanza import error_condition
from tests.support.scenario import Harness, ScriptedSession

Q = f"xmlns='{NS_ROSTER}'"


async def get(session: ScriptedSession, ver: str | None = None) -> list[dict[str, object]]:
    """A roster get; the items of the result as dicts (jid, name, subscription, ask, approved, groups)."""
    ver_attr = "" if ver is None else f" ver='{ver}'"
    result = await session.iq(f"<query {Q}{ver_attr}/>")
    assert result.attrs["type"] == "result", result
    query = result.find("query", NS_ROSTER)
    assert query is not None
    return [
        {**item.attrs, "groups": [g.text for g in item.elements("group")]}
        for item in query.elements("item", NS_ROSTER)
    ]


async def current_ver(session: ScriptedSession) -> str:
    result = await session.iq(f"<query {Q} ver=''/>", iq_id="v")
    query = result.find("query", NS_ROSTER)
    assert query is not None
    return str(query.attrs["ver"])


async def roster_set(session: ScriptedSession, item: str, iq_id: str = "s1") -> str | None:
    """A roster set with ``item``; None on success, else the error condition."""
    reply = await session.iq(f"<query {Q}>{item}</query>", "set", iq_id=iq_id)
    return None if reply.attrs["type"] == "result" else error_condition(reply)


# -- §2.1.3/§2.1.4 get ----------------------------------------------------------------------------------
async def test_get_of_an_empty_roster_is_an_empty_query_with_a_version(h: Harness) -> None:
    romeo = await h.login("romeo")
    result = await romeo.iq(f"<query {Q}/>")
    assert result.attrs["type"] == "result"
    query = result.find("query", NS_ROSTER)
    assert query is not None and list(query.elements()) == []  # §2.1.4: never an error for an empty roster
    assert query.attrs["ver"]
    assert romeo.interested  # §2.2


async def test_get_with_items_is_bad_request(h: Harness) -> None:
    romeo = await h.login("romeo")
    reply = await romeo.iq(f"<query {Q}><item jid='juliet@localhost'/></query>")
    assert error_condition(reply) == "bad-request"


async def test_get_addressed_to_own_bare_jid_works(h: Harness) -> None:
    romeo = await h.login("romeo")
    reply = await romeo.iq(f"<query {Q}/>", to="romeo@localhost")
    assert reply.attrs["type"] == "result"


# -- §2.3 add, §2.4 update ------------------------------------------------------------------------------
async def test_add_answers_the_sender_and_pushes_to_interested_resources_only(h: Harness) -> None:
    balcony = await h.login("juliet/balcony")
    chamber = await h.login("juliet/chamber")
    garden = await h.login("juliet/garden")  # never asked for the roster: not interested
    await get(balcony)
    await get(chamber)
    await h.play(f"""
        juliet/balcony sends:
            <iq type='set' id='ph1xaz53'><query {Q}>
                <item jid='nurse@localhost' name='Nurse'><group>Servants</group></item>
            </query></iq>
        juliet/balcony receives in any order:
            <iq type='result' id='ph1xaz53'/>
            <iq type='set' from='juliet@localhost' to='juliet@localhost/balcony'><query {Q} ver='*'>
                <item jid='nurse@localhost' name='Nurse' subscription='none' ask='~' approved='~'>
                    <group>Servants</group>
                </item>
            </query></iq>
        juliet/chamber receives:
            <iq type='set' to='juliet@localhost/chamber'><query {Q}>
                <item jid='nurse@localhost' name='Nurse' subscription='none'><group>Servants</group></item>
            </query></iq>
        juliet/garden receives nothing
    """)
    assert garden.interested is False
    assert await get(balcony) == [
        {"jid": "nurse@localhost", "name": "Nurse", "subscription": "none", "groups": ["Servants"]}
    ]


async def test_update_replaces_the_item_exactly(h: Harness) -> None:
    juliet = await h.login("juliet")
    await get(juliet)
    friends = "<item jid='romeo@localhost' name='Romeo'><group>Friends</group></item>"
    assert await roster_set(juliet, friends) is None
    assert (
        await roster_set(
            juliet,
            "<item jid='romeo@localhost' name='Romeo'><group>Friends</group><group>Lovers</group></item>",
        )
        is None
    )
    assert (await get(juliet))[0]["groups"] == ["Friends", "Lovers"]
    lovers = "<item jid='romeo@localhost' name='Romeo'><group>Lovers</group></item>"
    assert await roster_set(juliet, lovers) is None
    assert (await get(juliet))[0]["groups"] == ["Lovers"]
    # §2.4.1: no groups; an empty name is no name.
    assert await roster_set(juliet, "<item jid='romeo@localhost' name=''/>") is None
    assert await get(juliet) == [{"jid": "romeo@localhost", "subscription": "none", "groups": []}]


async def test_set_ignores_subscription_ask_and_approved_from_the_client(h: Harness) -> None:
    # §2.1.2.1, §2.1.2.2, §2.1.2.5: the server ignores them (only "remove" means something).
    juliet = await h.login("juliet")
    item = "<item jid='romeo@localhost' subscription='both' ask='subscribe' approved='true'/>"
    assert await roster_set(juliet, item) is None
    assert await get(juliet) == [{"jid": "romeo@localhost", "subscription": "none", "groups": []}]


async def test_every_set_is_pushed_even_without_change(h: Harness) -> None:
    juliet = await h.login("juliet")
    await get(juliet)
    await roster_set(juliet, "<item jid='romeo@localhost'/>", "a")
    juliet.clear()
    await roster_set(juliet, "<item jid='romeo@localhost'/>", "b")
    push = juliet.next()
    assert push.attrs["type"] == "set" and push.find("query", NS_ROSTER) is not None


# -- §2.3.3 error cases --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "expected"),
    [
        # bad-request 1: more than one item; also none at all (§2.1.5 rule 1)
        ("<item jid='nurse@localhost'/><item jid='mother@localhost'/>", "bad-request"),
        ("", "bad-request"),
        # bad-request 2: duplicate groups
        ("<item jid='nurse@localhost'><group>Servants</group><group>Servants</group></item>", "bad-request"),
        # not-acceptable 2: empty group
        ("<item jid='nurse@localhost'><group></group></item>", "not-acceptable"),
        # not-acceptable 1 and 3: oversized handle and group name (limits from the config below)
        ("<item jid='nurse@localhost' name='" + "n" * 21 + "'/>", "not-acceptable"),
        ("<item jid='nurse@localhost'><group>" + "g" * 21 + "</group></item>", "not-acceptable"),
        (
            "<item jid='nurse@localhost'>" + "".join(f"<group>{i}</group>" for i in range(4)) + "</item>",
            "not-acceptable",
        ),
        # §2.1.2.3: the jid is required; it must be a JID, and a bare one here
        ("<item name='x'/>", "bad-request"),
        ("<item jid='@@'/>", "jid-malformed"),
        ("<item jid='nurse@localhost/res'/>", "bad-request"),
        # §2.3.3 interoperability note: one's own bare JID
        ("<item jid='juliet@localhost'/>", "not-allowed"),
        # §2.5.3: removing what is not there
        ("<item jid='nobody@localhost' subscription='remove'/>", "item-not-found"),
    ],
)
async def test_set_errors(tmp_path: Path, item: str, expected: str) -> None:
    extra = "[roster]\nmax_name_length = 20\nmax_group_length = 20\nmax_groups = 3\n"
    async with Harness.running(tmp_path, extra) as h:
        juliet = await h.login("juliet")
        await get(juliet)
        assert await roster_set(juliet, item) == expected
        juliet.expect_nothing()  # nothing pushed
        assert await get(juliet) == []


async def test_duplicate_groups_are_compared_as_resourceparts(h: Harness) -> None:
    juliet = await h.login("juliet")
    # U+2126 OHM SIGN is NFC-equal to U+03A9 OMEGA (RFC 7622 §3.4, PRECIS OpaqueString)
    item = "<item jid='nurse@localhost'><group>\u2126</group><group>\u03a9</group></item>"
    assert await roster_set(juliet, item) == "bad-request"


@pytest.mark.parametrize("type_", ["get", "set"])
async def test_another_users_roster_is_forbidden(h: Harness, type_: str) -> None:
    # §2.1.5 security warning, §2.3.3 first error case.
    juliet = await h.login("juliet")
    await h.add_user("romeo")
    payload = f"<query {Q}>" + ("<item jid='nurse@localhost'/>" if type_ == "set" else "") + "</query>"
    reply = await juliet.iq(payload, type_, to="romeo@localhost")
    assert reply.attrs["type"] == "error"
    assert error_condition(reply) == "forbidden"
    assert await h.module(Roster).items(JID.parse("romeo@localhost")) == []


async def test_roster_of_a_full_roster_refuses_new_items(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[roster]\nmax_items = 2\n") as h:
        juliet = await h.login("juliet")
        await get(juliet)
        assert await roster_set(juliet, "<item jid='a@localhost'/>", "1") is None
        assert await roster_set(juliet, "<item jid='b@localhost'/>", "2") is None
        juliet.clear()
        reply = await juliet.iq(f"<query {Q}><item jid='c@localhost'/></query>", "set", iq_id="3")
        assert error_condition(reply) == "not-allowed"
        error = reply.find("error")
        assert error is not None and error.attrs["type"] == "cancel"
        juliet.expect_nothing()
        # Existing items can still change; after a removal there is room again.
        assert await roster_set(juliet, "<item jid='b@localhost' name='B'/>", "4") is None
        assert await roster_set(juliet, "<item jid='a@localhost' subscription='remove'/>", "5") is None
        assert await roster_set(juliet, "<item jid='c@localhost'/>", "6") is None
        assert sorted(i["jid"] for i in await get(juliet)) == ["b@localhost", "c@localhost"]


# -- §2.5 delete ------------------------------------------------------------------------------------------
async def test_remove_pushes_subscription_remove(h: Harness) -> None:
    balcony = await h.login("juliet/balcony")
    chamber = await h.login("juliet/chamber")
    await get(balcony)
    await get(chamber)
    await roster_set(balcony, "<item jid='nurse@localhost' name='Nurse'/>")
    balcony.clear()
    chamber.clear()
    await h.play(f"""
        juliet/balcony sends:
            <iq type='set' id='hm4hs97y'><query {Q}><item jid='nurse@localhost' subscription='remove'/>
                </query></iq>
        juliet/balcony receives in any order:
            <iq type='result' id='hm4hs97y'/>
            <iq type='set'><query {Q}><item jid='nurse@localhost' subscription='remove'/></query></iq>
        juliet/chamber receives:
            <iq type='set'><query {Q}><item jid='nurse@localhost' subscription='remove'/></query></iq>
    """)
    assert await get(balcony) == []


# -- §2.6 versioning ---------------------------------------------------------------------------------------
async def test_versioning_is_advertised_as_a_stream_feature(h: Harness) -> None:
    assert any(f.name == "ver" and f.ns == NS_ROSTERVER for f in h.server.stream_features())


async def test_get_with_the_current_version_is_an_empty_result(h: Harness) -> None:
    juliet = await h.login("juliet")
    await roster_set(juliet, "<item jid='romeo@localhost'/>")
    ver = await current_ver(juliet)
    juliet.clear()
    reply = await juliet.iq(f"<query {Q} ver='{ver}'/>", iq_id="r1")
    assert reply.attrs["type"] == "result" and reply.first() is None  # §2.6.3: no <query/> at all
    juliet.expect_nothing()
    assert juliet.interested


async def test_get_with_an_older_version_gets_interim_pushes_after_the_result(h: Harness) -> None:
    juliet = await h.login("juliet/balcony")
    for name in ("a", "b", "c", "d", "e", "f"):
        await roster_set(juliet, f"<item jid='{name}@localhost'/>", name)
    old = await current_ver(juliet)
    await roster_set(juliet, "<item jid='b@localhost' name='first'/>", "u1")
    await roster_set(juliet, "<item jid='c@localhost' subscription='remove'/>", "u2")
    await roster_set(juliet, "<item jid='b@localhost' name='second'/>", "u3")
    await roster_set(juliet, "<item jid='g@localhost'/>", "u4")
    new = await current_ver(juliet)
    await juliet.disconnect()

    again = await h.login("juliet/chamber")
    await again.submit(f"<iq type='get' id='r2'><query {Q} ver='{old}'/></iq>")
    result = again.next()
    assert result.attrs["type"] == "result" and result.first() is None
    # One push per changed item, final state only, in order of modification (§2.6.3).
    pushes = [again.next() for _ in range(3)]
    again.expect_nothing()
    items = [p.find("query", NS_ROSTER).first() for p in pushes]  # type: ignore[union-attr]
    assert [(i.attrs["jid"], i.attrs.get("name"), i.attrs["subscription"]) for i in items] == [  # type: ignore[union-attr]
        ("c@localhost", None, "remove"),
        ("b@localhost", "second", "none"),
        ("g@localhost", None, "none"),
    ]
    versions = [p.find("query", NS_ROSTER).attrs["ver"] for p in pushes]  # type: ignore[union-attr]
    assert len(set(versions)) == 3 and versions[-1] == new


@pytest.mark.parametrize("ver", ["", "bogus", "0000-1", "abc-"])
async def test_get_with_an_unknown_version_gets_the_full_roster(h: Harness, ver: str) -> None:
    juliet = await h.login("juliet")
    await roster_set(juliet, "<item jid='romeo@localhost'/>")
    juliet.clear()
    assert [i["jid"] for i in await get(juliet, ver)] == ["romeo@localhost"]
    juliet.expect_nothing()


async def test_a_version_from_the_future_gets_the_full_roster(h: Harness) -> None:
    juliet = await h.login("juliet")
    await roster_set(juliet, "<item jid='romeo@localhost'/>")
    epoch = (await current_ver(juliet)).rsplit("-", 1)[0]
    assert [i["jid"] for i in await get(juliet, f"{epoch}-99")] == ["romeo@localhost"]


async def test_more_changes_than_items_gets_the_full_roster(h: Harness) -> None:
    # §2.6.3: the full roster when it "would use less bandwidth" than the pushes.
    juliet = await h.login("juliet")
    old = await current_ver(juliet)
    for n in range(3):
        await roster_set(juliet, f"<item jid='x{n}@localhost'/>", f"a{n}")
        await roster_set(juliet, f"<item jid='x{n}@localhost' subscription='remove'/>", f"r{n}")
    await roster_set(juliet, "<item jid='kept@localhost'/>", "k")
    juliet.clear()
    assert [i["jid"] for i in await get(juliet, old)] == ["kept@localhost"]
    juliet.expect_nothing()


async def test_a_version_older_than_the_history_gets_the_full_roster(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[roster]\nversion_history = 1\n") as h:
        juliet = await h.login("juliet")
        for n in range(4):
            await roster_set(juliet, f"<item jid='x{n}@localhost'/>", f"a{n}")
        old = await current_ver(juliet)
        await roster_set(juliet, "<item jid='x0@localhost' subscription='remove'/>", "r0")
        await roster_set(juliet, "<item jid='x1@localhost' subscription='remove'/>", "r1")  # forgets x0's
        juliet.clear()
        assert sorted(i["jid"] for i in await get(juliet, old)) == ["x2@localhost", "x3@localhost"]
        # A version at or after the oldest kept removal still gets pushes.
        mid = await current_ver(juliet)
        await roster_set(juliet, "<item jid='x2@localhost' subscription='remove'/>", "r2")
        juliet.clear()
        reply = await juliet.iq(f"<query {Q} ver='{mid}'/>", iq_id="g")
        assert reply.first() is None
        juliet.expect(
            f"<iq type='set'><query {Q}><item jid='x2@localhost' subscription='remove'/></query></iq>"
        )


async def test_pushes_and_results_carry_versions_even_when_the_client_sends_none(h: Harness) -> None:
    juliet = await h.login("juliet")
    result = await juliet.iq(f"<query {Q}/>")
    assert result.find("query", NS_ROSTER).attrs["ver"]  # type: ignore[union-attr]
    await roster_set(juliet, "<item jid='romeo@localhost'/>")
    push = juliet.next()
    assert push.find("query", NS_ROSTER).attrs["ver"]  # type: ignore[union-attr]


async def test_versioning_can_be_turned_off(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[roster]\nversioning = false\n") as h:
        assert not any(f.ns == NS_ROSTERVER for f in h.server.stream_features())
        juliet = await h.login("juliet")
        result = await juliet.iq(f"<query {Q} ver='x'/>")
        assert "ver" not in result.find("query", NS_ROSTER).attrs  # type: ignore[union-attr]
        await roster_set(juliet, "<item jid='romeo@localhost'/>")
        assert "ver" not in juliet.next().find("query", NS_ROSTER).attrs  # type: ignore[union-attr]


# -- storage ------------------------------------------------------------------------------------------------
async def test_roster_and_version_survive_a_restart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'roster.db'}"
    async with Harness.running(tmp_path, storage=storage) as h:
        juliet = await h.login("juliet")
        await roster_set(juliet, "<item jid='romeo@localhost' name='Romeo'><group>Lovers</group></item>", "1")
        await roster_set(juliet, "<item jid='nurse@localhost'/>", "2")
        await roster_set(juliet, "<item jid='nurse@localhost' subscription='remove'/>", "3")
        old_ver = await current_ver(juliet)
        await roster_set(juliet, "<item jid='tybalt@localhost'/>", "4")
        ver = await current_ver(juliet)
        await h.restart()
        juliet = await h.login("juliet")
        assert await get(juliet) == [
            {"jid": "romeo@localhost", "name": "Romeo", "subscription": "none", "groups": ["Lovers"]},
            {"jid": "tybalt@localhost", "subscription": "none", "groups": []},
        ]
        assert await current_ver(juliet) == ver
        juliet.clear()
        reply = await juliet.iq(f"<query {Q} ver='{old_ver}'/>", iq_id="old")
        assert reply.first() is None
        juliet.expect(f"<iq type='set'><query {Q}><item jid='tybalt@localhost'/></query></iq>")


async def test_offline_rosters_do_not_stay_in_memory(h: Harness) -> None:
    roster = h.module(Roster)
    romeo = JID.parse("romeo@localhost")
    await h.add_user("romeo")
    assert await roster.items(romeo) == []
    assert roster.cached(romeo) is None
    session = await h.login("romeo")
    assert roster.cached(romeo) is not None  # preloaded at bind
    await session.disconnect()
    assert roster.cached(romeo) is None


async def test_api_for_other_modules(h: Harness) -> None:
    juliet = await h.login("juliet")
    await roster_set(juliet, "<item jid='romeo@localhost' name='Romeo'><group>G</group></item>")
    roster = h.module(Roster)
    user, contact = JID.parse("juliet@localhost"), JID.parse("romeo@localhost")
    item = await roster.get_item(user, contact)
    assert item is not None and (item.name, item.subscription, item.groups) == ("Romeo", "none", ["G"])
    item.groups.append("changed")  # a copy
    assert (await roster.items(user))[0].groups == ["G"]
    assert await roster.get_item(user, JID.parse("nobody@localhost")) is None
    assert await roster.subscription(user, contact) == "none"
    assert not await roster.is_subscribed_from(user, contact)
    assert await roster.is_subscribed_from(user, user)  # one's own presence
    assert not await roster.is_subscribed_to(user, contact)
    peeked = roster.peek_item(user, contact)
    assert peeked is not None and peeked.name == "Romeo"
