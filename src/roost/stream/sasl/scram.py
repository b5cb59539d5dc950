"""SCRAM (RFC 5802, RFC 7677) for both ends of an exchange, sans-IO.

The server never sees a password: it keeps StoredKey and ServerKey (``ScramCredentials``) and verifies
the client's proof against them. Messages go in and out as bytes, already base64-decoded from the
XMPP ``<auth/>``/``<response/>`` elements; the caller owns the stream.

Passwords are prepared with the PRECIS OpaqueString profile and usernames with UsernameCaseMapped
(RFC 8265 §4.2 and §3.3; RFC 6120 §6.3.7 says the simple user name is the localpart), replacing the
SASLprep of RFC 5802.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from roost.stream.sasl.precis import prepare_password, prepare_username
from roost.util.ids import random_token

HASH_NAMES = ("SHA-1", "SHA-256", "SHA-512")
DEFAULT_ITERATIONS = 4096  # RFC 5802 §5.1 / RFC 7677 §3: "at least 4096"

_HASHLIB_NAMES = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}

# RFC 6120 §6.5
SASL_CONDITIONS = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)


_CB_NAME = re.compile(r"[A-Za-z0-9.-]+\Z")  # RFC 5802 §7 cb-name
_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+\Z")  # RFC 5802 §7 printable (nonce)
_POSIT_NUMBER = re.compile(r"[1-9][0-9]{0,9}\Z")
_ATTR = re.compile(r"[A-Za-z]=")

# A client-side guard only: a hostile server could otherwise make the client spin in PBKDF2.
_MAX_CLIENT_ITERATIONS = 10_000_000

# Key for the fake salts answered for unknown users. Random per process unless the server installs
# a persistent one (set_unknown_user_secret), which also keeps fake salts stable across restarts.
_unknown_user_secret = secrets.token_bytes(32)


class SaslFailure(Exception):
    """A failed SASL exchange, carrying an RFC 6120 §6.5 condition and optional human text."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in SASL_CONDITIONS:
            raise ValueError(f"unknown SASL condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What the server stores for one user and one hash (RFC 5802 §3); never the password."""

    hash_name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def set_unknown_user_secret(secret: bytes) -> None:
    """Use a persistent key for unknown-user fake salts, so they do not change when the server restarts."""
    global _unknown_user_secret
    if len(secret) < 16:
        raise ValueError("the unknown-user secret must be at least 16 bytes")
    _unknown_user_secret = bytes(secret)


def mechanism_name(hash_name: str, plus: bool) -> str:
    """``("SHA-256", True)`` -> ``"SCRAM-SHA-256-PLUS"``."""
    _hashlib_name(hash_name)
    return f"SCRAM-{hash_name}-PLUS" if plus else f"SCRAM-{hash_name}"


def parse_mechanism(name: str) -> tuple[str, bool] | None:
    """``"SCRAM-SHA-256-PLUS"`` -> ``("SHA-256", True)``; None for anything that is not a known SCRAM."""
    if not name.startswith("SCRAM-"):
        return None
    rest = name[len("SCRAM-") :]
    plus = rest.endswith("-PLUS")
    if plus:
        rest = rest[: -len("-PLUS")]
    if rest not in HASH_NAMES:
        return None
    return rest, plus


def tls_version_code(channel_bindings: object) -> str | None:
    """The XEP-0515 code of the connection's TLS version: carried by the channel bindings of a TLS
    connection (``tls_version``); None without TLS (or for bindings that do not say)."""
    code = getattr(channel_bindings, "tls_version", None)
    return code if isinstance(code, str) else None


def ssdp_string(mechanisms: Sequence[str], channel_bindings: Sequence[str] | None) -> bytes:
    """XEP-0474 §5.1: the advertised mechanisms (and XEP-0440 channel-binding types, if that list
    was advertised at all), each sorted by octets, joined with %x1E; %x1F between the two lists."""
    text = "\x1e".join(sorted(mechanisms, key=str.encode))
    if channel_bindings is not None:
        text += "\x1f" + "\x1e".join(sorted(channel_bindings, key=str.encode))
    return text.encode()


def ssdp_hash(hash_name: str, ssdp: bytes) -> str:
    """The ``h`` attribute: the SCRAM hash of the SSDP string, base64."""
    return _b64(hashlib.new(_hashlib_name(hash_name), ssdp).digest())


def digest_size(hash_name: str) -> int:
    """Octets of one ``hash_name`` digest (the length of a SaltedPassword)."""
    return hashlib.new(_hashlib_name(hash_name)).digest_size


def salted_password(password: str, hash_name: str, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802 §3), with OpaqueString as Normalize.

    Raises ValueError if the password is not a valid OpaqueString (e.g. empty or with control characters).
    """
    return _hi(hash_name, _prepare_password(password), salt, iterations)


def derive_credentials(
    password: str, hash_name: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """The stored form of a password: random 16-byte salt, StoredKey and ServerKey."""
    if salt is None:
        salt = secrets.token_bytes(16)
    salted = salted_password(password, hash_name, salt, iterations)
    return credentials_from_salted(hash_name, salted, salt, iterations)


class ScramServer:
    """Server side of one SCRAM exchange: ``start`` -> ``challenge`` -> ``finish``.

    The caller looks up the credentials for ``start``'s username between ``start`` and ``challenge``.
    """

    username: str
    authzid: str | None
    channel_binding: str | None  # the binding type used, once start() accepted a "p=" header

    def __init__(
        self,
        hash_name: str,
        *,
        plus: bool,
        channel_bindings: Mapping[str, bytes],
        cb_offered: bool,
        nonce: str | None = None,
        default_iterations: int = DEFAULT_ITERATIONS,
        ssdp: bytes | None = None,
        tls_version: str | None = None,
    ) -> None:
        self._hash = _hashlib_name(hash_name)
        #: XEP-0515: the connection's TLS version ("0304"), sent as t= so the client can compare it
        #: with its own: a MITM speaking different TLS versions to each side shows.
        self._tls_version = tls_version
        #: XEP-0474: what was advertised (ssdp_string), hashed into the server-first-message, where the
        #: client compares it with what it saw; the proof signs it, so a MITM cannot rewrite it.
        self._ssdp = ssdp
        self.hash_name = hash_name
        self.plus = plus
        self._channel_bindings = channel_bindings  # may compute values lazily: read only what is used
        self._cb_offered = cb_offered
        if nonce is not None and not _PRINTABLE.match(nonce):
            raise ValueError("the server nonce must be printable ASCII without ','")
        self._server_nonce = nonce if nonce is not None else random_token(24)
        self._default_iterations = default_iterations
        self.username = ""
        self.authzid = None
        self.channel_binding = None
        self._state = "new"
        self._gs2_header = b""
        self._cb_data = b""
        self._client_first_bare = b""
        self._nonce = ""
        self._server_first = b""
        self._stored_key = b""
        self._server_key = b""
        self._unknown_user = False

    def start(self, client_first: bytes) -> str:
        """Parse the client-first-message; return the prepared username whose credentials to fetch."""
        if self._state != "new":
            raise RuntimeError("start() called twice")
        self._state = "failed"
        text = _decode(client_first)
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise SaslFailure("malformed-request", "client-first-message lacks a GS2 header")
        flag, authz, bare = parts
        cb_type: str | None = None
        if flag.startswith("p="):
            cb_type = flag[2:]
            if not _CB_NAME.match(cb_type):
                raise SaslFailure("malformed-request", "invalid channel binding name")
        elif flag not in ("n", "y"):
            # RFC 5802 §5: the message must start with "n", "y" or "p"
            raise SaslFailure("malformed-request", "invalid GS2 channel binding flag")
        if authz:
            if not authz.startswith("a="):
                raise SaslFailure("malformed-request", "invalid GS2 authzid")
            self.authzid = _decode_saslname(authz[2:])
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            # RFC 5802 §5.1: an unknown mandatory extension must fail the exchange
            raise SaslFailure("malformed-request", "unsupported mandatory SCRAM extension")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise SaslFailure("malformed-request", "client-first-message must start with n= and r=")
        _check_extensions(attrs[2:])
        raw_username = _decode_saslname(attrs[0][2:])
        client_nonce = attrs[1][2:]
        if not _PRINTABLE.match(client_nonce):
            raise SaslFailure("malformed-request", "invalid client nonce")

        # RFC 5802 §6: channel binding negotiation.
        if cb_type is not None:
            if not self.plus:
                raise SaslFailure("not-authorized", "channel binding requested with a non-PLUS mechanism")
            cb_data = self._channel_bindings.get(cb_type)
            if cb_data is None:
                raise SaslFailure("not-authorized", f"unsupported channel binding type {cb_type!r}")
            self._cb_data = cb_data
            self.channel_binding = cb_type
        elif self.plus:
            raise SaslFailure("not-authorized", "a -PLUS mechanism requires channel binding")
        elif flag == "y" and self._cb_offered:
            # The client supports channel binding but did not see a -PLUS mechanism we did offer:
            # someone stripped it from the feature list (a downgrade attack).
            raise SaslFailure("not-authorized", "channel binding downgrade detected")

        try:
            self.username = prepare_username(raw_username)
        except UnicodeError:
            # No account can have this name; the exchange cannot succeed.
            raise SaslFailure("not-authorized", "invalid username")
        self._gs2_header = f"{flag},{authz},".encode()
        self._client_first_bare = bare.encode()
        self._nonce = client_nonce + self._server_nonce
        self._state = "started"
        return self.username

    def challenge(self, creds: ScramCredentials | None) -> bytes:
        """The server-first-message; ``None`` for an unknown user gives a plausible but failing answer."""
        if self._state != "started":
            raise RuntimeError("challenge() needs a successful start()")
        if creds is None:
            # Unknown user: a salt that is stable per username and the usual iteration count, so the
            # answer looks like a real account's and cannot be used to enumerate accounts.
            self._unknown_user = True
            seed = f"{self.hash_name}\0{self.username}".encode()
            salt = hmac.digest(_unknown_user_secret, seed, "sha256")[:16]
            iterations = self._default_iterations
            self._stored_key = secrets.token_bytes(hashlib.new(self._hash).digest_size)
            self._server_key = secrets.token_bytes(len(self._stored_key))
        else:
            if creds.hash_name != self.hash_name:
                raise ValueError(f"credentials are for {creds.hash_name}, exchange uses {self.hash_name}")
            salt, iterations = creds.salt, creds.iterations
            self._stored_key, self._server_key = creds.stored_key, creds.server_key
        server_first = f"r={self._nonce},s={_b64(salt)},i={iterations}"
        if self._ssdp is not None:
            server_first += f",h={ssdp_hash(self.hash_name, self._ssdp)}"
        if self._tls_version is not None:
            server_first += f",t={self._tls_version}"
        self._server_first = server_first.encode()
        self._state = "challenged"
        return self._server_first

    def finish(self, client_final: bytes) -> bytes:
        """Verify channel binding and proof; return the server-final-message ``v=...``."""
        if self._state != "challenged":
            raise RuntimeError("finish() needs challenge() first")
        self._state = "failed"
        text = _decode(client_final)
        without_proof, _, proof_attr = text.rpartition(",")
        attrs = without_proof.split(",")
        if (
            not proof_attr.startswith("p=")
            or len(attrs) < 2
            or not attrs[0].startswith("c=")
            or not attrs[1].startswith("r=")
        ):
            raise SaslFailure("malformed-request", "client-final-message must be c=, r=, ..., p=")
        _check_extensions(attrs[2:])
        cbind_input = _b64decode(attrs[0][2:])
        proof = _b64decode(proof_attr[2:])
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            raise SaslFailure("not-authorized", "nonce mismatch")
        # RFC 5802 §6: the server always validates c= (GS2 header, plus binding data for "p").
        if not hmac.compare_digest(cbind_input, self._gs2_header + self._cb_data):
            raise SaslFailure("not-authorized", "channel binding mismatch")
        if len(proof) != len(self._stored_key):
            raise SaslFailure("malformed-request", "client proof has the wrong length")
        auth_message = b",".join((self._client_first_bare, self._server_first, without_proof.encode()))
        client_signature = hmac.digest(self._stored_key, auth_message, self._hash)
        client_key = _xor(proof, client_signature)
        stored_key = hashlib.new(self._hash, client_key).digest()
        if not hmac.compare_digest(stored_key, self._stored_key) or self._unknown_user:
            raise SaslFailure("not-authorized")
        self._state = "done"
        server_signature = hmac.digest(self._server_key, auth_message, self._hash)
        return b"v=" + base64.b64encode(server_signature)


class ScramClient:
    """Client side of one SCRAM exchange: ``first`` -> ``respond`` -> ``verify``."""

    salted_password: bytes | None
    salt: bytes | None
    iterations: int | None

    def __init__(
        self,
        hash_name: str,
        username: str,
        password: str,
        *,
        plus: bool = False,
        cb_type: str | None = None,
        cb_data: bytes = b"",
        server_supports_plus: bool = False,
        authzid: str | None = None,
        nonce: str | None = None,
        salted_password: bytes | None = None,
        ssdp: bytes | None = None,
        tls_version: str | None = None,
    ) -> None:
        self._hash = _hashlib_name(hash_name)
        self.hash_name = hash_name
        #: XEP-0515: our connection's TLS version ("0304"), compared with the server's t=; "" for a
        #: connection without TLS; None: this client does not check (it cannot see its TLS layer).
        self._tls_version = tls_version
        if plus and (cb_type is None or not _CB_NAME.match(cb_type)):
            raise ValueError("a -PLUS mechanism needs a channel binding type")
        if nonce is not None and not _PRINTABLE.match(nonce):
            raise ValueError("the client nonce must be printable ASCII without ','")
        try:
            self.username = prepare_username(username)
        except UnicodeEncodeError as exc:
            raise ValueError(f"invalid username: {exc.reason}")
        self._password = _prepare_password(password) if salted_password is None else b""
        self.plus = plus
        self._cb_type = cb_type
        self._cb_data = cb_data
        # RFC 5802 §6: "y" = we could bind but the server did not offer -PLUS; "n" = we do not bind.
        if plus:
            flag = f"p={cb_type}"
        elif cb_type is not None and not server_supports_plus:
            flag = "y"
        else:
            flag = "n"
        authz = "" if authzid is None else "a=" + _encode_saslname(authzid)
        self._gs2_header = f"{flag},{authz},".encode()
        self._nonce = nonce if nonce is not None else random_token(24)
        self._client_first_bare = f"n={_encode_saslname(self.username)},r={self._nonce}".encode()
        self.salted_password = salted_password
        #: XEP-0474: the SSDP string of what the server advertised; its hash must match the server's.
        self._ssdp = ssdp
        self.salt = None
        self.iterations = None
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        """The client-first-message (GS2 header + client-first-message-bare)."""
        return self._gs2_header + self._client_first_bare

    def respond(self, server_first: bytes) -> bytes:
        """The client-final-message for the server's challenge."""
        text = _decode(server_first)
        attrs = text.split(",")
        if attrs[0].startswith("m="):
            raise SaslFailure("malformed-request", "unsupported mandatory SCRAM extension")
        if (
            len(attrs) < 3
            or not attrs[0].startswith("r=")
            or not attrs[1].startswith("s=")
            or not attrs[2].startswith("i=")
        ):
            raise SaslFailure("malformed-request", "server-first-message must be r=, s=, i=")
        _check_extensions(attrs[3:])
        if self._ssdp is not None:
            offered = next((a[2:] for a in attrs[3:] if a.startswith("h=")), None)
            # XEP-0474 §5.2: a mismatch means the advertised lists were tampered with.
            if offered is not None and not hmac.compare_digest(
                offered.encode(), ssdp_hash(self.hash_name, self._ssdp).encode()
            ):
                raise SaslFailure("not-authorized", "downgrade detected: the offered mechanisms were altered")
        server_tls = next((a[2:] for a in attrs[3:] if a.startswith("t=")), None)
        # XEP-0515 §4.2: a server that sends t= must see the TLS version we see. (Without t= the
        # server does not implement it; a t= stripped in transit breaks the proof anyway.)
        if self._tls_version is not None and server_tls is not None and server_tls != self._tls_version:
            raise SaslFailure(
                "not-authorized",
                f"downgrade detected: the server's TLS version is {server_tls}, "
                f"ours {self._tls_version or 'none'}",
            )
        nonce = attrs[0][2:]
        # RFC 5802 §5.1: the server's nonce must extend ours
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce) or not _PRINTABLE.match(nonce):
            raise SaslFailure("not-authorized", "server nonce does not extend the client nonce")
        salt = _b64decode(attrs[1][2:])
        if not _POSIT_NUMBER.match(attrs[2][2:]):
            raise SaslFailure("malformed-request", "invalid iteration count")
        iterations = int(attrs[2][2:])
        if self.salted_password is None:
            if iterations > _MAX_CLIENT_ITERATIONS:
                raise SaslFailure("malformed-request", "iteration count is unreasonably high")
            self.salted_password = _hi(self.hash_name, self._password, salt, iterations)
        self.salt, self.iterations = salt, iterations
        cbind_input = self._gs2_header + (self._cb_data if self.plus else b"")
        without_proof = f"c={_b64(cbind_input)},r={nonce}".encode()
        auth_message = b",".join((self._client_first_bare, server_first, without_proof))
        client_key = hmac.digest(self.salted_password, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        client_signature = hmac.digest(stored_key, auth_message, self._hash)
        server_key = hmac.digest(self.salted_password, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return without_proof + b",p=" + base64.b64encode(_xor(client_key, client_signature))

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature (RFC 5802 §5: the client authenticates the server too)."""
        if self._server_signature is None:
            raise RuntimeError("verify() needs respond() first")
        text = _decode(server_final)
        attr = text.split(",")[0]
        if attr.startswith("e="):
            raise SaslFailure("not-authorized", f"server error: {attr[2:]}")
        if not attr.startswith("v="):
            raise SaslFailure("malformed-request", "server-final-message must be v= or e=")
        if not hmac.compare_digest(_b64decode(attr[2:]), self._server_signature):
            raise SaslFailure("not-authorized", "wrong server signature")


def _hashlib_name(hash_name: str) -> str:
    try:
        return _HASHLIB_NAMES[hash_name]
    except KeyError:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}; expected one of {', '.join(HASH_NAMES)}")


def _prepare_password(password: str) -> bytes:
    try:
        return prepare_password(password).encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid password: {exc.reason}")


def _hi(hash_name: str, prepared_password: bytes, salt: bytes, iterations: int) -> bytes:
    if iterations < 1:
        raise ValueError("the iteration count must be positive")
    return hashlib.pbkdf2_hmac(_hashlib_name(hash_name), prepared_password, salt, iterations)


def credentials_from_salted(hash_name: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredentials:
    """StoredKey and ServerKey from a SaltedPassword (RFC 5802 §3): what a XEP-0480 upgrade hands over."""
    name = _hashlib_name(hash_name)
    client_key = hmac.digest(salted, b"Client Key", name)
    return ScramCredentials(
        hash_name=hash_name,
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", name),
    )


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("malformed-request", "invalid base64 in a SCRAM attribute")


def _decode(message: bytes) -> str:
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("incorrect-encoding", "SCRAM message is not UTF-8")
    if "\0" in text:
        raise SaslFailure("malformed-request", "NUL in a SCRAM message")
    return text


def _check_extensions(attrs: list[str]) -> None:
    # RFC 5802 §7: optional extensions are attr-val and are ignored, but must be well formed.
    for attr in attrs:
        if not _ATTR.match(attr) or len(attr) < 3:
            raise SaslFailure("malformed-request", "invalid SCRAM attribute")


def _decode_saslname(value: str) -> str:
    # RFC 5802 §5.1: ',' and '=' travel as =2C and =3D; any other '=' fails the exchange.
    if not value or re.search(r"=(?!2C|3D)", value):
        raise SaslFailure("malformed-request", "invalid saslname encoding")
    return value.replace("=2C", ",").replace("=3D", "=")


def _encode_saslname(value: str) -> str:
    return value.replace("=", "=3D").replace(",", "=2C")
