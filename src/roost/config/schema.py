"""The configuration schema: one pydantic model per TOML section.

Each option is declared exactly once, here (core sections) or next to the feature module that reads it
(module sections, via :func:`register_section`). The declaration carries type, default, bounds and a
description; ``roost.config.docs`` renders ``docs/config.md`` from it, so the reference never drifts.

Models are strict (TOML already has types: ``"yes"`` is not a boolean), frozen (no module may change
another's view of the configuration at run time) and reject unknown keys (a typo must not silently
fall back to a default).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from roost.jid import JID, JIDError, prepare_domain

__all__ = [
    "CORE_SECTIONS",
    "DEFAULT_SASL_MECHANISMS",
    "C2SSection",
    "Config",
    "ConfigPath",
    "GcSection",
    "HttpSection",
    "ListenSection",
    "LogSection",
    "ModuleOptions",
    "ServerSection",
    "StorageSection",
    "TLSDomainSection",
    "TLSSection",
    "listen_hosts",
    "parse_address",
    "redact_url",
    "register_section",
    "registered_sections",
    "section_owner",
    "section_summary",
    "unregister_section",
]

KiB = 1024
MiB = 1024 * KiB

#: Validation-context key holding the directory relative paths are resolved against.
BASE_DIR_CONTEXT = "base_dir"


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Make a configured path absolute against the config file's directory (or the CWD)."""
    value = value.expanduser()
    if value.is_absolute():
        return value
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get(BASE_DIR_CONTEXT)
    base_dir = Path(base) if base is not None else Path.cwd()
    return base_dir / value


