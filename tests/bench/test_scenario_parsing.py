"""The byte scanners and the contact graph of the presence and mucfanout scenarios (no server needed)."""

from __future__ import annotations

import time

import pytest
from bench.scenarios.mucfanout import FanStats, JoinSink, Occupant, room_jid
from bench.scenarios.oneone import Window
from bench.scenarios.presence import Progress, Watcher, ring


def test_ring_is_regular_mutual_and_without_self_loops() -> None:
    graph = ring(20, 6)
    assert all(len(c) == 6 for c in graph)
    for i, contacts in enumerate(graph):
        assert i not in contacts
        assert all(i in graph[j] for j in contacts)
    assert graph[0] == [1, 2, 3, 17, 18, 19]


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 10), (10, 0)])
def test_ring_refuses_impossible_sizes(n: int, k: int) -> None:
    with pytest.raises(SystemExit):
        ring(n, k)


async def test_watcher_settles_once_every_contact_is_available_even_across_chunks() -> None:
    progress = Progress(sessions=1)
    w = Watcher(0, [1, 2], progress)
    stream = (
        b"<presence from='user1@localhost/r' to='user1@localhost'/>"  # our own echo
        b"<presence from='user2@localhost/a' to='user1@localhost'><c xmlns='x'/></presence>"
        b"<presence from='user2@localhost/a' to='user1@localhost'/>"  # a duplicate
        b'<presence from="user3@localhost/b" type="unavailable"/>'
        b"<message from='user3@localhost/b'><body>hi</body></message>"
        b"<presence from='user3@localhost/b' to='user1@localhost'/>"
    )
    for i in range(0, len(stream), 7):  # tags split anywhere
        assert not progress.done.is_set()
        w.on_data(stream[i : i + 7])
    assert progress.done.is_set() and progress.complete == 1 and w.missing == 0
    assert progress.presences == 5
    assert progress.contact_available == 3
    assert progress.contact_unavailable == 1
    assert progress.other == 0


async def test_watcher_counts_strangers_and_stops_when_inactive() -> None:
    progress = Progress(sessions=2)
    w = Watcher(0, [1], progress)
    w.on_data(b"<presence from='user9@localhost/x'/><presence from='room@conference.localhost/n'/>")
    assert progress.other == 2
    progress.active = False
    w.on_data(b"<presence from='user2@localhost/x'/>")
    assert progress.presences == 2 and w.missing == 1


async def test_join_sink_sees_its_self_presence_split_across_chunks() -> None:
    sink = JoinSink("r", "u7")
    full = f"{room_jid('r')}/u7".encode()
    other = room_jid("r").encode() + b"/u1"
    data = b"<presence from='" + other + b"'/><presence from='" + full + b"'><x/></presence>"
    sink(data[:70])
    assert not sink.joined.done()
    sink(data[70:])
    assert sink.joined.done() and sink.joined.exception() is None
    assert sink.presences == 2 and sink.presences_at_join == 2


async def test_join_sink_reports_a_refused_join() -> None:
    sink = JoinSink("r", "u7")
    sink(b"<presence from='r@conference.localhost' type='error'><error/></presence>")
    assert sink.joined.done() and sink.joined.exception() is not None


class _Conn:
    def __init__(self) -> None:
        self.sink = None
        self.written: list[bytes] = []

    def set_sink(self, sink: object) -> None:
        self.sink = sink  # type: ignore[assignment]

    def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_occupant_counts_deliveries_times_them_and_takes_credit_for_its_own() -> None:
    stats = FanStats()
    conn = _Conn()
    occ = Occupant(conn, "u3", stats)  # type: ignore[arg-type]
    now = time.monotonic_ns()
    stats.window = Window(now - 10**9, now + 10**9)
    room = room_jid("fanout")

    def msg(nick: str, kind: str = "groupchat") -> bytes:
        return (
            f"<message from='{room}/{nick}' to='user4@localhost/x' type='{kind}'>"
            f"<body>T{now:019d};xxxx</body></message>"
        ).encode()

    subject = f"<message from='{room}' type='groupchat'><subject/></message>".encode()
    data = subject + msg("u1") + msg("u3") + msg("u1", "error")
    occ.credits = True
    occ.on_data(data[:50])
    occ.on_data(data[50:])
    assert stats.received == 2 and stats.bounced == 1
    assert len(stats.window.latencies_ns) == 2
    assert len(conn.written) == 1 and stats.sent == 1  # one own reflection: one new message
