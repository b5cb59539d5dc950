"""XEP-0054 vcard-temp, with XEP-0153 avatar hashes that the server adds to presence.

vCards are stored whole, as serialized XML, with the SHA-1 of their photo beside them (keyvalue store
``vcard``), so a login reads one small field and never parses a photo.

XEP-0153 describes only what clients do. Many clients publish a photo in their vCard but never put
its hash into presence, so their contacts never see the avatar change; and a client that does take
part must stop advertising its hash when another resource of the account sends presence without one
(XEP-0153 §4.3 rule 1). The server knows the stored photo, so for every available presence that a
client broadcasts *without* an ``<x xmlns='vcard-temp:x:update'/>`` it adds one carrying the hash
(only when there is a photo). A presence that has the element is left alone: that client takes part
itself. When a vCard set changes the photo, the last presence of each resource the server speaks for
is broadcast again with the new hash (or an empty ``<photo/>``, XEP-0153 §4.1 rule 3, if the photo
was removed), since those clients will not do it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.core.session import Session
from roost.jid import JID
from roost.stanza.errors import StanzaError
from roost.util.bounded import TrackedDict
from roost.xml.element import Element
from roost.xml.fragment import FragmentError, parse_element
from roost.xml.ns import VCARD, VCARD_UPDATE
from roost.xml.serializer import serialize

UserKey = tuple[str, str]  # (domain, username)

#: Upper bound when reading a stored vCard back (far above any configurable max_bytes).
_MAX_STORED_BYTES = 16 * 1024 * 1024


class VCardOptions(ModuleOptions):
    """XEP-0054 vCards and XEP-0153 avatar hashes in presence (docs/vcard.md)."""

    max_bytes: int = Field(
        131_072,
        ge=1024,
        le=_MAX_STORED_BYTES,
        description="Largest vCard accepted, in bytes of XML (an embedded photo counts). Larger ones are "
        "refused with not-acceptable. Stanzas are also bounded by c2s.max_stanza_bytes.",
        examples=[262144],
    )
    avatar_presence: bool = Field(
        True,
        description="Add the vCard photo's hash (XEP-0153 `<x xmlns='vcard-temp:x:update'/>`) to available "
        "presence of clients that do not add it themselves, and re-send their presence when the photo "
        "changes.",
        examples=[False],
    )


def photo_hash(vcard: Element) -> str:
    """Lower-case hex SHA-1 of the decoded PHOTO/BINVAL (XEP-0153 §3.1); "" when there is no photo.

    Whitespace in the base64 text is ignored (XEP-0153 §4.6 rule 5). Raises ValueError if the rest is
    not base64.
    """
    photo = vcard.find("PHOTO", VCARD)
    if photo is None:
        return ""
    binval = photo.find("BINVAL", VCARD)
    if binval is None:
        return ""
    text = "".join(binval.text.split())
    if not text:
        return ""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("PHOTO/BINVAL is not base64") from None
    return hashlib.sha1(data).hexdigest()


def _key(jid: JID) -> UserKey:
    return (jid.domain, jid.local or "")


class VCardTemp(Module):
    """vCards of accounts: each user sets their own, anyone may read them (XEP-0054 §3)."""

    name = "vcard"
    xeps = (
        Xep(54, "1.3.0"),
        Xep(153, "1.1.1", note="the server adds the photo hash to presence for clients that do not"),
    )
    features = (VCARD,)
    account_features = (VCARD,)
    Options = VCardOptions
    options: VCardOptions

    async def start(self) -> None:
        self.store = self.server.storage.keyvalue("vcard")
        #: Photo hash ("" = none) of each online account, for the synchronous presence filter.
        self._photos: TrackedDict[UserKey, str] = TrackedDict()  # frozen once, not walked by every GC
        #: Accounts whose hash is being read; their broadcast presences wait here, in order.
        self._waiting: dict[UserKey, list[tuple[Session, Element]]] = {}
        #: A presence this module is re-sending itself: the filter lets it pass untouched.
        self._replaying: Element | None = None
        #: Called after an account set its own vCard (XEP-0398 avatar conversion):
        #: ``await listener(account, vcard, photo_hash)``.
        self.listeners: list[Callable[[JID, Element, str], Awaitable[None]]] = []

    # -- XEP-0054 ----------------------------------------------------------------------------------------
    @iq_handler("get", VCARD, "vCard", to=Target.SELF)
    async def get_own(self, event: StanzaEvent) -> Element:
        vcard = await self._load(event.to)
        if vcard is None:
            # §3.1: "a stanza error (which SHOULD be <item-not-found/>) or an empty <vCard/>"
            raise StanzaError("item-not-found", "you have no vCard")
        return vcard

    @iq_handler("get", VCARD, "vCard", to=Target.ACCOUNT)
    async def get_other(self, event: StanzaEvent) -> Element:
        vcard = await self._load(event.to)
        if vcard is None:
            # §3.3 (1.3.0): the same error whether the vCard or the account is missing, and it MUST
            # be service-unavailable (RFC 6121 §8.5.1 for a missing account).
            raise StanzaError("service-unavailable")
        return vcard

    @iq_handler("set", VCARD, "vCard", to=Target.SELF)
    async def set_own(self, event: StanzaEvent) -> None:
        vcard = event.stanza.first()
        assert vcard is not None
        text = serialize(vcard)
        if len(text.encode("utf-8")) > self.options.max_bytes:
            raise StanzaError("not-acceptable", f"the vCard is larger than {self.options.max_bytes} bytes")
        try:
            photo = photo_hash(vcard)
        except ValueError as e:
            raise StanzaError("bad-request", str(e)) from None
        await self._save(event.to, vcard, text, photo)
        for listener in self.listeners:
            try:
                await listener(event.to.bare, vcard, photo)
            except Exception:
                self.log.exception("vCard listener %r failed for %s", listener, event.to)

    async def _save(self, account: JID, vcard: Element, text: str, photo: str) -> None:
        domain, user = key = _key(account)
        if vcard.first() is None:
            await self.store.set(domain, user, None)  # an empty vCard: nothing left to keep
        else:
            await self.store.set(domain, user, {"xml": text, "photo": photo})
        self._photo_changed(key, photo)

    async def load(self, account: JID) -> Element | None:
        """The stored vCard of ``account`` (for bridges), or None."""
        return await self._load(account)

    async def replace(self, account: JID, vcard: Element) -> None:
        """Store ``vcard`` for ``account`` as the server (bridges): presence hashes follow, listeners
        are not called. Raises ValueError for a PHOTO that is not base64."""
        await self._save(account, vcard, serialize(vcard), photo_hash(vcard))

    @iq_handler("set", VCARD, "vCard", to=Target.ACCOUNT)
    def set_other(self, event: StanzaEvent) -> None:
        # §3.2: "a stanza error, which SHOULD be <forbidden/> or <not-allowed/>"
        raise StanzaError("forbidden", "you can only change your own vCard")

    async def _load(self, jid: JID) -> Element | None:
        value = await self.store.get(jid.domain, jid.local or "")
        if not isinstance(value, dict) or not isinstance(value.get("xml"), str):
            return None
        try:
            return parse_element(str(value["xml"]), _MAX_STORED_BYTES)
        except FragmentError as e:
            self.log.warning("stored vCard of %s@%s is unreadable: %s", jid.local, jid.domain, e)
            return None

    # -- XEP-0153 photo hash in presence ----------------------------------------------------------------
    @hook(hooks.SESSION_BOUND, priority=1000)
    def warm(self, event: SessionEvent) -> None:
        """Read the account's photo hash before its first presence (usually) arrives."""
        if self.options.avatar_presence:
            key = _key(event.session.jid)
            if key not in self._photos and key not in self._waiting:
                self._fetch(key, [])

    @hook(hooks.PRE_PRESENCE, priority=1000)
    def stamp_presence(self, event: StanzaEvent) -> StanzaEvent | None:
        stanza = event.stanza
        session = event.origin
        if not self.options.avatar_presence:
            return event
        if stanza is self._replaying or session is None or "to" in stanza.attrs:
            return event
        key = _key(session.jid)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append((session, stanza))  # keeps this account's broadcasts in order
            return None
        if stanza.attrs.get("type") is not None:
            return event
        photo = self._photos.get(key)
        if photo is None:
            self._fetch(key, [(session, stanza)])
            return None
        self._stamp(session, stanza, photo)
        return event

    def _stamp(self, session: Session, stanza: Element, photo: str) -> None:
        if stanza.find("x", VCARD_UPDATE) is not None:
            session.data[self.name] = False  # the client takes part in XEP-0153 itself
            return
        session.data[self.name] = True  # the server speaks for this client
        if photo:
            stanza.add("x", VCARD_UPDATE).add("photo", text=photo)

    def _fetch(self, key: UserKey, parked: list[tuple[Session, Element]]) -> None:
        self._waiting[key] = parked
        self.server.spawn(self._fetch_photo(key), f"vcard-photo-{key[1]}@{key[0]}")

    async def _fetch_photo(self, key: UserKey) -> None:
        """Read the hash, then send the presences that waited for it, in order."""
        try:
            photo = ""
            try:
                value = await self.store.get(*key)
                if isinstance(value, dict) and isinstance(value.get("photo"), str):
                    photo = str(value["photo"])
            except Exception:
                self.log.exception("cannot read the vCard photo hash of %s@%s", key[1], key[0])
            self._photos.setdefault(key, photo)  # a vCard set meanwhile knows better
            queue = self._waiting.get(key, [])
            while queue:
                session, stanza = queue.pop(0)
                if self.server.route_table.session(session.jid) is not session:
                    continue  # that session ended meanwhile
                if stanza.attrs.get("type") is None:
                    self._stamp(session, stanza, self._photos.get(key, photo))
                await self._replay(session, stanza)
        finally:
            self._waiting.pop(key, None)
            if not self.server.route_table.is_online(*key):
                self._photos.pop(key, None)

    async def _replay(self, session: Session, stanza: Element) -> None:
        """Route ``stanza`` as if ``session`` sent it now, past this module's filter."""
        self._replaying = stanza
        try:
            pending = self.server.router.process(session, stanza)
        finally:
            self._replaying = None
        if pending is not None:
            try:
                await pending
            except Exception:
                self.log.exception("re-sent presence of %s failed", session.jid_str)

    def _photo_changed(self, key: UserKey, photo: str) -> None:
        old = self._photos.get(key)
        if not self.server.route_table.is_online(*key):
            return
        self._photos[key] = photo
        if not self.options.avatar_presence or old is None or old == photo:
            return
        for session in self.server.route_table.resources(*key):
            last = session.presence
            if session.data.get(self.name) is not True or not session.available or last is None:
                continue
            again = last.copy()
            for x in list(again.elements("x", VCARD_UPDATE)):
                again.remove(x)
            again.attrs.pop("to", None)
            # An empty <photo/> says the image was removed (XEP-0153 §4.1 rule 3).
            again.add("x", VCARD_UPDATE).add("photo", text=photo)
            self.server.spawn(self._replay(session, again), f"vcard-presence-{session.id}")

    @hook(hooks.SESSION_CLOSED)
    def forget_session(self, event: SessionEvent) -> None:
        key = _key(event.session.jid)
        if not self.server.route_table.is_online(*key) and key not in self._waiting:
            self._photos.pop(key, None)

    @hook(hooks.USER_DELETED)
    def forget_user(self, event: UserEvent) -> None:
        self._photos.pop((event.domain, event.username), None)