#: A filesystem path option: a TOML string, ``~`` expanded, relative paths resolved against the
#: directory of the config file (the current directory when running on built-in defaults).
ConfigPath = Annotated[Path, Strict(False), AfterValidator(_resolve_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModuleOptions(_Section):
    """Base of every feature module's options (its ``[name]`` section in roost.toml)."""

    enabled: bool = Field(default=True, description="Load this module.", examples=[True])


# --- [server] ----------------------------------------------------------------------------------


class ServerSection(_Section):
    """Who this server is and where it keeps its files."""

    domains: list[str] = Field(
        default_factory=lambda: ["localhost"],
        min_length=1,
        description="The XMPP domains this server hosts (user JIDs are user@domain). The first one is "
        "the primary domain.",
        examples=[["example.org", "example.net"]],
    )
    data_dir: ConfigPath = Field(
        default=Path("roost-data"),
        validate_default=True,
        description="Directory for the SQLite database, generated certificates and other state. "
        "Relative paths are resolved against the config file's directory.",
        examples=["/var/lib/roost"],
    )
    admins: list[str] = Field(
        default_factory=list,
        description="Bare JIDs of server administrators (ad-hoc admin commands, web admin).",
        examples=[["admin@example.org"]],
    )

    @field_validator("domains")
    @classmethod
    def _check_domains(cls, value: list[str]) -> list[str]:
        prepared: list[str] = []
        errors: list[str] = []  # every bad domain, not only the first
        for text in value:
            try:
                domain = prepare_domain(text)
            except JIDError as e:
                errors.append(f"{text!r} is not a valid domain name ({e})")
                continue
            if domain in prepared:
                errors.append(f"domain {domain!r} is listed twice")
                continue
            prepared.append(domain)
        if errors:
            raise ValueError("; ".join(errors))
        return prepared

    @field_validator("admins")
    @classmethod
    def _check_admins(cls, value: list[str]) -> list[str]:
        admins: list[str] = []
        for text in value:
            try:
                jid = JID.parse(text)
            except JIDError as e:
                raise ValueError(f"{text!r} is not a valid JID ({e})") from None
            if jid.local is None or jid.resource is not None:
                raise ValueError(f"{text!r} is not a bare user JID (expected user@domain)")
            admins.append(str(jid))
        return admins


# --- [tls] -------------------------------------------------------------------------------------


class TLSDomainSection(_Section):
    """A certificate of its own for one served domain (and its subdomains), chosen by SNI.

    ```toml
    [tls.domains."example.net"]
    cert = "/etc/letsencrypt/live/example.net/fullchain.pem"
    key = "/etc/letsencrypt/live/example.net/privkey.pem"
    ```
    """

    cert: ConfigPath = Field(description="PEM certificate chain for this domain.")
    key: ConfigPath = Field(description="PEM private key matching cert.")


class TLSSection(_Section):
    """The certificate presented to clients and servers (STARTTLS and direct TLS, c2s and s2s)."""

    cert: ConfigPath | None = Field(
        default=None,
        description="PEM certificate chain covering every domain in server.domains (but those with "
        "their own in tls.domains). Omit both cert "
        "and key to have a self-signed certificate generated in <data_dir>/tls (fine for testing; "
        "clients will warn).",
        examples=["/etc/letsencrypt/live/example.org/fullchain.pem"],
    )
    key: ConfigPath | None = Field(
        default=None,
        description="PEM private key matching cert.",
        examples=["/etc/letsencrypt/live/example.org/privkey.pem"],
    )

    domains: dict[str, TLSDomainSection] = Field(
        default_factory=dict,
        description="Certificates per domain: [tls.domains.\"example.net\"] cert/key. The one for the "
        "name a peer asks for by SNI (or its closest parent domain) is presented on c2s and s2s "
        "listeners, and as the client certificate on s2s streams from that domain; cert/key above "
        "(or the generated one) serve every other name.",
        examples=[
            {
                "example.net": {
                    "cert": "/etc/letsencrypt/live/example.net/fullchain.pem",
                    "key": "/etc/letsencrypt/live/example.net/privkey.pem",
                }
            }
        ],
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> TLSSection:
        for domain in self.domains:
            if not domain or domain != domain.lower() or any(c in domain for c in "@/ *"):
                raise ValueError(f"[tls.domains] {domain!r}: write a lower-case domain name")
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            given = "cert" if self.key is None else "key"
            raise ValueError(
                f"{given} is set but {missing} is not: set both, or neither to use a generated "
                "self-signed certificate"
            )
        return self


# --- [listen] ----------------------------------------------------------------------------------

_PORT_ONLY = re.compile(r"\d+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_address(text: str) -> tuple[str, int]:
    """Split ``"host:port"``, ``"[v6]:port"`` or ``":port"`` into ``(host, port)``.

    An empty host (``":5222"``) means every interface, IPv4 and IPv6, as asyncio's ``start_server``
    understands it. Port 0 asks the OS for a free port (tests). Raise ValueError with a hint.
    """
    text = text.strip()
    if _PORT_ONLY.fullmatch(text):
        raise ValueError(f"{text!r} has no host; write ':{text}' for every interface")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"{text!r} is not '[ipv6]:port'")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} has no port; expected 'host:port', e.g. '0.0.0.0:5222'")
        if ":" in host:
            raise ValueError(f"IPv6 addresses need brackets: '[{host}]:{port_text}'")
        if host and not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} in {text!r} is not a host name or IP address")
    if not _PORT_ONLY.fullmatch(port_text) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} in {text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def listen_hosts(host: str, port: int) -> list[str] | None:
    """The addresses a listener binds for ``host`` (None: every interface).

    ``localhost`` is loopback in both IP versions, whatever /etc/hosts says (many list only
    127.0.0.1): 127.0.0.1 and ::1 when the machine has IPv6. With port 0 (tests) only the first,
    so that one port number describes the listener.
    """
    if not host:
        return None
    if host.lower() == "localhost":
        hosts = ["127.0.0.1", "::1"] if _ipv6_loopback() else ["127.0.0.1"]
        return hosts[:1] if port == 0 else hosts
    return [host]


def _check_listen(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    parse_address(value)
    return value.strip()


#: A listening address option: ``"host:port"``, ``"[::1]:port"``, ``":port"``; ``""`` disables.
ListenAddress = Annotated[str | None, AfterValidator(_check_listen)]


def _check_service_domain(value: str) -> str:
    if not value:
        return value
    try:
        return prepare_domain(value)
    except JIDError as e:
        raise ValueError(f"{value!r} is not a valid domain name ({e})") from None


#: The domain of a service a module runs on its own host (``conference.…``, ``pubsub.…``); "" means
#: the module's default, made from the first of server.domains.
ServiceDomain = Annotated[str, AfterValidator(_check_service_domain)]


class ListenSection(_Section):
    """Where the server accepts connections. An empty string disables a listener."""

    c2s: ListenAddress = Field(
        default="localhost:5222",
        description="Client connections with STARTTLS (RFC 6120). 'host:port', '[ipv6]:port' or ':port' "
        '(every interface, IPv4 and IPv6); "" disables. A host name binds every address it resolves to: '
        "the default, 'localhost', is loopback only (127.0.0.1 and ::1); set ':5222' to serve clients "
        "on other machines.",
        examples=[":5222"],
    )
    c2s_tls: ListenAddress = Field(
        default="localhost:5223",
        description='Client connections with direct TLS (XEP-0368). Same syntax as c2s; "" disables.',
        examples=["[::]:5223"],
    )
    http: ListenAddress = Field(
        default="localhost:5280",
        description="Plain HTTP: WebSocket, BOSH, host-meta, the web chat at /chat, uploads. Same syntax "
        'as c2s; "" disables. Loopback only by default: serve it to other machines through a TLS '
        "reverse proxy, or use [[listen]] entries with kind = \"https\".",
        examples=["localhost:5280"],
    )

    @property
    def c2s_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the STARTTLS listener, or None when disabled."""
        return None if self.c2s is None else parse_address(self.c2s)

    @property
    def c2s_tls_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the direct-TLS listener, or None when disabled."""
        return None if self.c2s_tls is None else parse_address(self.c2s_tls)


#: What a ``[[listen]]`` entry accepts.
ListenerKind = Literal["c2s", "c2s_tls", "http", "https", "s2s", "component"]


class ListenEntry(_Section):
    """One ``[[listen]]`` entry: a listener of some kind on one address.

    ```toml
    [[listen]]
    kind = "c2s"          # STARTTLS; "c2s_tls": direct TLS (XEP-0368); "http"/"https": WebSocket, BOSH, …
    address = "[::]:5222"
    ```
    """

    kind: ListenerKind = Field(
        description="What is served: 'c2s' (client connections with STARTTLS), 'c2s_tls' (direct TLS, "
        "XEP-0368), 'http' or 'https' (WebSocket, BOSH, and the other HTTP services), 's2s' (other "
        "servers; also turns federation on), 'component' "
        "(external components, XEP-0114: keep it on a loopback or private address)."
    )
    address: str = Field(
        description="'host:port', '[ipv6]:port' or ':port' (every interface, IPv4 and IPv6). Port 0 picks a "
        "free port.",
        examples=["127.0.0.1:5222", "[::1]:5222", ":5280"],
    )
    backlog: int = Field(1024, ge=1, le=65535, description="Connections waiting to be accepted (listen(2)).")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        parse_address(value)
        return value.strip()

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_address(self.address)

    @property
    def name(self) -> str:
        """How logs and ``Server.addresses`` name it: the kind, numbered from the second one on."""
        return self.kind


# --- [c2s] -------------------------------------------------------------------------------------

#: Strongest first: the order is the server's preference as advertised in <mechanisms/>.
DEFAULT_SASL_MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-512-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "PLAIN",
)

ScramHash = Literal["SHA-1", "SHA-256", "SHA-512"]


def _scram_hash(mechanism: str) -> str | None:
    """ "SCRAM-SHA-256-PLUS" → "SHA-256"; None for a mechanism that is not SCRAM."""
    if not mechanism.startswith("SCRAM-"):
        return None
    return mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")


_ALL_HASHES: tuple[ScramHash, ...] = ("SHA-1", "SHA-256", "SHA-512")


class C2SSection(_Section):
    """Client-to-server session policy and limits."""

    require_encryption: bool = Field(
        default=True,
        description="Refuse authentication and stanzas before TLS is up (RFC 6120 §5.3.1).",
        examples=[True],
    )
    max_stanza_bytes: int = Field(
        default=256 * KiB,
        ge=1 * KiB,
        le=16 * MiB,
        description="Largest stanza a client may send; a bigger one closes the stream with "
        "<policy-violation/> (RFC 6120 §13.12).",
        examples=[524288],
    )
    max_auth_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed SASL attempts allowed on one connection before it is closed.",
        examples=[5],
    )
    auth_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Time a new connection has to authenticate before it is closed.",
        examples=[60.0],
    )
    idle_ping_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Send an XEP-0199 ping to a client that has been silent this long; 0 never pings.",
        examples=[120.0],
    )
    ping_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Close a session whose ping is still unanswered after this long.",
        examples=[30.0],
    )
    max_send_queue_bytes: int = Field(
        default=4 * MiB,
        ge=64 * KiB,
        le=1024 * MiB,
        description="A session whose unsent output exceeds this (a client that stopped reading) is closed.",
        examples=[8388608],
    )
    max_resources: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Sessions (resources) one account may have bound at once; one more is refused with "
        "<resource-constraint/> (RFC 6120 §7.6.2.1).",
        examples=[20],
    )
    max_backlog: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Stanzas from one client held while an earlier one waits for storage (RFC 6120 §10.1 "
        "keeps them in order); past this, the server stops reading that connection until it catches up.",
        examples=[256],
    )
    fast: bool = Field(
        default=True,
        description="Offer FAST token authentication (XEP-0484) in SASL2: a client logs back in with a "
        "token in one round trip instead of its password.",
        examples=[True],
    )
    scram_upgrade: bool = Field(
        default=True,
        description="Offer the SCRAM upgrade tasks of XEP-0480 in SASL2: a client logging in to an "
        "account that lacks keys for one of storage.scram_hashes (e.g. imported with SCRAM-SHA-1 only) "
        "hands over the salted password for that hash, and the account gains those keys.",
        examples=[True],
    )
    fast_token_days: float = Field(
        default=21.0,
        gt=0,
        le=3650,
        description="Lifetime of a FAST token, in days; a device offline for longer logs in with "
        "its password again.",
        examples=[21.0],
    )
    fast_rotate_days: float = Field(
        default=7.0,
        ge=0,
        le=3650,
        description="A FAST token used with less than this many days left is replaced by a new one in "
        "the <success/> (XEP-0484 §4.3); the old one stays valid until the new one is used.",
        examples=[7.0],
    )
    sasl_mechanisms: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SASL_MECHANISMS),
        min_length=1,
        description="SASL mechanisms offered, in order of preference. -PLUS variants need TLS channel "
        "binding; each SCRAM hash needs stored credentials (storage.scram_hashes). When unset, the "
        "default list keeps only the SCRAM hashes listed in storage.scram_hashes.",
        examples=[["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]],
    )

    @field_validator("sasl_mechanisms")
    @classmethod
    def _check_mechanisms(cls, value: list[str]) -> list[str]:
        seen: list[str] = []
        for name in value:
            upper = name.upper()  # RFC 4422 §3.1: mechanism names are upper case
            if upper not in DEFAULT_SASL_MECHANISMS:
                known = ", ".join(DEFAULT_SASL_MECHANISMS)
                raise ValueError(f"unknown SASL mechanism {name!r}; known: {known}")
            if upper in seen:
                raise ValueError(f"SASL mechanism {upper!r} is listed twice")
            seen.append(upper)
        return seen


# --- [http] ------------------------------------------------------------------------------------


def _check_network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network (e.g. '10.0.0.1' or '10.0.0.0/8')")


#: An IP address or CIDR network, normalised (``"10.0.0.1"`` → ``"10.0.0.1/32"``).
IPNetworkText = Annotated[str, AfterValidator(_check_network)]


class HttpSection(_Section):
    """HTTP services on the http/https listeners: WebSocket (RFC 7395), BOSH (XEP-0124/0206),
    host-meta (XEP-0156), and where a reverse proxy may report the client's address."""

    websocket: bool = Field(
        default=True,
        description="Serve XMPP over WebSocket (RFC 7395) at /xmpp-websocket.",
        examples=[True],
    )
    bosh: bool = Field(
        default=True,
        description="Serve XMPP over BOSH (XEP-0124/0206) at /http-bind.",
        examples=[True],
    )
    host_meta: bool = Field(
        default=True,
        description="Serve /.well-known/host-meta and host-meta.json (XEP-0156) advertising the WebSocket "
        "and BOSH URLs.",
        examples=[True],
    )
    webchat: bool = Field(
        default=True,
        description="Serve the web chat (Converse.js, installed by scripts/install-webchat) at /chat, "
        "set up for this server's WebSocket (BOSH as the fallback) and first domain.",
        examples=[False],
    )
    webchat_assets: ConfigPath | None = Field(
        default=None,
        description="The dist/ folder of a Converse.js you installed yourself (it must hold "
        "converse.min.js and converse.min.css). Unset: the one scripts/install-webchat installs in "
        "webchat/node_modules beside the source.",
        examples=["/usr/share/converse.js/dist"],
    )
    plain_loopback: bool = Field(
        default=True,
        description="Let WebSocket and BOSH clients on this machine (a loopback peer, no proxy hop) log in "
        "over plain HTTP although c2s.require_encryption is on: their traffic never leaves the host (what "
        "http://localhost:5280/chat of the embedded default uses). Turn it off if a plain-HTTP proxy on "
        "this machine forwards remote clients without being listed in trusted_proxies.",
        examples=[False],
    )
    public_url: str | None = Field(
        default=None,
        description="The base URL clients reach the HTTP services at, as host-meta advertises them "
        "(e.g. behind a reverse proxy). Unset: taken from each request (its Host header, and https when "
        "the request came over TLS or a trusted proxy says so).",
        examples=["https://xmpp.example.org"],
    )
    trusted_proxies: list[IPNetworkText] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose Forwarded / X-Forwarded-For / "
        "X-Forwarded-Proto headers are believed; from any other peer those headers are ignored.",
        examples=[["127.0.0.1", "10.0.0.0/8"]],
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins whose web pages may use BOSH and read host-meta (CORS "
        "Access-Control-Allow-Origin); [] sends no CORS headers. BOSH uses no cookies, so '*' is safe.",
        examples=[["https://chat.example.org"]],
    )
    websocket_max_message_bytes: int | None = Field(
        default=None,
        ge=1 * KiB,
        le=64 * MiB,
        description="Largest WebSocket message accepted; a bigger one closes the connection (1009). "
        "Unset: c2s.max_stanza_bytes plus 4 KiB, so an oversized stanza gets <policy-violation/> first.",
        examples=[300000],
    )
    max_request_bytes: int = Field(
        default=1 * MiB,
        ge=4 * KiB,
        le=256 * MiB,
        description="Largest HTTP request body (a BOSH <body/> with its stanzas); larger ones get 413.",
        examples=[2097152],
    )
    bosh_max_wait: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="Longest time, in seconds, a BOSH request is held waiting for data ('wait', "
        "XEP-0124 §7.1); a client asking for more gets this.",
        examples=[30],
    )
    bosh_max_hold: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Most BOSH requests held at once ('hold'); 'requests' is one more (XEP-0124 §7.1).",
        examples=[2],
    )
    bosh_inactivity: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="Seconds a BOSH session may go without any request before it ends (XEP-0124 §10).",
        examples=[90],
    )
    bosh_max_pause: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Longest pause, in seconds, a BOSH client may ask for ('maxpause', XEP-0124 §10); "
        "0 offers no pausing.",
        examples=[120],
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        scheme, sep, rest = value.partition("://")
        if scheme.lower() not in ("http", "https") or not sep or not rest.split("/", 1)[0]:
            raise ValueError(f"{value!r} is not an http:// or https:// URL (e.g. 'https://xmpp.example.org')")
        if "?" in rest or "#" in rest:
            raise ValueError(f"{value!r}: a base URL has no query or fragment")
        return value


