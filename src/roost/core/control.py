"""The operators' channel to a running server: a Unix socket in the data directory.

``roost user del`` run while the server runs must not leave the deleted user connected, nor leave
caches believing in the account: the command asks the running server to remove the account (the
same steps as an in-band removal, :mod:`roost.core.accounts`). Without a running server the CLI
works on storage directly.

The socket (``data_dir/roost.sock``) is created owner-only, and each connection's peer credentials
are checked: only the server's own user and root may use it. One request per connection, one JSON
object per line each way::

    → {"op": "remove-account", "domain": "example.org", "username": "juliet"}
    ← {"ok": true, "removed": true}

Other operations: ``reload`` (:mod:`roost.core.reload`), ``command`` (an admin command of
:mod:`roost.admin.commands`: status, sessions, kick, announce, lock …) and ``note`` (the CLI tells
the server what it changed in storage, for the server's log).

The socket also keeps two servers from running on one data directory by mistake: a second one finds
the first one's socket answering and refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger(__name__)

SOCKET_NAME = "roost.sock"
#: sun_path holds 108 bytes on Linux (104 on BSDs), the terminating NUL included.
_MAX_PATH_BYTES = 103
_MAX_REQUEST_BYTES = 64 * 1024
_REQUEST_TIMEOUT = 10.0
#: Removing an account waits for its sessions to wind up (up to 10 s): the client waits longer.
CLIENT_TIMEOUT = 30.0


class AnotherServerRunning(OSError):
    """A server already answers on this data directory's control socket."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def default_pointer() -> Path:
    """Where a server on built-in defaults (no config file) leaves a link to its control socket.

    Run from another directory, ``roost user …`` without a config would otherwise look for
    ``./roost-data`` there; through this link it finds the running server's data instead.
    ``$XDG_RUNTIME_DIR/roost/default.sock``, else ``/tmp/roost-UID/default.sock``.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    base = Path(runtime) / "roost" if runtime else Path(f"/tmp/roost-{os.getuid()}")
    return base / "default.sock"


def _private_dir(path: Path) -> bool:
    """Create ``path`` 0700, or accept it only when it is ours and private (not a planted one)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return False
    return not path.is_symlink() and st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


def usable(path: Path) -> bool:
    return len(os.fsencode(path)) <= _MAX_PATH_BYTES


