"""Module tests without sockets: a real server core, recording sessions, readable scenarios.

A :class:`Harness` runs a real :class:`~roost.core.server.Server` (every configured module, memory
storage by default, no listeners). Its sessions are :class:`ScriptedSession` objects: what a client
would send goes through ``router.process`` exactly as from a socket, and whatever the server writes
to the session is parsed back into elements and queued in ``received``::

    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")                  # romeo@localhost/romeo, account created
        juliet = await h.login("juliet/balcony")
        await romeo.submit("<presence type='subscribe' to='juliet@localhost'/>")
        juliet.expect("<presence type='subscribe' from='romeo@localhost'/>")

or, the same as a transcript (``h.play``), one step per header line::

    romeo sends:
        <presence type='subscribe' to='juliet@localhost'/>
    juliet/balcony receives:
        <presence type='subscribe' from='romeo@localhost' to='juliet@localhost'/>
    romeo receives:
        <iq type='set'><query xmlns='jabber:iq:roster'>
            <item jid='juliet@localhost' subscription='none' ask='subscribe'/>
        </query></iq>
    romeo receives nothing

Steps: ``NAME sends:`` (each stanza below is processed, then the server settles), ``NAME receives:``
(the next stanzas of that session match the ones below, in order), ``NAME receives in any order:``,
``NAME receives nothing``. ``NAME`` is ``user`` (the first session logged in for that user) or
``user/resource``; log sessions in before playing. Lines starting with ``#`` are comments.

Matching (:func:`matches`): same name and namespace; every attribute written must be there with that
value (``'*'``: any value, ``'~'``: must be absent); attributes not written are not checked; each
child element written must match a child of the received stanza, in order (others may come between);
text written must equal the received text (both stripped). Write ``id`` only if it is predictable.

After every step the harness *settles*: it runs the event loop until no server task is pending, so
"receives nothing" means nothing more will come.

API in short — :class:`Harness`: ``running(tmp_path, extra_toml, storage=...)`` (context manager; pass
``storage="sqlite:///..."`` to test persistence), ``login(name)``, ``add_user(name)``, ``session(name)``,
``play(transcript)``, ``settle()``, ``restart()`` (same config and storage, every session ends), ``server``.
:class:`ScriptedSession`: ``submit(xml)``, ``iq(payload, type_, to)`` → the answer, ``expect(xml)``,
``expect_any_order(xml)``, ``expect_nothing()``, ``next()``, ``clear()``, ``disconnect(reason)``,
``received``. Helpers: :func:`parse`, :func:`matches`, :func:`condition`. The ``h`` fixture of
``tests/modules/conftest.py`` is a running harness.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.modules import Module
from roost.core.server import Server
from roost.core.session import ClientSession, new_session_id
from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.stream.sasl.scram import derive_credentials
from roost.xml.element import Element
from roost.xml.ns import CLIENT
from roost.xml.parser import StreamParser
from roost.xml.serializer import serialize

DOMAIN = "localhost"
M = TypeVar("M", bound=Module)


def parse_stanzas(xml: str) -> list[Element]:
    """The top-level elements of ``xml`` (default namespace jabber:client); whitespace between is ignored."""
    parser = StreamParser(max_stanza_bytes=10_000_000, root=(CLIENT, "wrap"))
    events = parser.feed(f"<wrap xmlns='{CLIENT}'>{xml}</wrap>".encode())
    return [e for e in events if isinstance(e, Element)]


def parse(xml: str) -> Element:
    """Exactly one element."""
    found = parse_stanzas(xml)
    if len(found) != 1:
        raise ValueError(f"expected one element in {xml!r}, found {len(found)}")
    return found[0]


def matches(expected: Element, actual: Element) -> bool:
    """Whether ``actual`` has everything ``expected`` spells out (see the module docstring)."""
    if expected.name != actual.name or expected.ns != actual.ns:
        return False
    for key, value in expected.attrs.items():
        if value == "~":
            if key in actual.attrs:
                return False
        elif value == "*":
            if key not in actual.attrs:
                return False
        elif actual.attrs.get(key) != value:
            return False
    want_text = expected.text.strip()
    if want_text and want_text != actual.text.strip():
        return False
    children = list(actual.elements())
    i = 0
    for want in expected.elements():
        while i < len(children) and not matches(want, children[i]):
            i += 1
        if i == len(children):
            return False
        i += 1
    return True


def show(el: Element) -> str:
    return serialize(el, CLIENT)


class ScriptedConnection:
    """The connection of a :class:`ScriptedSession`: what the server writes is parsed back into
    elements; closing it ends the session the way a transport's close does."""

    kind = "test"
    peer = "127.0.0.1"
    stanza_ns: str | None = CLIENT
    secure = True

    def __init__(self, session: ScriptedSession) -> None:
        self.session = session
        self._parser = StreamParser(max_stanza_bytes=10_000_000, root=(CLIENT, "wrap"))
        self._parser.feed(f"<wrap xmlns='{CLIENT}'>".encode())

    def send_stanza(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if isinstance(event, Element):
                self.session.received.append(event)

    def send_raw(self, data: bytes) -> None:
        self.send_stanza(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ScriptedSession(ClientSession):
    """A bound session driven by the test: ``submit`` what the client sends, read ``received``."""

    __slots__ = ("harness", "received")

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness.server, new_session_id("test"))
        self.harness = harness
        self.received: deque[Element] = deque()
        self.connection = ScriptedConnection(self)

    @property
    def closed(self) -> bool:
        return not self.bound

    def close(self, error: StreamError | None = None, reason: str = "logout") -> None:
        """End the session as the c2s driver does (``session/closed`` with ``reason``)."""
        self.server.sessions.end(self, reason)

    # -- client side --------------------------------------------------------------------------------
    async def submit(self, xml: str | Element) -> None:
        """Process stanzas as if this session's client had sent them, then settle."""
        stanzas = parse_stanzas(xml) if isinstance(xml, str) else [xml]
        for stanza in stanzas:
            self.receive(stanza)  # the session's ordered queue, as from any transport
        await self.harness.settle()

    async def iq(self, payload: str, type_: str = "get", to: str | None = None, iq_id: str = "q1") -> Element:
        """Send an IQ with ``payload``; return its answer (other stanzas stay queued)."""
        to_attr = f" to='{to}'" if to else ""
        await self.submit(f"<iq type='{type_}' id='{iq_id}'{to_attr}>{payload}</iq>")
        for stanza in list(self.received):
            if (
                stanza.name == "iq"
                and stanza.attrs.get("id") == iq_id
                and stanza.attrs.get("type") in ("result", "error")
            ):
                self.received.remove(stanza)
                return stanza
        raise AssertionError(f"{self.jid_str}: no answer to IQ {iq_id}; received {self.dump()}")

    async def disconnect(self, reason: str = "disconnect") -> None:
        self.close(None, reason)
        await self.harness.settle()

    # -- assertions ---------------------------------------------------------------------------------
    def next(self) -> Element:
        if not self.received:
            raise AssertionError(f"{self.jid_str} received nothing")
        return self.received.popleft()

    def expect(self, xml: str) -> list[Element]:
        """The next received stanzas match those in ``xml``, in order; they are consumed."""
        got = []
        for want in parse_stanzas(xml):
            if not self.received:
                raise AssertionError(f"{self.jid_str} expected {show(want)}\nbut received nothing more")
            actual = self.received[0]
            if not matches(want, actual):
                raise AssertionError(f"{self.jid_str} expected {show(want)}\nbut received {self.dump()}")
            got.append(self.received.popleft())
        return got

    def expect_any_order(self, xml: str) -> list[Element]:
        """The next ``n`` received stanzas match the ``n`` in ``xml``, in some order."""
        wanted = parse_stanzas(xml)
        window = list(self.received)[: len(wanted)]
        if len(window) < len(wanted):
            raise AssertionError(f"{self.jid_str} expected {len(wanted)} stanzas, received {self.dump()}")
        remaining = list(window)
        for want in wanted:
            for actual in remaining:
                if matches(want, actual):
                    remaining.remove(actual)
                    break
            else:
                raise AssertionError(f"{self.jid_str} expected {show(want)}\namong {self.dump()}")
        for _ in wanted:
            self.received.popleft()
        return window

    def expect_nothing(self) -> None:
        if self.received:
            raise AssertionError(f"{self.jid_str} should have received nothing, got {self.dump()}")

    def clear(self) -> None:
        self.received.clear()

    def dump(self) -> str:
        return "\n  ".join([""] + [show(s) for s in self.received]) if self.received else "(nothing)"


class Harness:
    """A started server and the sessions of a test."""

    def __init__(self, server: Server, config_path: Path) -> None:
        self.server = server
        self.config_path = config_path
        self.sessions: dict[str, ScriptedSession] = {}

    @classmethod
    @asynccontextmanager
    async def running(
        cls, tmp_path: Path, extra: str = "", *, storage: str = "memory://"
    ) -> AsyncIterator[Harness]:
        """Start a server for ``localhost`` (plus whatever ``extra`` TOML configures); stop it after."""
        harness = await cls.start(tmp_path, extra, storage=storage)
        try:
            yield harness
        finally:
            await harness.stop()

    @classmethod
    async def start(cls, tmp_path: Path, extra: str = "", *, storage: str = "memory://") -> Harness:
        data_dir = tmp_path / "data"
        path = tmp_path / "roost.toml"
        if not path.exists():
            path.write_text(
                f'[server]\ndomains = ["{DOMAIN}"]\ndata_dir = "{data_dir}"\n\n'
                f'[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n\n[storage]\nurl = "{storage}"\n\n{extra}\n'
            )
        server = create_server(load_config(path))
        await server.start()
        return cls(server, path)

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.close(None, "shutdown")
        await self.settle()
        await self.server.stop()

    async def restart(self) -> None:
        """Stop the server (every session ends) and start a new one on the same configuration."""
        await self.stop()
        self.sessions.clear()
        self.server = create_server(load_config(self.config_path))
        await self.server.start()

    async def settle(self) -> None:
        """Run the loop until the server has nothing left to do (no pending task)."""
        idle_rounds = 0
        while idle_rounds < 3:
            await asyncio.sleep(0)
            tasks: set[asyncio.Task[Any]] = {t for t in self.server._tasks if not t.done()}
            if tasks:
                idle_rounds = 0
                await asyncio.wait(tasks, timeout=10)
            else:
                idle_rounds += 1

    def module(self, cls: type[M]) -> M:
        """The instance of module class ``cls`` loaded for the domain."""
        module = self.server.hosts[DOMAIN].modules.loaded[cls.name]
        assert isinstance(module, cls)
        return module

    # -- accounts and sessions ----------------------------------------------------------------------
    @staticmethod
    def full_jid(name: str) -> JID:
        """``romeo`` → romeo@localhost/romeo; ``romeo/phone``; ``romeo@example.org/x`` as is."""
        user, _, resource = name.partition("/")
        if "@" not in user:
            user = f"{user}@{DOMAIN}"
        return JID.parse(f"{user}/{resource or user.split('@')[0]}")

    async def add_user(self, name: str, password: str = "s3cret") -> None:
        """Create the account (``romeo`` or ``romeo@domain``) if it does not exist."""
        jid = JID.parse(name if "@" in name else f"{name}@{DOMAIN}")
        accounts = self.server.storage.accounts
        if not await accounts.exists(jid.domain, jid.local or ""):
            credentials = [derive_credentials(password, "SHA-256", 4096)]
            await accounts.create(jid.domain, jid.local or "", credentials)

    async def login(self, name: str) -> ScriptedSession:
        """Create the account if needed and bind a session (``session/bound`` fired); no presence yet."""
        jid = self.full_jid(name)
        await self.add_user(str(jid.bare))
        session = ScriptedSession(self)
        manager = self.server.sessions
        manager.bind(session, jid.domain, jid.local or "", jid.resource)
        ready = manager.announce(session)
        if ready is not None:
            session.hold(ready)
        short = (jid.local or "") if jid.domain == DOMAIN else str(jid.bare)
        first = self.sessions.get(short)
        if first is None or first.closed:
            self.sessions[short] = session  # "romeo": the first of romeo's sessions still open
        self.sessions[f"{jid.local}/{jid.resource}" if jid.domain == DOMAIN else str(jid)] = session
        await self.settle()
        return session

    def session(self, name: str) -> ScriptedSession:
        try:
            return self.sessions[name]
        except KeyError:
            raise KeyError(f"no session {name!r}; logged in: {sorted(self.sessions)}") from None

    # -- transcripts --------------------------------------------------------------------------------
    async def play(self, transcript: str) -> None:
        """Run a transcript (see the module docstring)."""
        for who, action, xml in _steps(transcript):
            session = self.session(who)
            if action == "sends":
                await session.submit(xml)
            elif action == "receives":
                await self.settle()
                session.expect(xml)
            elif action == "receives in any order":
                await self.settle()
                session.expect_any_order(xml)
            else:
                await self.settle()
                session.expect_nothing()


_HEADER = re.compile(r"^(\S+) (sends|receives in any order|receives nothing|receives):?\s*$")


def _steps(transcript: str) -> list[tuple[str, str, str]]:
    steps: list[tuple[str, str, list[str]]] = []
    for raw in transcript.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            steps.append((header.group(1), header.group(2), []))
        elif not steps:
            raise ValueError(f"transcript must start with a step, not {line!r}")
        else:
            steps[-1][2].append(line)
    return [(who, action, " ".join(lines)) for who, action, lines in steps]
