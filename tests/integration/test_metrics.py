"""Prometheus metrics: scraped over HTTP from the /metrics handler, parsed with prometheus-client."""

from __future__ import annotations

import gc
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from roost.admin.metrics import allowed, metrics_handler, metrics_of, parse_allow
from tests.support.clients import connect
from tests.support.raw import RawClient
from tests.support.server import running_server
from tests.support.web import http_url, web_server


async def serve(handler: object) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/metrics", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_scraped_and_parsed(tmp_path: Path) -> None:
    async with web_server(tmp_path, "[metrics]\nenabled = true\n") as running:
        await running.add_user("alice@localhost", "wonderland")
        await running.add_user("bob@localhost", "builder")
        alice = await connect("alice@localhost/a", "wonderland", running.c2s_port)
        bad = await RawClient.connect(running.c2s_port)
        await bad.open()
        await bad.starttls()
        assert (await bad.auth_scram("bob", "wrong")).name == "failure"
        bob = await connect("bob@localhost/b", "builder", running.c2s_port)
        alice.send_message(mto="bob@localhost", mbody="hi")
        received = await bob.received.get()
        assert received["body"] == "hi"
        try:
            # From the server's own HTTP listener ([[listen]] kind = "http").
            url = http_url(running, "/metrics", tls=False)
            gc.collect()  # one full collection at least, measured by roost.util.gcstats
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"].startswith("text/plain")
                text = await reply.text()
        finally:
            alice.disconnect()
            bob.disconnect()
        found = samples(text)
        assert found[("roost_sessions", (("state", "available"), ("transport", "tcp")))] == 2
        assert found[("roost_users_online", ())] == 2
        assert found[("roost_stanzas_in_total", (("kind", "message"),))] >= 1
        assert found[("roost_stanzas_out_total", (("kind", "message"),))] >= 1
        assert found[("roost_logins_total", (("mechanism", "SCRAM-SHA-1"), ("result", "failure")))] == 1
        assert sum(v for (name, labels), v in found.items() if name == "roost_logins_total"
                   and ("result", "success") in labels) == 2  # fmt: skip
        assert found[("process_resident_memory_bytes", ())] > 1_000_000
        assert ("roost_event_loop_lag_seconds", ()) in found
        # Routing and storage latency: histograms with every bucket, and the database queue.
        assert found[("roost_routing_seconds_count", ())] >= 3  # presence, message, … from the clients
        assert (
            found[("roost_routing_seconds_bucket", (("le", "+Inf"),))]
            == found[("roost_routing_seconds_count", ())]
        )
        assert found[("roost_storage_seconds_count", ())] >= 1  # logins read credentials
        assert ("roost_storage_wait_seconds_sum", ()) in found
        assert ("roost_storage_queue", ()) in found
        assert ("roost_storage_write_queue", ()) in found
        # Garbage-collection pauses per generation (issue 15), and what the collector found.
        full = (("generation", "2"),)
        assert found[("roost_gc_pause_seconds_count", full)] >= 1
        assert (
            found[("roost_gc_pause_seconds_bucket", (("generation", "2"), ("le", "+Inf")))]
            == found[("roost_gc_pause_seconds_count", full)]
        )
        assert found[("roost_gc_pause_max_seconds", full)] > 0
        assert ("roost_gc_collected_objects_total", full) in found
        assert found[("roost_gc_frozen_objects_total", ())] > 0
        assert ("roost_malloc_trims_total", ()) in found


async def test_metrics_refuse_other_clients_and_are_off_by_default(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        assert metrics_of(running.server) is None
        runner, port = await serve(metrics_handler(running.server))
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as reply:
                assert reply.status == 404
        finally:
            await runner.cleanup()
    async with running_server(
        tmp_path / "b", "[metrics]\nenabled = true\nallow = ['10.0.0.0/8']\n"
    ) as running:
        runner, port = await serve(metrics_handler(running.server))
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as reply:
                assert reply.status == 403
        finally:
            await runner.cleanup()


def test_allow_list() -> None:
    allow = parse_allow(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert allowed("10.1.2.3", allow) and allowed("::1", allow) and allowed("::ffff:127.0.0.1", allow)
    assert not allowed("192.168.1.1", allow) and not allowed(None, allow) and not allowed("nonsense", allow)
