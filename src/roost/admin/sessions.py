"""What an operator sees of a session: one place that knows where the transport details live.

Sessions and connections are being pulled apart (a session may outlive its connection with stream
management); everything admin tools read about a session's transport goes through :func:`describe`
so that only this file changes with them.
"""

from __future__ import annotations

import time
from typing import Any

#: XEP-0115 entity capabilities.
CAPS = "http://jabber.org/protocol/caps"


def peer_address(session: Any) -> str:
    """The client's IP address, or "" when the session has no network peer (yet)."""
    peer = getattr(session, "peer", None)
    if isinstance(peer, str):
        return peer
    transport = getattr(session, "transport", None)
    get = getattr(transport, "get_extra_info", None)
    if get is None:
        return ""
    name = get("peername")
    if isinstance(name, tuple) and name:
        return str(name[0])
    return str(name or "")


def transport_name(session: Any) -> str:
    """ "tcp" (STARTTLS port), "tcp+tls" (direct TLS), or what a newer transport calls itself."""
    name = getattr(session, "transport_name", None)
    if isinstance(name, str) and name:
        return name
    return "tcp+tls" if getattr(session, "direct_tls", False) else "tcp"


def client_name(session: Any) -> str:
    """The client software as its XEP-0115 caps node says (``https://gajim.org``), else ""."""
    presence = getattr(session, "presence", None)
    if presence is None:
        return ""
    caps = presence.find("c", CAPS)
    return str(caps.attrs.get("node", "")) if caps is not None else ""


def describe(session: Any) -> dict[str, Any]:
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
    }
