"""Stream headers under hostile input: encodings (RFC 6120 §11.6) and the 'to' address (§4.7.2)."""

from __future__ import annotations

import pytest

from roost.stream.c2s import C2SSettings, C2SStream, Closed, State
from roost.xml.element import Element
from roost.xml.parser import StreamParser
from tests.unit.stream.test_c2s import HEADER


def stream() -> C2SStream:
    return C2SStream(C2SSettings(domains=frozenset({"example.org"})))


def closed_with(events: list[object]) -> str:
    assert len(events) == 1 and isinstance(events[0], Closed) and events[0].error is not None
    return events[0].error.condition


def written(s: C2SStream, events: list[object]) -> list[Element]:
    """Everything the stream wrote, its final bytes included, parsed as the client would."""
    final = b"".join(e.final for e in events if isinstance(e, Closed))
    return [e for e in StreamParser().feed(s.data_to_send() + final) if isinstance(e, Element)]


@pytest.mark.parametrize(
    "data",
    [
        HEADER.decode().encode("utf-16"),  # with a byte-order mark
        HEADER.decode().encode("utf-16-be"),  # without one
        HEADER.decode().encode("utf-32"),
        b"<?xml version='1.0' encoding='UTF-16'?>" + HEADER,
        b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER,
    ],
)
def test_not_utf8_is_unsupported_encoding(data: bytes) -> None:
    s = stream()
    events = s.receive_data(data)
    assert closed_with(events) == "unsupported-encoding"
    names = [e.name for e in written(s, events)]
    assert names == ["error"]  # our header, then the error: never features


def test_utf16_bom_split_over_reads_is_still_refused() -> None:
    s = stream()
    data = HEADER.decode().encode("utf-16")
    assert s.receive_data(data[:1]) == []
    assert closed_with(s.receive_data(data[1:])) == "unsupported-encoding"


@pytest.mark.parametrize("to", ["juliet@example.org", "example.org/desk", "juliet@example.org/desk"])
def test_to_must_be_a_bare_domain(to: str) -> None:
    s = stream()
    events = s.receive_data(HEADER.replace(b"to='example.org'", f"to='{to}'".encode()))
    assert closed_with(events) == "host-unknown"
    assert [e.name for e in written(s, events)] == ["error"]
    assert s.state is State.CLOSED


def test_missing_to_is_host_unknown() -> None:
    s = stream()
    assert closed_with(s.receive_data(HEADER.replace(b"to='example.org'", b""))) == "host-unknown"
