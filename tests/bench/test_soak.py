"""The soak scenario: its delivery ledger and receive sink (no server), and a tiny run against each server.

The runs check that every message is accounted for (exactly once, duplicated or lost by recipient state)
and that the per-interval samples are filled. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.scenarios.soak import AFTER_CLEAN, ONLINE, Ledger, Member
from bench.xmppload.sm import SmTracker

ROOT = Path(__file__).resolve().parents[2]


def message(seq: int, recipient: int, mtype: str = "chat") -> bytes:
    return (
        f"<message from='user9@localhost/soak8' to='user{recipient + 1}@localhost' type='{mtype}' "
        f"id='s{seq}'><body>S{seq};R{recipient};T123;xxxx</body></message>"
    ).encode()


async def test_sink_counts_each_message_across_chunks_and_tells_errors_and_strays_apart() -> None:
    ledger = Ledger(started_ns=0, interval_ns=10**9)
    for seq in range(4):
        ledger.add(recipient=1, klass=ONLINE if seq != 2 else AFTER_CLEAN, now=seq)
    ledger.add(recipient=0, klass=ONLINE, now=4)  # seq 4 goes to someone else
    member = Member(1, ledger, sm=None)
    member.closing = asyncio.get_running_loop().create_future()
    stream = (
        b"<presence from='user2@localhost/soak1'/>"
        + message(0, 1)
        + message(1, 1)
        + message(1, 1)  # a duplicate
        + message(2, 1).replace(b"<message ", b"<message xmlns='jabber:client' ")
        + message(3, 1, "error")  # bounced back: not a delivery
        + message(4, 1)  # not ours
        + b"</stream:stream>"
    )
    for i in range(0, len(stream), 5):  # split anywhere
        member.on_data(stream[i : i + 5])
    assert list(ledger.count) == [1, 2, 1, 0, 0]
    assert (ledger.received, ledger.bounced, ledger.stray) == (4, 1, 1)
    assert member.closing.done()
    # only first deliveries to recipients that were online are timed
    assert sum(len(v) for v in ledger.latencies.values()) == 2


async def test_sm_tracker_counts_top_level_stanzas_and_answers_requests_with_h() -> None:
    written: list[bytes] = []
    t = SmTracker(keep_sent=3)
    t.attach(written.append, resumed=False)
    outcome = t.request_enable(asyncio.get_running_loop())
    stream = (
        b"<presence from='a@localhost/x' to='a@localhost/x'/>"  # before <enabled/>: not counted
        b"<enabled xmlns='urn:xmpp:sm:3' id='sm-1' resume='true' max='300'/>"
        + message(0, 1)
        # a carbon: one stanza however many messages nest in it
        + b"<message from='a@localhost'><received xmlns='urn:xmpp:carbons:2'>"
        b"<forwarded xmlns='urn:xmpp:forward:0'><message from='b@localhost'><body>x</body></message>"
        b"</forwarded></received></message>"
        b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
        b"<r xmlns='urn:xmpp:sm:3'/>"
        b"<presence from='c@localhost'><show>away</show></presence>"
    )
    for i in range(0, len(stream), 7):
        t.feed(stream[i : i + 7])
    assert outcome.done() and outcome.result()[0] == "enabled"
    assert t.resume_id == "sm-1"
    assert written[1:] == [b"<a xmlns='urn:xmpp:sm:3' h='3'/>"]
    assert t.handled == 4
    # outbound: the server says it handled 1 of our 4: the last 3 (all kept) go again
    for n in range(4):
        t.on_sent(b"m%d" % n)
    assert t.resend_after(1) == [b"m1", b"m2", b"m3"]
    assert t.sent == 1
    # a resumed connection keeps the counts; a clean logout acknowledges, then counts nothing more
    t.attach(written.append, resumed=True)
    t.feed(message(1, 1))
    t.final_ack()
    assert written[-1] == b"<a xmlns='urn:xmpp:sm:3' h='5'/>"
    t.feed(message(2, 1) + b"<r xmlns='urn:xmpp:sm:3'/>")
    assert t.handled == 5 and written[-1] == b"<a xmlns='urn:xmpp:sm:3' h='5'/>"
    # h wraps at 2^32 (XEP-0198 §4)
    t.attach(written.append, resumed=True)
    t.handled = (1 << 32) - 1
    t.feed(message(3, 1) + b"<r xmlns='urn:xmpp:sm:3'/>")
    assert written[-1] == b"<a xmlns='urn:xmpp:sm:3' h='0'/>"
    # a fresh login starts over
    t.attach(written.append, resumed=False)
    assert (t.handled, t.sent, t.enabled, t.resume_id) == (0, 0, False, None)


def run_soak(tmp_path: Path, server: str, sm: bool = False) -> dict[str, Any]:
    out = tmp_path / "soak.json"
    pin = [] if len(os.sched_getaffinity(0)) >= 2 else ["--no-pin"]
    cmd = [sys.executable, "-m", "bench", "soak", "--servers", server, "--retry-busy", "0"]
    cmd += ["--sessions", "12", "--churn", "0.2", "--rate", "30", "--minutes", "0.15", "--offline", "0.5"]
    cmd += ["--warmup", "2", "--interval", "3", "--drain", "2", "--out", str(out), *pin]
    cmd += ["--sm"] if sm else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["failures"] == {}
    result: dict[str, Any] = doc["servers"][server]
    return result


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
@pytest.mark.parametrize(
    "server",
    [
        pytest.param(
            "roost",
            marks=pytest.mark.skipif(
                not (ROOT / ".venv" / "bin" / "roost").exists(), reason="needs roost in .venv"
            ),
        ),
        pytest.param(
            "prosody",
            marks=pytest.mark.skipif(
                shutil.which("prosody") is None, reason="needs Prosody (scripts/install-peers)"
            ),
        ),
    ],
)
@pytest.mark.parametrize("sm", [False, True], ids=["plain", "sm"])
def test_soak_accounts_for_every_message_under_churn(tmp_path: Path, server: str, sm: bool) -> None:
    result = run_soak(tmp_path, server, sm)
    m = result["metrics"]
    lost = sum(v for k, v in m.items() if k.startswith("lost."))
    assert m["sent"] > 100
    assert m["exactly_once"] + m["duplicated"] + lost == m["sent"]
    assert m["duplicated"] == 0
    assert m["lost.online"] == 0
    assert m["lost.after_clean_logout"] == 0
    assert m["logins"] > 0 and m["login_errors"] == 0
    assert m["server_closed"] == 0
    intervals = result["details"]["intervals"]
    assert len(intervals) >= 2
    assert all(row["rss_mb"] > 0 and row["fds"] > 0 for row in intervals)
    assert result["details"]["drops"] > 0  # some leavers dropped TCP
    if sm:  # with stream management nothing may be lost, whatever the recipient was doing
        assert lost == 0, result["details"]["lost"]
        assert m["sm_resumed"] > 0 and m["sm_resume_failed"] == 0
        assert result["details"]["sm_parse_errors"] == []