# --- [storage] ---------------------------------------------------------------------------------

#: URL schemes the storage layer opens (a "+driver" suffix is allowed: sqlite+pysqlite://…).
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgres", "memory")


def redact_url(url: str) -> str:
    """The URL with its password (user:password@) masked, fit for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{authority}{slash}{path}"


class StorageSection(_Section):
    """The database holding accounts and all user data."""

    url: str | None = Field(
        default=None,
        description="Database URL: 'sqlite:///relative.db', 'sqlite:////absolute/path.db' or "
        "'postgresql://user:pass@host/db' (needs roost[postgres]) or 'memory://' (tests: nothing is "
        "kept). A relative SQLite path is resolved against the config file's directory. "
        "Unset: sqlite:///<data_dir>/roost.db.",
        examples=["postgresql://roost:secret@localhost/roost"],
    )
    scram_iterations: int = Field(
        default=4096,
        ge=4096,
        le=10_000_000,
        description="PBKDF2 iterations for newly stored passwords (RFC 7677 §4 asks for at least 4096). "
        "Existing passwords keep theirs until changed.",
        examples=[10000],
    )
    scram_hashes: list[ScramHash] = Field(
        default_factory=lambda: list(_ALL_HASHES),
        min_length=1,
        description="Hashes for which SCRAM credentials are stored when a password is set; a "
        "SCRAM-<hash> mechanism only works for users who have credentials for that hash.",
        examples=[["SHA-256", "SHA-512"]],
    )
    archive_queue: int = Field(
        default=100_000,
        ge=1000,
        description="Archive writes (offline messages, message archives) that may wait for the database. "
        "When it is full, offline storage waits and message archiving skips messages (logged), so "
        "that a slow or failing database never stalls delivery.",
        examples=[100_000],
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        scheme, sep, rest = value.partition("://")
        base = scheme.split("+", 1)[0].lower()
        if not sep or base not in STORAGE_SCHEMES:
            raise ValueError(
                f"{redact_url(value)!r} is not a supported storage URL: use sqlite:///path/to/roost.db, "
                "postgresql://user:password@host/database or memory://"
            )
        if base == "sqlite" and rest.startswith("/"):
            # sqlite:///relative.db → absolute against the config file's directory, like every other
            # path in the file (SQLAlchemy would take it relative to the current directory).
            path, query_sep, query = rest[1:].partition("?")
            if path and not path.startswith(("/", ":memory:", "file:")):
                absolute = _resolve_path(Path(path), info)
                value = f"{scheme}:///{absolute.as_posix()}{query_sep}{query}"
        return value

    @field_validator("scram_hashes")
    @classmethod
    def _no_duplicates(cls, value: list[ScramHash]) -> list[ScramHash]:
        for name in value:
            if value.count(name) > 1:
                raise ValueError(f"{name!r} is listed twice")
        return value


# --- [log] -------------------------------------------------------------------------------------


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class LogSection(_Section):
    """Logging. Stanza traces appear only at debug, with passwords and SASL data masked."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = Field(
        default="info",
        description="Least severe messages written.",
        examples=["debug"],
    )
    file: ConfigPath | None = Field(
        default=None,
        description="Append the log to this file instead of standard error. 'roost reload' (SIGHUP) "
        "reopens it, for log rotation.",
        examples=["/var/log/roost/roost.log"],
    )
    trace_bodies: bool = Field(
        default=False,
        description="At debug level, show message bodies, subjects and threads in stanza traces "
        "(otherwise only their length).",
        examples=[True],
    )


