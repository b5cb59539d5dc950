"""Server administration for the domain's admins (XEP-0133 through ad-hoc commands), locks and MOTD.

* Offers :data:`roost.admin.commands.COMMANDS` to the JIDs in ``[server] admins`` through the adhoc
  module (XEP-0050); nobody else sees or may run them.
* Enforces account locks (:mod:`roost.admin.locks`): a locked account's session ends right after
  binding with ``<not-authorized/>`` and the reason as the error text.
* Sends the message of the day (XEP-0133 §4.23) to each session with its initial presence.
"""

from __future__ import annotations

from roost.admin import locks
from roost.admin.commands import COMMANDS, Command, motd, motd_message
from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent
from roost.core.modules import Module, Xep, hook
from roost.jid import JID
from roost.stanza.errors import StreamError


class AdminCommands(Module):
    """XEP-0133 service administration, account locks and the message of the day."""

    name = "admin"
    xeps = (
        Xep(
            133,
            "1.3.1",
            status="partial",
            note="announce, MOTD, end session, disable/re-enable user, online users",
        ),
    )
    Options = ModuleOptions

    def adhoc_commands(self, requester: JID) -> list[Command]:
        """Admins of this server get the whole set; anybody else gets none of it."""
        if requester.bare_str in self.server.config.server.admins:
            return list(COMMANDS)
        return []

    @hook(hooks.SESSION_BOUND, priority=100)
    async def check_session(self, event: SessionEvent) -> None:
        session = event.session
        jid = session.jid
        reason = await locks.lock_reason(self.server.storage, jid.domain, jid.local or "")
        if reason is not None:
            self.log.info("%s is locked; session ended: %s", jid, reason)
            session.close(StreamError("not-authorized", f"account locked: {reason}"), reason="locked")

    @hook(hooks.PRESENCE_INITIAL)
    async def send_motd(self, event: SessionEvent) -> None:
        """Once per session, when it first becomes available (like offline messages, XEP-0160)."""
        session = event.session
        if session.data.get("admin.motd"):
            return
        session.data["admin.motd"] = True
        text = await motd(self.server, session.jid.domain)
        if text is not None:
            self.server.router.send(motd_message(session.jid.domain, session.jid_str, text))
