"""A small XEP-0357 app server for tests: a slixmpp external component (XEP-0114) that records the
notifications it gets and can be told to answer them with errors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

PUBSUB = "http://jabber.org/protocol/pubsub"
PUSH = "urn:xmpp:push:0"
FORMS = "jabber:x:data"


@dataclass
class Notification:
    frm: str
    node: str
    summary: dict[str, str]
    options: dict[str, str]


def _fields(x: Any) -> dict[str, str]:
    out = {}
    for field in x.findall(f"{{{FORMS}}}field"):
        value = field.find(f"{{{FORMS}}}value")
        out[field.get("var")] = value.text if value is not None else ""
    return out


class AppServer(slixmpp.ComponentXMPP):  # type: ignore[misc]
    def __init__(self, jid: str, secret: str, port: int) -> None:
        super().__init__(jid, secret, "127.0.0.1", port)
        self.started = asyncio.Event()
        self.notifications: asyncio.Queue[Notification] = asyncio.Queue()
        #: Answer with this error condition instead of a result (None: succeed).
        self.fail: str | None = None
        self.add_event_handler("session_start", lambda *_: self.started.set())
        self.register_handler(
            Callback(
                "push-publish",
                MatchXPath(f"{{jabber:component:accept}}iq/{{{PUBSUB}}}pubsub"),
                self._publish,
            )
        )

    def _publish(self, iq: Any) -> None:
        pubsub = iq.xml.find(f"{{{PUBSUB}}}pubsub")
        publish = pubsub.find(f"{{{PUBSUB}}}publish")
        x = publish.find(f"{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{FORMS}}}x")
        options = pubsub.find(f"{{{PUBSUB}}}publish-options/{{{FORMS}}}x")
        self.notifications.put_nowait(
            Notification(
                str(iq["from"]),
                publish.get("node"),
                _fields(x) if x is not None else {},
                _fields(options) if options is not None else {},
            )
        )
        reply = iq.reply(clear=True)
        if self.fail:
            reply["type"] = "error"
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = self.fail
        reply.send()

    async def next(self, timeout: float = 10) -> Notification:
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def nothing(self, seconds: float = 0.5) -> bool:
        try:
            await asyncio.wait_for(self.notifications.get(), seconds)
        except TimeoutError:
            return True
        return False


async def start_app_server(jid: str, secret: str, port: int) -> AppServer:
    app = AppServer(jid, secret, port)
    app.connect()
    await asyncio.wait_for(app.started.wait(), 10)
    return app
