"""XEP-0054 vCards and XEP-0153 photo hashes in presence, with real clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.stanza import error_condition
from roost.xml.element import Element
from roost.xml.ns import VCARD, VCARD_UPDATE
from tests.support.clients import connect
from tests.support.im import add_users
from tests.support.queries import ask
from tests.support.raw import RawClient
from tests.support.scenario import Harness
from tests.support.server import RunningServer, running_server

PHOTO = bytes(range(256)) * 4
PHOTO_B64 = base64.b64encode(PHOTO).decode()
PHOTO_SHA1 = hashlib.sha1(PHOTO).hexdigest()


def vcard_xml(fn: str, photo_b64: str | None = None) -> str:
    photo = f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{photo_b64}</BINVAL></PHOTO>" if photo_b64 else ""
    return f"<vCard xmlns='vcard-temp'><FN>{fn}</FN><NICKNAME>{fn.lower()}</NICKNAME>{photo}</vCard>"


async def test_own_vcard_missing_is_item_not_found(server: RunningServer) -> None:
    await add_users(server, "romeo")
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    reply = await ask(romeo, "<vCard xmlns='vcard-temp'/>")
    assert error_condition(reply) == "item-not-found"  # XEP-0054 §3.1 (SHOULD)


async def test_set_with_slixmpp_and_read_by_another_user(server: RunningServer) -> None:
    await add_users(server, "romeo", "juliet")
    romeo = await connect("romeo@localhost/r", "s3cret", server.c2s_port)
    romeo.register_plugin("xep_0054")
    vcard = romeo.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Romeo Montague"
    vcard["NICKNAME"] = "romeo"
    await romeo.plugin["xep_0054"].publish_vcard(vcard, timeout=5)

    juliet = await connect("juliet@localhost/j", "s3cret", server.c2s_port)
    juliet.register_plugin("xep_0054")
    result = await juliet.plugin["xep_0054"].get_vcard("romeo@localhost", cached=False, timeout=5)
    assert result["vcard_temp"]["FN"] == "Romeo Montague"
    assert result["from"] == "romeo@localhost"
    own = await romeo.plugin["xep_0054"].get_vcard(cached=False, timeout=5)
    assert own["vcard_temp"]["NICKNAME"] == ["romeo"]
    romeo.disconnect()
    juliet.disconnect()


async def test_other_users_missing_vcard_and_missing_account_look_the_same(server: RunningServer) -> None:
    await add_users(server, "romeo", "juliet")
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    no_vcard = await ask(romeo, "<vCard xmlns='vcard-temp'/>", to="juliet@localhost")
    no_account = await ask(romeo, "<vCard xmlns='vcard-temp'/>", to="nobody@localhost")
    # XEP-0054 §3.3 (v1.3.0): service-unavailable in both cases, against directory harvesting.
    assert error_condition(no_vcard) == error_condition(no_account) == "service-unavailable"


async def test_setting_another_users_vcard_is_forbidden(server: RunningServer) -> None:
    await add_users(server, "romeo", "juliet")
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    reply = await ask(romeo, vcard_xml("Not Juliet"), type_="set", to="juliet@localhost")
    assert error_condition(reply) == "forbidden"  # XEP-0054 §3.2
    juliet = await RawClient.login(server.c2s_port, "juliet", "s3cret", "j")
    assert error_condition(await ask(juliet, "<vCard xmlns='vcard-temp'/>")) == "item-not-found"


async def test_set_to_own_bare_jid_and_empty_vcard_deletes(server: RunningServer) -> None:
    await add_users(server, "romeo")
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    assert (await ask(romeo, vcard_xml("Romeo"), type_="set", to="romeo@localhost")).attrs["type"] == "result"
    got = await ask(romeo, "<vCard xmlns='vcard-temp'/>", to="romeo@localhost")
    card = got.find("vCard", VCARD)
    assert card is not None and card.find_text("FN") == "Romeo"
    assert (await ask(romeo, "<vCard xmlns='vcard-temp'/>", type_="set")).attrs["type"] == "result"
    assert error_condition(await ask(romeo, "<vCard xmlns='vcard-temp'/>")) == "item-not-found"


async def test_size_limit_and_bad_photo(tmp_path: Path) -> None:
    async with running_server(tmp_path, "[vcard]\nmax_bytes = 1024\n") as running:
        await add_users(running, "romeo")
        romeo = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
        big = await ask(romeo, vcard_xml("Romeo", PHOTO_B64), type_="set")
        assert error_condition(big) == "not-acceptable"
        bad = await ask(romeo, vcard_xml("Romeo", "not*base64!"), type_="set")
        assert error_condition(bad) == "bad-request"
        assert error_condition(await ask(romeo, "<vCard xmlns='vcard-temp'/>")) == "item-not-found"


async def test_vcard_survives_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        await add_users(running, "romeo")
        romeo = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
        reply = await ask(romeo, vcard_xml("Romeo &amp; Co &lt;Verona&gt;", PHOTO_B64), type_="set")
        assert reply.attrs["type"] == "result"
        romeo.close()

    async with running_server(tmp_path) as running:
        romeo = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
        card = (await ask(romeo, "<vCard xmlns='vcard-temp'/>")).find("vCard", VCARD)
        assert card is not None and card.find_text("FN") == "Romeo & Co <Verona>"
        photo = card.find("PHOTO", VCARD)
        assert photo is not None and photo.find_text("BINVAL", VCARD) == PHOTO_B64


class BroadcastSpy:
    """Sees every broadcast presence as the presence chain gets it (after the pre/presence filters)."""

    def __init__(self, server: RunningServer) -> None:
        self.seen: asyncio.Queue[Element] = asyncio.Queue()
        host = server.server.hosts["localhost"]
        self.undo = host.bus.on(hooks.PRESENCE_BARE, self._spy, priority=1_000_000)

    def _spy(self, event: StanzaEvent) -> bool:
        if "to" not in event.stanza.attrs and event.stanza.attrs.get("type") is None:
            self.seen.put_nowait(event.stanza.copy())
        return False

    async def next(self) -> Element:
        return await asyncio.wait_for(self.seen.get(), 5)


def photo_of(presence: Element) -> str | None:
    x = presence.find("x", VCARD_UPDATE)
    return None if x is None else x.find_text("photo", VCARD_UPDATE)


async def test_server_adds_photo_hash_to_presence_of_clients_that_do_not(server: RunningServer) -> None:
    await add_users(server, "romeo")
    spy = BroadcastSpy(server)
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw("<presence><status>first</status></presence>")
    assert photo_of(await spy.next()) is None  # no vCard, no photo: nothing is claimed
    assert (await ask(romeo, vcard_xml("Romeo", PHOTO_B64), type_="set")).attrs["type"] == "result"
    # The photo changed: the server re-sends the presence of the client it speaks for.
    again_sent = await spy.next()
    assert photo_of(again_sent) == PHOTO_SHA1
    assert again_sent.attrs["from"] == "romeo@localhost/r" and again_sent.find_text("status") == "first"
    # And once more when the photo goes: an empty <photo/> (XEP-0153 §4.1 rule 3).
    assert (await ask(romeo, vcard_xml("Romeo"), type_="set")).attrs["type"] == "result"
    assert photo_of(await spy.next()) == ""
    assert (await ask(romeo, vcard_xml("Romeo", PHOTO_B64), type_="set")).attrs["type"] == "result"
    assert photo_of(await spy.next()) == PHOTO_SHA1
    romeo.close()

    # A new session: the hash is read at login and added to the first presence.
    again = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r2")
    again.send_raw("<presence><status>here</status></presence>")
    stamped = await spy.next()
    assert stamped.attrs["from"] == "romeo@localhost/r2"
    assert photo_of(stamped) == PHOTO_SHA1
    assert stamped.find_text("status") == "here"


async def test_presence_with_its_own_update_element_is_left_alone(server: RunningServer) -> None:
    await add_users(server, "romeo")
    spy = BroadcastSpy(server)
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    await ask(romeo, vcard_xml("Romeo", PHOTO_B64), type_="set")
    romeo.send_raw(f"<presence><x xmlns='{VCARD_UPDATE}'/></presence>")  # XEP-0153 §4.1 rule 2
    got = await spy.next()
    x = got.find("x", VCARD_UPDATE)
    assert x is not None and x.find("photo") is None
    assert len(list(got.elements("x", VCARD_UPDATE))) == 1


async def test_avatar_presence_can_be_switched_off(tmp_path: Path) -> None:
    async with running_server(tmp_path, "[vcard]\navatar_presence = false\n") as running:
        await add_users(running, "romeo")
        spy = BroadcastSpy(running)
        romeo = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
        await ask(romeo, vcard_xml("Romeo", PHOTO_B64), type_="set")
        romeo.send_raw("<presence/>")
        assert photo_of(await spy.next()) is None


async def test_contacts_receive_the_hash_and_its_changes(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        juliet = await h.login("juliet")
        await juliet.submit("<presence type='subscribe' to='romeo@localhost'/>")
        await romeo.submit("<presence type='subscribed' to='juliet@localhost'/>")
        await romeo.iq(vcard_xml("Romeo", PHOTO_B64), "set", iq_id="v1")
        await juliet.submit("<presence/>")
        juliet.clear()
        await romeo.submit("<presence><show>away</show></presence>")
        juliet.expect(
            f"<presence from='romeo@localhost/romeo'><show>away</show>"
            f"<x xmlns='{VCARD_UPDATE}'><photo>{PHOTO_SHA1}</photo></x></presence>"
        )
        # A client taking part itself is trusted: its element goes out as it is, and it is not
        # re-sent when the photo changes.
        await romeo.submit(f"<presence><x xmlns='{VCARD_UPDATE}'><photo>abc</photo></x></presence>")
        own = f"<x xmlns='{VCARD_UPDATE}'><photo>abc</photo></x>"
        juliet.expect(f"<presence from='romeo@localhost/romeo'>{own}</presence>")
        await romeo.iq(vcard_xml("Romeo"), "set", iq_id="v2")
        juliet.expect_nothing()
