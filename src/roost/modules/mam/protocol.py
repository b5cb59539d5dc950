"""XEP-0313 Message Archive Management on the wire: queries, result pages, metadata, preferences. Pure.

Reads a ``<query xmlns='urn:xmpp:mam:2'/>`` (its XEP-0004 form and XEP-0059 ``<set/>``) into a
:class:`ParsedQuery` whose ``archive`` is the storage-level :class:`~roost.storage.api.ArchiveQuery`,
and builds what goes back: one ``<message><result/></message>`` per item, then ``<fin/>``. The user
archive (``module.py``) and the room archive (``rooms.py``) share all of it; neither this file nor the
preference rules touch storage or sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from roost.jid import JID, JIDError
from roost.modules.muc.forms import add_field, new_form, read_form
from roost.stanza.errors import StanzaError
from roost.storage.api import ArchiveItem, ArchiveQuery
from roost.util.datetime import format_datetime, parse_datetime
from roost.xml.element import Element, RawXml
from roost.xml.ns import CLIENT, DATA_FORMS, DELAY, FORWARD

MAM: Final = "urn:xmpp:mam:2"
#: XEP-0313 §4.1.1 (before-id, after-id, ids), §4.3.4 flip-page, §5 metadata.
MAM_EXTENDED: Final = "urn:xmpp:mam:2#extended"
RSM: Final = "http://jabber.org/protocol/rsm"
#: XEP-0431 full-text search: the feature and the form field.
FULLTEXT: Final = "urn:xmpp:fulltext:0"
FULLTEXT_FIELD: Final = "{urn:xmpp:fulltext:0}fulltext"
XDATA_VALIDATE: Final = "http://jabber.org/protocol/xdata-validate"  # XEP-0122

#: The fields of our query form (XEP-0313 §4.1, §4.1.6).
FORM_FIELDS: Final = frozenset(
    {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids", FULLTEXT_FIELD}
)
POLICIES: Final = ("always", "never", "roster")


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """One archive query as the client asked it."""

    archive: ArchiveQuery
    queryid: str | None = None
    #: XEP-0313 §4.3.4: send the page newest first (the page itself does not change).
    flip: bool = False
    #: The client gave no RSM <after/> and no after-id: going forward the page starts the result set.
    from_start: bool = False
    #: RSM <before/> was empty: going backward the page ends the result set.
    from_end: bool = False


def _time(text: str, var: str) -> float:
    try:
        return parse_datetime(text).timestamp()
    except ValueError:
        raise StanzaError("bad-request", f"'{var}' is not a XEP-0082 DateTime") from None


def _int(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"{what} must be a number") from None
    if value < 0:
        raise StanzaError("bad-request", f"{what} must not be negative")
    return value


def parse_query(query: Element, *, default_page: int, max_page: int) -> ParsedQuery:
    """A MAM ``<query/>`` → :class:`ParsedQuery`; malformed input raises ``StanzaError``.

    Unknown form fields are ``feature-not-implemented`` (§4.1.6); ``with`` is normalized so that it
    compares with stored JIDs. RSM ``<after/>``/``<before/>`` override the form's after-id/before-id
    when both are given: the client is paging within that range.
    """
    if query.attrs.get("node"):
        raise StanzaError("item-not-found", "this archive has no nodes (XEP-0442)")
    values: dict[str, list[str]] = {}
    x = query.find("x", DATA_FORMS)
    if x is not None:
        form = read_form(x)
        if form.type not in ("submit", "form"):
            raise StanzaError("bad-request", "submit the query form")
        form_type = form.form_type
        if form_type is not None and form_type != MAM:
            raise StanzaError("bad-request", f"FORM_TYPE must be {MAM}")
        for var in form.values:
            if var not in FORM_FIELDS:
                raise StanzaError("feature-not-implemented", f"unknown query field {var!r}")
        values = form.values

    def first(var: str) -> str | None:
        got = values.get(var)
        return got[0].strip() if got and got[0].strip() else None

    with_jid = first("with")
    if with_jid is not None:
        try:
            with_jid = str(JID.parse(with_jid))
        except JIDError:
            raise StanzaError("jid-malformed", "'with' is not a valid JID") from None
    start_text, end_text = first("start"), first("end")
    start = None if start_text is None else _time(start_text, "start")
    end = None if end_text is None else _time(end_text, "end")
    ids_values = [v.strip() for v in values.get("ids", []) if v.strip()]
    text = first(FULLTEXT_FIELD)
    after_id, before_id = first("after-id"), first("before-id")

    limit = default_page
    reverse = False
    from_end = False
    rsm = query.find("set", RSM)
    if rsm is not None:
        max_el = rsm.find("max", RSM)
        if max_el is not None:
            limit = _int(max_el.text, "RSM <max/>")
        if rsm.find("index", RSM) is not None:
            raise StanzaError("feature-not-implemented", "paging by RSM <index/> is not supported")
        after = rsm.find("after", RSM)
        if after is not None:
            if not after.text.strip():
                raise StanzaError("bad-request", "RSM <after/> needs an id")
            after_id = after.text.strip()
        before = rsm.find("before", RSM)
        if before is not None:
            reverse = True
            if before.text.strip():
                before_id = before.text.strip()
            else:
                from_end = True
    archive = ArchiveQuery(
        with_jid=with_jid,
        start=start,
        end=end,
        after_id=after_id,
        before_id=before_id,
        ids=ids_values or None,
        limit=min(limit, max_page),
        reverse=reverse,
        text=text,
    )
    return ParsedQuery(
        archive,
        queryid=query.attrs.get("queryid"),
        flip=query.find("flip-page", MAM) is not None,
        from_start=not reverse and after_id is None,
        from_end=from_end and before_id is None,
    )


def query_form(*, search: bool = True) -> Element:
    """§4.1.6: the fields a query may use (none required; 'ids' open to any value, XEP-0122)."""
    query = Element("query", MAM)
    x = new_form("form", MAM)
    add_field(x, "with", "jid-single")
    add_field(x, "start", "text-single")
    add_field(x, "end", "text-single")
    add_field(x, "before-id", "text-single")
    add_field(x, "after-id", "text-single")
    ids = add_field(x, "ids", "list-multi")
    ids.add("validate", XDATA_VALIDATE, {"datatype": "xs:string"}).add("open", XDATA_VALIDATE)
    if search:
        add_field(x, FULLTEXT_FIELD, "text-single", "Search for")
    query.append(x)
    return query


def result_message(
    item: ArchiveItem, stanza: Element | RawXml, *, to: str, archive: str, queryid: str | None
) -> Element:
    """§4.2: one archived message, forwarded (XEP-0297) with its archive time (XEP-0203)."""
    msg = Element("message", CLIENT, {"to": to, "from": archive})
    result = msg.add(
        "result", MAM, {"id": item.id} if queryid is None else {"queryid": queryid, "id": item.id}
    )
    forwarded = result.add("forwarded", FORWARD)
    forwarded.add("delay", DELAY, {"stamp": format_datetime(item.timestamp)})
    forwarded.children.append(stanza)
    return msg


def fin(
    page: Sequence[ArchiveItem],
    *,
    complete: bool,
    count: int | None = None,
    index: int | None = None,
) -> Element:
    """The ``<fin/>`` of the IQ result (§4.3): RSM first/last of the page, count when known."""
    el = Element("fin", MAM, {"complete": "true"} if complete else None)
    rsm = el.add("set", RSM)
    if page:
        rsm.add("first", RSM, {"index": str(index)} if index is not None else None, text=page[0].id)
        rsm.add("last", RSM, text=page[-1].id)
    if count is not None:
        rsm.add("count", RSM, text=str(count))
    return el


def metadata(first: ArchiveItem | None, last: ArchiveItem | None) -> Element:
    """§5: the first and last message of the archive; empty for an empty archive."""
    el = Element("metadata", MAM)
    if first is not None and last is not None:
        el.add("start", MAM, {"id": first.id, "timestamp": format_datetime(first.timestamp)})
        el.add("end", MAM, {"id": last.id, "timestamp": format_datetime(last.timestamp)})
    return el


# -- preferences (XEP-0441) -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Prefs:
    """A user's archiving preferences: the default and the always/never lists (JIDs as given)."""

    default: str = "always"
    always: frozenset[str] = field(default_factory=frozenset)
    never: frozenset[str] = field(default_factory=frozenset)

    def decide(self, with_jid: JID, in_roster: bool | None) -> bool | None:
        """Whether a message to/from ``with_jid`` is archived (XEP-0441 §2.3); None: it depends on the
        roster and ``in_roster`` was not known."""
        full, bare = str(with_jid), with_jid.bare_str
        # §2.3.1: a listed bare JID matches every resource, a full JID only itself. 'never' wins.
        if full in self.never or bare in self.never:
            return False
        if full in self.always or bare in self.always:
            return True
        if self.default == "always":
            return True
        if self.default == "never":
            return False
        return in_roster

    @property
    def needs_roster(self) -> bool:
        return self.default == "roster"

    def to_json(self) -> dict[str, object]:
        return {"default": self.default, "always": sorted(self.always), "never": sorted(self.never)}

    @classmethod
    def from_json(cls, doc: object, default: str) -> Prefs:
        if not isinstance(doc, dict):
            return cls(default)
        policy = doc.get("default")
        always, never = doc.get("always"), doc.get("never")
        return cls(
            policy if isinstance(policy, str) and policy in POLICIES else default,
            frozenset(j for j in always if isinstance(j, str)) if isinstance(always, list) else frozenset(),
            frozenset(j for j in never if isinstance(j, str)) if isinstance(never, list) else frozenset(),
        )

    def to_element(self) -> Element:
        el = Element("prefs", MAM, {"default": self.default})
        for name, jids in (("always", self.always), ("never", self.never)):
            listed = el.add(name, MAM)
            for jid in sorted(jids):
                listed.add("jid", MAM, text=jid)
        return el


