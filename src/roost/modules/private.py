"""XEP-0049 Private XML Storage: each account keeps XML fragments on the server for itself.

Fragments are stored per (element name, namespace) in the map store ``private``, as serialized XML.
Only the account itself may read or write them; other senders get <forbidden/> (§2.3: "the former
is preferable"). Reserved namespaces ('jabber:*', 'http://jabber.org/*', 'vcard-temp') are refused
with <not-acceptable/>, as are queries without a namespaced child (§2.3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.jid import JID
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.fragment import FragmentError, parse_element
from roost.xml.ns import PRIVATE, VCARD
from roost.xml.serializer import serialize

#: Upper bound when reading a stored fragment back (far above any configurable max_item_bytes).
_MAX_STORED_BYTES = 16 * 1024 * 1024


class PrivateOptions(ModuleOptions):
    """XEP-0049 private XML storage: limits per account (docs/private.md)."""

    max_item_bytes: int = Field(
        65_536,
        ge=256,
        le=_MAX_STORED_BYTES,
        description="Largest fragment (one child of `<query/>`, as XML) an account may store.",
        examples=[131072],
    )
    max_items: int = Field(
        100,
        ge=1,
        le=100_000,
        description="How many different (element, namespace) fragments one account may keep.",
        examples=[500],
    )


def is_reserved(ns: str) -> bool:
    """Namespaces XEP-0049 §2.3 calls reserved (the server refuses them, an option the XEP allows)."""
    return ns.startswith("jabber:") or ns.startswith("http://jabber.org/") or ns == VCARD


def fragment_key(name: str, ns: str) -> str:
    """The store key of a fragment: Clark notation, ``{ns}name``."""
    return "{" + ns + "}" + name


def _check_namespace(element: Element) -> None:
    if not element.ns or element.ns == PRIVATE:
        raise StanzaError("not-acceptable", "each child of <query/> needs its own namespace")
    if is_reserved(element.ns):
        raise StanzaError("not-acceptable", f"the namespace {element.ns!r} is reserved")


class PrivateStorage(Module):
    """Per-account private XML (jabber:iq:private)."""

    name = "private"
    xeps = (Xep(49, "1.2"),)
    features = (PRIVATE,)
    Options = PrivateOptions
    options: PrivateOptions

    async def start(self) -> None:
        self.store = self.server.storage.map("private")
        #: Called after an account stored or cleared fragments itself (bridges such as XEP-0411
        #: bookmarks conversion): ``await listener(account, {key: xml or None})``.
        self.listeners: list[Callable[[JID, dict[str, str | None]], Awaitable[None]]] = []

    async def read(self, account: JID, name: str, ns: str) -> Element | None:
        """A stored fragment of ``account`` (for bridges), or None."""
        value = await self.store.get(account.domain, account.local or "", fragment_key(name, ns))
        return self._parse(value, account)

    async def write(self, account: JID, element: Element) -> None:
        """Store a fragment for ``account`` without calling the listeners (for bridges)."""
        text = serialize(element)
        await self.store.set(
            account.domain, account.local or "", fragment_key(element.name, element.ns), text
        )

    @iq_handler("get", PRIVATE, "query", to=Target.SELF)
    async def get_own(self, event: StanzaEvent) -> Element:
        query = event.stanza.first()
        assert query is not None
        wanted = list(query.elements())
        if not wanted:
            raise StanzaError("not-acceptable", "name the fragment to retrieve in <query/>")
        if len(wanted) > 1:
            # §2.3: "A client MUST NOT query for more than one namespace in a single IQ get request."
            raise StanzaError("bad-request", "retrieve one fragment per request")
        element = wanted[0]
        _check_namespace(element)
        key = fragment_key(element.name, element.ns)
        value = await self.store.get(event.to.domain, event.to.local or "", key)
        result = Element("query", PRIVATE)
        stored = self._parse(value, event)
        # Nothing stored: answer with the empty element that was asked for.
        result.append(stored if stored is not None else Element(element.name, element.ns))
        return result

    @iq_handler("set", PRIVATE, "query", to=Target.SELF)
    async def set_own(self, event: StanzaEvent) -> None:
        query = event.stanza.first()
        assert query is not None
        fragments = list(query.elements())
        if not fragments:
            # §2.3: "At least one child element with a proper namespace MUST be included"
            raise StanzaError("not-acceptable", "nothing to store")
        changes: dict[str, str | None] = {}
        for element in fragments:
            _check_namespace(element)
            key = fragment_key(element.name, element.ns)
            if element.first() is None and not element.text.strip() and not element.attrs:
                changes[key] = None  # an empty element clears the fragment; get answers it empty anyway
                continue
            text = serialize(element)
            if len(text.encode("utf-8")) > self.options.max_item_bytes:
                limit = self.options.max_item_bytes
                raise StanzaError("not-acceptable", f"<{element.name}/> is larger than {limit} bytes")
            changes[key] = text
        domain, user = event.to.domain, event.to.local or ""
        added = [k for k, v in changes.items() if v is not None]
        if added:
            existing = await self.store.items(domain, user)
            kept = {k for k in existing if changes.get(k, "") is not None}
            if len(kept | set(added)) > self.options.max_items:
                raise StanzaError("not-acceptable", f"at most {self.options.max_items} fragments per account")
        await self.store.set_many(domain, user, dict(changes))
        for listener in self.listeners:
            try:
                await listener(event.to.bare, changes)
            except Exception:
                self.log.exception("private storage listener %r failed for %s", listener, event.to)

    @iq_handler("get", PRIVATE, "query", to=Target.ACCOUNT)
    def get_other(self, event: StanzaEvent) -> None:
        raise StanzaError("forbidden", "private XML belongs to its account alone")  # §2.3

    @iq_handler("set", PRIVATE, "query", to=Target.ACCOUNT)
    def set_other(self, event: StanzaEvent) -> None:
        raise StanzaError("forbidden", "private XML belongs to its account alone")  # §2.3, §4

    def _parse(self, value: object, where: StanzaEvent | JID) -> Element | None:
        if not isinstance(value, str):
            return None
        try:
            return parse_element(value, _MAX_STORED_BYTES)
        except FragmentError as e:
            owner = where.to if isinstance(where, StanzaEvent) else where
            self.log.warning("stored private XML of %s is unreadable: %s", owner, e)
            return None
