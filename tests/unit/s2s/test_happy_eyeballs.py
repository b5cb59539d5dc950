"""Our Happy Eyeballs (RFC 8305) for event loops without asyncio's (uvloop): real sockets, a resolver
answer with several addresses, the first of which never answers or refuses."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from roost.s2s.manager import happy_eyeballs


def _info(host: str, port: int, family: int = socket.AF_INET) -> Any:
    return (family, socket.SOCK_STREAM, 6, "", (host, port))


async def _with_answer(monkeypatch: pytest.MonkeyPatch, infos: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        if host == "peer.test":
            return infos
        return await real(host, port, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def test_a_later_address_wins_while_the_first_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    accepted = asyncio.Event()
    server = await asyncio.start_server(lambda r, w: accepted.set(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connecting to it is refused
    refused_port = closed.getsockname()[1]
    # TEST-NET-1 (RFC 5737) is never answered (or unreachable at once): either way, not a stall.
    await _with_answer(
        monkeypatch, [_info("192.0.2.1", 5269), _info("127.0.0.1", refused_port), _info("127.0.0.1", port)]
    )
    started = time.monotonic()
    sock = await happy_eyeballs("peer.test", 5269, delay=0.05)
    try:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert time.monotonic() - started < 2  # one after another would wait for the first to time out
        await asyncio.wait_for(accepted.wait(), 5)
    finally:
        sock.close()
        closed.close()
        server.close()
        await server.wait_closed()


async def test_every_address_failing_is_an_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    await _with_answer(monkeypatch, [_info("127.0.0.1", closed.getsockname()[1])])
    try:
        with pytest.raises(OSError):
            await happy_eyeballs("peer.test", 5269, delay=0.05)
    finally:
        closed.close()


async def test_families_are_interleaved(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8305 §4: v6, v4, v6, v4 … whatever order the resolver gave within a family."""
    tried: list[str] = []
    loop = asyncio.get_running_loop()

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        tried.append(address[0])
        raise ConnectionRefusedError(address[0])

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    await _with_answer(
        monkeypatch,
        [
            _info("::1", 1, socket.AF_INET6),
            _info("::2", 1, socket.AF_INET6),
            _info("127.0.0.1", 1),
            _info("127.0.0.2", 1),
        ],
    )
    with pytest.raises(OSError):
        await happy_eyeballs("peer.test", 5269, delay=0.01)
    assert tried == ["::1", "127.0.0.1", "::2", "127.0.0.2"]
