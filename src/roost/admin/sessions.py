"""What an operator sees of a session: its transport and address come from its current connection
(a session may outlive its connection with stream management: it is then "detached")."""

from __future__ import annotations

import time
from typing import Any

from roost.core.session import ClientSession

#: XEP-0115 entity capabilities.
CAPS = "http://jabber.org/protocol/caps"


def peer_address(session: ClientSession) -> str:
    """The client's IP address, or "" when the session has no connection (detached) or no peer."""
    return session.peer


def transport_name(session: ClientSession) -> str:
    """What carries the session: "tcp" (STARTTLS port), "tls" (direct TLS), "websocket", "bosh", or
    "detached" (kept for stream-management resumption, no connection now)."""
    return session.transport


def client_name(session: Any) -> str:
    """The client software as its XEP-0115 caps node says (``https://gajim.org``), else ""."""
    presence = getattr(session, "presence", None)
    if presence is None:
        return ""
    caps = presence.find("c", CAPS)
    return str(caps.attrs.get("node", "")) if caps is not None else ""


def describe(session: ClientSession) -> dict[str, Any]:
    """One session as plain data (control socket JSON, ad-hoc result forms)."""
    bound_at = float(getattr(session, "bound_at", 0.0) or 0.0)
    return {
        "jid": str(getattr(session, "jid_str", "") or getattr(session, "jid", "")),
        "id": str(getattr(session, "id", "")),
        "transport": transport_name(session),
        "ip": peer_address(session),
        "client": client_name(session),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bound_at)) if bound_at else "",
        "available": bool(getattr(session, "available", False)),
        "state": session.state.value,
    }
