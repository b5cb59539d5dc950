"""Stream management (XEP-0198): acks, resumption after a dropped connection, nothing lost.

The work is done in :mod:`roost.core.sm` (it needs the session and its connections); this module
is its switch and its options (the ``[sm]`` section): while it is loaded, every c2s stream of its
domain (TCP, direct TLS, WebSocket, BOSH) offers ``<sm xmlns='urn:xmpp:sm:3'/>`` after
authentication, and a session that ends has its unacknowledged stanzas re-routed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks, sm
from roost.core.hooks import SessionEvent, StanzaEvent
from roost.core.modules import Module, Xep, hook
from roost.core.session import ClientSession
from roost.jid import JID, JIDError
from roost.modules.carbons import is_eligible
from roost.modules.message import bare_targets
from roost.modules.offline import OfflineStorage
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.stream.sm import feature
from roost.xml.element import Element


class SmOptions(ModuleOptions):
    """Options of [sm]."""

    resume_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="How long a session whose connection dropped is kept for resumption (XEP-0198 §5): "
        "it stays online for its contacts and rooms, and stanzas to it are queued. 0 offers no "
        "resumption (acks only). A client may ask for less with <enable max/>.",
        examples=[600],
    )
    ack_every: int = Field(
        5,
        ge=0,
        le=100_000,
        description="Ask the client for an ack (<r/>) after this many unacknowledged stanzas (0: never "
        "by count).",
        examples=[10],
    )
    ack_after_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Ask for an ack when a stanza has waited this long without one being asked "
        "(0: never by time).",
        examples=[60.0],
    )
    max_unacked: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="A session with more stanzas unacknowledged (a client that does not ack, or one "
        "away too long) is ended, and those stanzas re-routed.",
        examples=[5000],
    )
    location: str = Field(
        "",
        description="Where clients should reconnect to resume (<enabled location/>, 'host:port', IPv6 "
        "in brackets); empty: the same place.",
        examples=["xmpp2.example.org:5222"],
    )


class StreamManagement(Module):
    """Offers XEP-0198 on this domain's c2s streams and configures :class:`roost.core.sm.SmService`."""

    name = "sm"
    xeps = (Xep(198, "1.6.3", note="acks both ways, resumption, unacknowledged stanzas re-routed"),)
    Options = SmOptions
    options: SmOptions

    async def start(self) -> None:
        opts = self.options
        config = sm.SmConfig(
            resume_seconds=opts.resume_seconds,
            ack_every=opts.ack_every,
            ack_after_seconds=opts.ack_after_seconds,
            max_unacked=opts.max_unacked,
            location=opts.location,
        )
        self.service = sm.SmService(self.server, self.host.domain, config)
        self.service.delivered_elsewhere = self.delivered_elsewhere
        self.service.redeliver = self.redeliver
        sm.register(self.host, self.service)

    async def stop(self) -> None:
        sm.unregister(self.host)

    def stream_features(self) -> Sequence[Element]:
        return (feature(),)

    def delivered_elsewhere(self, session: ClientSession, stanza: Element, sent_at: float) -> bool:
        """A message the account's other resources got as a carbon copy (XEP-0280 §7) when it was
        written to this one: re-routing it as if to the bare JID would give them it twice."""
        if stanza.name != "message" or not is_eligible(stanza, inbound=True):
            return False
        jid = session.jid
        for other in self.server.sessions.resources(jid.domain, jid.local or ""):
            if other is not session and other.data.get("carbons") and other.bound_at <= sent_at:
                return True
        return False

    def redeliver(self, session: ClientSession, stanza: Element) -> Awaitable[None] | None:
        """An unacknowledged message of an ended session, as if sent to the bare JID while that
        resource was offline (RFC 6121 §8.5.2), but not a new message: it keeps the stanza-id it was
        archived under (no second archive entry, no second id), and Carbons are not sent again.
        """
        jid = session.jid
        type_ = stanza.attrs.get("type", "normal")
        frm = _jid(stanza.attrs.get("from")) or jid.bare
        targets = bare_targets(self.server.sessions.resources(jid.domain, jid.local or ""), type_)
        router = self.server.router
        if targets:
            for target in targets:
                # 'to' stays the ended session's address: the deliver filters treat it as a copy,
                # not as a new message to that resource (no stanza-id, archive entry or carbons).
                copy = stanza.shallow_copy()
                router.to_session(target, StanzaEvent(copy, None, jid, frm))
            return None
        if type_ not in ("chat", "normal"):
            return None  # headlines are dropped (§8.5.2.2.4)
        offline = self.host.modules.loaded.get("offline")
        if not isinstance(offline, OfflineStorage):
            router.send(error_reply(stanza, StanzaError("service-unavailable", "the recipient went away")))
            return None
        return self._store(offline, StanzaEvent(stanza, None, jid.bare, frm))

    async def _store(self, offline: OfflineStorage, event: StanzaEvent) -> None:
        try:
            await offline.store(event)
        except StanzaError as e:
            # Not storable (storage full, <no-store/>, …): the sender learns it was not delivered.
            self.server.router.send(error_reply(event.stanza, e))

    @hook(hooks.SESSION_CLOSED, priority=-100)
    def ended(self, event: SessionEvent) -> None:
        """After the modules have announced the session gone: re-route what it never acknowledged."""
        self.service.ended(event.session)


def _jid(text: str | None) -> JID | None:
    if not text:
        return None
    try:
        return JID.parse(text)
    except JIDError:
        return None
