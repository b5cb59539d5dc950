"""RFC 6121 §3 (subscriptions, Appendix A) and §4 (presence exchange), with a real core and no sockets.

Romeo and Juliet are local accounts; the transcripts follow the RFC's own examples.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.jid import JID
from roost.modules.presence import NS_PREAPPROVAL
from roost.modules.roster import NS_ROSTER, Roster
from roost.stanza import error_condition
from tests.support.scenario import Harness, ScriptedSession

Q = f"xmlns='{NS_ROSTER}'"


async def online(h: Harness, name: str, presence: str = "<presence/>") -> ScriptedSession:
    """Log in, get the roster (interested) and send initial presence; every queue is cleared."""
    session = await h.login(name)
    await session.iq(f"<query {Q}/>", iq_id="roster")
    await session.submit(presence)
    for other in h.sessions.values():
        other.clear()
    return session


async def item_of(h: Harness, user: str, contact: str) -> tuple[str, bool, bool, bool] | None:
    """(subscription, ask, approved, pending_in) of ``contact`` in ``user``'s roster, or None."""
    roster = h.module(Roster)
    loaded = await roster.load(JID.parse(user))
    state = loaded.state(JID.parse(contact))
    in_roster = loaded.in_roster(JID.parse(contact))
    roster.release(JID.parse(user))
    if not in_roster:
        return None if not state.pending_in else ("(not in roster)", False, False, True)
    return (state.subscription, state.ask, state.approved, state.pending_in)


async def subscribe_both(h: Harness, a: ScriptedSession, b: ScriptedSession) -> None:
    """Mutual subscription between the two sessions' accounts; queues cleared."""
    a_bare, b_bare = str(a.jid.bare), str(b.jid.bare)
    await a.submit(f"<presence type='subscribe' to='{b_bare}'/>")
    await b.submit(f"<presence type='subscribed' to='{a_bare}'/>")
    await b.submit(f"<presence type='subscribe' to='{a_bare}'/>")
    await a.submit(f"<presence type='subscribed' to='{b_bare}'/>")
    for session in h.sessions.values():
        session.clear()


# -- §3.1 requesting a subscription -----------------------------------------------------------------------
async def test_subscription_request_and_approval(h: Harness) -> None:
    await online(h, "romeo")
    await online(h, "juliet/balcony")
    await online(h, "juliet/chamber")
    await h.play(f"""
        romeo sends:
            <presence id='xk3h1v69' to='juliet@localhost/balcony' type='subscribe'/>
        # §3.1.2: stamped with the bare JID, to the bare JID; §3.1.3 rule 3: every available resource
        juliet/balcony receives:
            <presence from='romeo@localhost' id='xk3h1v69' to='juliet@localhost' type='subscribe'/>
        juliet/chamber receives:
            <presence from='romeo@localhost' id='xk3h1v69' to='juliet@localhost' type='subscribe'/>
        romeo receives:
            <iq type='set'><query {Q}><item ask='subscribe' jid='juliet@localhost' subscription='none'/>
                </query></iq>
        romeo receives nothing

        juliet/balcony sends:
            <presence id='h4v1c4kj' to='romeo@localhost' type='subscribed'/>
        # §3.1.6: the approval first, then the push, then the contact's presence
        romeo receives:
            <presence from='juliet@localhost' id='h4v1c4kj' to='romeo@localhost' type='subscribed'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='to' ask='~'/></query></iq>
        romeo receives in any order:
            <presence from='juliet@localhost/balcony' to='romeo@localhost'/>
            <presence from='juliet@localhost/chamber' to='romeo@localhost'/>
        romeo receives nothing
        # §3.1.5: the contact's interested resources get the push with subscription 'from'
        juliet/balcony receives:
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='from'/></query></iq>
        juliet/chamber receives:
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='from'/></query></iq>
    """)
    assert await item_of(h, "romeo@localhost", "juliet@localhost") == ("to", False, False, False)
    assert await item_of(h, "juliet@localhost", "romeo@localhost") == ("from", False, False, False)