# --- [gc] --------------------------------------------------------------------------------------


class GcSection(_Section):
    """Python's cyclic garbage collector, tuned for a long-running server with many sessions.

    A full collection walks every live object and stops the event loop meanwhile: ~45 ns per object,
    so about a second at 10,000 sessions. With tuning on, the objects built at start-up are frozen
    (never scanned again), and every ``freeze_interval_seconds`` the objects that survived since the
    last interval are collected once and frozen too, so no collection scans more than a few seconds'
    worth of new objects. Frozen objects are still freed as soon as nothing refers to them; only
    reference cycles among them would stay (closed connections leave none).
    """

    tuning: bool = Field(
        default=True,
        description=(
            "Freeze start-up objects and, periodically, long-lived ones (off: Python's collector "
            "settings; malloc_trim_interval_seconds still applies)."
        ),
        examples=[False],
    )
    young_threshold: int = Field(
        default=5000,
        ge=100,
        le=1_000_000,
        description=(
            "Allocations between two collections of the youngest generation (Python's default is 700; "
            "each such collection scans only the young objects)."
        ),
        examples=[10000],
    )
    freeze_interval_seconds: float = Field(
        default=10.0,
        ge=0.5,
        le=3600,
        description=(
            "Longest time between two collections of what survived since the last one (each followed "
            "by a freeze); shorter means shorter pauses."
        ),
        examples=[5.0],
    )
    target_pause_ms: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Periodic collections aim to stay under this: while one takes longer, the interval "
            "halves (down to 0.25 s), and grows back to freeze_interval_seconds once they are short; "
            "more than 250 unfrozen objects per millisecond of it start a collection at once."
        ),
        examples=[5.0],
    )
    malloc_trim_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "How often memory freed inside the C allocator is handed back to the system "
            "(glibc malloc_trim, about a millisecond); 0: never. Under churn the heap otherwise keeps "
            "growing with free fragments."
        ),
        examples=[0],
    )
    log_pause_ms: float = Field(
        default=5.0,
        ge=0,
        description="Collections pausing at least this long are logged at debug (full ones always).",
        examples=[1.0],
    )


