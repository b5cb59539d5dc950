"""The MUC module in a real server core, without sockets: transcripts in the spirit of XEP-0045's examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.app import create_server
from roost.config.loader import load_config
from roost.modules.muc.module import find_runtime
from tests.support.scenario import Harness


async def test_join_talk_and_leave_transcript(h: Harness) -> None:
    await h.login("crone/desktop")
    await h.login("hag/pda")
    await h.play("""
        crone/desktop sends:
            <presence to='coven@conference.localhost/firstwitch' id='j1'>
              <x xmlns='http://jabber.org/protocol/muc'/>
            </presence>
        crone/desktop receives:
            <presence from='coven@conference.localhost/firstwitch' id='j1'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='owner' role='moderator' jid='crone@localhost/desktop'/>
                <status code='110'/>
                <status code='201'/>
              </x>
              <occupant-id xmlns='urn:xmpp:occupant-id:0' id='*'/>
            </presence>
            <message type='groupchat' from='coven@conference.localhost'><subject/></message>
        crone/desktop sends:
            <iq type='set' to='coven@conference.localhost' id='c1'>
              <query xmlns='http://jabber.org/protocol/muc#owner'>
                <x xmlns='jabber:x:data' type='submit'/>
              </query>
            </iq>
        crone/desktop receives:
            <iq type='result' id='c1' from='coven@conference.localhost'/>
        hag/pda sends:
            <presence to='coven@conference.localhost/thirdwitch'><x xmlns='http://jabber.org/protocol/muc'/></presence>
        hag/pda receives:
            <presence from='coven@conference.localhost/firstwitch'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='owner' role='moderator' jid='~'/>
              </x>
            </presence>
            <presence from='coven@conference.localhost/thirdwitch'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='none' role='participant'/><status code='110'/>
              </x>
            </presence>
            <message type='groupchat' from='coven@conference.localhost'><subject/></message>
        crone/desktop receives:
            <presence from='coven@conference.localhost/thirdwitch'>
              <x xmlns='http://jabber.org/protocol/muc#user'>
                <item affiliation='none' role='participant' jid='hag@localhost/pda'/>
              </x>
            </presence>
        hag/pda sends:
            <message to='coven@conference.localhost' type='groupchat' id='h1'>
              <body>Harpier cries</body>
            </message>
        hag/pda receives:
            <message from='coven@conference.localhost/thirdwitch' type='groupchat' id='h1'>
              <body>Harpier cries</body>
              <stanza-id xmlns='urn:xmpp:sid:0' by='coven@conference.localhost' id='*'/>
              <occupant-id xmlns='urn:xmpp:occupant-id:0' id='*'/>
            </message>
        crone/desktop receives:
            <message from='coven@conference.localhost/thirdwitch' to='crone@localhost/desktop'
                     type='groupchat' id='h1'><body>Harpier cries</body></message>
        hag/pda sends:
            <presence to='coven@conference.localhost/thirdwitch' type='unavailable'/>
        hag/pda receives:
            <presence from='coven@conference.localhost/thirdwitch' type='unavailable'>
              <x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/><status code='110'/></x>
            </presence>
        crone/desktop receives:
            <presence from='coven@conference.localhost/thirdwitch' type='unavailable'>
              <x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/></x>
            </presence>
        crone/desktop receives nothing
    """)


async def test_server_lists_the_service_and_a_join_needs_a_nickname(h: Harness) -> None:
    await h.login("crone/desktop")
    await h.play("""
        crone/desktop sends:
            <iq type='get' to='localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>
        crone/desktop receives:
            <iq type='result' id='d1'>
              <query xmlns='http://jabber.org/protocol/disco#items'>
                <item jid='conference.localhost' name='Chatrooms'/>
              </query>
            </iq>
        crone/desktop sends:
            <presence to='coven@conference.localhost'><x xmlns='http://jabber.org/protocol/muc'/></presence>
        crone/desktop receives:
            <presence type='error' from='coven@conference.localhost'>
              <error type='modify' by='coven@conference.localhost'>
                <jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
              </error>
            </presence>
        crone/desktop sends:
            <iq type='get' to='conference.localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>
        crone/desktop receives:
            <iq type='result' id='p1' from='conference.localhost'/>
    """)


async def test_closed_session_leaves_its_rooms_with_333(h: Harness) -> None:
    crone = await h.login("crone/desktop")
    hag = await h.login("hag/pda")
    await crone.submit(
        "<presence to='coven@conference.localhost/firstwitch'>"
        "<x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    await crone.iq(
        "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/>"
        "</query>",
        "set",
        "coven@conference.localhost",
    )
    await hag.submit(
        "<presence to='coven@conference.localhost/thirdwitch'>"
        "<x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    crone.clear()
    await hag.disconnect("disconnect")
    crone.expect("""
        <presence from='coven@conference.localhost/thirdwitch' type='unavailable'>
          <x xmlns='http://jabber.org/protocol/muc#user'><item role='none'/><status code='333'/></x>
        </presence>
    """)
    crone.expect_nothing()
    runtime = find_runtime(h.server)
    assert runtime is not None and not runtime.service.by_session.get(hag.jid)


async def test_service_domain_is_configurable(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, '[muc]\ndomain = "chat.localhost"\nname = "Rooms"\n') as h:
        assert "chat.localhost" in h.server.hosts and "conference.localhost" not in h.server.hosts
        crone = await h.login("crone")
        reply = await crone.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to="chat.localhost")
        assert reply.attrs["type"] == "result"


async def test_service_domain_must_not_be_a_served_domain(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(
        f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp_path}/data"\n[listen]\nc2s = ""\n'
        'c2s_tls = ""\nhttp = ""\n[storage]\nurl = "memory://"\n[muc]\ndomain = "localhost"\n'
    )
    server = create_server(load_config(path))
    with pytest.raises(ValueError, match=r"also in server\.domains"):
        await server.start()
    await server.stop()


async def test_disabled_module_runs_no_service(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[muc]\nenabled = false\n") as h:
        assert "conference.localhost" not in h.server.hosts