def parse_prefs(el: Element, current: Prefs, *, max_jids: int) -> Prefs:
    """A ``<prefs/>`` set: a missing list is empty (§2.1.2, §2.1.3); bad JIDs are bad-request."""
    policy = el.attrs.get("default", current.default)
    if policy not in POLICIES:
        raise StanzaError("bad-request", f"default must be one of {', '.join(POLICIES)}")

    def jids(name: str) -> frozenset[str]:
        listed = el.find(name, MAM)
        found: list[str] = []
        if listed is not None:
            for jid_el in listed.elements("jid", MAM):
                try:
                    found.append(str(JID.parse(jid_el.text.strip())))
                except JIDError:
                    raise StanzaError("jid-malformed", f"not a JID in <{name}/>: {jid_el.text!r}") from None
        if len(found) > max_jids:
            raise StanzaError("not-acceptable", f"at most {max_jids} JIDs in <{name}/>")
        return frozenset(found)

    always, never = jids("always"), jids("never")
    return replace(current, default=policy, always=always - never, never=never)


# -- what goes into a user archive ----------------------------------------------------------------------
HINTS: Final = "urn:xmpp:hints"
#: Payloads that do not make a message worth archiving on their own (XEP-0313 §6.1.1 "non-conversation
#: messages"): receipts and chat markers; chat states and hints never count (see message.is_archivable).
_NOT_CONTENT: Final = frozenset({"urn:xmpp:receipts", "urn:xmpp:chat-markers:0"})