# --- [s2s] -------------------------------------------------------------------------------------


class S2SSection(_Section):
    """Federation with other servers. It is on when a ``[[listen]]`` entry has ``kind = "s2s"``."""

    ca_file: ConfigPath | None = Field(
        default=None,
        description="PEM file of the CA certificates peers' certificates are validated against "
        "(RFC 6125). Default: the system store.",
        examples=["/etc/ssl/certs/ca-certificates.crt"],
    )
    source_address: str | None = Field(
        default=None,
        description="Bind outgoing s2s connections to this local address.",
        examples=["192.0.2.10"],
    )
    require_encryption: bool = Field(
        default=True,
        description="Streams in both directions must use TLS before anything else (STARTTLS "
        "required, RFC 7590).",
        examples=[True],
    )
    secure_auth: bool = Field(
        default=False,
        description="Accept only peers whose certificate validates for their domain (SASL EXTERNAL, "
        "XEP-0178); no Server Dialback. Incoming streams then ask for the peer's certificate.",
        examples=[True],
    )
    bidi: bool = Field(
        default=True,
        description="Bidirectional streams (XEP-0288): offered to peers and asked for when they offer "
        "it, so one TCP connection carries stanzas both ways for an authenticated domain pair.",
        examples=[False],
    )
    blocklist: list[str] = Field(
        default_factory=list,
        description="Domains (and their subdomains) this server neither connects to nor accepts.",
        examples=[["spam.example"]],
    )
    rate_limit: float = Field(
        default=1000.0,
        gt=0,
        description="Stanzas per second accepted from each remote domain (over a burst of twice that); "
        "faster senders are slowed down (their connection stops being read).",
        examples=[50.0],
    )
    idle_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Outgoing links with no stanza for this long are closed.",
        examples=[300.0],
    )
    connect_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Time to connect to and authenticate with a remote server (and to have a dialback "
        "key verified) before queued stanzas bounce with remote-server-timeout.",
        examples=[30.0],
    )
    max_queue: int = Field(
        default=1000,
        ge=1,
        description="Stanzas held per remote domain while its link is being set up; more bounce "
        "with resource-constraint.",
        examples=[500],
    )


