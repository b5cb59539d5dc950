"""Roster questions other modules ask (who may see a user's presence, who is a contact).

They go through the loaded ``roster`` module's public API (``get_item``), typed here as a Protocol so
that modules such as last activity or privacy do not import the roster module itself. Without a
roster module nobody is anybody's contact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from roost.jid import JID

if TYPE_CHECKING:
    from roost.core.host import Host


class RosterItemView(Protocol):
    """What these checks read of a roster item."""

    @property
    def subscription(self) -> str: ...  # "none" | "to" | "from" | "both"


class RosterView(Protocol):
    """The part of the roster module's API these checks use."""

    async def get_item(self, user: JID, contact: JID) -> RosterItemView | None: ...

    def cached(self, user: JID) -> object | None: ...

    def peek_item(self, user: JID, contact: JID) -> RosterItemView | None: ...


def roster_of(host: Host) -> RosterView | None:
    """The host's roster module, if one is loaded."""
    module = host.modules.loaded.get("roster")
    if module is None or not all(hasattr(module, m) for m in ("get_item", "cached", "peek_item")):
        return None
    return cast(RosterView, module)


async def roster_item(host: Host, user: JID, contact: JID) -> RosterItemView | None:
    """``contact``'s item in ``user``'s roster (both bare JIDs), or None."""
    roster = roster_of(host)
    if roster is None:
        return None
    return await roster.get_item(user.bare, contact.bare)


def peek_roster_item(host: Host, user: JID, contact: JID) -> tuple[bool, RosterItemView | None]:
    """Synchronous lookup for filters: (known, item). ``known`` is False when the roster is not in
    memory (it is while the user is online); then ask :func:`roster_item`."""
    roster = roster_of(host)
    if roster is None:
        return True, None
    if roster.cached(user.bare) is None:
        return False, None
    return True, roster.peek_item(user.bare, contact.bare)


def sees_presence(item: RosterItemView | None) -> bool:
    """Whether the contact of ``item`` is subscribed to the user's presence ('from' or 'both')."""
    return item is not None and item.subscription in ("from", "both")


async def may_see_presence(host: Host, user: JID, requester: JID) -> bool:
    """Whether ``requester`` may learn ``user``'s availability: the user themself, or a contact with a
    subscription to the user's presence (RFC 6121 §3: 'from' or 'both' in the user's roster)."""
    if requester.bare == user.bare:
        return True
    return sees_presence(await roster_item(host, user, requester))
