"""Refuse messages and subscription requests from strangers (anti-spam), per account.

A *stranger* to an account is a sender whose bare JID is not in the account's roster (whatever the
subscription state), other than the account itself and the server's own domains. An account that
turned ``reject-strangers`` on gets nothing from strangers:

* a message is answered with <service-unavailable/>, exactly as if the account did not exist
  (RFC 6121 §8.5.1), so a spammer learns nothing; headlines are dropped silently;
* a subscription request is dropped silently, as for an account that does not exist (RFC 6121 §8.5.1).

Blocking specific JIDs is XEP-0191's job (the blocking module); this is the coarse "contacts only"
switch many users want. The server-wide default is ``[privacy] reject_strangers`` (off); each user
reads and sets their own with an IQ to their own bare JID::

    <iq type='set' id='p1'><settings xmlns='urn:roost:privacy:0' reject-strangers='true'/></iq>

Checks stay off the hot path: the decision is synchronous when the recipient's setting is known and
off (the common case), or on with the roster in memory. Otherwise the handler returns an awaitable
that reads storage; the router waits for it before the rest of the chain runs, and the sender's later
stanzas wait behind it, so the order of delivery is kept (RFC 6120 §10.1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, hook, iq_handler
from roost.modules.contacts import peek_roster_item, roster_item
from roost.stanza.errors import StanzaError
from roost.xml.element import Element

#: The settings payload (Roost's own protocol; see docs/privacy.md).
NS_PRIVACY = "urn:roost:privacy:0"

UserKey = tuple[str, str]

#: Settings of this many accounts stay cached (online or recently messaged ones).
_CACHE_SIZE = 10_000


class PrivacyOptions(ModuleOptions):
    """Refusing messages and subscription requests from strangers (docs/privacy.md)."""

    reject_strangers: bool = Field(
        False,
        description="Default for accounts that have not chosen: refuse messages and subscription "
        "requests from senders not in the account's roster. Each user can change their own setting.",
        examples=[True],
    )


def parse_bool(text: str | None) -> bool | None:
    """An XML Schema boolean ('true', 'false', '1', '0'), None if it is not one."""
    if text is None:
        return None
    return {"true": True, "1": True, "false": False, "0": False}.get(text.strip())


class Privacy(Module):
    """Per-account "contacts only" switch for messages and subscription requests."""

    name = "privacy"
    xeps = ()
    features = (NS_PRIVACY,)
    Options = PrivacyOptions
    options: PrivacyOptions

    async def start(self) -> None:
        self.store = self.server.storage.keyvalue("privacy")
        self._settings: OrderedDict[UserKey, bool] = OrderedDict()
        #: Stanzas waiting for a check, per recipient, in arrival order.
        #: Stanzas that passed and are being delivered through the chain again (by identity).

    # -- the user's setting -----------------------------------------------------------------------------
    @iq_handler("get", NS_PRIVACY, "settings", to=Target.SELF)
    async def get_settings(self, event: StanzaEvent) -> Element:
        value = await self._setting(_key(event))
        return Element("settings", NS_PRIVACY, {"reject-strangers": "true" if value else "false"})

    @iq_handler("set", NS_PRIVACY, "settings", to=Target.SELF)
    async def set_settings(self, event: StanzaEvent) -> None:
        payload = event.stanza.first()
        assert payload is not None
        value = parse_bool(payload.get("reject-strangers"))
        if value is None:
            raise StanzaError("bad-request", "reject-strangers must be 'true' or 'false'")
        key = _key(event)
        await self.store.set(key[0], key[1], {"reject_strangers": value})
        self._remember(key, value)

    async def _setting(self, key: UserKey) -> bool:
        cached = self._settings.get(key)
        if cached is not None:
            self._settings.move_to_end(key)
            return cached
        document = await self.store.get(*key)
        value = document.get("reject_strangers") if isinstance(document, dict) else None
        setting = value if isinstance(value, bool) else self.options.reject_strangers
        self._remember(key, setting)
        return setting

    def _remember(self, key: UserKey, value: bool) -> None:
        self._settings[key] = value
        self._settings.move_to_end(key)
        while len(self._settings) > _CACHE_SIZE:
            self._settings.popitem(last=False)

    @hook(hooks.SESSION_BOUND)
    async def warm(self, event: SessionEvent) -> None:
        """Know an online account's setting before its first message arrives."""
        jid = event.session.jid
        try:
            await self._setting((jid.domain, jid.local or ""))
        except Exception:
            self.log.exception("cannot read the privacy setting of %s", jid.bare)

    @hook(hooks.USER_DELETED)
    def forget(self, event: UserEvent) -> None:
        self._settings.pop((event.domain, event.username), None)

    # -- screening ----------------------------------------------------------------------------------------
    @hook(hooks.MESSAGE_BARE, priority=10_000)
    def screen_message(self, event: StanzaEvent) -> bool | Awaitable[bool]:
        return self._screen(event)

    @hook(hooks.PRESENCE_BARE, priority=10_000)
    def screen_presence(self, event: StanzaEvent) -> bool | Awaitable[bool]:
        return self._screen(event)

    def _screen(self, event: StanzaEvent) -> bool | Awaitable[bool]:
        """True: refused (claimed); False: the chain goes on; an awaitable when storage must answer."""
        if self._trusted(event) or not _screened(event.stanza):
            return False
        key = (event.to.domain, event.to.local or "")
        setting = self._settings.get(key)
        if setting is False:
            return False
        if setting is True:
            # Online recipients' rosters are in memory: decide now, without a coroutine.
            known, item = peek_roster_item(self.host, event.to, event.frm)
            if known:
                return False if item is not None else self._refuse(event)
        return self._check(key, event)

    async def _check(self, key: UserKey, event: StanzaEvent) -> bool:
        try:
            allowed = await self._allowed(key, event)
        except Exception:
            self.log.exception("privacy check failed; delivering")
            allowed = True
        return False if allowed else self._refuse(event)

    def _trusted(self, event: StanzaEvent) -> bool:
        """The account itself and the server's own domains are never strangers."""
        frm = event.frm
        if frm.local is None:
            return frm.domain in self.server.hosts
        return frm.local == event.to.local and frm.domain == event.to.domain

    async def _allowed(self, key: UserKey, event: StanzaEvent) -> bool:
        if not await self._setting(key):
            return True
        return await roster_item(self.host, event.to.bare, event.frm.bare) is not None

    def _refuse(self, event: StanzaEvent) -> bool:
        """Refuse from inside the chain: the router answers the error; True claims the stanza.

        RFC 6121 §8.5.1: presence (and §8.5.2.2.4: headlines) from strangers is dropped silently.
        """
        stanza = event.stanza
        if stanza.name == "message" and stanza.attrs.get("type") != "headline":
            raise StanzaError("service-unavailable")
        return True


def _key(event: StanzaEvent) -> UserKey:
    return (event.to.domain, event.to.local or "")


def _screened(stanza: Element) -> bool:
    """Messages (not errors or groupchat) and subscription requests are what strangers are refused."""
    if stanza.name == "message":
        return stanza.attrs.get("type") not in ("error", "groupchat")
    return stanza.name == "presence" and stanza.attrs.get("type") == "subscribe"