# --- [components."domain"] ---------------------------------------------------------------------


class ComponentSection(_Section):
    """External components (XEP-0114): one ``[components."domain"]`` table per component.

    ```toml
    [[listen]]
    kind = "component"
    address = "127.0.0.1:5347"
    [components."irc.example.org"]
    secret = "a long random string"
    ```
    The component owns its domain and every subdomain of it; it is listed in the disco items of
    every served domain.
    """

    secret: str = Field(
        min_length=1,
        description="The shared secret of the component's handshake (XEP-0114 §3).",
        examples=["a long random string"],
    )


# --- the whole file ----------------------------------------------------------------------------

#: Built-in sections, in documentation order.
CORE_SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSection,
    "tls": TLSSection,
    "listen": ListenSection,
    "c2s": C2SSection,
    "http": HttpSection,
    "storage": StorageSection,
    "log": LogSection,
    "gc": GcSection,
    "s2s": S2SSection,
    "components": ComponentSection,
}

_module_sections: dict[str, type[ModuleOptions]] = {}
_section_owners: dict[str, str] = {}
_section_summaries: dict[str, str] = {}
_M = TypeVar("_M", bound=ModuleOptions)


def register_section(
    name: str, model: type[BaseModel], *, declared_in: str | None = None, summary: str | None = None
) -> None:
    """Declare ``[name]`` as the options section of a feature module.

    Call it at import time next to the module's code. Every field must carry a description (it
    becomes the documentation). For the docs, ``declared_in`` names the Python module that owns the
    section (default: the model's module) and ``summary`` says what the module does (default: the
    model's docstring). Registering the same model twice is harmless; another
    model under a taken name is an error.
    """
    if not (isinstance(model, type) and issubclass(model, ModuleOptions)):
        raise TypeError(f"options of [{name}] must subclass roost.config.ModuleOptions")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"section name {name!r} must be lower_snake_case")
    if name in CORE_SECTIONS:
        raise ValueError(f"[{name}] is a built-in section")
    current = _module_sections.get(name)
    if current is not None and current is not model:
        raise ValueError(f"[{name}] is already registered by {_section_owners[name]}")
    undocumented = [f for f, info in model.model_fields.items() if not info.description]
    if undocumented:
        raise ValueError(f"[{name}] options without a description: {', '.join(undocumented)}")
    _module_sections[name] = model
    _section_owners[name] = declared_in or model.__module__
    if summary:
        _section_summaries[name] = summary
    else:
        _section_summaries.pop(name, None)


