"""XEP-0012 Last Activity of accounts: who may ask, what the answer says, and that it persists."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from roost.modules import last_activity
from roost.modules.last_activity import LastActivity
from roost.stanza import error_condition
from roost.xml.element import Element
from roost.xml.ns import LAST
from tests.support.clients import connect
from tests.support.scenario import Harness, ScriptedSession
from tests.support.server import RunningServer

QUERY = f"<query xmlns='{LAST}'/>"


async def subscribe(follower: ScriptedSession, followee: ScriptedSession) -> None:
    """``follower`` subscribes to ``followee``'s presence and is approved (followee's roster: 'from')."""
    await follower.submit(f"<presence type='subscribe' to='{followee.jid.bare}'/>")
    await followee.submit(f"<presence type='subscribed' to='{follower.jid.bare}'/>")
    follower.clear()
    followee.clear()


def seconds_and_status(reply: Element) -> tuple[int, str]:
    query = reply.find("query", LAST)
    assert query is not None, reply
    return int(query.attrs["seconds"]), query.text


async def test_subscriber_learns_time_and_status_of_last_logout(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        juliet = await h.login("juliet")
        await subscribe(romeo, juliet)
        await juliet.submit("<presence/>")
        # While juliet is connected: 0 seconds, no text (§3).
        online = await romeo.iq(QUERY, to="juliet@localhost")
        assert seconds_and_status(online) == (0, "")
        await juliet.submit("<presence type='unavailable'><status>Heading Home</status></presence>")
        await juliet.disconnect("logout")
        offline = await romeo.iq(QUERY, to="juliet@localhost")
        seconds, status = seconds_and_status(offline)
        assert seconds >= 0 and status == "Heading Home"


async def logout_records_written(h: Harness) -> None:
    """Let the module write its (batched) logout records before a test overwrites one."""
    module = h.server.hosts["localhost"].modules.loaded["last"]
    assert isinstance(module, LastActivity)
    await module.store.flush()


async def test_seconds_count_from_the_recorded_logout(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        juliet = await h.login("juliet")
        await subscribe(romeo, juliet)
        await juliet.disconnect("logout")
        # As if that logout had been long ago (once the module has written its own record).
        await logout_records_written(h)
        await h.server.storage.keyvalue("last").set(
            "localhost", "juliet", {"time": time.time() - 5000, "status": "gone"}
        )
        seconds, status = seconds_and_status(await romeo.iq(QUERY, to="juliet@localhost"))
        assert 5000 <= seconds < 50_000 and status == "gone"


async def test_without_subscription_it_is_forbidden(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        juliet = await h.login("juliet")
        # romeo has juliet in his roster and asked to subscribe, but juliet did not approve.
        await romeo.iq("<query xmlns='jabber:iq:roster'><item jid='juliet@localhost'/></query>", "set")
        await romeo.submit("<presence type='subscribe' to='juliet@localhost'/>")
        await juliet.disconnect("logout")
        assert error_condition(await romeo.iq(QUERY, to="juliet@localhost")) == "forbidden"  # §3
        # juliet subscribed to romeo's presence: that lets juliet see romeo, not romeo see juliet.
        juliet = await h.login("juliet")
        await subscribe(juliet, romeo)
        await juliet.disconnect("logout")
        assert error_condition(await romeo.iq(QUERY, to="juliet@localhost")) == "forbidden"


async def test_no_such_account_is_service_unavailable(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        assert error_condition(await romeo.iq(QUERY, to="nobody@localhost")) == "service-unavailable"


async def test_own_account_and_never_logged_out(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        assert seconds_and_status(await romeo.iq(QUERY, to="romeo@localhost")) == (0, "")
        juliet = await h.login("juliet")
        await subscribe(romeo, juliet)
        await juliet.disconnect("logout")
        await logout_records_written(h)
        await h.server.storage.keyvalue("last").set("localhost", "juliet", None)  # as if never recorded
        assert error_condition(await romeo.iq(QUERY, to="juliet@localhost")) == "item-not-found"


async def test_another_resource_still_online_means_zero(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        juliet = await h.login("juliet/balcony")
        await h.login("juliet/garden")
        await subscribe(romeo, juliet)
        await juliet.disconnect("logout")
        assert seconds_and_status(await romeo.iq(QUERY, to="juliet@localhost")) == (0, "")


async def test_full_jid_queries_reach_the_client_only_if_allowed(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        paris = await h.login("paris")
        juliet = await h.login("juliet/balcony")
        await subscribe(romeo, juliet)
        juliet.clear()
        # §4: without a subscription, the server answers <forbidden/> and the client sees nothing.
        refused = await paris.iq(QUERY, to="juliet@localhost/balcony", iq_id="p1")
        assert error_condition(refused) == "forbidden"
        juliet.expect_nothing()
        # With one, the query is the client's to answer.
        await romeo.submit(f"<iq type='get' id='r1' to='juliet@localhost/balcony'>{QUERY}</iq>")
        juliet.expect(f"<iq type='get' id='r1' from='romeo@localhost/romeo'>{QUERY}</iq>")
        # Other payloads are not affected.
        ping = "<ping xmlns='urn:xmpp:ping'/>"
        await paris.submit(f"<iq type='get' id='v1' to='juliet@localhost/balcony'>{ping}</iq>")
        juliet.expect("<iq type='get' id='v1' from='paris@localhost/paris'/>")


async def test_full_jid_check_for_a_roster_not_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asynchronous path (the roster is not in memory): asked of the roster module, same outcome."""
    monkeypatch.setattr(last_activity, "peek_roster_item", lambda *_: (False, None))
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        paris = await h.login("paris")
        juliet = await h.login("juliet/balcony")
        await subscribe(romeo, juliet)
        juliet.clear()
        refused = await paris.iq(QUERY, to="juliet@localhost/balcony", iq_id="p2")
        assert error_condition(refused) == "forbidden"
        juliet.expect_nothing()
        await romeo.submit(f"<iq type='get' id='r2' to='juliet@localhost/balcony'>{QUERY}</iq>")
        juliet.expect(f"<iq type='get' id='r2' from='romeo@localhost/romeo'>{QUERY}</iq>")


async def test_last_logout_survives_a_restart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'roost.db'}"
    h = await Harness.start(tmp_path, storage=storage)
    try:
        romeo = await h.login("romeo")
        juliet = await h.login("juliet")
        await subscribe(romeo, juliet)
        await juliet.submit("<presence/>")
        await juliet.submit("<presence type='unavailable'><status>Off to Mantua</status></presence>")
        await juliet.disconnect("logout")
        await h.restart()
        romeo = await h.login("romeo")
        assert seconds_and_status(await romeo.iq(QUERY, to="juliet@localhost"))[1] == "Off to Mantua"
    finally:
        await h.stop()


async def test_slixmpp_asks_the_server_and_an_account(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    await server.add_user("juliet@localhost", "s3cret")
    romeo = await connect("romeo@localhost/r", "s3cret", server.c2s_port)
    uptime = await romeo.plugin["xep_0012"].get_last_activity("localhost", timeout=5)
    assert int(uptime["last_activity"]["seconds"]) >= 0
    mine = await romeo.plugin["xep_0012"].get_last_activity("romeo@localhost", timeout=5)
    assert int(mine["last_activity"]["seconds"]) == 0  # own account, connected
    romeo.disconnect()
