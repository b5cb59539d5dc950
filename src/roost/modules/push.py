"""Push notifications (XEP-0357): wake a sleeping phone through its app server, only when it matters.

A client enables push for an app server JID and node (§5); the registration is the account's,
kept in the ``push`` map store with the client's publish-options. A notification (a pubsub publish
from the account's bare JID to the app server, §7) is sent when a message would reach nobody awake:

- the account has no session at all ("gone"): a 1:1 chat/normal message that carries content;
- a session is detached (XEP-0198, waiting to be resumed): a 1:1 message delivered into it, or a
  groupchat message that mentions the user's nick in that room (learnt from the room's
  self-presence, XEP-0045 §7.2.3) — or any groupchat message with a body, in a room the user
  marked for it: XEP-0492 notification settings in the room's XEP-0402 bookmark (``always``
  for a phone; ``never`` silences even mentions). The bookmark is what clients already sync, so
  a user marks a room once, in any client, for every device.

The summary form (§7: ``urn:xmpp:push:summary``) carries the message count since the user was last
online and the last sender; the body only if ``include_body`` is on and the client asked for it
(the ``include-body`` field of its enable form, a Roost convention: it is not passed on).

An app server that keeps answering with errors (or not at all) loses the registration after
``max_failures`` attempts in a row (§8: "the user's server MAY ... disable"); a success resets it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import Any, Final

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import Delivery, SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.core.session import Session, SessionState
from roost.jid import JID, JIDError
from roost.modules.message import is_archivable
from roost.modules.pubsub.pep import Pep
from roost.stanza.errors import StanzaError
from roost.util.bounded import BoundedDict
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DATA_FORMS

log = logging.getLogger("roost.push")

PUSH: Final = "urn:xmpp:push:0"
SUMMARY: Final = "urn:xmpp:push:summary"
PUBSUB: Final = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS: Final = "http://jabber.org/protocol/pubsub#publish-options"
MUC_USER: Final = "http://jabber.org/protocol/muc#user"
#: The enable-form field a client sets to ask for message bodies (never sent to the app server).
INCLUDE_BODY: Final = "include-body"
STORE: Final = "push"
BOOKMARKS2: Final = "urn:xmpp:bookmarks:1"  # XEP-0402
NOTIFY: Final = "urn:xmpp:notification-settings:1"  # XEP-0492
#: XEP-0492 §3: what push wakes is a phone; settings for other identities do not apply to it.
PUSH_IDENTITY: Final = ("client", "phone")


class PushOptions(ModuleOptions):
    """Options of [push]."""

    include_body: bool = Field(
        default=False,
        description="Put the message body in notifications when the client asks (include-body in its "
        "enable form). Off: app servers (and the push services behind them) never see message text.",
        examples=[False],
    )
    max_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed notifications in a row (error or no answer) after which a registration is "
        "removed.",
        examples=[3],
    )
    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="How long an app server has to answer a notification before it counts as failed.",
        examples=[10.0],
    )
    max_registrations: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="App server registrations one account may have (one per app server and node).",
        examples=[10],
    )
    muc_mentions: bool = Field(
        default=True,
        description="Notify a detached session of room messages that mention the user's nick.",
        examples=[True],
    )
    marked_rooms: bool = Field(
        default=True,
        description="Follow the XEP-0492 notification settings of the user's room bookmarks "
        "(XEP-0402): notify of every message in rooms set to 'always' (for a phone), of none in "
        "rooms set to 'never'; other rooms notify of mentions (muc_mentions).",
        examples=[True],
    )


def _key(jid: str, node: str) -> str:
    return f"{jid}\n{node}"


def _form_fields(form: Element) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for f in form.elements("field", DATA_FORMS):
        var = f.attrs.get("var")
        if var:
            fields[var] = [v.text for v in f.elements("value", DATA_FORMS)]
    return fields


def summary(count: int, sender: str, body: str | None) -> Element:
    """§7: the summary form of a notification."""
    x = Element("x", DATA_FORMS, {"type": "submit"})
    for var, value in (
        ("FORM_TYPE", SUMMARY),
        ("message-count", str(count)),
        ("last-message-sender", sender),
        *((("last-message-body", body),) if body is not None else ()),
    ):
        field = x.add("field", attrs={"var": var})
        field.add("value", text=value)
    return x


def notification(
    frm: str, app: str, node: str, iq_id: str, form: Element, options: dict[str, Any]
) -> Element:
    """The pubsub publish to the app server (§7), with the client's publish-options."""
    iq = Element("iq", CLIENT, {"type": "set", "from": frm, "to": app, "id": iq_id})
    pubsub = iq.add("pubsub", PUBSUB)
    publish = pubsub.add("publish", attrs={"node": node})
    item = publish.add("item")
    item.add("notification", PUSH).append(form)
    if options:
        x = pubsub.add("publish-options").add("x", DATA_FORMS, {"type": "submit"})
        field = x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
        field.add("value", text=PUBLISH_OPTIONS)
        for var, values in options.items():
            f = x.add("field", attrs={"var": var})
            for v in values if isinstance(values, list) else [values]:
                f.add("value", text=str(v))
    return iq


