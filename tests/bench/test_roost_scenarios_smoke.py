"""Smoke test of the presence, mucfanout and websocket scenarios end to end against Roost itself (tiny sizes).

Checks that rosters provisioned through Roost's storage API arrive (the presence scenario fails when a
roster get returns the wrong number of items), that every account settles, and that the room scenario
creates, fills and measures its rooms. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)"),
    pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "roost").exists(), reason="needs roost in .venv"),
]


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    pin = [] if len(os.sched_getaffinity(0)) >= 2 else ["--no-pin"]
    cmd = [sys.executable, "-m", "bench", *args, "--servers", "roost", "--retry-busy", "0"]
    cmd += ["--out", str(out), *pin]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["failures"] == {}
    roost: dict[str, Any] = doc["servers"]["roost"]
    return roost


def test_presence_scenario_settles_with_provisioned_rosters(tmp_path: Path) -> None:
    roost = run_bench(tmp_path, "presence", "--accounts", "12", "--contacts", "4", "--repeat", "1")
    metrics = roost["metrics"]
    for phase in ("logins", "burst"):
        assert metrics[f"{phase}.missing"] == 0
        assert metrics[f"{phase}.presences"] >= 12 * 4 + 12
        run = roost["details"][phase]["runs"][0]
        assert run["roster_items"] == [4, 4]
        assert run["contact_unavailable"] == 0


def test_mucfanout_scenario_delivers_every_message_and_fills_the_rooms(tmp_path: Path) -> None:
    roost = run_bench(
        tmp_path, "mucfanout", "--occupants", "6", "--senders", "2", "--rates", "20", "--duration", "1",
        "--warmup", "0.5", "--join-occupants", "8", "--join-concurrency", "1,4",
    )  # fmt: skip
    metrics = roost["metrics"]
    assert metrics["rate20.lost"] == 0
    assert metrics["bounced"] == 0
    assert metrics["saturation.delivered_per_s"] > 0
    for c in (1, 4):
        assert roost["details"][f"join{c}"]["joins"] == 8


def test_websocket_scenario_logs_in_and_chats_over_wss(tmp_path: Path) -> None:
    roost = run_bench(
        tmp_path, "websocket", "--n", "6", "--repeat", "1", "--concurrency", "3", "--accounts", "4",
        "--duration", "0.5", "--warmup", "0.2",
    )  # fmt: skip
    metrics = roost["metrics"]
    assert metrics["login.errors"] == 0 and metrics["login.logins_per_s"] > 0
    assert metrics["oneone.msgs_per_s"] > 0 and metrics["oneone.bounced"] == 0
