"""HTTP Basic login for Roost's own pages: a JID with its password, or with a confirmed transaction id.

``Authorization: Basic`` base64(``jid:secret``) names an account of this server. The secret is tried
as the account's password first, checked against the stored SCRAM keys (no plaintext password is
kept, RFC 5802 §3); when it is not the password and XEP-0070 is on (``[http_auth] enabled``), it is
taken as a transaction id and the user's XMPP client is asked to confirm the request (XEP-0070 §4:
an IQ to a full JID, a message to a bare one) — the "alternative to a password" of XEP-0070 §3.

Credentials only travel over a confidential connection (TLS, or a client on this machine): over
plain HTTP from elsewhere they are refused before they are looked at.
"""

from __future__ import annotations

import base64
import binascii
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from roost.jid import JID, JIDError
from roost.transports.http import client_of

if TYPE_CHECKING:
    from aiohttp import web

    from roost.core.server import Server

log = logging.getLogger("roost.http_login")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What came of a login or a confirmation: an HTTP status and why."""

    status: int
    reason: str
    #: The account that logged in (status 200 only).
    jid: JID | None = None
    #: "password" or "xmpp" (XEP-0070 confirmation), for the log.
    how: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


#: Asks a user's client to confirm (jid, transaction id, method, url): the XEP-0070 module's runtime.
Confirmer = Callable[[JID, str, str, str], Awaitable[Verdict]]

_CONFIRMERS: weakref.WeakKeyDictionary[Server, Confirmer] = weakref.WeakKeyDictionary()


def set_confirmer(server: Server, confirmer: Confirmer | None) -> None:
    """Called by the XEP-0070 module as it starts (its runtime) and stops (None)."""
    if confirmer is None:
        _CONFIRMERS.pop(server, None)
    else:
        _CONFIRMERS[server] = confirmer


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``Basic base64(user:secret)`` → (user, secret); None when absent or malformed (RFC 7617 §2)."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = raw.partition(":")
    return (user, secret) if sep and user and secret else None


async def login(server: Server, request: web.Request, *, allowed: Collection[str] | None = None) -> Verdict:
    """Who ``request``'s ``Authorization: Basic`` proves to be.

    ``allowed``: the bare JIDs that may log in (e.g. the server admins); None lets any local account.
    401 without usable credentials, 403 for a wrong or refused login, 504 when the user's client did not
    answer a confirmation in time, 429 when confirmations for that JID come too fast.
    """
    credentials = basic_credentials(request.headers.get("Authorization", ""))
    if credentials is None:
        return Verdict(401, "log in with your JID and password (or a transaction id to confirm)")
    if not client_of(request).confidential:
        return Verdict(403, "credentials are accepted over HTTPS only")
    user, secret = credentials
    try:
        jid = JID.parse(user)
    except JIDError:
        return Verdict(403, "not a valid JID")
    if jid.local is None or jid.domain not in server.config.server.domains:
        return Verdict(403, "not an account of this server")
    if allowed is not None and str(jid.bare) not in allowed:
        return Verdict(403, f"{jid.bare} may not see this page")
    if await server.accounts.password_matches(jid.domain, jid.local, secret):
        return Verdict(200, "password", jid, "password")
    confirm = _CONFIRMERS.get(server)
    if confirm is None:
        return Verdict(403, "wrong JID or password")
    # Not the password: a transaction id for the user to confirm in their XMPP client (XEP-0070 §3).
    verdict = await confirm(jid, secret, request.method, str(request.url))
    if verdict.ok:
        return Verdict(200, "confirmed", jid, "xmpp")
    return verdict