async def test_request_goes_to_available_resources_only(h: Harness) -> None:
    await online(h, "romeo")
    connected = await h.login("juliet/connected")  # bound, no presence
    available = await online(h, "juliet/available")
    await h.play("""
        romeo sends:
            <presence to='juliet@localhost' type='subscribe'/>
        juliet/available receives:
            <presence from='romeo@localhost' type='subscribe'/>
        juliet/connected receives nothing
    """)
    assert available is not connected


async def test_request_is_not_an_item_until_approved(h: Harness) -> None:
    # §3.1.3 security warning: no roster item for the requester until approval.
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await romeo.submit("<presence to='juliet@localhost' type='subscribe'/>")
    juliet.clear()
    result = await juliet.iq(f"<query {Q}/>")
    assert list(result.find("query", NS_ROSTER).elements()) == []  # type: ignore[union-attr]
    assert await item_of(h, "juliet@localhost", "romeo@localhost") == ("(not in roster)", False, False, True)


async def test_request_to_a_contact_that_already_granted_is_answered_by_the_server(h: Harness) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    # Romeo's side lost its subscription (as after a remote server's data loss): "From" only.
    roster = h.module(Roster)
    romeos = roster.cached(romeo.jid.bare)
    assert romeos is not None
    state = romeos.state(juliet.jid.bare)
    state.subscription = "from"
    roster.save(romeos, state, in_roster=True)
    romeo.clear()
    # §3.1.3 rule 2, Table 6 note [2]: Juliet's server answers for her, with the request's id.
    await h.play(f"""
        romeo sends:
            <presence id='again' to='juliet@localhost' type='subscribe'/>
        romeo receives:
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='from' ask='subscribe'/>
                </query></iq>
            <presence from='juliet@localhost' id='again' type='subscribed'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='both' ask='~'/></query></iq>
            <presence from='juliet@localhost/juliet' to='romeo@localhost'/>
        romeo receives nothing
        juliet receives nothing
    """)


async def test_request_to_an_offline_contact_is_delivered_at_each_new_presence_until_answered(
    h: Harness,
) -> None:
    romeo = await online(h, "romeo")
    await h.add_user("juliet")
    await romeo.submit(
        "<presence to='juliet@localhost' type='subscribe' id='first'><status>Hi!</status></presence>"
    )
    # §3.1.3 rule 4: only one of several requests is kept and delivered.
    await romeo.submit("<presence to='juliet@localhost' type='subscribe' id='second'/>")
    romeo.clear()
    balcony = await h.login("juliet/balcony")
    await balcony.submit("<presence/>")
    balcony.expect("<presence to='juliet@localhost'/>")  # own presence
    balcony.expect(
        "<presence from='romeo@localhost' to='juliet@localhost' type='subscribe' id='first'>"
        "<status>Hi!</status></presence>"
    )
    balcony.expect_nothing()
    chamber = await h.login("juliet/chamber")
    await chamber.submit("<presence/>")
    chamber.expect("<presence from='juliet@localhost/chamber'/>")  # own echo
    chamber.expect("<presence from='juliet@localhost/balcony'/>")  # the other resource
    chamber.expect("<presence from='romeo@localhost' type='subscribe' id='first'/>")
    await chamber.submit("<presence to='romeo@localhost' type='subscribed'/>")
    third = await h.login("juliet/third")
    await third.submit("<presence/>")
    assert not any(s.attrs.get("type") == "subscribe" for s in third.received)


async def test_pending_request_survives_a_restart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'presence.db'}"
    async with Harness.running(tmp_path, storage=storage) as h:
        romeo = await online(h, "romeo")
        await h.add_user("juliet")
        await romeo.submit(
            "<presence to='juliet@localhost' type='subscribe' id='s1'><status>x</status></presence>"
        )
        await h.restart()
        juliet = await h.login("juliet")
        await juliet.submit("<presence/>")
        juliet.expect("<presence to='juliet@localhost'/>")
        juliet.expect(
            "<presence from='romeo@localhost' type='subscribe' id='s1'><status>x</status></presence>"
        )
        romeo = await h.login("romeo")
        roster = await romeo.iq(f"<query {Q}/>")
        item = roster.find("query", NS_ROSTER).find("item")  # type: ignore[union-attr]
        assert item is not None and item.attrs == {
            "jid": "juliet@localhost",
            "subscription": "none",
            "ask": "subscribe",
        }


