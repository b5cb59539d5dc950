"""SASL PLAIN (RFC 4616), checked against stored SCRAM credentials so no plaintext password is kept."""

from __future__ import annotations

import hashlib
import hmac

from roost.stream.sasl.precis import prepare_password, prepare_username
from roost.stream.sasl.scram import SaslFailure, ScramCredentials, _hashlib_name, _hi


def parse_plain(message: bytes) -> tuple[str | None, str, str]:
    """Split ``[authzid] NUL authcid NUL passwd`` into (authzid or None, prepared username, raw password)."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SaslFailure("malformed-request", "PLAIN message must have exactly two NUL separators")
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SaslFailure("incorrect-encoding", "PLAIN message is not UTF-8")
    if not authcid or not password:
        # RFC 4616 §2: authcid and passwd are 1*SAFE
        raise SaslFailure("malformed-request", "empty username or password")
    try:
        username = prepare_username(authcid)
    except UnicodeError:
        # No account can have this name; answer like any other failed login.
        raise SaslFailure("not-authorized", "invalid username")
    return (authzid or None), username, password


def verify_password(password: str, creds: ScramCredentials) -> bool:
    """True if ``password`` yields ``creds.stored_key``; the comparison is constant-time."""
    try:
        prepared = prepare_password(password).encode()
    except UnicodeError:
        return False
    name = _hashlib_name(creds.hash_name)
    salted = _hi(creds.hash_name, prepared, creds.salt, creds.iterations)
    client_key = hmac.digest(salted, b"Client Key", name)
    return hmac.compare_digest(hashlib.new(name, client_key).digest(), creds.stored_key)