def room_setting(conference: Element | None, identity: tuple[str, str] = PUSH_IDENTITY) -> str | None:
    """The XEP-0492 setting ("always", "on-mention", "never") of a XEP-0402 ``<conference/>`` for
    ``identity``, or None if it has none. §4: the most specific element wins — category and type,
    then category alone, then the fallback without attributes."""
    if conference is None:
        return None
    extensions = conference.find("extensions", BOOKMARKS2)
    notify = extensions.find("notify", NOTIFY) if extensions is not None else None
    if notify is None:
        return None
    category, type_ = identity
    best: tuple[int, str] | None = None
    for el in notify.elements(ns=NOTIFY):
        if el.name not in ("always", "on-mention", "never"):
            continue
        cat, typ = el.attrs.get("identity-category"), el.attrs.get("identity-type")
        if cat is None and typ is None:
            rank = 1
        elif cat == category and typ is None:
            rank = 2
        elif cat == category and typ == type_:
            rank = 3
        else:
            continue  # another identity's setting (or a bad one: a type without a category)
        if best is None or rank > best[0]:
            best = (rank, el.name)
    return best[1] if best is not None else None


def mentions(body: str, nick: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(nick)}(?!\w)", body, re.IGNORECASE) is not None


class Push(Module):
    """XEP-0357 on the user's server."""

    name = "push"
    xeps = (
        Xep(
            357,
            "0.4.1",
            status="partial",
            note="summary form; for accounts with no session or a detached (XEP-0198) one, 1:1 messages, "
            "room mentions and rooms marked in bookmarks (XEP-0492); failing app servers disabled",
        ),
        Xep(492, "0.2.0", status="partial", note="read by push: a room bookmark's setting for a phone"),
    )
    account_features = (PUSH,)
    Options = PushOptions
    options: PushOptions

    async def start(self) -> None:
        self.store = self.server.storage.map(STORE)
        #: Messages notified per account since it was last online.
        self._counts: BoundedDict[str, int] = BoundedDict(100_000)
        #: Notifications already sent for one message (a bare message reaches every detached session).
        self._sent: BoundedDict[tuple[str, int], None] = BoundedDict(10_000)
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- enable / disable (§5, §6) -----------------------------------------------------------------------
    @iq_handler("set", PUSH, "enable", to=Target.SELF)
    async def enable(self, event: StanzaEvent) -> None:
        el = event.stanza.first()
        assert el is not None
        app, node = self._target(el, need_node=True)
        options: dict[str, Any] = {}
        include_body = False
        for form in el.elements("x", DATA_FORMS):
            fields = _form_fields(form)
            if fields.pop("FORM_TYPE", [PUBLISH_OPTIONS]) != [PUBLISH_OPTIONS]:
                raise StanzaError("bad-request", "the enable form must be pubsub#publish-options")
            include_body = fields.pop(INCLUDE_BODY, ["0"])[:1] in (["1"], ["true"])
            options.update(fields)
        domain, user = event.frm.domain, event.frm.local or ""
        existing = await self.store.items(domain, user)
        if _key(app, node) not in existing and len(existing) >= self.options.max_registrations:
            raise StanzaError("resource-constraint", "too many push registrations")
        await self.store.set(
            domain,
            user,
            _key(app, node),
            {"jid": app, "node": node, "options": options, "include_body": include_body, "failures": 0},
        )
        log.info("push enabled for %s at %s node %s", event.frm.bare_str, app, node)

    @iq_handler("set", PUSH, "disable", to=Target.SELF)
    async def disable(self, event: StanzaEvent) -> None:
        el = event.stanza.first()
        assert el is not None
        app, node = self._target(el, need_node=False)
        domain, user = event.frm.domain, event.frm.local or ""
        for key, value in (await self.store.items(domain, user)).items():
            if (
                isinstance(value, dict)
                and value.get("jid") == app
                and (not node or value.get("node") == node)
            ):
                await self.store.set(domain, user, key, None)
        log.info("push disabled for %s at %s%s", event.frm.bare_str, app, f" node {node}" if node else "")

    @staticmethod
    def _target(el: Element, *, need_node: bool) -> tuple[str, str]:
        try:
            app = str(JID.parse(el.attrs.get("jid", "")))
        except JIDError:
            raise StanzaError("bad-request", "a valid app server 'jid' is required") from None
        node = el.attrs.get("node", "")
        if need_node and not node:
            raise StanzaError("bad-request", "a 'node' is required")  # §5
        return app, node

    @hook(hooks.USER_DELETED)
    async def deleted(self, event: UserEvent) -> None:
        self._counts.pop(f"{event.username}@{event.domain}", None)

    # -- when to notify ------------------------------------------------------------------------------------
    @hook(hooks.MESSAGE_BARE, priority=50)
    def gone(self, event: StanzaEvent) -> bool:
        """After delivery found no session (priority 100), before offline storage (0): the account is
        offline; notify, and let the message be stored."""
        to = event.to
        if self.server.sessions.resources(to.domain, to.local or ""):
            return False
        if self._worth_it(event.stanza):
            self._notify(to.domain, to.local or "", event, None)
        return False

    @hook(hooks.DELIVER_MESSAGE, priority=-100)
    def detached(self, value: Delivery) -> Delivery:
        session, event = value
        if session.state is SessionState.DETACHED:
            stanza = event.stanza
            type_ = stanza.attrs.get("type", "normal")
            if type_ == "groupchat":
                if stanza.find("body", stanza.ns) is None or self._own(session, stanza):
                    return value
                if self.options.marked_rooms and self._pep() is not None:
                    self._spawn(self._room_message(session, event))
                elif self.options.muc_mentions and self._mentioned(session, stanza):
                    self._notify(session.jid.domain, session.jid.local or "", event, session)
            elif self._worth_it(stanza):
                self._notify(session.jid.domain, session.jid.local or "", event, session)
        return value

    @hook(hooks.DELIVER_PRESENCE, priority=-100)
    def learn_nick(self, value: Delivery) -> Delivery:
        """XEP-0045 §7.2.3: the room's presence with status 110 is the user's own: its nick."""
        session, event = value
        stanza = event.stanza
        x = stanza.find("x", MUC_USER)
        if x is not None and any(s.attrs.get("code") == "110" for s in x.elements("status", MUC_USER)):
            room, _, nick = stanza.attrs.get("from", "").partition("/")
            nicks: dict[str, str] = session.data.setdefault("push_nicks", {})
            if stanza.attrs.get("type") == "unavailable":
                nicks.pop(room, None)
            elif nick:
                nicks[room] = nick
        return value

    def _pep(self) -> Pep | None:
        pep = self.host.modules.loaded.get("pep")
        return pep if isinstance(pep, Pep) else None

    async def _room_message(self, session: Session, event: StanzaEvent) -> None:
        """A room message for a detached session: what the user's bookmark of the room says."""
        pep = self._pep()
        jid = session.jid
        room = event.stanza.attrs.get("from", "").partition("/")[0]
        setting = None
        if pep is not None:
            service = await pep.runtime.service(jid.domain, jid.local or "")
            node = service.nodes.get(BOOKMARKS2)
            item = node.items.get(room) if node is not None else None
            setting = room_setting(item.payload if item is not None else None)
        if setting == "never":
            return
        if setting == "always" or (self.options.muc_mentions and self._mentioned(session, event.stanza)):
            self._notify(jid.domain, jid.local or "", event, session)

    @staticmethod
    def _own(session: Session, stanza: Element) -> bool:
        """The room's reflection of the user's own message (XEP-0045 §7.4): nobody to wake."""
        room, _, sender = stanza.attrs.get("from", "").partition("/")
        return sender != "" and session.data.get("push_nicks", {}).get(room) == sender

    @staticmethod
    def _mentioned(session: Session, stanza: Element) -> bool:
        room, _, sender = stanza.attrs.get("from", "").partition("/")
        nick = session.data.get("push_nicks", {}).get(room)
        if not nick or sender == nick:
            return False
        return mentions(stanza.find_text("body", stanza.ns) or "", nick)

    @staticmethod
    def _worth_it(stanza: Element) -> bool:
        """1:1 messages with content (a body, or an encrypted or other archivable payload)."""
        return stanza.attrs.get("type", "normal") in ("chat", "normal") and is_archivable(stanza)

    @hook(hooks.SESSION_BOUND)
    def online(self, event: SessionEvent) -> None:
        self._counts.pop(event.session.jid.bare_str, None)

    # -- sending (§7, §8) -----------------------------------------------------------------------------------
    def _notify(self, domain: str, user: str, event: StanzaEvent, session: Session | None) -> None:
        mark = (f"{user}@{domain}", id(event.stanza))
        if mark in self._sent:
            return
        self._sent[mark] = None
        self._spawn(self._send_all(domain, user, event))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_all(self, domain: str, user: str, event: StanzaEvent) -> None:
        registrations = await self.store.items(domain, user)
        if not registrations:
            return
        bare = f"{user}@{domain}"
        count = self._counts.get(bare, 0) + 1
        self._counts[bare] = count
        body = event.stanza.find_text("body", event.stanza.ns)
        for key, value in registrations.items():
            if isinstance(value, dict):
                await self._send_one(domain, user, key, dict(value), count, str(event.frm), body)

    async def _send_one(
        self, domain: str, user: str, key: str, reg: dict[str, Any], count: int, sender: str, body: str | None
    ) -> None:
        bare = f"{user}@{domain}"
        include = self.options.include_body and bool(reg.get("include_body")) and body is not None
        form = summary(count, sender, body if include else None)
        options = reg.get("options") or {}
        tracker = self.server.iq_tracker
        iq_id = tracker.new_id()
        app = str(reg.get("jid", ""))
        iq = notification(bare, app, str(reg.get("node", "")), iq_id, form, options)
        future = tracker.expect(iq_id, app)
        self.server.router.send(iq)
        try:
            response = await asyncio.wait_for(future, self.options.timeout_seconds)
            ok = response.attrs.get("type") == "result"
        except TimeoutError:
            ok = False
        failures = 0 if ok else int(reg.get("failures", 0)) + 1
        if failures == int(reg.get("failures", 0)):
            return  # nothing changed (a success after a success)
        # Another notification may have changed it meanwhile: read it again.
        current = await self.store.get(domain, user, key)
        if not isinstance(current, dict):
            return
        current = dict(current)
        if failures >= self.options.max_failures:
            log.info("push to %s for %s disabled after %d failures", app, bare, failures)
            await self.store.set(domain, user, key, None)
            return
        current["failures"] = failures
        await self.store.set(domain, user, key, current)
