"""Answering an archive query: the RSM count without a second read when the page is the whole set,
and one parser for a page of stored stanzas."""

from __future__ import annotations

import asyncio

from roost.modules.mam.pages import fetch_page
from roost.modules.mam.protocol import ParsedQuery
from roost.modules.offline import parse_stored_many
from roost.storage.api import ArchiveItem, ArchiveQuery
from roost.storage.backend import QueuedAppend
from roost.storage.memory import MemoryBackend


class CountingArchive:
    """A memory archive that counts its count() calls."""

    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self.inner = self.backend.archive("mam")
        self.counts = 0

    async def query(self, domain: str, user: str, q: ArchiveQuery) -> tuple[list[ArchiveItem], bool]:
        return await self.inner.query(domain, user, q)

    async def count(self, domain: str, user: str, q: ArchiveQuery | None = None) -> int:
        self.counts += 1
        return await self.inner.count(domain, user, q)


def _filled(n: int) -> CountingArchive:
    store = CountingArchive()
    items = [ArchiveItem(f"id{i:03d}", 1000.0 + i, "bob@localhost", "<m/>") for i in range(n)]
    entries = [QueuedAppend("mam", "localhost", "alice", item, "") for item in items]
    asyncio.run(store.backend.append_archive(entries))
    return store


def test_a_page_holding_the_whole_result_set_is_counted_without_reading_again() -> None:
    store = _filled(3)
    parsed = ParsedQuery(ArchiveQuery(limit=50, reverse=True), from_end=True)
    page = asyncio.run(fetch_page(store, "localhost", "alice", parsed, with_count=True))  # type: ignore[arg-type]
    assert (len(page.items), page.complete, page.count, store.counts) == (3, True, 3, 0)


def test_a_partial_or_anchored_page_still_asks_the_store_for_the_count() -> None:
    store = _filled(5)
    partial = ParsedQuery(ArchiveQuery(limit=2, reverse=True), from_end=True)
    page = asyncio.run(fetch_page(store, "localhost", "alice", partial, with_count=True))  # type: ignore[arg-type]
    assert (page.complete, page.count, store.counts) == (False, 5, 1)
    # Complete, but only the part after the anchor: the count is of the whole set (XEP-0059 §2.6).
    anchored = ParsedQuery(ArchiveQuery(limit=50, after_id="id002"))
    page = asyncio.run(fetch_page(store, "localhost", "alice", anchored, with_count=True))  # type: ignore[arg-type]
    assert (len(page.items), page.complete, page.count, store.counts) == (2, True, 5, 2)


def test_a_page_is_parsed_in_one_pass_and_a_damaged_row_costs_only_itself() -> None:
    good = "<message to='bob@localhost' type='chat'><body>hi</body></message>"
    stanzas = parse_stored_many([good, good])
    assert [s.name if s is not None else None for s in stanzas] == ["message", "message"]
    mixed = parse_stored_many([good, "<message><body>cut", good, "<a/><b/>"])
    assert [s is not None for s in mixed] == [True, False, True, True]
    assert parse_stored_many([]) == []


def test_a_spliced_result_is_byte_for_byte_what_parsing_and_showing_would_send() -> None:
    from roost.modules.mam.module import spliced_with_id
    from roost.modules.mam.protocol import result_message
    from roost.modules.offline import parse_stored
    from roost.xml.element import Element
    from roost.xml.ns import CLIENT, STANZA_ID
    from roost.xml.serializer import serialize

    stored = serialize(
        parse_stored(
            "<message from='romeo@localhost/r' to='juliet@localhost' type='chat' id='m&amp;1' xml:lang='en'>"
            "<body>a &lt; b &amp; 'c' \"d\"</body><encrypted xmlns='eu.siacs.conversations.axolotl'>"
            "<header sid='1'><iv>AA==</iv></header><payload>AAAA</payload></encrypted>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ),
        CLIENT,
    )
    item = ArchiveItem("01ABC", 1000.0, "romeo@localhost/r", stored, "chat")
    shown = parse_stored(stored)
    shown.children.append(Element("stanza-id", STANZA_ID, {"id": item.id, "by": "juliet@localhost"}))
    raw = spliced_with_id(item, "juliet@localhost")
    assert raw is not None

    def wire(inner: object) -> str:
        msg = result_message(item, inner, to="juliet@localhost/p", archive="juliet@localhost", queryid="q")  # type: ignore[arg-type]
        return serialize(msg, CLIENT)

    assert wire(raw) == wire(shown)
    # Rows in other shapes are parsed instead.
    with_id = serialize(shown, CLIENT)
    assert spliced_with_id(ArchiveItem("01ABC", 1000.0, "x", with_id, "chat"), "juliet@localhost") is None
    empty = ArchiveItem("01ABC", 1000.0, "x", "<message to='a@b'/>", "chat")
    assert spliced_with_id(empty, "juliet@localhost") is None


def test_a_page_with_a_damaged_row_is_parsed_and_the_row_left_out() -> None:
    from roost.modules.mam.module import spliced_with_id
    from roost.modules.mam.pages import Page, send_page

    good = "<message to='juliet@localhost' type='chat'><body>hi</body></message>"
    bad = "<message to='juliet@localhost' type='chat'><body>cut</message>"
    items = [ArchiveItem(f"id{i}", 1000.0 + i, "x", p, "chat") for i, p in enumerate((good, bad, good))]
    sent: list[str] = []
    fin = send_page(
        Page(items, True, 3, None),
        ParsedQuery(ArchiveQuery()),
        to="juliet@localhost/p",
        archive="juliet@localhost",
        show=lambda item, stanza: stanza,
        send=lambda msg: sent.append(msg.find("result").attrs["id"]),  # type: ignore[union-attr]
        splice=lambda item: spliced_with_id(item, "juliet@localhost"),
    )
    assert sent == ["id0", "id2"]
    assert fin.name == "fin"
