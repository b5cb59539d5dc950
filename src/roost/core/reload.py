"""Reloading a running server (SIGHUP, `roost reload`): config, certificates, logs; no dropped sessions.

What a reload does, in an order that keeps a bad change from changing anything:

1. Read and validate the configuration file again, and load the certificate it names (or the
   self-signed one for the new domain list). Any error here: nothing changes, the error is reported.
2. Reopen the log file (logrotate moved it) and apply a new ``[log] level``.
3. Swap the TLS context: new connections get the new certificate, established ones keep theirs.
4. Add and remove domains: a removed domain's sessions end with ``<host-gone/>`` (RFC 6120 §4.9.3.6).
5. Load, unload and reload modules whose ``enabled`` flag or options changed, on every domain.
6. Update the live c2s settings (domains offered, limits, SASL mechanisms) for new streams.

What cannot change in a running process (listener addresses, ``data_dir``, the storage URL) keeps its
old value and is reported: the log says it and ``roost reload`` prints it.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.config.loader import ConfigError, load_config
from roost.config.schema import Config

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.transports.certificates import Certificates

log = logging.getLogger("roost.reload")

#: Modules whose options cannot be applied by unloading and loading them again without harm; a change
#: of their options is reported and waits for a restart. (MUC: rooms would forget their occupants.)
RESTART_TO_CHANGE = frozenset({"muc"})


@dataclass
class ReloadReport:
    """What a reload did, and what it could not do."""

    ok: bool = True
    error: str = ""
    changed: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "changed": self.changed,
            "needs_restart": self.needs_restart,
            "failed": self.failed,
        }

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"reload refused, nothing changed: {self.error}"]
        out = [f"changed: {c}" for c in self.changed] or ["nothing changed"]
        out += [f"needs a restart: {n}" for n in self.needs_restart]
        out += [f"failed: {f}" for f in self.failed]
        return out


def _overrides(server: Server) -> dict[str, str]:
    """The ``--set``/``--log-level`` overrides the server was started with (applied again)."""
    found = getattr(server, "config_overrides", None)
    return dict(found) if isinstance(found, dict) else {}


def _load_tls(config: Config, data_dir: Path) -> tuple[ssl.SSLContext, bytes, Certificates]:
    from roost.transports import tls
    from roost.transports.certificates import default_domains, load_certificates

    if config.tls.cert is not None and config.tls.key is not None:
        cert, key = config.tls.cert, config.tls.key
        problems = tls.certificate_problems(cert, key, default_domains(config))
        if problems:
            raise ValueError("; ".join(problems))
    else:
        cert, key = tls.ensure_certificate(data_dir, config.server.domains)
    certificates = load_certificates(config, (cert, key))
    return certificates.server_context(), tls.certificate_der(cert), certificates


def _listeners(entries: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{kind} {address}" for kind, address in entries) or "none"


def _effective(old: Config, new: Config, report: ReloadReport) -> Config:
    """``new`` with what cannot change live kept at its running value (and reported)."""
    keep: dict[str, Any] = {}
    running = [(e.kind, e.address) for e in old.listeners]
    configured = [(e.kind, e.address) for e in new.listeners]
    if running != configured:
        report.needs_restart.append(
            f"[listen] addresses (running: {_listeners(running)}; configured: {_listeners(configured)})"
        )
        keep["listen"] = old.listen
    if new.storage_url != old.storage_url:
        report.needs_restart.append("[storage] url (the database stays the one opened at start)")
        keep["storage"] = old.storage
    server = new.server
    if server.data_dir != old.server.data_dir:
        report.needs_restart.append(f"[server] data_dir (stays {old.server.data_dir})")
        server = server.model_copy(update={"data_dir": old.server.data_dir})
        keep["server"] = server
    if not keep:
        return new
    return new.model_copy(update=keep)


async def reload(server: Server) -> ReloadReport:
    """Apply the configuration file again; never raises for a bad file (the report says why)."""
    report = ReloadReport()
    old = server.config
    log.info("reloading configuration from %s", old.path or "built-in defaults")
    try:
        new = load_config(old.path, overrides=_overrides(server))
        new = _effective(old, new, report)
        context, der, certificates = _load_tls(new, old.server.data_dir)
    except ConfigError as e:
        report.ok, report.error = False, str(e)
    except (OSError, ValueError, ssl.SSLError) as e:
        report.ok, report.error = False, f"TLS certificate: {e}"
    if not report.ok:
        log.error("reload refused, nothing changed: %s", report.error)
        return report

    _reopen_logs(old, new, report)
    server.tls_context = context
    server.certificates = certificates
    if der != server.certificate_der:
        report.changed.append("TLS certificate (new connections get it)")
    server.certificate_der = der
    server.config = new

    await _apply_domains(server, old, new, report)
    await _apply_modules(server, new, report, old.log)
    _apply_c2s(server, old, new, report)
    if old.server.admins != new.server.admins:
        report.changed.append("[server] admins")
    for line in report.lines():
        (log.warning if line.startswith(("needs", "failed")) else log.info)("reload: %s", line)
    return report


def _reopen_logs(old: Config, new: Config, report: ReloadReport) -> None:
    from roost.util.logging import setup_logging

    try:
        setup_logging(new.log.level, new.log.file)
    except OSError as e:
        report.failed.append(f"log file {new.log.file}: {e}")
        setup_logging(old.log.level, None)
        return
    if new.log != old.log:
        report.changed.append(f"[log] level={new.log.level} file={new.log.file or 'stderr'}")


async def _apply_domains(server: Server, old: Config, new: Config, report: ReloadReport) -> None:
    from roost.core.host import Host
    from roost.stanza.errors import StreamError

    old_domains, new_domains = set(old.server.domains), set(new.server.domains)
    for domain in [d for d in old.server.domains if d not in new_domains]:
        host = server.hosts.get(domain)
        if host is None:
            continue
        ended = 0
        for session in list(server.sessions):
            if session.jid.domain == domain:
                # RFC 6120 §4.9.3.6: the domain is no longer serviced by the server.
                session.close(StreamError("host-gone", "this domain is no longer served"), reason="host-gone")
                ended += 1
        try:
            await host.modules.unload_all()
        except Exception as e:
            log.exception("reload: unloading the modules of %s failed", domain)
            report.failed.append(f"removing {domain}: {e}")
        server.hosts.pop(domain, None)
        report.changed.append(f"domain {domain} removed ({ended} sessions ended)")
    for domain in [d for d in new.server.domains if d not in old_domains]:
        if domain in server.hosts:  # e.g. a service domain of a module
            report.failed.append(f"adding {domain}: it is already served (by a module?)")
            continue
        host = Host(server, domain)
        server.hosts[domain] = host
        server.account_removal.attach(host)
        report.changed.append(f"domain {domain} added")
    try:
        from roost.modules.muc.module import find_runtime

        runtime = find_runtime(server)
        if runtime is not None:
            runtime.service.served_domains = frozenset(new.server.domains)
    except ImportError:
        pass


async def _apply_modules(server: Server, new: Config, report: ReloadReport, old_log: Any = None) -> None:
    from roost.modules import all_modules

    classes = all_modules()
    for domain, host in list(server.hosts.items()):
        if not host.has_accounts:
            continue
        for cls in classes:
            options = new.module_options(cls.name)
            loaded = host.modules.loaded.get(cls.name)
            try:
                if loaded is None and options.enabled:
                    await host.modules.load(cls, options)
                    report.changed.append(f"module {cls.name} loaded on {domain}")
                elif loaded is not None and not options.enabled:
                    await host.modules.unload(cls.name)
                    report.changed.append(f"module {cls.name} unloaded from {domain}")
                elif loaded is not None and cls.name == "trace" and new.log != old_log:
                    # Its filters exist only while debug logging is on: it follows [log].
                    await host.modules.unload(cls.name)
                    await host.modules.load(cls, options)
                elif loaded is not None and loaded.options != options:
                    if cls.name in RESTART_TO_CHANGE:
                        note = f"[{cls.name}] options"
                        if note not in report.needs_restart:
                            report.needs_restart.append(note)
                        continue
                    await host.modules.unload(cls.name)
                    await host.modules.load(cls, options)
                    report.changed.append(f"module {cls.name} reloaded on {domain} with new options")
            except Exception as e:
                log.exception("reload: module %s on %s", cls.name, domain)
                report.failed.append(f"module {cls.name} on {domain}: {e}")


def _apply_c2s(server: Server, old: Config, new: Config, report: ReloadReport) -> None:
    """Update the settings object the listeners hand to new streams (shared, changed in place)."""
    settings = getattr(server, "listen_settings", None)
    fresh = server.c2s_settings()
    if settings is not None:
        for name in (
            "domains",
            "require_encryption",
            "mechanisms",
            "max_stanza_bytes",
            "max_auth_failures",
            "idle_seconds",
        ):
            if hasattr(settings, name):
                setattr(settings, name, getattr(fresh, name))
        # Cached serialized features depend on the mechanisms and domains.
        cache = getattr(settings, "features_cache", None)
        if isinstance(cache, dict):
            cache.clear()
        if hasattr(settings, "bound_features"):
            settings.bound_features = None
    if new.c2s != old.c2s:
        report.changed.append("[c2s] settings (for new connections)")


def reload_in_background(server: Server) -> None:
    """SIGHUP: reload as a server task (a signal handler cannot await)."""
    started = time.monotonic()

    async def run() -> None:
        report = await reload(server)
        log.info(
            "reload finished in %.2f s (%s)", time.monotonic() - started, "ok" if report.ok else "refused"
        )

    server.spawn(run(), "reload")