class ControlChannel:
    """Server side: listens on the socket, runs what operators' commands ask."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.path: Path | None = None
        self._listener: asyncio.AbstractServer | None = None
        #: The default-server link this server made (built-in defaults only).
        self._pointer: Path | None = None

    async def start(self, data_dir: Path) -> None:
        path = socket_path(data_dir)
        if not usable(path):
            log.warning(
                "control socket not opened: the path %s is too long for a Unix socket; "
                "'roost user del' will then not end the user's sessions (choose a shorter data_dir)",
                path,
            )
            return
        if path.exists() or path.is_symlink():
            if await _answers(path):
                raise AnotherServerRunning(
                    f"another Roost server is running on {data_dir} (its control socket {path} answers); "
                    "stop it first, or give this one its own data_dir"
                )
            try:
                path.unlink()  # left behind by a server that did not stop cleanly
            except OSError as e:
                log.warning("control socket not opened: cannot remove %s (%s)", path, e)
                return
        mask = os.umask(0o177)  # owner-only from the moment it exists
        try:
            self._listener = await asyncio.start_unix_server(self._serve, path=str(path))
        except OSError as e:  # e.g. a file system without Unix sockets: serve anyway
            log.warning(
                "control socket not opened at %s (%s); 'roost user del' will not end the user's sessions",
                path,
                e,
            )
            return
        finally:
            os.umask(mask)
        self.path = path
        if self.server.config.path is None:
            self._point_to(path)

    def _point_to(self, path: Path) -> None:
        pointer = default_pointer()
        if not _private_dir(pointer.parent):
            return
        try:
            tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(path.absolute())
            tmp.replace(pointer)
            self._pointer = pointer
        except OSError as e:
            log.debug("no default-server link at %s: %s", pointer, e)

    async def stop(self) -> None:
        if self._listener is None:
            return
        self._listener.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listener.wait_closed(), 2)
        self._listener = None
        pointer = self._pointer
        if pointer is not None and self.path is not None:
            with contextlib.suppress(OSError):
                if os.readlink(pointer) == str(self.path.absolute()):
                    pointer.unlink()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _peer_allowed(writer.get_extra_info("socket")):
                log.warning("control socket: refused a connection from another user")
                return
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), _REQUEST_TIMEOUT)
                if len(line) > _MAX_REQUEST_BYTES:
                    raise ValueError("request too long")
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as e:
                response: dict[str, Any] = {"ok": False, "error": f"bad request: {e}"}
            else:
                response = await self._handle(request)
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            config = self.server.config
            return {
                "ok": True,
                "domains": sorted(self.server.hosts),
                "data_dir": str(config.server.data_dir),
                "config": str(config.path) if config.path is not None else None,
            }
        if op == "remove-account":
            domain, username = request.get("domain"), request.get("username")
            if not isinstance(domain, str) or not isinstance(username, str) or not username:
                return {"ok": False, "error": "remove-account needs 'domain' and 'username'"}
            if domain not in self.server.hosts:
                return {"ok": False, "error": f"this server does not serve {domain}"}
            log.info("control socket: removing account %s@%s", username, domain)
            try:
                removed = await self.server.accounts.remove(domain, username)
            except Exception as e:
                log.exception("control socket: removing %s@%s failed", username, domain)
                return {"ok": False, "error": f"removal failed: {e}"}
            return {"ok": True, "removed": removed}
        if op == "create-account" or op == "set-credentials":
            return await self._account(op, request)
        if op == "reload":
            from roost.core.reload import reload

            log.info("control socket: reload requested")
            return (await reload(self.server)).as_dict()
        if op == "command":
            return await self._command(request)
        if op == "flush":
            # roost backup: queued writes reach the database before the snapshot is taken.
            await self.server.storage.flush()
            return {"ok": True}
        if op == "note":
            # The CLI changed storage directly (user add/passwd/import): say so in the server's log.
            text = request.get("text")
            if not isinstance(text, str) or not text or len(text) > 500:
                return {"ok": False, "error": "note needs a 'text' (up to 500 characters)"}
            log.info("roost CLI: %s", text.replace("\n", " "))
            return {"ok": True}
        return {"ok": False, "error": f"unknown operation {op!r}"}

    async def _account(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """``roost user add``/``passwd`` on a running server: through the account service, so that
        the modules hear of it (``USER_CREATED``). The CLI derives the SCRAM keys; no password travels."""
        from roost.storage.api import AccountExists, NoSuchAccount, StoredCredentials

        domain, username = request.get("domain"), request.get("username")
        if not isinstance(domain, str) or not isinstance(username, str) or not username:
            return {"ok": False, "error": f"{op} needs 'domain' and 'username'"}
        if domain not in self.server.hosts:
            return {"ok": False, "error": f"this server does not serve {domain}"}
        try:
            credentials = [
                StoredCredentials(
                    str(c["hash_name"]),
                    bytes.fromhex(str(c["salt"])),
                    int(c["iterations"]),
                    bytes.fromhex(str(c["stored_key"])),
                    bytes.fromhex(str(c["server_key"])),
                )
                for c in request.get("credentials") or ()
            ]
        except (KeyError, TypeError, ValueError):
            return {"ok": False, "error": f"{op}: malformed credentials"}
        if not credentials:
            return {"ok": False, "error": f"{op} needs SCRAM credentials"}
        accounts = self.server.accounts
        try:
            if op == "create-account":
                await accounts.create(domain, username, credentials)
            else:
                await accounts.set_credentials(domain, username, credentials)
        except AccountExists:
            return {"ok": False, "exists": True, "error": f"user {username}@{domain} already exists"}
        except NoSuchAccount:
            return {"ok": False, "missing": True, "error": f"no such user: {username}@{domain}"}
        what = "created" if op == "create-account" else "password changed"
        log.info("roost CLI: user %s@%s %s", username, domain, what)
        return {"ok": True}

    async def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        """An admin command (:mod:`roost.admin.commands`) run for the CLI."""
        from roost.admin import commands

        name, domain, values = request.get("name"), request.get("domain"), request.get("values", {})
        if not isinstance(name, str) or name not in commands.BY_NAME:
            return {"ok": False, "error": f"unknown command {name!r}"}
        if domain is not None and not isinstance(domain, str):
            return {"ok": False, "error": "'domain' is a string"}
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in values.items()
        ):
            return {"ok": False, "error": "'values' maps field names to lists of strings"}
        try:
            result = await commands.run(self.server, name, domain, values, "the roost CLI")
        except commands.CommandError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            log.exception("control socket: command %s failed", name)
            return {"ok": False, "error": f"{name} failed: {e}"}
        return {"ok": True, **result.as_dict()}


def _peer_allowed(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return True  # no way to ask (not Linux): the socket's owner-only mode still applies
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
    return uid in (0, os.getuid())


async def _answers(path: Path) -> bool:
    try:
        reply = await request(path, {"op": "ping"}, timeout=2.0)
    except OSError:
        return False
    return reply is not None


async def request(
    path: Path, message: dict[str, Any], timeout: float = CLIENT_TIMEOUT
) -> dict[str, Any] | None:
    """Client side: send one request; None when no server listens there.

    Raises OSError when a server listens but the exchange fails.
    """
    if not usable(path):
        return None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # a socket file left behind: nobody listens
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise OSError("the running server did not answer in time") from None
    finally:
        writer.close()
    if not line:
        raise OSError("the running server closed the control connection without answering")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise OSError("the running server sent a malformed answer")
    return reply
