"""In-process micro-benchmark of PEP fan-out: one account publishes, N online contacts get the event.

Runs a real server core (every built-in module, memory storage, no listeners). The owner and N
contacts are bound sessions whose transport only counts bytes; every contact is subscribed to the
owner's presence (through the real subscription handshake) and advertises ``tune+notify`` in its
caps (the hash is made known up front, as after the first client with those caps). The owner then
publishes items through ``Router.process``; prints notifications delivered per second of server CPU.

    .venv/bin/python -m bench.pep_fanout --contacts 500 --publishes 200
    .venv/bin/python -m bench.pep_fanout --service --contacts 1000 --publishes 200

``--service``: the same on the PubSub service domain instead: one node, N subscribers (their bare
JIDs, so each notification goes through ``message/bare`` delivery to the one resource).
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
from roost.core.server import Server
from roost.modules.pubsub.caps import CAPS
from roost.modules.pubsub.config import PUBSUB
from roost.modules.pubsub.pep import find_runtime
from roost.xml.element import Element
from roost.xml.ns import CLIENT

TUNE = "http://jabber.org/protocol/tune"


async def _process(server: Server, session: CountingSession, stanza: Element) -> None:
    pending = server.router.process(session, stanza)
    if pending is not None:
        await pending


async def run(contacts: int, publishes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roost.toml"
        path.write_text(
            f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp}/data"\n'
            '[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n'
            f'[storage]\nurl = "memory://"\n[roster]\nmax_items = {contacts + 10}\n'
        )
        server = create_server(load_config(path))
        await server.start()
        try:
            runtime = find_runtime(server)
            assert runtime is not None
            runtime.caps.put("sha-1", "bench-ver", {TUNE + "+notify"})
            for name in ["owner"] + [f"user{i}" for i in range(contacts)]:
                await server.storage.accounts.create("localhost", name, [])
            owner = await bind(server, "owner", "bench")
            sessions = [await bind(server, f"user{i}", "bench") for i in range(contacts)]
            await _process(server, owner, Element("presence", CLIENT))
            for i, s in enumerate(sessions):
                await _process(
                    server, s, Element("presence", CLIENT, {"to": "owner@localhost", "type": "subscribe"})
                )
                await _process(
                    server,
                    owner,
                    Element("presence", CLIENT, {"to": f"user{i}@localhost", "type": "subscribed"}),
                )
                p = Element("presence", CLIENT)
                p.add("c", CAPS, {"hash": "sha-1", "node": "bench", "ver": "bench-ver"})
                await _process(server, s, p)
            await asyncio.sleep(0.2)
            before = sum(s.stanzas for s in sessions)
            cpu = time.process_time()
            wall = time.perf_counter()
            for n in range(publishes):
                iq = Element("iq", CLIENT, {"type": "set", "id": f"p{n}"})
                item = (
                    iq.add("pubsub", PUBSUB)
                    .add("publish", attrs={"node": TUNE})
                    .add("item", attrs={"id": "current"})
                )
                item.add("tune", TUNE).add("title", text=f"song {n}")
                await _process(server, owner, iq)
            await asyncio.sleep(0)
            cpu = time.process_time() - cpu
            wall = time.perf_counter() - wall
            delivered = sum(s.stanzas for s in sessions) - before
            print(
                f"contacts={contacts} publishes={publishes}: {delivered} notifications in {cpu:.3f} s CPU "
                f"({wall:.3f} s wall) = {delivered / cpu:,.0f} notifications/s, "
                f"{publishes / cpu:,.1f} publishes/s, {cpu / max(delivered, 1) * 1e6:.2f} µs per notification"
            )
        finally:
            await server.stop()


async def run_service(subscribers: int, publishes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roost.toml"
        path.write_text(
            f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp}/data"\n'
            '[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n'
            f'[storage]\nurl = "memory://"\n[pubsub]\nmax_subscriptions = {subscribers + 10}\n'
        )
        server = create_server(load_config(path))
        await server.start()
        try:
            for name in ["sensor"] + [f"user{i}" for i in range(subscribers)]:
                await server.storage.accounts.create("localhost", name, [])
            sensor = await bind(server, "sensor", "bench")
            sessions = [await bind(server, f"user{i}", "bench") for i in range(subscribers)]
            for s in [sensor, *sessions]:
                await _process(server, s, Element("presence", CLIENT))
            create = Element("iq", CLIENT, {"type": "set", "id": "c", "to": "pubsub.localhost"})
            create.add("pubsub", PUBSUB).add("create", attrs={"node": "readings"})
            await _process(server, sensor, create)
            for i, s in enumerate(sessions):
                sub = Element("iq", CLIENT, {"type": "set", "id": f"s{i}", "to": "pubsub.localhost"})
                sub.add("pubsub", PUBSUB).add(
                    "subscribe", attrs={"node": "readings", "jid": f"user{i}@localhost"}
                )
                await _process(server, s, sub)
            await asyncio.sleep(0.2)
            before = sum(s.stanzas for s in sessions)
            cpu = time.process_time()
            for n in range(publishes):
                iq = Element("iq", CLIENT, {"type": "set", "id": f"p{n}", "to": "pubsub.localhost"})
                item = iq.add("pubsub", PUBSUB).add("publish", attrs={"node": "readings"}).add("item")
                item.add("reading", "urn:example:sensor", text=str(n))
                await _process(server, sensor, iq)
            await asyncio.sleep(0)
            cpu = time.process_time() - cpu
            delivered = sum(s.stanzas for s in sessions) - before
            print(
                f"service subscribers={subscribers} publishes={publishes}: {delivered} notifications in "
                f"{cpu:.3f} s CPU = {delivered / cpu:,.0f} items delivered/s, "
                f"{cpu / max(delivered, 1) * 1e6:.2f} µs per notification"
            )
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--publishes", type=int, default=200)
    parser.add_argument(
        "--service", action="store_true", help="a PubSub service node with --contacts subscribers"
    )
    args = parser.parse_args()
    asyncio.run(
        run_service(args.contacts, args.publishes) if args.service else run(args.contacts, args.publishes)
    )


if __name__ == "__main__":
    main()
