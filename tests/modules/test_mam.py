"""The mam module in a real server core: what is archived for whom, queries, preferences, removal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.modules.mam.module import MessageArchive
from roost.stanza import error_condition as condition
from roost.storage.api import ArchiveQuery, StorageError
from roost.xml.element import Element
from tests.support.scenario import Harness, ScriptedSession

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"


async def query(
    session: ScriptedSession, inner: str = "", *, to: str | None = None, queryid: str = "q"
) -> tuple[list[Element], Element]:
    """Run a MAM query; returns the forwarded messages (in the order received) and the IQ answer."""
    session.clear()
    answer = await session.iq(f"<query xmlns='{MAM}' queryid='{queryid}'>{inner}</query>", "set", to)
    forwarded = []
    for msg in list(session.received):
        result = msg.find("result", MAM)
        if msg.name == "message" and result is not None:
            assert result.attrs.get("queryid") == queryid
            fwd = result.find("forwarded", "urn:xmpp:forward:0")
            assert fwd is not None and fwd.find("delay", "urn:xmpp:delay") is not None
            inner_msg = fwd.find("message")
            assert inner_msg is not None
            inner_msg.attrs["archive-id"] = result.attrs["id"]  # for the tests' convenience
            forwarded.append(inner_msg)
            session.received.remove(msg)
    return forwarded, answer


def bodies(messages: list[Element]) -> list[str]:
    return [m.find_text("body") or "" for m in messages]


def form(**fields: str | list[str]) -> str:
    out = ["<x xmlns='jabber:x:data' type='submit'>", f"<field var='FORM_TYPE'><value>{MAM}</value></field>"]
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        out.append(
            f"<field var='{var.replace('_', '-')}'>"
            + "".join(f"<value>{v}</value>" for v in values)
            + "</field>"
        )
    out.append("</x>")
    return "".join(out)


def rsm(**parts: str) -> str:
    return (
        f"<set xmlns='{RSM}'>"
        + "".join(f"<{k}>{v}</{k}>" if v else f"<{k}/>" for k, v in parts.items())
        + "</set>"
    )


def fin_ids(answer: Element) -> tuple[str | None, str | None, str | None, bool]:
    fin = answer.find("fin", MAM)
    assert fin is not None, answer
    s = fin.find("set", RSM)
    assert s is not None
    return (
        s.find_text("first"),
        s.find_text("last"),
        s.find_text("count"),
        fin.attrs.get("complete") == "true",
    )


async def online(h: Harness, name: str) -> ScriptedSession:
    session = await h.login(name)
    await session.submit("<presence/>")
    session.clear()
    return session


async def chat(h: Harness, frm: ScriptedSession, to: str, body: str, extra: str = "") -> None:
    await frm.submit(f"<message to='{to}' type='chat' id='{body}'><body>{body}</body>{extra}</message>")
    await h.server.storage.flush()


async def test_both_parties_archive_with_the_stanza_id_the_recipient_sees(h: Harness) -> None:
    alice = await h.login("alice/phone")
    bob = await online(h, "bob/laptop")
    await chat(h, alice, "bob@localhost", "hello")
    delivered = bob.next()
    seen = [c for c in delivered.elements("stanza-id", SID)]
    assert [c.attrs["by"] for c in seen] == ["bob@localhost"]  # never the sender's archive id

    bob_items, answer = await query(bob)
    assert bodies(bob_items) == ["hello"]
    assert bob_items[0].attrs["archive-id"] == seen[0].attrs["id"]
    assert bob_items[0].attrs["from"] == "alice@localhost/phone"
    assert fin_ids(answer)[3] is True

    alice_items, _ = await query(alice)
    assert bodies(alice_items) == ["hello"]
    own = alice_items[0].find("stanza-id", SID)
    assert own is not None and own.attrs["by"] == "alice@localhost"
    assert alice_items[0].attrs["archive-id"] == own.attrs["id"] != seen[0].attrs["id"]


async def test_carbons_copies_and_forking_are_archived_once(h: Harness) -> None:
    alice = await h.login("alice/phone")
    alice2 = await h.login("alice/desk")
    bob = await h.login("bob/laptop")
    bob2 = await h.login("bob/tablet")
    for s in (alice, alice2, bob, bob2):
        await s.iq("<enable xmlns='urn:xmpp:carbons:2'/>", "set")
        await s.submit("<presence/>")
    for s in (alice, alice2, bob, bob2):
        s.clear()
    await chat(h, alice, "bob@localhost", "one")
    await chat(h, bob, "alice@localhost/phone", "two")

    sent_copy = alice2.received[0].find("sent", "urn:xmpp:carbons:2")
    assert sent_copy is not None  # XEP-0313 §2.5: the carbon of a sent message carries its archive id
    inner = sent_copy.find("forwarded", "urn:xmpp:forward:0").find("message")  # type: ignore[union-attr]
    assert inner is not None and inner.find("stanza-id", SID).attrs["by"] == "alice@localhost"  # type: ignore[union-attr]

    assert bodies((await query(bob))[0]) == ["one", "two"]
    assert bodies((await query(alice))[0]) == ["one", "two"]


async def test_offline_messages_are_archived_once_with_their_stanza_id(h: Harness) -> None:
    alice = await h.login("alice/phone")
    await h.add_user("bob")
    await chat(h, alice, "bob@localhost", "while you were out")
    await h.settle()
    bob = await h.login("bob/laptop")
    await bob.submit("<presence/>")
    offline = [m for m in bob.received if m.name == "message"]
    assert len(offline) == 1
    sid = offline[0].find("stanza-id", SID)
    assert sid is not None

    items, _ = await query(bob)
    assert [(m.attrs["archive-id"], bodies([m])[0]) for m in items] == [
        (sid.attrs["id"], "while you were out")
    ]


async def test_messages_to_unknown_accounts_are_not_archived(h: Harness) -> None:
    alice = await h.login("alice")
    await chat(h, alice, "ghost@localhost", "anyone?")
    await h.settle()
    await h.server.storage.flush()
    assert await h.module(MessageArchive).store.count("localhost", "ghost") == 0


@pytest.mark.parametrize(
    ("payload", "archived"),
    [
        ("<active xmlns='http://jabber.org/protocol/chatstates'/>", False),
        ("<received xmlns='urn:xmpp:receipts' id='x'/>", False),
        ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", False),
        ("<body>hi</body><no-store xmlns='urn:xmpp:hints'/>", False),
        ("<body>hi</body><no-permanent-store xmlns='urn:xmpp:hints'/>", False),
        ("<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>x</payload></encrypted>", True),
        ("<reaction xmlns='urn:xmpp:reactions:0'/><reactions xmlns='urn:xmpp:reactions:0' id='x'/>", True),
        ("<retract xmlns='urn:xmpp:message-retract:1' id='x'/>", True),
        ("<body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='x'/>", True),
        ("<received xmlns='urn:xmpp:receipts' id='x'/><store xmlns='urn:xmpp:hints'/>", True),
    ],
)
async def test_what_is_archived(h: Harness, payload: str, archived: bool) -> None:
    alice = await h.login("alice")
    bob = await h.login("bob")
    await alice.submit(f"<message to='bob@localhost' type='chat'>{payload}</message>")
    await h.server.storage.flush()
    assert len((await query(bob))[0]) == int(archived)
    assert len((await query(alice))[0]) == int(archived)


async def test_groupchat_and_headlines_stay_out_of_user_archives(h: Harness) -> None:
    alice = await h.login("alice")
    bob = await h.login("bob")
    await alice.submit("<message to='bob@localhost' type='headline'><body>news</body></message>")
    await h.server.storage.flush()
    assert (await query(bob))[0] == []


async def test_message_to_oneself_is_archived_once(h: Harness) -> None:
    alice = await h.login("alice/phone")
    await h.login("alice/desk")
    await chat(h, alice, "alice@localhost", "note to self")
    await chat(h, alice, "alice@localhost/desk", "to my desk")
    items, _ = await query(alice, form(**{"with": "alice@localhost"}))
    assert bodies(items) == ["note to self", "to my desk"]


async def fill(h: Harness, n: int = 10) -> tuple[ScriptedSession, list[str]]:
    alice = await h.login("alice/phone")
    await h.login("bob/laptop")
    await h.login("carol/pda")
    for i in range(n):
        to = "bob@localhost" if i % 2 == 0 else "carol@localhost/pda"
        await chat(h, alice, to, f"m{i}")
    items, _ = await query(alice)
    return alice, [m.attrs["archive-id"] for m in items]


async def test_rsm_pages_forward_and_backward(h: Harness) -> None:
    alice, ids = await fill(h)

    items, answer = await query(alice, rsm(max="3"))
    assert bodies(items) == ["m0", "m1", "m2"]
    assert fin_ids(answer) == (ids[0], ids[2], "10", False)
    first = answer.find("fin", MAM).find("set", RSM).find("first", RSM)  # type: ignore[union-attr]
    assert first is not None and first.attrs.get("index") == "0"

    items, answer = await query(alice, rsm(max="3", after=ids[8]))
    assert bodies(items) == ["m9"]
    assert fin_ids(answer)[3] is True

    items, answer = await query(alice, rsm(max="4", before=""))  # the last page
    assert bodies(items) == ["m6", "m7", "m8", "m9"]
    first = answer.find("fin", MAM).find("set", RSM).find("first", RSM)  # type: ignore[union-attr]
    assert first is not None and "index" not in first.attrs  # see fetch_page: clients misread it
    items, answer = await query(alice, rsm(max="4", before=ids[6]))
    assert bodies(items) == ["m2", "m3", "m4", "m5"]
    assert fin_ids(answer)[3] is False
    items, answer = await query(alice, rsm(max="4", before=ids[2]))
    assert (bodies(items), fin_ids(answer)[3]) == (["m0", "m1"], True)

    items, _ = await query(alice, rsm(max="3", before="") + f"<flip-page xmlns='{MAM}'/>")
    assert bodies(items) == ["m9", "m8", "m7"]


async def test_filters_with_time_ids_and_search(h: Harness) -> None:
    alice, ids = await fill(h)

    assert bodies((await query(alice, form(**{"with": "bob@localhost"})))[0]) == [
        "m0",
        "m2",
        "m4",
        "m6",
        "m8",
    ]
    assert bodies((await query(alice, form(**{"with": "carol@localhost/pda"})))[0]) == [
        "m1",
        "m3",
        "m5",
        "m7",
        "m9",
    ]
    assert (await query(alice, form(**{"with": "carol@localhost/other"})))[0] == []
    assert bodies((await query(alice, form(after_id=ids[7])))[0]) == ["m8", "m9"]
    assert bodies((await query(alice, form(after_id=ids[2], before_id=ids[5])))[0]) == ["m3", "m4"]
    assert bodies((await query(alice, form(ids=[ids[4], ids[1]])))[0]) == ["m1", "m4"]
    assert (
        bodies((await query(alice, form(start="2000-01-01T00:00:00Z", end="2001-01-01T00:00:00Z")))[0]) == []
    )
    assert len((await query(alice, form(start="2000-01-01T00:00:00Z")))[0]) == 10
    items, _ = await query(alice, form(**{"{urn:xmpp:fulltext:0}fulltext": "M7"}))
    assert bodies(items) == ["m7"]


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (form(after_id="nope"), "item-not-found"),
        (form(before_id="nope"), "item-not-found"),
        (form(ids=["nope"]), "item-not-found"),
        (rsm(after="nope"), "item-not-found"),
        (rsm(before="nope"), "item-not-found"),
        (form(mood="lonely"), "feature-not-implemented"),
        (form(start="yesterday"), "bad-request"),
        (form(**{"with": "@@"}), "jid-malformed"),
        (rsm(max="-1"), "bad-request"),
        (rsm(index="3"), "feature-not-implemented"),
    ],
)
async def test_bad_queries_get_errors(h: Harness, inner: str, expected: str) -> None:
    alice, _ = await fill(h, 2)
    items, answer = await query(alice, inner)
    assert items == []
    assert answer.attrs["type"] == "error" and condition(answer) == expected


async def test_form_metadata_and_discovery(h: Harness) -> None:
    alice = await h.login("alice")
    empty = await alice.iq(f"<metadata xmlns='{MAM}'/>")
    assert empty.find("metadata", MAM) is not None and not list(empty.find("metadata", MAM).elements())  # type: ignore[union-attr]
    alice, ids = await fill(h, 3)
    meta = (await alice.iq(f"<metadata xmlns='{MAM}'/>")).find("metadata", MAM)
    assert meta is not None
    assert meta.find("start", MAM).attrs["id"] == ids[0]  # type: ignore[union-attr]
    assert meta.find("end", MAM).attrs["id"] == ids[-1]  # type: ignore[union-attr]

    got = await alice.iq(f"<query xmlns='{MAM}'/>")
    fields = {f.attrs.get("var") for f in got.find("query", MAM).find("x", "jabber:x:data").elements("field")}  # type: ignore[union-attr]
    assert {"with", "start", "end", "before-id", "after-id", "ids", "{urn:xmpp:fulltext:0}fulltext"} <= fields

    info = await alice.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to="alice@localhost")
    features = {f.attrs["var"] for f in info.find("query").elements("feature")}  # type: ignore[union-attr]
    assert {MAM, MAM + "#extended", "urn:xmpp:fulltext:0"} <= features


async def test_preferences_decide_what_is_archived(h: Harness) -> None:
    alice = await h.login("alice")
    await h.login("bob")
    await h.login("carol")
    got = await alice.iq(f"<prefs xmlns='{MAM}'/>")
    assert got.find("prefs", MAM).attrs["default"] == "always"  # type: ignore[union-attr]
    got = await alice.iq(
        f"<prefs xmlns='{MAM}' default='never'><always><jid>bob@localhost</jid></always></prefs>", "set"
    )
    assert got.find("prefs", MAM).find("always", MAM).find_text("jid", MAM) == "bob@localhost"  # type: ignore[union-attr]
    await chat(h, alice, "bob@localhost/bob", "kept")
    await chat(h, alice, "carol@localhost", "not kept")
    assert bodies((await query(alice))[0]) == ["kept"]

    await alice.iq(f"<prefs xmlns='{MAM}' default='roster'/>", "set")
    await alice.iq("<query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query>", "set")
    await chat(h, alice, "carol@localhost", "roster")
    await chat(h, alice, "bob@localhost", "bob: no longer listed")
    assert bodies((await query(alice))[0]) == ["kept", "roster"]

    bad = await alice.iq(f"<prefs xmlns='{MAM}' default='sometimes'/>", "set")
    assert condition(bad) == "bad-request"


async def test_config_default_policy_never(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[mam]\ndefault_policy = 'never'\n") as h:
        alice = await h.login("alice")
        bob = await h.login("bob")
        await chat(h, alice, "bob@localhost", "hi")
        assert (await query(alice))[0] == [] and (await query(bob))[0] == []


async def test_deleting_an_account_deletes_its_archive(h: Harness) -> None:
    _alice, _ = await fill(h, 4)
    store = h.module(MessageArchive).store
    assert await store.count("localhost", "alice") == 4
    await h.server.account_removal.remove("localhost", "alice")
    await h.settle()
    assert await store.count("localhost", "alice") == 0
    assert await store.count("localhost", "bob") == 2


async def test_a_full_write_queue_drops_archiving_never_delivery(h: Harness) -> None:
    alice = await h.login("alice")
    bob = await online(h, "bob")
    archive = h.module(MessageArchive)
    store = archive.store
    store.offer = lambda *args, **kwargs: False  # type: ignore[method-assign]
    await chat(h, alice, "bob@localhost", "still delivered")
    assert bob.next().find_text("body") == "still delivered"
    assert archive.archiver.dropped == 2
    del store.offer  # type: ignore[attr-defined]
    assert await store.count("localhost", "bob", ArchiveQuery()) == 0


async def test_a_failing_database_costs_archive_entries_never_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "roost.toml").write_text(
        f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp_path / "data"}"\n'
        '[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n[storage]\nurl = "memory://"\narchive_queue = 1000\n'
    )
    async with Harness.running(tmp_path) as h:
        alice = await h.login("alice")
        bob = await online(h, "bob")
        storage = h.server.storage
        writer = storage._writer  # fault injection where the writer commits its batches
        working = writer._commit

        async def down(entries: object) -> None:
            raise StorageError("database is down")

        writer._commit = down
        for n in range(600):  # 1,200 archive entries for a queue of 1,000
            await alice.submit(f"<message to='bob@localhost' type='chat'><body>{n}</body></message>")
        assert [m.find_text("body") for m in bob.received] == [str(n) for n in range(600)]
        archive = h.module(MessageArchive)
        assert archive.archiver.dropped == 200
        assert "messages not archived" in caplog.text
        assert "archive items failed" in caplog.text  # the writer says it keeps retrying

        writer._commit = working
        async with asyncio.timeout(30):
            await storage.flush()
        assert (
            await archive.store.count("localhost", "alice") + await archive.store.count("localhost", "bob")
            == 1000
        )
