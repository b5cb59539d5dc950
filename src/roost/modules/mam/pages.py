"""Answering one archive query: the page from storage, its RSM numbers, the result messages in order.

Shared by user archives and room archives; what differs (who may ask, how a stored stanza is shown
to the requester) comes in as arguments.
"""

from __future__ import annotations

import logging
import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass

from roost.modules.mam.protocol import ParsedQuery, fin, result_message
from roost.modules.offline import parse_stored_many
from roost.stanza.errors import StanzaError
from roost.storage.api import ArchiveItem, ArchiveStore, NoSuchItem
from roost.xml.element import Element, RawXml

log = logging.getLogger("roost.mod.mam")


@dataclass(slots=True)
class Page:
    items: list[ArchiveItem]
    complete: bool
    count: int | None
    index: int | None


async def fetch_page(
    store: ArchiveStore, domain: str, user: str, parsed: ParsedQuery, *, with_count: bool
) -> Page:
    """The page the query asks for; unknown ids are ``item-not-found`` (XEP-0313 §4.1.1, §4.3.2)."""
    q = parsed.archive
    try:
        items, complete = await store.query(domain, user, q)
        count: int | None = None
        if with_count:
            if complete and q.after_id is None and q.before_id is None:
                # No anchor and nothing beyond the page: the page is the whole result set, so its
                # size is the count (XEP-0059 §2.6) and the second index read is saved. Most small
                # queries ("last 50 with X", "since yesterday") end here.
                count = len(items)
            else:
                count = await store.count(domain, user, q)
    except NoSuchItem as exc:
        raise StanzaError("item-not-found", f"no message with id {exc.item_id!r} in this archive") from None
    # XEP-0059 §2.6 'index' where it costs nothing: the first page going forward. Not on the last page
    # going backward (count - len(page)): clients such as slixmpp take "index + page == count" for the
    # end of the walk whatever its direction, and would stop paging back after one page.
    index: int | None = None
    if items:
        if parsed.from_start and not q.reverse:
            index = 0
    elif count is None and complete and (parsed.from_start or parsed.from_end):
        count = 0
    return Page(items, complete, count, index)


def send_page(
    page: Page,
    parsed: ParsedQuery,
    *,
    to: str,
    archive: str,
    show: Callable[[ArchiveItem, Element], Element | None],
    send: Callable[[Element], None],
    splice: Callable[[ArchiveItem], RawXml | None] | None = None,
) -> Element:
    """Send one result message per item (chronological, or newest first with flip-page), return <fin/>.

    ``show`` turns a stored stanza into what this requester may see (None: leave it out). ``splice``,
    where the requester sees the stored stanza unchanged but for additions to its end, gives the stanza
    as XML to put into the result as it is (None: that item goes through parsing and ``show``). A page
    is spliced only if all of its spliced XML is well-formed (one expat pass, no tree built).
    """
    ordered = list(reversed(page.items)) if parsed.flip else page.items
    spliced: list[RawXml | None] = [splice(item) for item in ordered] if splice else [None] * len(ordered)
    if splice and not _well_formed([raw for raw in spliced if raw is not None]):
        spliced = [None] * len(ordered)
    parsed_stanzas = iter(
        parse_stored_many([i.payload for i, r in zip(ordered, spliced, strict=True) if r is None])
    )
    for item, raw in zip(ordered, spliced, strict=True):
        if raw is not None:
            send(result_message(item, raw, to=to, archive=archive, queryid=parsed.queryid))
            continue
        stanza = next(parsed_stanzas)
        if stanza is None:
            log.warning("mam: unreadable archived message %s in %s", item.id, archive)
            continue
        shown = show(item, stanza)
        if shown is not None:
            send(result_message(item, shown, to=to, archive=archive, queryid=parsed.queryid))
    return fin(page.items, complete=page.complete, count=page.count, index=page.index)


def _well_formed(fragments: list[RawXml]) -> bool:
    """Whether the fragments, one after the other, are well-formed XML: a damaged row must never reach
    a client's stream (it would end it). Inside the wrapper no DTD can appear, so no entity either."""
    if not fragments:
        return True
    try:
        xml.parsers.expat.ParserCreate().Parse("<page>" + "".join(fragments) + "</page>", True)
    except xml.parsers.expat.ExpatError:
        return False
    return True