def refused_by_hints(stanza: Element) -> bool:
    """XEP-0334 §4.1/§4.2: <no-permanent-store/> and <no-store/> keep a message out of archives."""
    return any(child.name in ("no-permanent-store", "no-store") for child in stanza.elements(None, HINTS))


#: Namespaces that carry no content of their own (chat states, hints, ids, delay stamps).
_NEUTRAL: Final = frozenset({HINTS, "http://jabber.org/protocol/chatstates", "urn:xmpp:sid:0", DELAY})


def only_receipts(stanza: Element) -> bool:
    """Whether the message's content is receipts or markers alone (not archived, unless <store/>)."""
    stanza_ns = stanza.ns
    found = False
    for child in stanza.elements():
        ns = child.ns
        if ns in _NOT_CONTENT:
            found = True
            continue
        content = (
            (ns == HINTS and child.name == "store")
            or (ns == stanza_ns and child.name in ("body", "subject"))
            or (ns != stanza_ns and ns not in _NEUTRAL)
        )
        if content:
            return False
    return found


def body_text(stanza: Element, limit: int = 10_000) -> str:
    """The text a search matches: the message bodies (all languages), cut at ``limit`` characters."""
    parts = [body.text for body in stanza.elements("body", stanza.ns)]
    return " ".join(parts)[:limit]


def jid_list(values: Iterable[str]) -> list[str]:
    return sorted(values)
