"""What a client session needs from the connection under it, whatever the transport.

TCP (STARTTLS or direct TLS), WebSocket (RFC 7395) and BOSH (XEP-0124/0206) each implement
:class:`Connection`; the c2s driver and the session never look further. A session outlives its
connection when stream management (XEP-0198) keeps it for resumption: a new connection is then
attached to the same session.
"""

from __future__ import annotations

from typing import Protocol


class Connection(Protocol):
    """One transport connection carrying a c2s stream."""

    #: "tcp" (STARTTLS port), "tls" (direct TLS), "websocket" or "bosh": for logs, metrics, admin.
    kind: str
    #: The client's address ("" if unknown): the socket peer, or the one a trusted proxy reported.
    peer: str
    #: The namespace stanzas are serialized against. ``jabber:client`` on an XML stream (top-level
    #: stanzas inherit it from the stream header, no ``xmlns``); ``None`` where each stanza stands
    #: alone and declares it (WebSocket messages, BOSH bodies, RFC 7395 §3.3.3, XEP-0206 §3).
    stanza_ns: str | None

    @property
    def secure(self) -> bool:
        """Whether the bytes travel encrypted (TLS on the socket, or HTTPS)."""
        ...

    def send_stanza(self, data: bytes) -> None:
        """Write one serialized stanza (WebSocket: one message; batched per event-loop turn)."""
        ...

    def send_raw(self, data: bytes) -> None:
        """Write one unit of the stream core's own output (header or ``<open/>``, features, a nonza,
        the close): called once per unit, so a WebSocket sends each as one message."""
        ...

    def close(self) -> None:
        """Flush what is buffered, then close the transport (the driver has written the end)."""
        ...

    def abort(self) -> None:
        """Drop the transport now, without flushing (a peer that does not read, a TLS failure)."""
        ...
