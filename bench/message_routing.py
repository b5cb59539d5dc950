"""In-process micro-benchmark of 1:1 message routing: server CPU per routed chat message, no sockets.

Runs a real server core (every built-in module, memory storage, no listeners) with pairs of bound,
available sessions whose transport only counts bytes, and pushes chat messages through
``Router.process`` — to the bare JID (the ``message/bare`` chain: blocking, stanza-id, carbons,
delivery) or to the full JID (the direct path with its ``deliver/message`` filters). Prints µs of
server CPU per message: what routing, the filters, the stanza-id and serialization cost together.

    .venv/bin/python -m bench.message_routing --messages 20000
    .venv/bin/python -m bench.message_routing --full            # to the full JID
    .venv/bin/python -m bench.message_routing --carbons         # 2 more recipient resources, Carbons on
    .venv/bin/python -m bench.message_routing --sqlite           # SQLite storage: archive writes included
    .venv/bin/python -m bench.message_routing --sqlite --no-mam  # the same without message archiving
    .venv/bin/python -m bench.message_routing --sm               # XEP-0198 on both, acks every 5 stanzas

The measured CPU includes the storage thread and the archive writes still queued at the end (they
are flushed inside the measured interval), so archiving on vs off compares the whole cost.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.inprocess import CountingSession, bind
from roost.app import create_server
from roost.config.loader import load_config
from roost.core import sm
from roost.core.server import Server
from roost.stream.sm import AckPolicy, StreamManagement
from roost.xml.element import Element
from roost.xml.ns import CLIENT


async def _bind(server: Server, user: str, resource: str) -> CountingSession:
    session = await bind(server, user, resource)
    session.available = True
    return session


def _manage(server: Server, session: CountingSession) -> sm.SmSession:
    """Stream management on a session as <enable/> would set it up (ack requests every 5 stanzas)."""
    service = sm.service_for(server, "localhost")
    assert service is not None
    managed = sm.SmSession(service, session, StreamManagement(policy=AckPolicy(5, 30.0)))
    session.sm = managed
    return managed


async def run(
    messages: int,
    full: bool,
    carbons: bool,
    sqlite: bool = False,
    mam: bool = True,
    search: bool = True,
    with_sm: bool = False,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roost.toml"
        url = f"sqlite:///{tmp}/data/roost.db" if sqlite else "memory://"
        path.write_text(
            f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp}/data"\n'
            '[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n'
            f'[storage]\nurl = "{url}"\n'
            f"[mam]\nenabled = {str(mam).lower()}\nsearch = {str(search).lower()}\n"
        )
        server = create_server(load_config(path))
        await server.start()
        try:
            for user in ("romeo", "juliet"):
                await server.storage.accounts.create("localhost", user, [])
            sender = await _bind(server, "romeo", "r")
            recipient = await _bind(server, "juliet", "j")
            others = []
            if carbons:
                for resource in ("c1", "c2"):
                    other = await _bind(server, "juliet", resource)
                    other.priority = -1
                    enable = Element("iq", CLIENT, {"type": "set", "id": "c"})
                    enable.add("enable", "urn:xmpp:carbons:2")
                    pending = server.router.process(other, enable)
                    if pending is not None:
                        await pending
                    others.append(other)
            sending = _manage(server, sender) if with_sm else None
            receiving = _manage(server, recipient) if with_sm else None
            await asyncio.sleep(0.1)  # let the SESSION_BOUND loads settle
            to = "juliet@localhost/j" if full else "juliet@localhost"
            body = "x" * 100
            before = recipient.stanzas
            cpu = time.process_time()
            loop_cpu = time.thread_time()  # this thread runs the event loop: the rest is storage
            for n in range(messages):
                m = Element("message", CLIENT, {"to": to, "type": "chat", "id": f"m{n}"})
                m.add("body", text=body)
                m.add("active", "http://jabber.org/protocol/chatstates")
                if sending is not None:
                    sending.state.handled()  # the driver counts each stanza from the client
                pending = server.router.process(sender, m)
                if pending is not None:
                    await pending
                if receiving is not None and receiving.state.awaiting_ack:
                    # The client answers the <r/> that followed: <a h/> for all it has.
                    receiving.acknowledged(receiving.state.outbound)
            await server.storage.flush()
            loop_cpu = time.thread_time() - loop_cpu
            cpu = time.process_time() - cpu
            delivered = recipient.stanzas - before
            if receiving is not None:
                delivered = receiving.state.outbound  # stanzas, not the <r/>s
            copies = sum(o.stanzas for o in others)
            print(
                f"{messages} messages to {'full' if full else 'bare'} JID{' with SM' if with_sm else ''}: "
                f"{delivered} delivered, "
                f"{copies} carbons, {cpu * 1e6 / messages:.1f} µs server CPU per message "
                f"({loop_cpu * 1e6 / messages:.1f} in the event loop) "
                f"({'sqlite' if sqlite else 'memory'} storage, archiving {'on' if mam else 'off'}"
                f"{'' if search or not mam else ', no search index'})"
            )
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--full", action="store_true", help="address the recipient's full JID")
    parser.add_argument("--carbons", action="store_true", help="two more recipient resources with Carbons")
    parser.add_argument(
        "--sqlite", action="store_true", help="SQLite storage in a temp dir (default: memory)"
    )
    parser.add_argument("--no-mam", action="store_true", help="message archiving off")
    parser.add_argument("--no-search", action="store_true", help="archiving without the full-text index")
    parser.add_argument("--sm", action="store_true", help="stream management on both sessions, acks every 5")
    args = parser.parse_args()
    asyncio.run(
        run(args.messages, args.full, args.carbons, args.sqlite, not args.no_mam, not args.no_search, args.sm)
    )


if __name__ == "__main__":
    main()