def unregister_section(name: str) -> None:
    """Forget a module section (module unload, tests)."""
    _module_sections.pop(name, None)
    _section_owners.pop(name, None)
    _section_summaries.pop(name, None)


def section_summary(name: str) -> str | None:
    """What the module declaring ``[name]`` does, as given to register_section (else None)."""
    return _section_summaries.get(name)


def section_owner(name: str) -> str | None:
    """The Python module that declared ``[name]`` (None if not registered)."""
    return _section_owners.get(name)


def registered_sections() -> dict[str, type[ModuleOptions]]:
    """A snapshot of the registered module sections."""
    return dict(_module_sections)


class Config(BaseModel):
    """The loaded configuration: core sections, module options, and the file it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ServerSection = Field(default_factory=lambda: ServerSection())
    tls: TLSSection = Field(default_factory=lambda: TLSSection())
    #: Either the ``[listen]`` shorthand table or a ``[[listen]]`` array of entries.
    listen: ListenSection | list[ListenEntry] = Field(default_factory=lambda: ListenSection())
    c2s: C2SSection = Field(default_factory=lambda: C2SSection())
    http: HttpSection = Field(default_factory=lambda: HttpSection())
    storage: StorageSection = Field(default_factory=lambda: StorageSection())
    log: LogSection = Field(default_factory=lambda: LogSection())
    gc: GcSection = Field(default_factory=lambda: GcSection())
    s2s: S2SSection = Field(default_factory=lambda: S2SSection())
    #: External components (XEP-0114) by domain: ``[components."irc.example.org"]``.
    components: dict[str, ComponentSection] = Field(default_factory=dict)
    #: Validated module sections present in the file (others get their defaults on demand).
    modules: dict[str, ModuleOptions] = Field(default_factory=dict)
    #: The file this came from; None when running on built-in defaults.
    path: Path | None = None
    #: Directory relative paths were resolved against (the file's, else the CWD at load time).
    base_dir: Path = Field(default_factory=Path.cwd)

    _defaults: dict[str, ModuleOptions] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _derived_defaults(self) -> Config:
        # Frozen model: derived values are set once, here, during validation.
        if self.storage.url is None:
            url = f"sqlite:///{(self.server.data_dir / 'roost.db').as_posix()}"
            object.__setattr__(self, "storage", self.storage.model_copy(update={"url": url}))
        if "sasl_mechanisms" not in self.c2s.model_fields_set:
            # The default list offers SCRAM only for the hashes whose credentials are stored, so
            # that narrowing storage.scram_hashes needs no second edit.
            hashes = set(self.storage.scram_hashes)
            offered = [m for m in self.c2s.sasl_mechanisms if _scram_hash(m) in (None, *hashes)]
            object.__setattr__(self, "c2s", self.c2s.model_copy(update={"sasl_mechanisms": offered}))
        return self

    @property
    def listeners(self) -> list[ListenEntry]:
        """Every listener, whichever form the file used (the shorthand's empty addresses left out)."""
        listen = self.listen
        if isinstance(listen, list):
            return list(listen)
        entries = []
        if listen.c2s is not None:
            entries.append(ListenEntry.model_validate({"kind": "c2s", "address": listen.c2s}))
        if listen.c2s_tls is not None:
            entries.append(ListenEntry.model_validate({"kind": "c2s_tls", "address": listen.c2s_tls}))
        if listen.http is not None:
            entries.append(ListenEntry.model_validate({"kind": "http", "address": listen.http}))
        return entries

    @property
    def federation(self) -> bool:
        """Whether federation is on: a ``[[listen]]`` entry of kind "s2s" exists."""
        return any(e.kind == "s2s" for e in self.listeners)

    @property
    def storage_url(self) -> str:
        """The database URL, with the default (SQLite in data_dir) filled in."""
        assert self.storage.url is not None  # set by _derived_defaults
        return self.storage.url

    @property
    def tls_dir(self) -> Path:
        """Where a self-signed certificate is generated when [tls] has no cert/key."""
        return self.server.data_dir / "tls"

    @overload
    def module_options(self, name: str) -> ModuleOptions: ...

    @overload
    def module_options(self, name: str, model: type[_M]) -> _M: ...

    def module_options(self, name: str, model: type[ModuleOptions] | None = None) -> ModuleOptions:
        """The options of module ``name``: from the file, else the registered model's defaults.

        Pass the module's Options class as ``model`` to get it back typed. KeyError if no module
        registered ``[name]``.
        """
        options = self.modules.get(name)
        if options is None:
            options = self._defaults.get(name)
        if options is None:
            registered = _module_sections.get(name)
            if registered is None:
                raise KeyError(f"no options section [{name}] is registered")
            options = registered.model_validate({}, context={BASE_DIR_CONTEXT: self.base_dir})
            self._defaults[name] = options
        if model is not None and not isinstance(options, model):
            raise TypeError(f"[{name}] options are {type(options).__name__}, not {model.__name__}")
        return options

    def consistency_problems(self) -> list[tuple[str, str]]:
        """Cross-section mistakes as ``(dotted key, message)``; the loader turns them into errors."""
        problems: list[tuple[str, str]] = []
        hashes = set(self.storage.scram_hashes)
        missing: dict[str, list[str]] = {}
        for mech in self.c2s.sasl_mechanisms:
            hash_name = _scram_hash(mech)
            if hash_name is not None and hash_name not in hashes:
                missing.setdefault(hash_name, []).append(mech)
        for hash_name, mechs in missing.items():
            problems.append(
                (
                    "c2s.sasl_mechanisms",
                    f"{' and '.join(mechs)} need{'s' if len(mechs) == 1 else ''} {hash_name!r} in "
                    "storage.scram_hashes (no user would have credentials for it); add the hash or "
                    "drop the mechanism",
                )
            )
        seen: dict[str, str] = {}
        for i, entry in enumerate(self.listeners):
            key = f"listen[{i}]" if isinstance(self.listen, list) else f"listen.{entry.kind}"
            if entry.address in seen and not entry.address.endswith(":0"):
                # Port 0: each listener gets its own free port.
                problems.append((key, f"same address as {seen[entry.address]} ({entry.address})"))
            seen.setdefault(entry.address, key)
        for domain in self.tls.domains:
            if not any(domain == d or domain.endswith("." + d) for d in self.server.domains):
                problems.append(
                    (f"tls.domains.{domain}", f"{domain} is not in [server] domains nor a subdomain of one")
                )
        for domain in self.components:
            key = f"components.{domain}"
            if domain in self.server.domains:
                problems.append((key, f"{domain} is in [server] domains; a component needs its own"))
            elif not domain or domain != domain.lower() or "@" in domain or "/" in domain:
                problems.append((key, "a component is named by its domain, lower case (irc.example.org)"))
        if self.components and not any(e.kind == "component" for e in self.listeners):
            problems.append(("components", 'components need a [[listen]] entry with kind = "component"'))
        return problems
