"""In-process micro-benchmark of MUC fan-out: one groupchat message to N occupants, no sockets.

Runs a real server core (every built-in module, memory storage, no listeners) with N bound sessions
whose transport only counts bytes, joins them all to one room, and pushes groupchat messages from one
of them through ``Router.process``. Prints delivered stanzas per second of server CPU, i.e. what the
router, the room engine, the deliver filters and serialization cost per recipient.

    .venv/bin/python -m bench.muc_fanout --occupants 100 --messages 2000
    .venv/bin/python -m bench.muc_fanout --no-filters     # without blocking's deliver filter
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.inprocess import bind
from roost.app import create_server
from roost.config.loader import load_config
from roost.xml.element import Element
from roost.xml.ns import CLIENT


async def run(occupants: int, messages: int, filters: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roost.toml"
        extra = "" if filters else "\n[blocking]\nenabled = false\n"
        path.write_text(
            f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp}/data"\n'
            '[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n'
            f'[storage]\nurl = "memory://"\n[muc]\nmessage_rate = 0\nmax_occupants = {occupants + 10}\n'
            f"default_max_occupants = {occupants + 10}\nlock_new_rooms = false\n{extra}"
        )
        server = create_server(load_config(path))
        await server.start()
        try:
            sessions = []
            for i in range(occupants):
                s = await bind(server, f"user{i}", "bench")
                s.available = True
                sessions.append(s)
            room = "bench@conference.localhost"
            for i, s in enumerate(sessions):
                p = Element("presence", CLIENT, {"to": f"{room}/user{i}"})
                p.add("x", "http://jabber.org/protocol/muc").add("history", attrs={"maxstanzas": "0"})
                pending = server.router.process(s, p)
                if pending is not None:
                    await pending
            await asyncio.sleep(0.1)
            sender = sessions[0]
            before = sum(s.stanzas for s in sessions)
            body = "x" * 100
            cpu = time.process_time()
            for n in range(messages):
                m = Element("message", CLIENT, {"to": room, "type": "groupchat", "id": f"m{n}"})
                m.add("body", text=body)
                pending = server.router.process(sender, m)
                if pending is not None:
                    await pending
            cpu = time.process_time() - cpu
            delivered = sum(s.stanzas for s in sessions) - before
            print(
                f"occupants={occupants} messages={messages} filters={'on' if filters else 'off'}: "
                f"{delivered} stanzas delivered in {cpu:.3f} s CPU = {delivered / cpu:,.0f} stanzas/s, "
                f"{cpu / delivered * 1e6:.2f} µs per delivered stanza"
            )
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--occupants", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--no-filters", action="store_true", help="disable the blocking module")
    args = parser.parse_args()
    asyncio.run(run(args.occupants, args.messages, not args.no_filters))


if __name__ == "__main__":
    main()
