"""TLS on top of a plain TCP transport, with memory BIOs.

Why not ``loop.start_tls`` / ``create_server(ssl=…)``: asyncio's SSL protocol keeps a 256 KiB read
buffer and a second protocol/transport pair per connection, which made an idle TLS session cost about
75 KiB; XMPP servers hold tens of thousands of idle sessions. Here TLS is a small object between the
socket and the XML stream: ciphertext in → plaintext out, plaintext in → ciphertext out, with one
16 KiB read at a time. It also makes STARTTLS a plain state change on the same transport.

Plaintext is decrypted into one reusable buffer per thread and copied out at its exact size.
``SSLObject.read(16384)`` would allocate 16 KiB from the C heap for every record and shrink it to the
few hundred bytes a stanza takes; under churn the shrunk remainders ended up just too small for the
next 16 KiB request, and the heap grew by ~1.5 MiB a minute with its free space in ~16 KiB holes
(2,000 TLS sessions, 1 %/s churn, 500 msg/s; glibc's ``malloc_info``, issue 15).
"""

from __future__ import annotations

import ssl
import threading
from typing import Final

READ_SIZE: Final = 16384


class _ReadBuffer(threading.local):
    """The decrypt buffer of this thread (SSL reads release the GIL: threads must not share one)."""

    def __init__(self) -> None:
        self.buffer = bytearray(READ_SIZE)
        self.view = memoryview(self.buffer)


_read_buffer = _ReadBuffer()


class TlsError(Exception):
    """The TLS layer failed (bad handshake, bad record, peer alert)."""


class TlsLayer:
    """Server- or client-side TLS over memory BIOs for one connection."""

    __slots__ = ("_in", "_out", "_records", "handshake_done", "obj")

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        #: What decrypts and encrypts records: the C object under ``SSLObject``'s pure-Python
        #: ``read``/``write``/``pending`` wrappers, called directly (two wrapper calls fewer per
        #: record); the SSLObject itself if a Python version hides it.
        self._records = getattr(self.obj, "_sslobj", self.obj)
        self.handshake_done = False

    def start(self) -> bytes:
        """Begin the handshake (the client side speaks first); ciphertext to send."""
        self._handshake()
        return self._out.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Feed ciphertext; returns (plaintext, ciphertext to send, handshake just completed)."""
        self._in.write(data)
        completed = False
        if not self.handshake_done:
            if not self._handshake():
                return b"", self._out.read(), False
            completed = True
        chunks: list[bytes] = []
        obj = self._records
        incoming = self._in
        local = _read_buffer
        buffer, view = local.buffer, local.view
        try:
            # Read while whole records may remain (ciphertext in the BIO, plaintext in the object):
            # the common case, one record per read, ends without raising SSLWantReadError.
            while True:
                size: int = obj.read(READ_SIZE, buffer)  # type: ignore[assignment]  # with a buffer: a count
                if not size:  # close_notify from the peer
                    break
                chunks.append(view[:size].tobytes())
                if not incoming.pending and not obj.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            pass
        except ssl.SSLError as e:
            raise TlsError(str(e)) from e
        plain = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return plain, self._out.read(), completed

    def encrypt(self, data: bytes) -> bytes:
        """Plaintext → ciphertext records."""
        try:
            self._records.write(data)
        except ssl.SSLError as e:
            raise TlsError(str(e)) from e
        return self._out.read()

    def close(self) -> bytes:
        """A close_notify alert to send before closing the socket (best effort)."""
        try:
            self.obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self._out.read()

    def _handshake(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as e:
            raise TlsError(getattr(e, "reason", None) or str(e)) from e
        self.handshake_done = True
        return True

    @property
    def version(self) -> str | None:
        return self.obj.version()
