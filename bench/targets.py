"""Servers under test: start each in its own temp dir on free loopback ports, pinned to one CPU.

Each target gets the same self-signed certificate, the same accounts (``user1``..``userN``, one password)
and, when a scenario needs them, the same mutual rosters. Configurations follow each server's packaged
defaults, minus what would throttle or skew a loopback benchmark (rate limits/shapers, fail2ban-style
modules, s2s, extra listeners); logging is at warning level everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

from roost.stream.sasl.scram import ScramCredentials, derive_credentials, salted_password

from .certs import CertFiles
from .xmppload.client import Account, CredentialCache, Endpoint

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "localhost"
MUC_DOMAIN = "conference.localhost"
PUBSUB_DOMAIN = "pubsub.localhost"  # the PubSub service (XEP-0060) on every server
# MUC rooms as configured on every server (see each config): history kept, most occupants allowed.
MUC_HISTORY = 20
MUC_MAX_OCCUPANTS = 1000
ROSTER_GROUP = "bench"  # every provisioned contact: name = localpart, this one group, subscription both

Log = Callable[[str], None]


@dataclass(slots=True)
class Provisioning:
    """What a scenario needs on the server before it starts."""

    accounts: list[Account]
    # user -> contacts (localparts); every pair must be listed both ways: subscription "both" is written.
    rosters: dict[str, list[str]] = field(default_factory=dict)
    # Also serve XMPP over WebSocket (RFC 7395) at wss://127.0.0.1:<ws_port>/xmpp-websocket.
    websocket: bool = False


@dataclass(frozen=True, slots=True)
class S2SSetup:
    """One instance's part in an s2s run (bench/scenarios/s2s.py): its s2s port, where its peers listen
    and how links authenticate.

    ``external``: every instance trusts the run's CA (which issued every instance's certificate) and
    refuses dialback, so only SASL EXTERNAL (XEP-0178) can authenticate a link. ``dialback``: the CA is
    trusted by nobody (the system store is used), so only Server Dialback (XEP-0220) can.
    """

    port: int
    peers: dict[str, int]  # remote domain -> its s2s port on 127.0.0.1
    auth: str  # "external" or "dialback"
    ca_file: Path
    dns_port: int  # the run's DNS server on 127.0.0.1 (bench/dnsserver.py): SRV records for the peers

    @property
    def external(self) -> bool:
        return self.auth == "external"


def _prosody_dir(domain: str) -> str:
    """Prosody's data directory name for a host (it escapes dots)."""
    return domain.replace(".", "%2e")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def package_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def wait_for_port(host: str, port: int, time_limit: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + time_limit
    while True:
        if not alive():
            raise RuntimeError("server process exited during start-up")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts connections on {host}:{port} after {time_limit:.0f}s")
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Target(ABC):
    """One server instance under test."""

    name: ClassVar[str]
    package: ClassVar[str | None] = None  # Debian package, for the version shown in results

    def __init__(self, workdir: Path, certs: CertFiles, cpu: int, log: Log) -> None:
        self.dir = workdir
        self.certs = certs
        self.cpu = cpu
        self.log = log
        self.domain = DOMAIN
        #: Federation settings in an s2s run (None: no s2s, as in every other scenario).
        self.s2s: S2SSetup | None = None
        self.port = free_port()
        self.ws_port = free_port()  # HTTPS listener for WebSocket, when a scenario asks for it
        self.proc: asyncio.subprocess.Process | None = None
        self._out: list[BinaryIO] = []
        #: Message archiving on (``bench/run --mam``): Roost's [mam], Prosody's mod_mam on SQLite.
        self.mam = False

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, self.domain)

    @property
    def pid(self) -> int:
        """The process whose tree is measured."""
        assert self.proc is not None
        return self.proc.pid

    def version(self) -> str:
        return package_version(self.package) if self.package else "unknown"

    @abstractmethod
    async def start(self, prov: Provisioning) -> None:
        """Provision, start and wait until the server accepts connections."""

    def seed_credentials(self, creds: CredentialCache) -> None:  # noqa: B027 - optional hook
        """Pre-fill salted passwords when the target chose the salts itself (optional)."""

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            self.log(f"{self.name}: did not stop within 30s after SIGTERM; killing it")
            proc.kill()
            await proc.wait()

    async def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` pinned to our CPU; stdout/stderr go to files in the work dir."""
        out, err = self._open_logs()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        pin = ("taskset", "-c", str(self.cpu)) if self.cpu >= 0 else ()  # -1: --no-pin
        self.proc = await asyncio.create_subprocess_exec(
            *pin, *argv,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env, cwd=self.dir,
            start_new_session=True,
        )  # fmt: skip

    def _open_logs(self) -> tuple[BinaryIO, BinaryIO]:
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the process
        err = open(self.dir / "stderr.log", "ab")  # noqa: SIM115
        self._out = [out, err]
        return out, err

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail_logs(self, lines: int = 20) -> str:
        chunks = []
        for path in sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("*.err")):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                chunks.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(chunks)

    def close_files(self) -> None:
        for f in self._out:
            with contextlib.suppress(Exception):
                f.close()


# --------------------------------------------------------------------------------------------------
# Prosody


def _lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True, slots=True)
class _ProsodyS2S:
    port: str
    modules: str
    disabled: str
    options: str
    cafile: str


class ProsodyTarget(Target):
    """Prosody 0.12 in the foreground with its own config, internal_hashed accounts written directly."""

    name = "prosody"
    package = "prosody"
    ITERATIONS = 10000  # Prosody's default_iteration_count

    def __init__(self, workdir: Path, certs: CertFiles, cpu: int, log: Log) -> None:
        super().__init__(workdir, certs, cpu, log)
        self.data = workdir / "data"
        self.config = workdir / "prosody.cfg.lua"
        # One salt for every bench account: the server's work per login is the same, and the
        # generator derives the salted password once instead of once per user.
        self.salt = secrets.token_hex(16)
        self._creds: dict[str, tuple[ScramCredentials, bytes]] = {}
        self._accounts: list[Account] = []

    def _credentials(self, password: str) -> tuple[ScramCredentials, bytes]:
        """Stored keys and salted password, once per distinct password (Roost's own SCRAM code).

        Roost prepares passwords with PRECIS OpaqueString, Prosody with SASLprep; for the ASCII bench
        passwords both leave them unchanged.
        """
        if password not in self._creds:
            salt = self.salt.encode()
            self._creds[password] = (
                derive_credentials(password, "SHA-1", self.ITERATIONS, salt),
                salted_password(password, "SHA-1", salt, self.ITERATIONS),
            )
        return self._creds[password]

    def write_config(self, websocket: bool = False) -> None:
        d = self.dir
        https_ports = f"{{ {self.ws_port} }}" if websocket else "{}"
        websocket_module = '"websocket"; ' if websocket else ""
        s2s = self.s2s_settings()
        mam_module = '"mam"; ' if self.mam else ""
        # mod_mam on mod_storage_sql (SQLite, lua-dbi-sqlite3); everything else stays on files.
        storage = (
            'storage = { archive = "sql" }\n'
            f'sql = {{ driver = "SQLite3"; database = {_lua_str(str(self.data / "prosody.sqlite"))} }}\n'
            'archive_expires_after = "never"\ndefault_archive_policy = true'
            if self.mam
            else 'storage = "internal"'
        )
        text = f"""-- generated by bench/targets.py for one benchmark run
run_as_root = true
pidfile = {_lua_str(str(d / "prosody.pid"))}
data_path = {_lua_str(str(self.data))}
plugin_paths = {{ {_lua_str(str(d / "plugins"))} }}
network_settings = {{ nagle = false }}
admins = {{}}
log = {{ warn = {_lua_str(str(d / "prosody.log"))} }}

c2s_ports = {{ {self.port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{ {s2s.port} }}
s2s_interfaces = {{ "127.0.0.1" }}
s2s_direct_tls_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {https_ports}
https_interfaces = {{ "127.0.0.1" }}
https_ssl = {{ certificate = {_lua_str(str(self.certs.cert))}; key = {_lua_str(str(self.certs.key))} }}

-- The Debian defaults, minus limits (rate limiting), dialback/s2s, registration and the admin socket.
modules_enabled = {{
  "disco"; "roster"; "saslauth"; "tls"; "blocklist"; "bookmarks"; "carbons"; "pep"; "private";
  "smacks"; "vcard4"; "vcard_legacy"; "csi_simple"; "ping"; "time"; "uptime"; "version"; "posix";
  {websocket_module}{mam_module}{s2s.modules}
}}
modules_disabled = {{ {s2s.disabled} }}
{s2s.options}
authentication = "internal_hashed"
{storage}
c2s_require_encryption = true
allow_registration = false
certificates = {_lua_str(str(self.certs.cert.parent))}
ssl = {{ certificate = {_lua_str(str(self.certs.cert))}; key = {_lua_str(str(self.certs.key))}{s2s.cafile} }}

VirtualHost "{self.domain}"

-- The same kind of room on every server: public, temporary (not stored, not archived or logged), no
-- occupant limit below 1000, 20 messages of in-memory history, locked until configured (XEP-0045 §10.1).
Component "conference.{self.domain}" "muc"
  muc_room_default_public = true
  muc_room_default_persistent = false
  muc_room_default_history_length = {MUC_HISTORY}
  muc_room_locking = true

-- The PubSub service (mod_pubsub, its defaults). Only admins may create nodes on Prosody's: user1 is
-- one here, so that the pep scenario can create its node.
Component "{PUBSUB_DOMAIN}" "pubsub"
  admins = {{ "user1@{self.domain}" }}
"""
        self.config.write_text(text)

    def s2s_settings(self) -> _ProsodyS2S:
        """The config's s2s parts: off, or an s2s port with test domains mapped to loopback ports."""
        s2s = self.s2s
        if s2s is None:
            return _ProsodyS2S(port="", modules="", disabled='"s2s"', options="", cafile="")
        from tests.interop.peers import HOSTS_MODULE  # the interop tests' resolver module

        plugins = self.dir / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "mod_roost_test_hosts.lua").write_text(HOSTS_MODULE)
        mapping = "".join(f"[{_lua_str(d)}] = {p}; " for d, p in s2s.peers.items())
        # Debian's list has dialback; "external" leaves it out, so certificates are the only way in.
        # s2s_bidi (XEP-0288): one link carries both directions, as Roost's can (ejabberd 23.01's cannot).
        modules = '"roost_test_hosts"; "s2s_bidi"; ' + ("" if s2s.external else '"dialback"; ')
        options = (
            f"roost_test_hosts = {{ {mapping}}}\n"
            "s2s_require_encryption = true\n"
            f"s2s_secure_auth = {'true' if s2s.external else 'false'}\n"
            "use_ipv6 = false\n"
        )
        cafile = f"; cafile = {_lua_str(str(s2s.ca_file))}" if s2s.external else ""
        return _ProsodyS2S(str(s2s.port), modules, "", options, cafile)

    def write_accounts(self, prov: Provisioning) -> None:
        """Accounts and rosters in Prosody's internal storage: one Lua file per user and store."""
        accounts = self.data / _prosody_dir(self.domain) / "accounts"
        accounts.mkdir(parents=True, exist_ok=True)
        self._accounts = list(prov.accounts)
        for acc in prov.accounts:
            creds, _ = self._credentials(acc.password)
            (accounts / f"{acc.user}.dat").write_text(
                f'return {{ ["iteration_count"] = {creds.iterations}; ["salt"] = "{self.salt}"; '
                f'["stored_key"] = "{creds.stored_key.hex()}"; '
                f'["server_key"] = "{creds.server_key.hex()}" }};\n'
            )
        if prov.rosters:
            rosters = self.data / _prosody_dir(self.domain) / "roster"
            rosters.mkdir(parents=True, exist_ok=True)
            for user, contacts in prov.rosters.items():
                items = "".join(
                    f'  ["{c}@{self.domain}"] = {{ ["subscription"] = "both"; '
                    f'["groups"] = {{ ["{ROSTER_GROUP}"] = true }}; ["name"] = "{c}" }};\n'
                    for c in contacts
                )
                (rosters / f"{user}.dat").write_text(
                    f'return {{\n  [false] = {{ ["version"] = 1; ["pending"] = {{}} }};\n{items}}};\n'
                )

    def seed_credentials(self, creds: CredentialCache) -> None:
        for acc in self._accounts:
            creds.put(acc.user, "SHA-1", self._credentials(acc.password)[1])

    async def start(self, prov: Provisioning) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.write_config(prov.websocket)
        self.write_accounts(prov)
        await self._spawn(["prosody", "--config", str(self.config), "-F"])
        await wait_for_port("127.0.0.1", self.port, 60, self._alive)
        if prov.websocket:
            await wait_for_port("127.0.0.1", self.ws_port, 30, self._alive)

    def version(self) -> str:
        v = super().version()
        if v == "unknown":
            with contextlib.suppress(OSError):
                v = Path("/usr/lib/prosody/prosody.version").read_text().strip()
        return v


# --------------------------------------------------------------------------------------------------
# ejabberd


def _ejabberd_lib_dir() -> str:
    """The ERL_LIBS directory Debian's ejabberdctl uses (the one holding ejabberd-<version>/)."""
    for candidate in sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin")) + sorted(
        glob.glob("/usr/lib/ejabberd-*/ebin")
    ):
        return str(Path(candidate).parent.parent)
    raise RuntimeError("ejabberd's Erlang libraries not found; run scripts/install-peers")


class EjabberdTarget(Target):
    """ejabberd 23.01 run straight from ``erl`` (as the current user, no epmd), accounts via its HTTP API.

    Debian's ejabberdctl insists on switching to the ``ejabberd`` user when run as root, so we start
    the VM the way it would (same erl flags, ERL_LIBS, -mnesia dir, -s ejabberd) but with our own
    node name, config, spool, logs, HOME (for the cookie) and a fixed distribution port instead of epmd.
    """

    name = "ejabberd"
    package = "ejabberd"
    #: Appended to the module list of the config (indented YAML lines).
    extra_modules = ""

    def erl_libs(self) -> str:
        return _ejabberd_lib_dir()

    def code_paths(self) -> list[str]:
        """``-pa`` directories put before the system's Erlang libraries."""
        return []

    @property
    def node(self) -> str:
        """Erlang node name: one per domain, so the two instances of an s2s run can coexist."""
        suffix = "" if self.domain == DOMAIN else "_" + self.domain.replace(".", "_")
        return f"roostbench{suffix}@localhost"

    def s2s_config(self) -> tuple[str, str, str]:
        """(top-level options, listener, modules) for federation; empty outside s2s runs.

        ejabberd resolves s2s peers with DNS only (``inet_res``: SRV, then A of the target), from
        the nameserver its inetrc names: the run's DNS server (see write_config).
        """
        s2s = self.s2s
        if s2s is None:
            return "", "", ""
        ca = s2s.ca_file if s2s.external else "/etc/ssl/certs/ca-certificates.crt"
        options = (
            f'ca_file: "{ca}"\ns2s_use_starttls: required\ns2s_dns_timeout: 2\ns2s_dns_retries: 1\n'
            "outgoing_s2s_families: [ipv4]\n"
        )
        listener = (
            f'  -\n    port: {s2s.port}\n    ip: "127.0.0.1"\n    module: ejabberd_s2s_in\n'
            "    shaper: none\n    backlog: 1024\n"
        )
        # "external": no dialback module, so certificates are the only way in.
        modules = "" if s2s.external else "  mod_s2s_dialback: {}\n"
        return options, listener, modules

    def __init__(self, workdir: Path, certs: CertFiles, cpu: int, log: Log) -> None:
        super().__init__(workdir, certs, cpu, log)
        self.http_port = free_port()
        self.dist_port = free_port()
        self.config = workdir / "ejabberd.yml"
        self.spool = workdir / "spool"
        self.logs = workdir / "logs"

    def write_config(self, websocket: bool = False) -> None:
        s2s_options, s2s_listener, s2s_modules = self.s2s_config()
        ws_listener = (
            f"""  -
    port: {self.ws_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    tls: true
    request_handlers:
      /xmpp-websocket: ejabberd_http_ws
"""
            if websocket
            else ""
        )
        text = f"""# generated by bench/targets.py for one benchmark run
hosts:
  - "{self.domain}"
loglevel: warning
log_rotate_count: 0
certfiles:
  - "{self.certs.combined}"

listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    starttls_required: true
    backlog: 1024
  -
    port: {self.http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
{ws_listener}{s2s_listener}
{s2s_options}disable_sasl_mechanisms:
  - "digest-md5"
  - "x-oauth2"
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha

acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8

access_rules:
  local:
    allow: local
  c2s:
    deny: blocked
    allow: all
  muc_create:
    allow: local
  pubsub_createnode:
    allow: local

api_permissions:
  "bench provisioning":
    from:
      - mod_http_api
    who:
      ip: 127.0.0.1/8
    what: "*"

shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 5000
  c2s_shaper: none
  s2s_shaper: none

# The Debian defaults, minus fail2ban, pres_counter (throttling), mqtt, bosh, stun, s2s dialback.
modules:
  mod_adhoc: {{}}
  mod_admin_extra: {{}}
  mod_announce:
    access: local
  mod_avatar: {{}}
  mod_blocking: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_client_state: {{}}
  mod_configure: {{}}
  mod_disco: {{}}
  mod_http_api: {{}}
  mod_last: {{}}
  mod_muc:
    host: "conference.{self.domain}"
    access:
      - allow
    access_create: muc_create
    access_persistent: muc_create
    history_size: {MUC_HISTORY}
    max_users: {MUC_MAX_OCCUPANTS}
    default_room_options:
      public: true
      persistent: false
      mam: false
      logging: false
      max_users: {MUC_MAX_OCCUPANTS}
  mod_muc_admin: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_privacy: {{}}
  mod_private: {{}}
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
  mod_push: {{}}
  mod_push_keepalive: {{}}
  mod_roster:
    versioning: true
  mod_shared_roster: {{}}
  mod_sic: {{}}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
  mod_vcard:
    search: false
  mod_vcard_xupdate: {{}}
  mod_version: {{}}
{self.extra_modules}{s2s_modules}"""
        self.config.write_text(text)
        inetrc = '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n'
        if self.s2s is not None:  # DNS from the run's server only, not /etc/resolv.conf's
            inetrc += f'{{resolv_conf, ""}}.\n{{nameserver, {{127,0,0,1}}, {self.s2s.dns_port}}}.\n'
        (self.dir / "inetrc").write_text(inetrc)

    async def start(self, prov: Provisioning) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.write_config(prov.websocket)
        env = {
            "HOME": str(self.dir),
            "EJABBERD_CONFIG_PATH": str(self.config),
            "EJABBERD_LOG_PATH": str(self.logs / "ejabberd.log"),
            "EJABBERD_PID_PATH": str(self.dir / "ejabberd.pid"),
            "ERL_LIBS": self.erl_libs(),
            "ERL_CRASH_DUMP": str(self.logs / "erl_crash.dump"),
            "ERL_INETRC": str(self.dir / "inetrc"),
            "ERL_MAX_PORTS": "65536",
            "CONTRIB_MODULES_PATH": str(self.dir / "contrib"),
        }
        argv = [
            "erl", "-sname", self.node, "-setcookie", secrets.token_hex(16),
            "+K", "true", "+P", "250000", "+Q", "65536",
            "-env", "ERL_CRASH_DUMP_BYTES", "0",
            "-erl_epmd_port", str(self.dist_port), "-start_epmd", "false",
            "-mnesia", "dir", f'"{self.spool}"',
            "-s", "ejabberd", "-noinput",
        ]  # fmt: skip
        for path in self.code_paths():
            argv += ["-pa", path]
        await self._spawn(argv, env)
        await wait_for_port("127.0.0.1", self.http_port, 90, self._alive)
        await wait_for_port("127.0.0.1", self.port, 30, self._alive)
        if prov.websocket:
            await wait_for_port("127.0.0.1", self.ws_port, 30, self._alive)
        await self._provision(prov)

    async def _provision(self, prov: Provisioning) -> None:
        calls: list[tuple[str, dict[str, str]]] = [
            ("register", {"user": a.user, "host": self.domain, "password": a.password}) for a in prov.accounts
        ]
        for user, contacts in prov.rosters.items():
            for c in contacts:
                calls.append(
                    ("add_rosteritem", {
                        "localuser": user, "localhost": self.domain, "user": c, "host": self.domain,
                        "nick": c, "group": ROSTER_GROUP, "subs": "both",
                    })
                )  # fmt: skip
        t0 = time.monotonic()
        await asyncio.to_thread(self._api_calls, calls)
        self.log(f"ejabberd: {len(calls)} API calls for provisioning in {time.monotonic() - t0:.1f}s")

    def _api_calls(self, calls: list[tuple[str, dict[str, str]]]) -> None:
        port = self.http_port

        def worker(chunk: list[tuple[str, dict[str, str]]]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for command, args in chunk:
                body = json.dumps(args)
                for attempt in range(3):
                    try:
                        conn.request("POST", f"/api/{command}", body, {"Content-Type": "application/json"})
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                        if attempt == 2:
                            raise
                if resp.status != 200:
                    raise RuntimeError(f"ejabberd API {command} {args}: HTTP {resp.status} {data[:200]!r}")
            conn.close()

        workers = 8
        chunks = [calls[i::workers] for i in range(workers)]
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(worker, c) for c in chunks if c]:
                f.result()


# --------------------------------------------------------------------------------------------------
# Roost


ROOST_CONFIG = """# generated by bench/targets.py for one benchmark run
[server]
domains = ["{domain}"]
data_dir = "{data}"

[tls]
cert = "{cert}"
key = "{key}"

{listen}

[c2s]
require_encryption = true

[storage]
url = "sqlite:///{data}/roost.db"
# Like the other servers: SCRAM-SHA-1 credentials only (Prosody and ejabberd store one hash).
scram_hashes = ["SHA-1"]

[log]
level = "warning"
file = "{workdir}/roost.log"

# Rooms like on the other servers: up to 1000 occupants, 20 messages of history, and no per-occupant
# message rate limit (Prosody loads no muc_limits, ejabberd's min_message_interval is 0).
[muc]
default_max_occupants = 1000
max_occupants = 1000
default_history = 20
message_rate = 0

# Like the other servers as benchmarked (no mod_mam in Debian's Prosody list, ejabberd 'mam: false'):
# no message archive. Measure archiving with a --roost-config template that leaves this out.
[mam]
enabled = false
"""


class RoostTarget(Target):
    """Roost from the project's virtualenv; accounts via ``roost user import`` before it starts.

    The config layout is provisional (the server is being written); ``--roost-config`` overrides it
    with a template using {domain} {data} {port} {cert} {key} {workdir} {listen}.
    """

    name = "roost"

    def __init__(self, workdir: Path, certs: CertFiles, cpu: int, log: Log) -> None:
        super().__init__(workdir, certs, cpu, log)
        self.data = workdir / "data"
        self.config = workdir / "roost.toml"
        self.exe = shutil.which("roost", path=str(ROOT / ".venv" / "bin")) or "roost"
        self.template = ROOST_CONFIG
        #: Extra environment of every roost command (the reference build sets PYTHONPATH).
        self.env: dict[str, str] = {}

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("roost")
        except Exception:
            return "unknown"

    def listen_block(self, websocket: bool) -> str:
        """The listeners: c2s (STARTTLS), an https listener for WebSocket and an s2s listener (with
        the ``[s2s]`` section) when asked for."""
        if not websocket and self.s2s is None:
            return f'[listen]\nc2s = "127.0.0.1:{self.port}"\nc2s_tls = ""\nhttp = ""'
        out = f'[[listen]]\nkind = "c2s"\naddress = "127.0.0.1:{self.port}"\n'
        if websocket:
            out += f'\n[[listen]]\nkind = "https"\naddress = "127.0.0.1:{self.ws_port}"\n'
        if self.s2s is not None:
            s2s = self.s2s
            out += f'\n[[listen]]\nkind = "s2s"\naddress = "127.0.0.1:{s2s.port}"\n\n[s2s]\n'
            if s2s.external:
                out += f'ca_file = "{s2s.ca_file}"\nsecure_auth = true\n'
            else:
                out += "secure_auth = false\n"
            # Roost's per-remote-domain limit (1,000 stanzas/s by default) would cap the link; the
            # others have none here (Prosody loads no mod_limits, ejabberd's s2s_shaper is none).
            out += "rate_limit = 1e9\n"
        return out

    def run_argv(self) -> list[str]:
        """How the server starts: ``roost run``, or in an s2s run the launcher that sends its DNS
        queries to the run's DNS server (bench/roost_s2s.py)."""
        if self.s2s is None:
            return [self.exe, "--config", str(self.config), "run"]
        python = str(Path(self.exe).parent / "python")
        ns = f"127.0.0.1:{self.s2s.dns_port}"
        return [python, "-m", "bench.roost_s2s", "--config", str(self.config), "--nameserver", ns]

    async def start(self, prov: Provisioning) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        template = self.template
        if self.mam:
            template = template.replace("[mam]\nenabled = false\n", "[mam]\nenabled = true\n")
            if "[mam]\nenabled = true\n" not in template:
                raise RuntimeError("--mam: the Roost config template has no '[mam] enabled = false'")
        self.config.write_text(
            template.format(
                domain=self.domain, data=self.data, port=self.port, cert=self.certs.cert,
                key=self.certs.key, workdir=self.dir, listen=self.listen_block(prov.websocket),
            )
        )  # fmt: skip
        csv = self.dir / "users.csv"
        csv.write_text("".join(f"{a.user}@{self.domain},{a.password}\n" for a in prov.accounts))
        t0 = time.monotonic()
        cmd = [self.exe, "--config", str(self.config), "user", "import", str(csv)]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env={**os.environ, **self.env},
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.decode(errors='replace')}")
        self.log(f"roost: imported {len(prov.accounts)} users in {time.monotonic() - t0:.1f}s")
        if prov.rosters:
            t0 = time.monotonic()
            await self.write_rosters(prov.rosters)
            self.log(f"roost: wrote {len(prov.rosters)} rosters in {time.monotonic() - t0:.1f}s")
        env = dict(self.env)
        if self.s2s is not None:  # the launcher is in bench/, after any checkout's src/ (roost-ref)
            env["PYTHONPATH"] = ":".join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
        await self._spawn(self.run_argv(), env=env)
        await wait_for_port("127.0.0.1", self.port, 60, self._alive)
        if prov.websocket:
            await wait_for_port("127.0.0.1", self.ws_port, 30, self._alive)

    async def write_rosters(self, rosters: dict[str, list[str]]) -> None:
        """Rosters through Roost's own storage API, in the roster module's own row format, before start.

        The storage URL is the one the server will use (its config, loaded by Roost's loader).
        """
        from roost.config.loader import load_config
        from roost.jid import JID
        from roost.modules.roster import RosterItem, roster_rows
        from roost.storage.manager import StorageManager

        url = load_config(self.config).storage_url
        storage = await StorageManager.open(url, progress=lambda _msg: None)
        try:
            store = storage.map("roster")
            for user, contacts in rosters.items():
                items = [
                    RosterItem(
                        JID.parse(f"{c}@{self.domain}"), name=c, subscription="both", groups=[ROSTER_GROUP]
                    )
                    for c in contacts
                ]
                await store.set_many(self.domain, user, roster_rows(items))
        finally:
            await storage.close()


def _template_of(checkout: Path) -> str | None:
    """``ROOST_CONFIG`` as another checkout's bench/targets.py spells it (read, not imported)."""
    import ast

    try:
        tree = ast.parse((checkout / "bench" / "targets.py").read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ROOST_CONFIG" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    return None


class RoostRefTarget(RoostTarget):
    """Another checkout of Roost (``ROOST_REF_SRC=/path/to/checkout``), run with this virtualenv: a
    before/after comparison of a change in the same run (e.g. ``git worktree add /tmp/ref <commit>``)."""

    name = "roost-ref"

    def __init__(self, workdir: Path, certs: CertFiles, cpu: int, log: Log) -> None:
        super().__init__(workdir, certs, cpu, log)
        src = os.environ.get("ROOST_REF_SRC")
        if not src:
            raise RuntimeError("roost-ref needs ROOST_REF_SRC=<another Roost checkout>")
        self.ref = Path(src).resolve()
        self.env = {"PYTHONPATH": f"{self.ref / 'src'}"}
        # That checkout's own config template: its server may not know the sections ours has.
        self.template = _template_of(self.ref) or self.template

    def version(self) -> str:
        try:
            head = subprocess.run(
                ["git", "-C", str(self.ref), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            )
            return f"{self.ref} @ {head.stdout.strip() or '?'}"
        except OSError:
            return str(self.ref)


#: Where bench/fetch-ejabberd-backports unpacks Debian bookworm-backports' ejabberd (never installed).
EJABBERD_BACKPORTS_ROOT = Path(os.environ.get("ROOST_BENCH_EJABBERD_ROOT", "/opt/ejabberd-bpo/root"))


class EjabberdBackportsTarget(EjabberdTarget):
    """ejabberd 24.12 from bookworm-backports (SASL2, Bind2, FAST: ``mod_auth_fast``), unpacked by
    bench/fetch-ejabberd-backports into its own root beside the system's 23.01: its Erlang
    libraries go first in the code path (``-pa``), the system's OTP serves the rest."""

    name = "ejabberd24"
    package = None
    extra_modules = "  mod_auth_fast: {}\n"

    def _root_lib(self) -> Path:
        found = sorted(EJABBERD_BACKPORTS_ROOT.glob("usr/lib/*/ejabberd-*/ebin"))
        if not found:
            fetch = "run bench/fetch-ejabberd-backports"
            raise RuntimeError(f"no ejabberd under {EJABBERD_BACKPORTS_ROOT}; {fetch}")
        return found[-1].parent

    def version(self) -> str:
        return self._root_lib().name.removeprefix("ejabberd-") + " (bookworm-backports)"

    def erl_libs(self) -> str:
        return str(self._root_lib().parent)

    def code_paths(self) -> list[str]:
        return [str(p) for p in sorted((EJABBERD_BACKPORTS_ROOT / "usr/lib/erlang/lib").glob("*/ebin"))]


TARGETS: dict[str, type[Target]] = {
    t.name: t for t in (RoostTarget, RoostRefTarget, ProsodyTarget, EjabberdTarget, EjabberdBackportsTarget)
}
