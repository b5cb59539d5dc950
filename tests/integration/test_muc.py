"""Multi-User Chat with real clients: joining, talking, moderation, persistence (XEP-0045 and friends)."""

from __future__ import annotations

from pathlib import Path

from tests.support.muc import MUC_CONFIG, SERVICE, codes, condition, from_, item, login, room_jid
from tests.support.server import start_server


async def test_smoke(tmp_path: Path) -> None:
    running = await start_server(tmp_path, MUC_CONFIG)
    try:
        romeo = await login(running, "romeo@localhost/balcony")
        juliet = await login(running, "juliet@localhost/garden")
        joined = await romeo.create("coven", "Romeo")
        print(joined)
        joined = await juliet.join("coven", "Juliet")
        print(joined)
        romeo.say("coven", "hello")
        got = await juliet.expect(from_(f"{room_jid('coven')}/Romeo", "message"))
        print(got)
        assert got.find_text("body") == "hello"
    finally:
        await running.stop()