async def test_too_many_pending_requests_are_dropped(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[presence]\nmax_pending_requests = 1\n") as h:
        juliet = await online(h, "juliet")
        a = await online(h, "a")
        b = await online(h, "b")
        await a.submit("<presence to='juliet@localhost' type='subscribe'/>")
        await b.submit("<presence to='juliet@localhost' type='subscribe'/>")
        juliet.expect("<presence from='a@localhost' type='subscribe'/>")
        juliet.expect_nothing()


async def test_request_to_a_missing_account_is_an_error(h: Harness) -> None:
    # §3.1.2: the local contact does not exist → an error to the user, no roster change.
    await online(h, "romeo")
    await h.play("""
        romeo sends:
            <presence id='n1' to='nobody@localhost' type='subscribe'/>
        romeo receives:
            <presence type='error' id='n1' from='nobody@localhost'><error type='cancel'><item-not-found
                xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>
        romeo receives nothing
    """)
    assert await item_of(h, "romeo@localhost", "nobody@localhost") is None


async def test_request_to_an_unreachable_domain_is_an_error(h: Harness) -> None:
    await online(h, "romeo")
    await h.play("""
        romeo sends:
            <presence id='r1' to='juliet@example.com' type='subscribe'/>
        romeo receives:
            <presence type='error' id='r1' from='juliet@example.com'><error><remote-server-not-found
                xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>
    """)


async def test_request_past_the_roster_limit_is_not_allowed(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[roster]\nmax_items = 1\n") as h:
        romeo = await online(h, "romeo")
        await online(h, "juliet")
        await online(h, "nurse")
        await romeo.submit("<presence to='juliet@localhost' type='subscribe'/>")
        romeo.clear()
        await romeo.submit("<presence id='full' to='nurse@localhost' type='subscribe'/>")
        reply = romeo.next()
        assert reply.attrs["type"] == "error" and error_condition(reply) == "not-allowed"
        h.session("nurse").expect_nothing()


# -- §3.2 cancelling, denying --------------------------------------------------------------------------------
async def test_denying_a_request(h: Harness) -> None:
    await online(h, "romeo")
    await online(h, "juliet")
    await h.play(f"""
        romeo sends:
            <presence to='juliet@localhost' type='subscribe'/>
        juliet sends:
            <presence id='tb2m1b59' to='romeo@localhost' type='unsubscribed'/>
        romeo receives:
            <iq type='set'><query {Q}><item jid='juliet@localhost' ask='subscribe'/></query></iq>
            <presence from='juliet@localhost' id='tb2m1b59' type='unsubscribed'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='none' ask='~'/></query></iq>
        romeo receives nothing
    """)
    assert await item_of(h, "juliet@localhost", "romeo@localhost") is None


async def test_cancelling_a_subscription(h: Harness) -> None:
    romeo = await online(h, "romeo")
    await online(h, "juliet/balcony")
    await online(h, "juliet/chamber")
    juliet = h.session("juliet/balcony")
    await subscribe_both(h, romeo, juliet)
    await h.play(f"""
        juliet/balcony sends:
            <presence id='ij5b1v7g' to='romeo@localhost' type='unsubscribed'/>
        # §3.2.2: unavailable from every resource first, then the cancellation, then the push
        romeo receives in any order:
            <presence from='juliet@localhost/balcony' type='unavailable'/>
            <presence from='juliet@localhost/chamber' type='unavailable'/>
        romeo receives:
            <presence from='juliet@localhost' id='ij5b1v7g' type='unsubscribed'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='from'/></query></iq>
        juliet/balcony receives:
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='to'/></query></iq>
        juliet/chamber receives:
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='to'/></query></iq>
    """)
    # Juliet no longer broadcasts to Romeo.
    await juliet.submit("<presence><show>away</show></presence>")
    romeo.expect_nothing()


# -- §3.3 unsubscribing --------------------------------------------------------------------------------------
async def test_unsubscribing(h: Harness) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    await h.play(f"""
        romeo sends:
            <presence id='ul4bs71n' to='juliet@localhost' type='unsubscribe'/>
        romeo receives:
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='from'/></query></iq>
        # §3.3.3: delivered first, then the push, then unavailable from each resource
        juliet receives:
            <presence from='romeo@localhost' id='ul4bs71n' type='unsubscribe'/>
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='to'/></query></iq>
        romeo receives:
            <presence from='juliet@localhost/juliet' to='romeo@localhost' type='unavailable'/>
        romeo receives nothing
    """)
    assert await item_of(h, "romeo@localhost", "juliet@localhost") == ("from", False, False, False)


async def test_withdrawing_a_request(h: Harness) -> None:
    romeo = await online(h, "romeo")
    await h.add_user("juliet")
    await romeo.submit("<presence to='juliet@localhost' type='subscribe'/>")
    await romeo.submit("<presence to='juliet@localhost' type='unsubscribe'/>")
    # §3.3.3 last paragraph: the stored request is simply forgotten.
    assert await item_of(h, "juliet@localhost", "romeo@localhost") is None
    juliet = await h.login("juliet")
    await juliet.submit("<presence/>")
    juliet.expect("<presence from='juliet@localhost/juliet'/>")
    juliet.expect_nothing()


# -- §3.4 pre-approval ---------------------------------------------------------------------------------------
async def test_pre_approval(h: Harness) -> None:
    assert any(f.name == "sub" and f.ns == NS_PREAPPROVAL for f in h.server.stream_features())
    await online(h, "romeo")
    await online(h, "juliet")
    await h.play(f"""
        juliet sends:
            <presence id='pg81vx64' to='romeo@localhost' type='subscribed'/>
        juliet receives:
            <iq type='set'><query {Q}><item approved='true' jid='romeo@localhost' subscription='none'/>
                </query></iq>
        romeo receives nothing
        romeo sends:
            <presence id='req' to='juliet@localhost' type='subscribe'/>
        juliet receives:
            <iq type='set'><query {Q}><item approved='~' jid='romeo@localhost' subscription='from'/>
                </query></iq>
        juliet receives nothing
        romeo receives:
            <iq type='set'><query {Q}><item ask='subscribe' jid='juliet@localhost'/></query></iq>
            <presence from='juliet@localhost' id='req' type='subscribed'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='to'/></query></iq>
            <presence from='juliet@localhost/juliet' to='romeo@localhost'/>
    """)


async def test_cancelling_a_pre_approval(h: Harness) -> None:
    await online(h, "romeo")
    await online(h, "juliet")
    await h.play(f"""
        juliet sends:
            <presence to='romeo@localhost' type='subscribed'/>
            <presence to='romeo@localhost' type='unsubscribed'/>
        juliet receives:
            <iq type='set'><query {Q}><item approved='true' jid='romeo@localhost'/></query></iq>
            <iq type='set'><query {Q}><item approved='~' jid='romeo@localhost'/></query></iq>
        romeo receives nothing
        romeo sends:
            <presence to='juliet@localhost' type='subscribe'/>
        juliet receives:
            <presence from='romeo@localhost' type='subscribe'/>
    """)


# -- roster removal (§2.5.2) ---------------------------------------------------------------------------------
async def test_removing_a_mutual_contact_cancels_both_subscriptions(h: Harness) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    await h.play(f"""
        juliet sends:
            <iq type='set' id='rm'><query {Q}><item jid='romeo@localhost' subscription='remove'/></query></iq>
        # the push, the result, and Romeo's unavailable (§3.3.3 rule 3) in whatever order
        juliet receives in any order:
            <iq type='result' id='rm'/>
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='remove'/></query></iq>
            <presence from='romeo@localhost/romeo' type='unavailable'/>
        romeo receives:
            <presence from='juliet@localhost' type='unsubscribe'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='to'/></query></iq>
            <presence from='juliet@localhost/juliet' type='unavailable'/>
            <presence from='juliet@localhost' type='unsubscribed'/>
            <iq type='set'><query {Q}><item jid='juliet@localhost' subscription='none'/></query></iq>
        romeo receives nothing
    """)
    assert await item_of(h, "romeo@localhost", "juliet@localhost") == ("none", False, False, False)


# -- §4.2 initial presence, §4.3 probes ----------------------------------------------------------------------
async def test_initial_presence_is_broadcast_and_contacts_presence_comes_back(h: Harness) -> None:
    romeo = await online(h, "romeo", "<presence><show>away</show></presence>")
    juliet = await online(h, "juliet/balcony")
    await subscribe_both(h, romeo, juliet)
    await h.play("""
        juliet/balcony sends:
            <presence type='unavailable'/>
        romeo receives:
            <presence from='juliet@localhost/balcony' type='unavailable'/>
        juliet/balcony receives:
            <presence from='juliet@localhost/balcony' type='unavailable'/>
    """)
    chamber = await h.login("juliet/chamber")
    await chamber.iq(f"<query {Q}/>")
    await h.play("""
        juliet/chamber sends:
            <presence id='init'><status>here</status></presence>
        romeo receives:
            <presence from='juliet@localhost/chamber' to='romeo@localhost' id='init'>
                <status>here</status></presence>
        juliet/chamber receives:
            <presence from='juliet@localhost/chamber' to='juliet@localhost' id='init'/>
            <presence from='romeo@localhost/romeo' to='juliet@localhost/chamber'><show>away</show></presence>
        juliet/chamber receives nothing
        juliet/balcony receives nothing
    """)
    assert chamber.available and chamber.priority == 0


async def test_client_probe_of_a_contact(h: Harness) -> None:
    romeo = await online(h, "romeo", "<presence id='pres1'><show>dnd</show></presence>")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    await h.play("""
        juliet sends:
            <presence type='probe' to='romeo@localhost' id='probe1'/>
        # §4.3.2 rule 4 and §4.3.2.1: the full last presence, its own id
        juliet receives:
            <presence from='romeo@localhost/romeo' id='pres1' to='juliet@localhost/juliet'>
                <show>dnd</show></presence>
        juliet sends:
            <presence type='probe' to='romeo@localhost/romeo' id='probe2'/>
        # a full-JID probe: just the fact that it is available
        juliet receives:
            <presence from='romeo@localhost/romeo' to='juliet@localhost/juliet' type='~'/>
        romeo receives nothing
    """)
    assert juliet.received == romeo.received


async def test_probe_without_subscription_is_answered_unsubscribed(h: Harness) -> None:
    # The answer is addressed to mercutio's connected resource, but a subscription stanza is the
    # server's business there (RFC 6121 §8.5.3.1 → §3): without a subscription to cancel, it ends there.
    await online(h, "romeo")
    await online(h, "mercutio")
    await h.play("""
        mercutio sends:
            <presence type='probe' to='romeo@localhost' id='xv291f38'/>
        mercutio sends:
            <presence type='probe' to='nobody@localhost' id='p2'/>
        mercutio receives nothing
        romeo receives nothing
    """)


async def test_probe_answer_resynchronises_a_stale_subscription(h: Harness) -> None:
    """§4.3.2 rule 1: romeo's server no longer knows mercutio as a subscriber; its <unsubscribed/>
    answer cancels the subscription mercutio's roster still shows, with a roster push."""
    romeo = await online(h, "romeo")
    mercutio = await online(h, "mercutio")
    await subscribe_both(h, romeo, mercutio)
    roster = h.module(Roster)
    romeo_roster = await roster.load(romeo.jid.bare)
    roster.remove(romeo_roster, mercutio.jid.bare)  # lost on romeo's side, mercutio not told
    roster.release(romeo.jid.bare)
    romeo.clear()
    await h.play(f"""
        mercutio sends:
            <presence type='probe' to='romeo@localhost' id='p3'/>
        mercutio receives:
            <presence from='romeo@localhost' id='p3' type='unsubscribed'/>
        mercutio receives:
            <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='from'/></query></iq>
    """)
    assert (await item_of(h, "mercutio@localhost", "romeo@localhost") or ("",))[0] == "from"


async def test_probe_of_an_offline_contact_says_when_it_left(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'probe.db'}"
    async with Harness.running(tmp_path, storage=storage) as h:
        romeo = await online(h, "romeo")
        juliet = await online(h, "juliet")
        await subscribe_both(h, romeo, juliet)
        await juliet.disconnect()
        romeo.clear()
        await h.restart()  # the time comes from storage now
        romeo = await online(h, "romeo")
        await romeo.submit("<presence type='probe' to='juliet@localhost' id='probe2'/>")
        reply = romeo.expect("<presence from='juliet@localhost' id='probe2' type='unavailable'/>")[0]
        delay = reply.find("delay", "urn:xmpp:delay")
        assert delay is not None and delay.attrs["stamp"].endswith("Z")


async def test_probes_from_clients_of_full_jids_are_answered_not_delivered(h: Harness) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    await h.play("""
        romeo sends:
            <presence type='probe' to='juliet@localhost/elsewhere' id='p3'/>
        romeo receives:
            <presence from='juliet@localhost/elsewhere' type='unavailable' id='p3'/>
        juliet receives nothing
    """)


# -- §4.4 updates, §4.5 unavailable --------------------------------------------------------------------------
async def test_updates_and_unavailable_reach_subscribers_and_own_resources(h: Harness) -> None:
    romeo = await online(h, "romeo")
    balcony = await online(h, "juliet/balcony")
    chamber = await online(h, "juliet/chamber")
    nurse = await online(h, "nurse")  # not subscribed
    await subscribe_both(h, romeo, balcony)
    await h.play("""
        juliet/balcony sends:
            <presence><show>away</show></presence>
        romeo receives:
            <presence from='juliet@localhost/balcony' to='romeo@localhost'><show>away</show></presence>
        juliet/chamber receives:
            <presence from='juliet@localhost/balcony' to='juliet@localhost'><show>away</show></presence>
        juliet/balcony receives:
            <presence from='juliet@localhost/balcony' to='juliet@localhost'><show>away</show></presence>
        nurse receives nothing
        juliet/balcony sends:
            <presence type='unavailable'><status>going on vacation</status></presence>
        romeo receives:
            <presence from='juliet@localhost/balcony' type='unavailable'>
                <status>going on vacation</status></presence>
        juliet/chamber receives:
            <presence from='juliet@localhost/balcony' type='unavailable'/>
        juliet/balcony receives:
            <presence from='juliet@localhost/balcony' type='unavailable'/>
    """)
    assert not balcony.available and chamber.available
    del nurse


@pytest.mark.parametrize("reason", ["logout", "disconnect", "replaced", "shutdown", "timeout", "error"])
async def test_session_end_broadcasts_unavailable(h: Harness, reason: str) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet/balcony")
    chamber = await online(h, "juliet/chamber")
    await subscribe_both(h, romeo, juliet)
    await juliet.disconnect(reason)
    romeo.expect("<presence from='juliet@localhost/balcony' type='unavailable'/>")
    chamber.expect("<presence from='juliet@localhost/balcony' type='unavailable'/>")
    romeo.expect_nothing()


async def test_session_end_without_presence_broadcasts_nothing(h: Harness) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    silent = await h.login("juliet/silent")
    await silent.disconnect()
    romeo.expect_nothing()
    juliet.expect_nothing()


async def test_presence_after_unavailable_is_a_new_initial_presence(h: Harness) -> None:
    romeo = await online(h, "romeo", "<presence><show>chat</show></presence>")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    await juliet.submit("<presence type='unavailable'/>")
    juliet.clear()
    await juliet.submit("<presence/>")
    juliet.expect("<presence from='juliet@localhost/juliet'/>")
    juliet.expect("<presence from='romeo@localhost/romeo'><show>chat</show></presence>")  # probed again


# -- §4.6 directed presence ----------------------------------------------------------------------------------
async def test_directed_presence_is_undone_when_the_session_ends(h: Harness) -> None:
    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    benvolio = await online(h, "benvolio")
    await subscribe_both(h, romeo, juliet)
    await h.play("""
        juliet sends:
            <presence to='benvolio@localhost'><status>psst</status></presence>
            <presence to='romeo@localhost/romeo'/>
        benvolio receives:
            <presence from='juliet@localhost/juliet' to='benvolio@localhost'><status>psst</status></presence>
        romeo receives:
            <presence from='juliet@localhost/juliet' to='romeo@localhost/romeo'/>
        # not part of later broadcasts (§4.6.3 rule 2)
        juliet sends:
            <presence><show>away</show></presence>
        benvolio receives nothing
    """)
    romeo.clear()
    juliet.clear()
    await juliet.disconnect()
    benvolio.expect("<presence from='juliet@localhost/juliet' to='benvolio@localhost' type='unavailable'/>")
    benvolio.expect_nothing()
    # Romeo is a subscriber: one unavailable, not two.
    romeo.expect("<presence from='juliet@localhost/juliet' to='romeo@localhost' type='unavailable'/>")
    romeo.expect_nothing()


async def test_directed_unavailable_removes_the_entity(h: Harness) -> None:
    juliet = await online(h, "juliet")
    benvolio = await online(h, "benvolio")
    await juliet.submit(
        "<presence to='benvolio@localhost'/><presence to='benvolio@localhost' type='unavailable'/>"
    )
    benvolio.clear()
    await juliet.disconnect()
    benvolio.expect_nothing()


async def test_directed_presence_without_a_presence_session(h: Harness) -> None:
    # §4.6.3 rule 3: a connected (not available) resource too.
    juliet = await h.login("juliet")
    benvolio = await online(h, "benvolio")
    await juliet.submit("<presence to='benvolio@localhost'/>")
    benvolio.expect("<presence from='juliet@localhost/juliet'/>")
    await juliet.submit("<presence type='unavailable'/>")
    benvolio.expect("<presence from='juliet@localhost/juliet' type='unavailable'/>")
    await juliet.disconnect()
    benvolio.expect_nothing()


async def test_probe_from_a_directed_presence_recipient(h: Harness) -> None:
    # §4.6.6: no subscription, but directed presence: mere presence, for that full JID only.
    juliet = await online(h, "juliet", "<presence><show>dnd</show></presence>")
    benvolio = await online(h, "benvolio")
    await online(h, "juliet/other")
    await juliet.submit("<presence to='benvolio@localhost'><show>dnd</show></presence>")
    benvolio.clear()
    await benvolio.submit("<presence type='probe' to='juliet@localhost'/>")
    reply = benvolio.next()
    assert reply.attrs == {"from": "juliet@localhost/juliet", "to": "benvolio@localhost/benvolio"}
    assert reply.children == []
    benvolio.expect_nothing()


async def test_inbound_unavailable_clears_the_senders_directed_entry(h: Harness) -> None:
    juliet = await online(h, "juliet")
    benvolio = await online(h, "benvolio")
    await juliet.submit("<presence to='benvolio@localhost'/>")
    await benvolio.submit("<presence to='juliet@localhost' type='unavailable'/>")
    benvolio.clear()
    await juliet.disconnect()
    benvolio.expect_nothing()  # §4.6.1: SHOULD remove an entity that sent unavailable


# -- §4.7 syntax, delivery rules -----------------------------------------------------------------------------
@pytest.mark.parametrize("priority", ["128", "-129", "high", "1.5", "1_0", ""])
async def test_bad_priority_is_bad_request(h: Harness, priority: str) -> None:
    juliet = await h.login("juliet")
    await juliet.submit(f"<presence id='p'><priority>{priority}</priority></presence>")
    reply = juliet.next()
    assert reply.attrs["type"] == "error" and error_condition(reply) == "bad-request"
    assert not juliet.available


async def test_priority_is_kept_for_message_routing(h: Harness) -> None:
    juliet = await h.login("juliet")
    await juliet.submit("<presence><priority>-5</priority></presence>")
    assert juliet.available and juliet.priority == -5
    await juliet.submit("<presence><priority>+7</priority></presence>")
    assert juliet.priority == 7


async def test_presence_to_a_full_jid_is_delivered_as_is(h: Harness) -> None:
    await online(h, "juliet")
    await online(h, "benvolio")
    await h.play("""
        benvolio sends:
            <presence to='juliet@localhost/juliet' id='d1'><show>xa</show><x xmlns='urn:example'/></presence>
        juliet receives:
            <presence from='benvolio@localhost/benvolio' to='juliet@localhost/juliet' id='d1'>
                <show>xa</show><x xmlns='urn:example'/></presence>
    """)


async def test_error_presence_is_delivered_to_available_resources(h: Harness) -> None:
    await online(h, "juliet")
    await online(h, "benvolio")
    await h.play("""
        benvolio sends:
            <presence to='juliet@localhost' type='error' id='e1'><error type='cancel'>
                <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>
        juliet receives:
            <presence from='benvolio@localhost/benvolio' type='error' id='e1'/>
    """)


async def test_subscription_stanzas_to_oneself_are_ignored(h: Harness) -> None:
    juliet = await online(h, "juliet")
    await juliet.submit("<presence type='subscribe' to='juliet@localhost'/><presence type='subscribed'/>")
    juliet.expect_nothing()


async def test_initial_presence_fires_presence_initial_for_offline_messages(h: Harness) -> None:
    romeo = await online(h, "romeo")
    await h.add_user("juliet")
    await romeo.submit("<message to='juliet@localhost' type='chat'><body>hi</body></message>")
    juliet = await h.login("juliet")
    await juliet.submit("<presence><priority>-1</priority></presence>")
    assert not any(s.name == "message" for s in juliet.received)
    await juliet.submit("<presence><priority>1</priority></presence>")
    assert [s.find_text("body") for s in juliet.received if s.name == "message"] == ["hi"]


async def test_replaced_session_leaves_the_new_one_available(h: Harness) -> None:
    romeo = await online(h, "romeo")
    old = await online(h, "juliet/balcony")
    await subscribe_both(h, romeo, old)
    new = await h.login("juliet/balcony")  # replaces the old one (RFC 6120 §7.7.2.2)
    assert old.closed
    await new.submit("<presence/>")
    romeo.expect("<presence from='juliet@localhost/balcony' type='unavailable'/>")
    romeo.expect("<presence from='juliet@localhost/balcony' type='~'/>")
    romeo.expect_nothing()


async def test_deleting_an_account_cancels_its_subscriptions(h: Harness) -> None:
    # XEP-0077 §3.2: "cancel all existing presence subscriptions related to that entity".
    from roost.core import hooks
    from roost.core.hooks import UserEvent

    romeo = await online(h, "romeo")
    juliet = await online(h, "juliet")
    await subscribe_both(h, romeo, juliet)
    await h.add_user("nurse")
    await juliet.submit("<presence type='subscribe' to='nurse@localhost'/>")
    await romeo.disconnect("logout")
    juliet.clear()
    host = h.server.hosts["localhost"]
    await host.bus.fire(hooks.USER_DELETED, UserEvent("localhost", "romeo"))
    await h.server.storage.delete_user("localhost", "romeo")
    await h.settle()
    juliet.expect(f"""
        <presence from='romeo@localhost' type='unsubscribe'/>
        <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='to'/></query></iq>
        <presence from='romeo@localhost' type='unsubscribed'/>
        <iq type='set'><query {Q}><item jid='romeo@localhost' subscription='none'/></query></iq>
    """)
    juliet.expect_nothing()
    assert await h.server.storage.map("roster").items("localhost", "romeo") == {}
    # Created again: a fresh, empty roster that works.
    again = await online(h, "romeo")
    result = await again.iq(f"<query {Q}/>")
    assert result.find("query", NS_ROSTER).first() is None  # type: ignore[union-attr]
    await again.submit("<presence type='subscribe' to='juliet@localhost'/>")
    assert await item_of(h, "romeo@localhost", "juliet@localhost") == ("none", True, False, False)


async def test_oversized_requests_are_stored_without_their_content(h: Harness) -> None:
    romeo = await online(h, "romeo")
    await h.add_user("juliet")
    status = "x" * 10_000
    await romeo.submit(
        f"<presence to='juliet@localhost' type='subscribe' id='big'><status>{status}</status></presence>"
    )
    juliet = await h.login("juliet")
    await juliet.submit("<presence/>")
    juliet.expect("<presence from='juliet@localhost/juliet'/>")
    request = juliet.expect("<presence from='romeo@localhost' type='subscribe' id='big'/>")[0]
    assert request.children == []
    # Delivered whole while online.
    await romeo.submit("<presence to='juliet@localhost' type='unsubscribe'/>")
    juliet.clear()
    await romeo.submit(
        f"<presence to='juliet@localhost' type='subscribe'><status>{status}</status></presence>"
    )
    assert juliet.next().find_text("status") == status
