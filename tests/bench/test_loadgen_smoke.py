"""Smoke test of the load generator: the login scenario end to end against a private Prosody.

Checks that the generator can log in over STARTTLS + SCRAM, bind, get its presence echoed and close,
and that the driver writes a complete result file. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("prosody") is None, reason="needs Prosody (scripts/install-peers)"),
    pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)"),
]


def test_login_scenario_against_prosody_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "login.json"
    pin = [] if len(os.sched_getaffinity(0)) >= 2 else ["--no-pin"]
    cmd = [sys.executable, "-m", "bench", "login", "--servers", "prosody", "--n", "5", "--repeat", "1"]
    cmd += ["--retry-busy", "0"]  # no waiting for an idle machine: figures are not checked here
    cmd += ["--out", str(out), *pin]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sequential: logins/s" in proc.stdout

    doc = json.loads(out.read_text())
    assert doc["scenario"] == "login"
    assert doc["failures"] == {}
    metrics = doc["servers"]["prosody"]["metrics"]
    for phase in ("sequential", "concurrent"):
        assert metrics[f"{phase}.errors"] == 0
        assert metrics[f"{phase}.logins_per_s"] > 0
        assert metrics[f"{phase}.cpu_ms_per_login"] >= 0
        assert doc["servers"]["prosody"]["details"][phase]["ok"] == 5
