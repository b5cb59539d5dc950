"""XEP-0050 Ad-Hoc Commands on the server domain: forms a client fills in to have the server do something.

Commands come from the other modules of the domain: any loaded module with an ``adhoc_commands(requester)``
method offers the :class:`~roost.admin.commands.Command` objects it returns (the admin module offers
the XEP-0133 set to admins). This module does the protocol: listing them (§2.2, disco#items on the
commands node), the execute → form → submit → completed flow of single-stage commands (§3.4),
cancelling (§3.4.3), sessions that expire, and the errors of §4.4.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pydantic import Field as OptionField

from roost.admin.commands import ADMIN, Command, CommandError, Result, Values, run_command
from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import DiscoItemsEvent, StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.jid import JID
from roost.modules.muc.forms import add_field, new_form, read_form
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS

COMMANDS: Final = "http://jabber.org/protocol/commands"


class CommandSource(Protocol):
    def adhoc_commands(self, requester: JID) -> list[Command]: ...


class AdhocOptions(ModuleOptions):
    """Options of [adhoc]."""

    session_timeout_seconds: float = OptionField(
        600.0, gt=0, le=86400, description="A command session not completed within this time is forgotten."
    )
    max_sessions: int = OptionField(
        1000, ge=1, le=1_000_000, description="Command sessions kept at once (the oldest go first)."
    )


@dataclass(slots=True)
class _Session:
    node: str
    requester: str
    started: float


def _command_error(condition: str, specific: str, text: str) -> StanzaError:
    """§4.4: a stanza error with the commands-specific condition."""
    return StanzaError(condition, text, app=Element(specific, COMMANDS))


class AdhocCommands(Module):
    """The XEP-0050 command host of a domain."""

    name = "adhoc"
    xeps = (Xep(50, "1.3.0", status="partial", note="single-stage commands"),)
    features = (COMMANDS,)
    Options = AdhocOptions
    options: AdhocOptions

    async def start(self) -> None:
        self.sessions: OrderedDict[str, _Session] = OrderedDict()

    def commands_for(self, requester: JID) -> list[Command]:
        found: list[Command] = []
        for module in self.host.modules.loaded.values():
            source: Any = getattr(module, "adhoc_commands", None)
            if callable(source):
                found.extend(source(requester))
        return found

    @hook(hooks.DISCO_ITEMS_HOST)
    def disco_items(self, event: DiscoItemsEvent) -> None:
        """§2.2: the commands the requester may run, as items of the commands node."""
        if event.node == COMMANDS:
            for command in self.commands_for(event.requester):
                event.items.append((self.host.domain, command.node, command.title))

    def node_info(
        self, node: str, requester: JID
    ) -> tuple[list[tuple[str, str, str | None]], set[str]] | None:
        """§2.3: disco#info of a command node (the disco module asks); 403 for a command not offered."""
        for command in self.commands_for(requester):
            if command.node == node:
                return [("automation", "command-node", command.title)], {COMMANDS, DATA_FORMS}
        if node.startswith((ADMIN, "urn:roost:admin")):
            raise StanzaError("forbidden", "only the server's administrators may run this command")
        return None

    @iq_handler("set", COMMANDS, "command", to=Target.HOST)
    async def command(self, event: StanzaEvent) -> Element:
        payload = event.stanza.first()
        assert payload is not None
        node = payload.attrs.get("node", "")
        action = payload.attrs.get("action", "execute")
        if action not in ("execute", "cancel", "complete", "next", "prev"):
            raise _command_error("bad-request", "malformed-action", f"unknown action {action!r}")
        available = {c.node: c for c in self.commands_for(event.frm)}
        command = available.get(node)
        if command is None:
            # §4.4: a command the requester may not run is forbidden; one that does not exist is not found.
            if node.startswith(ADMIN) or node.startswith("urn:roost:admin"):
                raise StanzaError("forbidden", "only the server's administrators may run this command")
            raise StanzaError("item-not-found", "no such command")
        self._expire()
        sessionid = payload.attrs.get("sessionid")
        if sessionid is None:
            if action == "cancel":
                raise _command_error("bad-request", "bad-sessionid", "no session to cancel")
            if command.fields and payload.find("x", DATA_FORMS) is None:
                return self._form(event, command)
            return await self._complete(event, command, "", payload)
        session = self.sessions.get(sessionid)
        if session is None or session.node != node or session.requester != str(event.frm):
            raise _command_error("bad-request", "bad-sessionid", "unknown or expired command session")
        if action == "cancel":
            del self.sessions[sessionid]
            return Element("command", COMMANDS, {"node": node, "sessionid": sessionid, "status": "canceled"})
        if action in ("prev", "next"):
            raise _command_error("bad-request", "bad-action", "this command has a single stage")
        del self.sessions[sessionid]
        return await self._complete(event, command, sessionid, payload)

    def _form(self, event: StanzaEvent, command: Command) -> Element:
        """§3.4: the first stage, a form, and a session to submit it in."""
        sessionid = secrets.token_hex(8)
        self.sessions[sessionid] = _Session(command.node, str(event.frm), time.monotonic())
        while len(self.sessions) > self.options.max_sessions:
            self.sessions.popitem(last=False)
        reply = Element(
            "command", COMMANDS, {"node": command.node, "sessionid": sessionid, "status": "executing"}
        )
        actions = reply.add("actions", attrs={"execute": "complete"})
        actions.add("complete")
        form = new_form("form", ADMIN, title=command.title)
        for f in command.fields:
            add_field(form, f.var, f.type, f.label, required=f.required)
        reply.append(form)
        return reply

    async def _complete(
        self, event: StanzaEvent, command: Command, sessionid: str, payload: Element
    ) -> Element:
        values: Values = {}
        x = payload.find("x", DATA_FORMS)
        if x is not None:
            form = read_form(x)
            if form.type == "cancel":
                attrs = {"node": command.node, "status": "canceled"}
                if sessionid:
                    attrs["sessionid"] = sessionid
                return Element("command", COMMANDS, attrs)
            values = {k: v for k, v in form.values.items() if k != "FORM_TYPE"}
        try:
            result = await run_command(command, self.server, self.host.domain, values, event.frm.bare_str)
        except CommandError as e:
            raise StanzaError("bad-request", str(e)) from None
        return self._completed(command, sessionid or secrets.token_hex(8), result)

    @staticmethod
    def _completed(command: Command, sessionid: str, result: Result) -> Element:
        reply = Element(
            "command", COMMANDS, {"node": command.node, "sessionid": sessionid, "status": "completed"}
        )
        if result.note:
            reply.add("note", attrs={"type": "info"}, text=result.note)
        if result.fields:
            form = new_form("result", ADMIN, title=command.title)
            for f in result.fields:
                add_field(form, f.var, f.type, f.label, values=f.values)
            reply.append(form)
        return reply

    def _expire(self) -> None:
        deadline = time.monotonic() - self.options.session_timeout_seconds
        while self.sessions:
            key, session = next(iter(self.sessions.items()))
            if session.started >= deadline:
                break
            del self.sessions[key]


__all__ = ["COMMANDS", "AdhocCommands", "AdhocOptions", "CommandSource"]
