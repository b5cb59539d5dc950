"""Private Prosody and ejabberd instances for interop tests: own config, data, logs and loopback ports.

Each peer serves ``<name>.test`` (and ``conference.<name>.test``) with a certificate from the test CA.
Names are resolved without DNS: Prosody loads a small test module (``mod_roost_test_hosts``) that maps
test domains to loopback ports in its s2s resolver; ejabberd (which resolves through the system) gets
/etc/hosts entries that the fixture adds and removes again, and connects to ``outgoing_s2s_port``.
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
from pathlib import Path

from roost.stream.sasl.scram import derive_credentials
from tests.support.testca import Issued

PASSWORD = "interop-pw"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(*commands: str) -> str | None:
    """Why a peer cannot run here (a command is not installed), or None."""
    for command in commands:
        if shutil.which(command) is None and not Path("/usr/sbin", command).exists():
            return f"{command} is not installed (run scripts/install-peers)"
    return None


async def wait_for_port(port: int, limit: float, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + limit
    while True:
        if proc.returncode is not None:
            raise RuntimeError("the peer server exited during start-up")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {limit:.0f}s")
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Peer:
    """A running peer server."""

    name = ""

    def __init__(self, workdir: Path, issued: Issued, ca_file: Path, *, secure: bool) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.issued = issued
        self.ca_file = ca_file
        self.secure = secure
        self.domain = f"{self.name}.test"
        self.muc = f"conference.{self.domain}"
        self.c2s_port = free_port()
        self.s2s_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115, ASYNC230 - handed to the child process
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full_env,
            cwd=self.dir, start_new_session=True,
        )  # fmt: skip
        out.close()

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def logs(self, lines: int = 40) -> str:
        chunks = []
        for path in sorted(self.dir.rglob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks)


def _lua(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


HOSTS_MODULE = """-- Test-only: resolve test domains to loopback ports for s2s (the interop tests' resolver).
local service = require "net.resolvers.service";
local manual = require "net.resolvers.manual";
local map = module:get_option("roost_test_hosts", {});
if not service.roost_test_original then
  service.roost_test_original = service.new;
  service.new = function(hostname, name, conn_type, extra)
    local target = map[hostname];
    if target and name == "xmpps-server" then
      return manual.new({}, conn_type, extra);  -- no direct TLS port for test domains
    elseif target then
      return manual.new({ { "tcp4", "127.0.0.1", target, extra } }, conn_type, extra);
    end
    return service.roost_test_original(hostname, name, conn_type, extra);
  end
end
"""


class Prosody(Peer):
    name = "prosody"

    async def start(self, users: list[str], hosts: dict[str, int]) -> None:
        data = self.dir / "data"
        plugins = self.dir / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "mod_roost_test_hosts.lua").write_text(HOSTS_MODULE)
        mapping = "".join(f"[{_lua(d)}] = {p}; " for d, p in hosts.items())
        ssl = f"certificate = {_lua(str(self.issued.cert))}; key = {_lua(str(self.issued.key))}"
        if self.secure:
            ssl += f"; cafile = {_lua(str(self.ca_file))}"
        config = f"""
run_as_root = true
pidfile = {_lua(str(self.dir / "prosody.pid"))}
data_path = {_lua(str(data))}
plugin_paths = {{ {_lua(str(plugins))} }}
log = {{ debug = {_lua(str(self.dir / "prosody.log"))} }}
c2s_ports = {{ {self.c2s_port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{ {self.s2s_port} }}
s2s_interfaces = {{ "127.0.0.1" }}
s2s_direct_tls_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
use_ipv6 = false
modules_enabled = {{
  "disco"; "roster"; "saslauth"; "tls"; "dialback"; "ping"; "time"; "version"; "uptime"; "posix";
  "roost_test_hosts"; "s2s_bidi"; "pep";
}}
roost_test_hosts = {{ {mapping} }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if self.secure else "false"}
allow_registration = false
ssl = {{ {ssl} }}

VirtualHost "{self.domain}"

Component "{self.muc}" "muc"
  muc_room_locking = false
"""
        (self.dir / "prosody.cfg.lua").write_text(config)
        accounts = data / self.domain.replace(".", "%2e") / "accounts"
        accounts.mkdir(parents=True, exist_ok=True)
        salt = secrets.token_hex(8)
        creds = derive_credentials(PASSWORD, "SHA-1", 4096, salt.encode())
        for user in users:
            (accounts / f"{user}.dat").write_text(
                f'return {{ ["iteration_count"] = 4096; ["salt"] = "{salt}"; '
                f'["stored_key"] = "{creds.stored_key.hex()}"; '
                f'["server_key"] = "{creds.server_key.hex()}" }};\n'
            )
        await self._spawn(["prosody", "--config", str(self.dir / "prosody.cfg.lua"), "-F"])
        assert self.proc is not None
        await wait_for_port(self.c2s_port, 60, self.proc)
        await wait_for_port(self.s2s_port, 30, self.proc)


def _ejabberd_lib_dir() -> str:
    for candidate in sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin")) + sorted(
        glob.glob("/usr/lib/ejabberd-*/ebin")
    ):
        return str(Path(candidate).parent.parent)
    raise RuntimeError("ejabberd's Erlang libraries not found; run scripts/install-peers")


class Ejabberd(Peer):
    name = "ejabberd"
    hosts_marker: str | None = None

    async def stop(self) -> None:
        await super().stop()
        if self.hosts_marker is not None:
            remove_hosts_entries(self.hosts_marker)

    async def start(self, users: list[str], hosts: dict[str, int]) -> None:
        http_port = free_port()
        dist_port = free_port()
        spool = self.dir / "spool"
        logs = self.dir / "logs"
        spool.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        combined = self.dir / "combined.pem"
        combined.write_text(self.issued.cert.read_text() + self.issued.key.read_text())
        # ejabberd connects to one port for every remote server: the (single) Roost under test.
        (port,) = set(hosts.values())
        config = f"""
hosts:
  - "{self.domain}"
loglevel: info
log_rotate_count: 0
certfiles:
  - "{combined}"
ca_file: "{self.ca_file if self.secure else "/etc/ssl/certs/ca-certificates.crt"}"
s2s_use_starttls: required
s2s_dns_timeout: 2
s2s_dns_retries: 1
outgoing_s2s_port: {port}
outgoing_s2s_families: [ipv4]
listen:
  -
    port: {self.c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: {self.s2s_port}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
  -
    port: {http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
api_permissions:
  "interop provisioning":
    from:
      - mod_http_api
    who:
      ip: 127.0.0.1/8
    what: "*"
modules:
  mod_disco: {{}}
  mod_http_api: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_version: {{}}
  mod_s2s_dialback: {{}}
  mod_muc:
    host: "{self.muc}"
    access:
      - allow
    access_create: all
    default_room_options:
      public: true
"""
        if self.secure:
            # Only certificate-authenticated peers: no dialback.
            config = config.replace("  mod_s2s_dialback: {}\n", "")
        (self.dir / "ejabberd.yml").write_text(config)
        # ejabberd resolves s2s targets through the system resolver: /etc/hosts entries for the test
        # domains, removed again in stop().
        self.hosts_marker = add_hosts_entries(set(hosts))
        (self.dir / "inetrc").write_text('{lookup,[file,native]}.\n{host,{127,0,0,1}, ["localhost"]}.\n')
        env = {
            "HOME": str(self.dir),
            "EJABBERD_CONFIG_PATH": str(self.dir / "ejabberd.yml"),
            "EJABBERD_LOG_PATH": str(logs / "ejabberd.log"),
            "ERL_LIBS": _ejabberd_lib_dir(),
            "ERL_CRASH_DUMP": str(logs / "erl_crash.dump"),
            "ERL_INETRC": str(self.dir / "inetrc"),
        }
        node = f"roostinterop{secrets.token_hex(3)}@localhost"
        argv = [
            "erl", "-sname", node, "-setcookie", secrets.token_hex(16), "+K", "true",
            "-erl_epmd_port", str(dist_port), "-start_epmd", "false",
            "-mnesia", "dir", f'"{spool}"', "-s", "ejabberd", "-noinput",
        ]  # fmt: skip
        await self._spawn(argv, env)
        assert self.proc is not None
        await wait_for_port(http_port, 90, self.proc)
        await wait_for_port(self.c2s_port, 30, self.proc)
        await asyncio.to_thread(self._register, http_port, users)

    def _register(self, port: int, users: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for user in users:
            body = json.dumps({"user": user, "host": self.domain, "password": PASSWORD})
            conn.request("POST", "/api/register", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"ejabberd register {user}: HTTP {resp.status} {data[:200]!r}")
        conn.close()


HOSTS_FILE = Path("/etc/hosts")


def add_hosts_entries(names: set[str]) -> str:
    """Map ``names`` to 127.0.0.1 in /etc/hosts; the marker that :func:`remove_hosts_entries` takes."""
    marker = f"# roost-interop-{os.getpid()}-{secrets.token_hex(4)}"
    with HOSTS_FILE.open("a") as f:
        f.write(f"127.0.0.1 {' '.join(sorted(names))} {marker}\n")
    return marker


def remove_hosts_entries(marker: str) -> None:
    lines = HOSTS_FILE.read_text().splitlines(keepends=True)
    HOSTS_FILE.write_text("".join(line for line in lines if marker not in line))
