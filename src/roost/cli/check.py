"""``roost check``: everything that would make ``roost run`` fail or be unsafe, found before it starts.

The configuration file itself, the TLS certificate and key (domains covered, expiry, key matches, a
warning within 14 days of expiry), the data directory and its permissions, a server already running
on it, listen addresses (ports already taken) and the storage URL. Each problem comes with a fix.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.cli.main import EXIT_FAILED, EXIT_OK, _sqlite_path
from roost.config import Config, ConfigError
from roost.config.schema import redact_url

#: A certificate expiring sooner than this gets a warning.
EXPIRY_WARNING_DAYS = 14


@dataclass
class _Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, message: str, fix: str | None = None) -> None:
        self.problems.append(message if fix is None else f"{message}\n    fix: {fix}")

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def cmd_check(args: argparse.Namespace) -> int:
    from roost.cli.main import _load

    try:
        config = _load(args)
    except ConfigError as e:
        for config_problem in e.problems:
            print(f"problem: {config_problem}")
        print(f"{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''} in the configuration")
        return EXIT_FAILED
    if getattr(args, "what", None) == "federation":
        return _check_federation(config, args.domain)
    report = _Report()
    _check_tls(config, report)
    _check_writable_dir(config.server.data_dir, "server.data_dir", report)
    _check_permissions(config, report)
    running = _check_running(config, report)
    _check_listeners(config, report, running=running)
    _check_storage(config, report)
    if config.log.file is not None:
        _check_writable_dir(config.log.file.parent, "log.file's directory", report)
    _check_policy(config, report)
    _check_webchat(config, report)

    print(f"config: {config.path if config.path is not None else 'built-in defaults (no file)'}")
    for note in report.notes:
        print(f"note: {note}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    for problem in report.problems:
        print(f"problem: {problem}")
    if report.problems:
        count = len(report.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found")
        return EXIT_FAILED
    print(f"config OK: {_summary(config)}")
    return EXIT_OK


def _check_federation(config: Config, domain: str | None) -> int:
    """``roost check federation DOMAIN``: DNS, connection, TLS, certificate, authentication."""
    from roost.cli.main import EXIT_USAGE, _error
    from roost.s2s.diagnose import diagnose

    if not domain:
        _error("check federation needs the remote domain: roost check federation example.org")
        return EXIT_USAGE
    steps = asyncio.run(diagnose(domain.strip().lower(), config))
    for step in steps:
        print(f"{'ok' if step.ok else 'FAILED'}: {step.name}: {step.detail}")
        if step.fix and (not step.ok or step.name == "authentication"):
            print(f"    {'fix' if not step.ok else 'note'}: {step.fix}")
    if all(step.ok for step in steps):
        print(f"federation with {domain} looks possible")
        return EXIT_OK
    return EXIT_FAILED


def _check_tls(config: Config, report: _Report) -> None:
    from roost.transports.certificates import default_domains
    from roost.transports.tls import CERT_FILE_NAME, KEY_FILE_NAME, certificate_problems, expires_within

    domains = default_domains(config)
    for domain, entry in config.tls.domains.items():
        for message in certificate_problems(entry.cert, entry.key, [domain]):
            report.problem(f"[tls.domains.{domain!r}]: {message}")
    if config.tls.cert is not None and config.tls.key is not None:
        for message in certificate_problems(config.tls.cert, config.tls.key, domains):
            report.problem(message)
        soon = expires_within(config.tls.cert, EXPIRY_WARNING_DAYS)
        if soon is not None:
            report.warning(
                f"TLS certificate {config.tls.cert} expires on {soon:%Y-%m-%d %H:%M} UTC, within "
                f"{EXPIRY_WARNING_DAYS} days: renew it (certbot renew), then 'roost reload'"
            )
        return
    cert, key = config.tls_dir / CERT_FILE_NAME, config.tls_dir / KEY_FILE_NAME
    if cert.exists() and not certificate_problems(cert, key, domains):
        report.notes.append(f"using the self-signed certificate {cert} (clients will warn)")
    else:
        report.notes.append(
            f"no [tls] cert/key: a self-signed certificate for {', '.join(domains)} will be generated in "
            f"{config.tls_dir} (clients will warn; set [tls] cert and key for production)"
        )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_writable_dir(directory: Path, what: str, report: _Report) -> None:
    if directory.exists():
        if not directory.is_dir():
            report.problem(f"{what} {directory} is not a directory", "point it at a directory")
        elif not os.access(directory, os.W_OK | os.X_OK):
            report.problem(
                f"{what} {directory} is not writable by this user",
                f"chown it to the user running Roost, or choose another {what}",
            )
        return
    existing = _nearest_existing(directory)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        report.problem(
            f"{what} {directory} does not exist and cannot be created ({existing} is not writable)",
            f"create it (mkdir -p {directory}) and give it to the user running Roost",
        )
    else:
        report.notes.append(f"{what} {directory} will be created")


def _check_listeners(config: Config, report: _Report, *, running: bool = False) -> None:
    entries = config.listeners
    table = not isinstance(config.listen, list)
    addresses: list[tuple[str, tuple[str, int] | None]] = [
        (f"listen.{e.kind}" if table else f"listen[{i}] ({e.kind})", e.host_port)
        for i, e in enumerate(entries)
    ]
    if not any(e.kind in ("c2s", "c2s_tls", "http", "https") for e in entries):
        report.problem(
            "every client listener is disabled (no c2s, c2s_tls, http or https listener)",
            'set listen.c2s = ":5222", or add a [[listen]] entry with kind = "c2s"',
        )
    loopback = {"localhost", "127.0.0.1", "::1"}
    public = [d for d in config.server.domains if d != "localhost"]
    if public and all(a is None or a[0] in loopback for _, a in addresses):
        report.warning(
            "the client listeners bind loopback only (the default): clients on other machines cannot "
            'connect; set [listen] c2s = ":5222" and c2s_tls = ":5223" to serve them'
        )
    getuid: Callable[[], int] | None = getattr(os, "getuid", None)
    for key, address in addresses:
        if address is not None and 0 < address[1] < 1024 and getuid is not None and getuid() != 0:
            report.warning(
                f"{key} uses port {address[1]}: binding a port below 1024 needs root or CAP_NET_BIND_SERVICE"
            )
        if address is not None and not running:
            busy = _port_in_use(*address)
            if busy:
                report.problem(
                    f"{key} {address[0] or '*'}:{address[1]} is already in use ({busy})",
                    "stop what listens there (ss -ltnp shows it), or choose another port",
                )


def _check_storage(config: Config, report: _Report) -> None:
    url = config.storage_url
    scheme = url.split(":", 1)[0].lower()
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        path = _sqlite_path(url)
        if path is not None and path.parent != config.server.data_dir:
            _check_writable_dir(path.parent, "the SQLite database directory", report)
    elif base in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("asyncpg") is None:
            report.problem(
                "storage.url is a PostgreSQL URL but the asyncpg driver is not installed",
                "pip install 'roost[postgres]'",
            )
    elif base == "memory":
        report.warning("storage.url is memory://: every account and message is lost when the server stops")
    else:
        report.problem(
            f"storage.url scheme {scheme!r} is not supported",
            "use sqlite:///path/to/roost.db or postgresql://user:password@host/database",
        )


def _check_policy(config: Config, report: _Report) -> None:
    if not config.c2s.require_encryption:
        report.warning("c2s.require_encryption is false: clients may log in over an unencrypted connection")
    for admin in config.server.admins:
        domain = admin.rpartition("@")[2]
        if domain not in config.server.domains:
            report.warning(f"admin {admin} is not on a domain this server hosts")
    _check_federation_config(config, report)


def _check_webchat(config: Config, report: _Report) -> None:
    from roost.transports.webchat import INSTALLED_ASSETS, missing_assets

    if not config.http.webchat or not any(e.kind in ("http", "https") for e in config.listeners):
        return
    folder = config.http.webchat_assets or INSTALLED_ASSETS
    missing = missing_assets(folder)
    if missing:
        report.warning(
            f"the web chat (/chat) is not installed: {folder} lacks {', '.join(missing)}; run "
            "scripts/install-webchat, or set [http] webchat_assets (or webchat = false)"
        )


def _check_federation_config(config: Config, report: _Report) -> None:
    """Federation and components: settings that work but are probably not what was meant."""
    for entry in config.listeners:
        host = entry.host_port[0]
        if entry.kind == "component" and host not in ("127.0.0.1", "::1", "localhost"):
            report.warning(
                f"the component listener on {entry.address} is not on loopback: XEP-0114 has no encryption, "
                "keep it on 127.0.0.1 or a private network"
            )
    if not config.federation:
        return
    if config.tls.cert is None:
        report.warning(
            "federation is on with a generated self-signed certificate: other servers cannot validate it, "
            "so only dialback works (and servers with secure_auth refuse you); set [tls] cert and key"
        )
    if not config.s2s.require_encryption:
        report.warning("s2s.require_encryption is false: other servers may talk to this one unencrypted")
    if config.s2s.ca_file is not None and not config.s2s.ca_file.is_file():
        report.problem(
            f"s2s.ca_file {config.s2s.ca_file} does not exist", "point it at a PEM file of CA certificates"
        )


def _summary(config: Config) -> str:
    domains = config.server.domains
    parts = [f"{len(domains)} domain{'s' if len(domains) != 1 else ''} ({', '.join(domains)})"]
    names = {"c2s": "c2s", "c2s_tls": "direct TLS", "http": "HTTP", "https": "HTTPS"}
    for entry in config.listeners:
        parts.append(f"{names.get(entry.kind, entry.kind)} on {entry.address}")
    parts.append(f"storage {redact_url(config.storage_url)}")
    parts.append("TLS " + ("from " + str(config.tls.cert) if config.tls.cert else "self-signed"))
    return ", ".join(parts)


def _check_running(config: Config, report: _Report) -> bool:
    """Whether a server already runs on the data directory (its control socket answers)."""
    import asyncio

    from roost.core import control

    path = control.socket_path(config.server.data_dir)
    try:
        reply = asyncio.run(control.request(path, {"op": "ping"}, timeout=5))
    except OSError:
        reply = {}
    if reply is None:
        return False
    report.notes.append(
        f"a Roost server is already running on {config.server.data_dir} (its control socket {path} "
        "answers): 'roost run' would refuse to start a second one; 'roost reload' applies this "
        "configuration to the running one"
    )
    return True


def _port_in_use(host: str, port: int) -> str:
    """Why binding ``host:port`` would fail now ("" when it would not); port 0 is always free."""
    if port == 0:
        return ""
    from roost.config.schema import listen_hosts

    infos = []
    bound = listen_hosts(host, port)
    names: list[str | None] = [None] if bound is None else list(bound)
    try:
        for name in names:
            infos += socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"{host!r} does not resolve: {e.strerror}"
    for family, type_, proto, _, sockaddr in infos:
        address = (str(sockaddr[0]), int(sockaddr[1]))
        with socket.socket(family, type_, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return f"another program listens on {address[0]}:{address[1]}"
                if e.errno == errno.EADDRNOTAVAIL:
                    return f"{address[0]} is not an address of this machine"
                if e.errno == errno.EACCES:
                    return ""  # reported above (ports below 1024)
                return f"{address[0]}:{address[1]}: {e.strerror}"
    return ""


def _check_permissions(config: Config, report: _Report) -> None:
    """Secrets readable by other users: the database (SCRAM keys), the server secret, the TLS key."""
    data_dir = config.server.data_dir
    candidates = [data_dir / "server.secret", data_dir / "tls" / "roost.key"]
    db = _sqlite_path(config.storage_url) if config.storage_url.startswith("sqlite") else None
    if db is not None:
        candidates.append(db)
    if config.tls.key is not None:
        candidates.append(config.tls.key)
    for path in candidates:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o007:
            report.warning(
                f"{path} can be read by every user on this machine (mode {mode:o}): chmod 600 {path}"
            )
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError:
        return
    if mode & 0o007:
        report.warning(
            f"server.data_dir {data_dir} is open to every user (mode {mode:o}): chmod 700 {data_dir}"
        )
