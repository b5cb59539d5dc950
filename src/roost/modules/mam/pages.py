"""Answering one archive query: the page from storage, its RSM numbers, the result messages in order.

Shared by user archives and room archives; what differs (who may ask, how a stored stanza is shown
to the requester) comes in as arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from roost.modules.mam.protocol import ParsedQuery, fin, result_message
from roost.modules.offline import parse_stored_many
from roost.stanza.errors import StanzaError
from roost.storage.api import ArchiveItem, ArchiveStore, NoSuchItem
from roost.xml.element import Element

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
) -> Element:
    """Send one result message per item (chronological, or newest first with flip-page), return <fin/>.

    ``show`` turns a stored stanza into what this requester may see (None: leave it out).
    """
    ordered = list(reversed(page.items)) if parsed.flip else page.items
    stanzas = parse_stored_many([item.payload for item in ordered])
    for item, stanza in zip(ordered, stanzas, strict=True):
        if stanza is None:
            log.warning("mam: unreadable archived message %s in %s", item.id, archive)
            continue
        shown = show(item, stanza)
        if shown is not None:
            send(result_message(item, shown, to=to, archive=archive, queryid=parsed.queryid))
    return fin(page.items, complete=page.complete, count=page.count, index=page.index)
