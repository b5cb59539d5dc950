"""XEP-0363 HTTP File Upload on its own domain (``upload.example.org``), served by the HTTP listeners.

A client asks the service for a slot (file name, size, type); the service checks the size, type,
quotas, request rate and free disk space, and answers with a signed PUT URL and an unguessable GET
URL. The PUT must carry exactly the declared size and type; the body streams to a temporary file
in ``<data_dir>/upload`` and is renamed into place when complete. GET serves the file with
``Content-Type``, ``Content-Length``, ``ETag``, ranges, a safe ``Content-Disposition``,
``nosniff`` and a CSP that lets nothing run. Files expire in the background; deleting an account
deletes its files. See docs/upload.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
import weakref
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web
from pydantic import Field, field_validator

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import DiscoItemsEvent, ServerEvent, StanzaEvent, UserEvent
from roost.core.host import Host
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook
from roost.jid import JIDError, prepare_domain
from roost.modules.disco import info_element
from roost.modules.upload.engine import (
    NS_UPLOAD,
    SECURITY_HEADERS,
    Ledger,
    Limits,
    RateWindow,
    Refusal,
    Signer,
    content_disposition,
    normal_type,
    safe_filename,
    type_allowed,
)
from roost.stanza.errors import StanzaError
from roost.transports.http import client_of
from roost.transports.web import http_routes
from roost.util.datetime import format_datetime
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS, DISCO_INFO, DISCO_ITEMS

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.mod.upload")

MB = 1024 * 1024
CHUNK = 64 * 1024


class UploadOptions(ModuleOptions):
    """XEP-0363 HTTP File Upload (docs/upload.md)."""

    domain: str = Field(
        "",
        description="Domain of the upload service. Empty: 'upload.' + the first of server.domains. "
        "Clients find it in the server's disco#items.",
        examples=["upload.example.org"],
    )
    name: str = Field("HTTP File Upload", description="Name of the service shown in service discovery.")
    path: str = Field("/upload", description="URL path under which files are uploaded and served.")
    base_url: str = Field(
        "",
        description="Public base URL of the HTTP listener for slot URLs, e.g. 'https://xmpp.example.org' "
        "(behind a proxy: the proxy's URL). Empty: the https listener when [tls] has a certificate, "
        "else the http listener, at the first served domain.",
        examples=["https://xmpp.example.org"],
    )
    external_url: str = Field(
        "",
        description="Base URL that GET URLs use instead of base_url: a CDN or proxy that forwards "
        "the upload path to Roost.",
        examples=["https://files.example.org"],
    )
    max_file_size: int = Field(
        100 * MB, ge=1, le=1 << 40, description="Largest file in bytes (advertised in disco, XEP-0363 §4)."
    )
    allowed_content_types: list[str] = Field(
        default_factory=list,
        description="Media types accepted ('image/png' or 'image/*'); empty: any type.",
        examples=[["image/*", "video/*", "audio/*", "application/pdf"]],
    )
    quota_bytes: int = Field(1024 * MB, ge=0, description="Bytes one user may keep stored (0: no limit).")
    quota_files: int = Field(10_000, ge=0, description="Files one user may keep stored (0: no limit).")
    daily_quota_bytes: int = Field(
        500 * MB, ge=0, description="Bytes one user may upload in 24 hours (0: no limit)."
    )
    daily_quota_files: int = Field(
        1000, ge=0, description="Files one user may upload in 24 hours (0: no limit)."
    )
    slots_per_minute: int = Field(30, ge=0, description="Slot requests per user per minute (0: no limit).")
    uploads_per_minute_per_ip: int = Field(
        60, ge=0, description="Uploads (PUT requests) per client address per minute (0: no limit)."
    )
    max_concurrent_per_user: int = Field(4, ge=1, description="Uploads one user may run at the same time.")
    max_concurrent_per_ip: int = Field(
        16, ge=1, description="Uploads one client address may run at the same time."
    )
    max_concurrent: int = Field(256, ge=1, description="Uploads running at the same time on the server.")
    min_free_disk_mb: int = Field(
        256,
        ge=0,
        le=1 << 40,
        description="Refuse new slots and uploads when less than this many MiB would stay free on the disk.",
    )
    slot_seconds: int = Field(300, ge=10, le=86_400, description="How long a slot's PUT URL stays valid.")
    idle_timeout_seconds: float = Field(
        30, gt=0, le=3600, description="An upload that sends nothing for this long is aborted (408)."
    )
    expire_after_days: float = Field(
        7, ge=0, description="Files are deleted this many days after upload (0: kept until deleted)."
    )
    cleanup_interval_seconds: float = Field(
        3600, ge=0.1, le=86_400, description="How often expired files are looked for."
    )
    delete_with_account: bool = Field(True, description="Deleting an account deletes its uploaded files.")
    secret: str = Field(
        "",
        description="Key that signs slot URLs (at least 16 characters). Empty: a random key kept in "
        "<data_dir>/upload/secret. Changing it invalidates every URL handed out.",
    )

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str) -> str:
        if not value:
            return value
        try:
            return prepare_domain(value)
        except JIDError as e:
            raise ValueError(f"{value!r} is not a valid domain name ({e})") from None

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or len(value) < 2:
            raise ValueError("path must start with '/' and not end with one")
        return value

    @field_validator("base_url", "external_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("secret must be at least 16 characters")
        return value

    @field_validator("allowed_content_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            item = item.strip().lower()
            major, slash, minor = item.partition("/")
            if not slash or not major or not minor or (minor != "*" and normal_type(item) != item):
                raise ValueError(f"{item!r} is not a media type or 'type/*'")
            out.append(item)
        return out


@dataclass(slots=True)
class FileMeta:
    """What is known of one slot or stored file (kept next to it as ``<id>.json``)."""

    owner: str
    filename: str
    size: int
    content_type: str
    created: float


class UploadRuntime:
    """The one upload service of a server: its host, files, quotas and HTTP handler."""

    def __init__(self, server: Server, options: UploadOptions) -> None:
        domains = server.config.server.domains
        self.server = server
        self.options = options
        self.domain = options.domain or prepare_domain(f"upload.{domains[0]}")
        if self.domain in domains:
            raise ValueError(f"[upload] domain {self.domain!r} is also in server.domains; pick another")
        self.served = frozenset(domains)
        self.host = Host(server, self.domain, kind="service")
        self.root = server.config.server.data_dir / "upload"
        self.files = self.root / "files"
        self.ledger = Ledger(
            Limits(
                max_file_size=options.max_file_size,
                quota_bytes=options.quota_bytes,
                quota_files=options.quota_files,
                daily_bytes=options.daily_quota_bytes,
                daily_files=options.daily_quota_files,
                slots_per_minute=options.slots_per_minute,
            )
        )
        self.ip_rate = RateWindow(options.uploads_per_minute_per_ip)
        #: Stored files and granted slots not yet used, by slot id.
        self.stored: dict[str, FileMeta] = {}
        self.pending: dict[str, FileMeta] = {}
        self.running_users: Counter[str] = Counter()
        self.running_ips: Counter[str] = Counter()
        self.running = 0
        self._uploading: set[str] = set()
        self.users = 0
        self.signer: Signer
        self._undo: list[object] = []
        self._cleaner: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.domain in self.server.hosts:
            raise ValueError(f"[upload] domain {self.domain!r} is already served by something else")
        await asyncio.to_thread(self._prepare_dir)
        self.signer = Signer(self.options.secret.encode() if self.options.secret else self._secret)
        iq = self.host.iq
        self._undo.append(iq.register("get", NS_UPLOAD, "request", Target.HOST, self.request_slot))
        self._undo.append(iq.register("get", DISCO_INFO, "query", Target.HOST, self.disco_info))
        self._undo.append(iq.register("get", DISCO_ITEMS, "query", Target.HOST, self.disco_items))
        self.server.hosts[self.domain] = self.host
        http_routes(self.server).mount(
            self.options.path, self.handle, methods=("GET", "PUT"), prefix=True, cors=True, owner="upload"
        )
        self._undo.append(self.host.bus.on(hooks.SERVER_STOPPING, self.on_stopping))
        # Not a server.spawn task: shutdown waits for those, and this one sleeps for long.
        self._cleaner = asyncio.get_running_loop().create_task(self._cleanup_loop(), name="upload-cleanup")
        log.info("upload service %s started (%d files)", self.domain, len(self.stored))

    async def on_stopping(self, event: ServerEvent) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()

    async def stop(self) -> None:
        http_routes(self.server).unmount(self.options.path)
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
        for undo in self._undo:
            undo()  # type: ignore[operator]
        self._undo.clear()
        if not self.server.stopping and self.server.hosts.get(self.domain) is self.host:
            del self.server.hosts[self.domain]

    def _prepare_dir(self) -> None:
        """Create the directories, load or make the secret, index the stored files (in a thread)."""
        self.files.mkdir(parents=True, exist_ok=True)
        secret_file = self.root / "secret"
        try:
            self._secret = bytes.fromhex(secret_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            self._secret = secrets.token_bytes(32)
            tmp = secret_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self._secret.hex())
            os.replace(tmp, secret_file)
        for entry in self.files.iterdir():
            if entry.name.endswith(".part"):
                entry.unlink(missing_ok=True)  # an upload cut short by a crash
            elif entry.suffix == ".json":
                try:
                    meta = FileMeta(**json.loads(entry.read_text()))
                except (OSError, ValueError, TypeError):
                    log.warning("ignoring unreadable upload record %s", entry)
                    continue
                slot_id = entry.stem
                if (self.files / slot_id).exists():
                    self.stored[slot_id] = meta
                    self.ledger.add(meta.owner, slot_id, meta.created, meta.size)
                else:
                    entry.unlink(missing_ok=True)

    # -- slots (XEP-0363 §4) -----------------------------------------------------------------------------
    def base_url(self) -> str:
        if self.options.base_url:
            return self.options.base_url
        addresses = self.server.addresses
        order = ("https", "http") if self.server.config.tls.cert is not None else ("http", "https")
        for kind in order:
            if kind in addresses:
                host, port = addresses[kind]
                if host in ("", "0.0.0.0", "::"):
                    host = next(iter(sorted(self.served)))
                elif ":" in host:
                    host = f"[{host}]"
                default = 443 if kind == "https" else 80
                return f"{kind}://{host}" + ("" if port == default else f":{port}")
        raise StanzaError("service-unavailable", "No HTTP listener serves uploads")

    def reachable(self) -> bool:
        """Whether slot URLs can point somewhere: base_url set, or an http/https listener running."""
        return bool(self.options.base_url) or any(k in self.server.addresses for k in ("http", "https"))

    def request_slot(self, event: StanzaEvent) -> Element:
        request = event.stanza.first()
        assert request is not None
        if event.frm.domain not in self.served or not event.frm.local:
            raise StanzaError("forbidden", "Only accounts of this server may upload files")
        size_text = request.get("size") or ""
        filename = request.get("filename") or ""
        if not size_text.isdigit() or int(size_text) <= 0:
            raise StanzaError("bad-request", "The size attribute must be a positive number of bytes")
        if not filename.strip():
            raise StanzaError("bad-request", "The filename attribute is required")
        size = int(size_text)
        content_type = normal_type(request.get("content-type"))
        if content_type is None:
            raise StanzaError("bad-request", "The content-type attribute is not a valid media type")
        if not type_allowed(content_type, self.options.allowed_content_types):
            raise StanzaError(
                "not-acceptable",
                f"Files of type {content_type} are not accepted; allowed: "
                + ", ".join(self.options.allowed_content_types),
            )
        owner = str(event.frm.bare)
        now = time.time()
        refusal = self.ledger.check(owner, size, now)
        if refusal is not None:
            raise _refusal_error(refusal)
        if not self._disk_has_room(size):
            raise StanzaError(
                "resource-constraint",
                f"The server is low on storage (keeps {self.options.min_free_disk_mb} MiB free); try later",
                type="wait",
            )
        self.ledger.note_slot(owner, now)
        slot_id = self.signer.new_id()
        name = safe_filename(filename)
        meta = FileMeta(owner, name, size, content_type, now)
        self.pending[slot_id] = meta
        self.ledger.add(owner, slot_id, now, size)  # reserved against the quota until it expires unused
        expires = int(now) + self.options.slot_seconds
        token = self.signer.put_token(slot_id, name, size, content_type, expires)
        path = f"{self.options.path}/{slot_id}/{quote(name, safe='')}"
        base = self.base_url()
        slot = Element("slot", NS_UPLOAD)
        slot.add("put", attrs={"url": f"{base}{path}?v={token}"})
        slot.add("get", attrs={"url": f"{self.options.external_url or base}{path}"})
        return slot

    def forget_unused(self, now: float) -> None:
        """Slots whose PUT URL expired unused stop counting against their owner's quota."""
        cutoff = now - self.options.slot_seconds - 5
        for slot_id, meta in list(self.pending.items()):
            if meta.created < cutoff and slot_id not in self._uploading:
                del self.pending[slot_id]
                self.ledger.remove(meta.owner, slot_id)

    def _disk_has_room(self, size: int) -> bool:
        floor = self.options.min_free_disk_mb * MB
        if not floor:
            return True
        try:
            free = shutil.disk_usage(self.files).free
        except OSError:
            return False
        return free - size >= floor

    # -- disco -------------------------------------------------------------------------------------------
    def disco_info(self, event: StanzaEvent) -> Element:
        if event.stanza.first().get("node"):  # type: ignore[union-attr]
            raise StanzaError("item-not-found")
        # XEP-0363 §4 / XEP-0128: the size limit in an extended-information form.
        form = Element("x", DATA_FORMS, {"type": "result"})
        form.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).add("value", text=NS_UPLOAD)
        form.add("field", attrs={"var": "max-file-size"}).add("value", text=str(self.options.max_file_size))
        return info_element(None, [("store", "file", self.options.name)], {NS_UPLOAD, DISCO_INFO}, [form])

    def disco_items(self, event: StanzaEvent) -> Element:
        return Element("query", DISCO_ITEMS)

    # -- HTTP --------------------------------------------------------------------------------------------
    def _slot_of(self, request: web.Request) -> tuple[str, str]:
        rest = request.path[len(self.options.path) :].lstrip("/")
        slot_id, _, name = rest.partition("/")
        if not self.signer.valid_id(slot_id) or "/" in name:
            raise web.HTTPNotFound(text="no such file\n")
        return slot_id, name

    async def handle(self, request: web.Request) -> web.StreamResponse:
        slot_id, _ = self._slot_of(request)
        if request.method == "PUT":
            return await self.put(request, slot_id)
        return await self.get(request, slot_id)

    async def get(self, request: web.Request, slot_id: str) -> web.StreamResponse:
        meta = self.stored.get(slot_id)
        if meta is None or self._expired(meta, time.time()):
            raise web.HTTPNotFound(text="no such file\n")
        headers = {
            "Content-Type": meta.content_type,
            "Content-Disposition": content_disposition(meta.filename, meta.content_type),
            "Cache-Control": f"public, max-age={self._max_age(meta)}, immutable",
            **SECURITY_HEADERS,
        }
        # FileResponse streams with sendfile and answers ranges, ETag/If-None-Match and If-Range.
        return web.FileResponse(self.files / slot_id, headers=headers)

    def _max_age(self, meta: FileMeta) -> int:
        if not self.options.expire_after_days:
            return 31_536_000
        left = meta.created + self.options.expire_after_days * 86_400 - time.time()
        return max(0, int(left))

    def _expired(self, meta: FileMeta, now: float) -> bool:
        days = self.options.expire_after_days
        return bool(days) and meta.created + days * 86_400 <= now

    async def put(self, request: web.Request, slot_id: str) -> web.StreamResponse:
        meta = self.pending.get(slot_id)
        if meta is None or slot_id in self._uploading:
            # Used already (or never granted, or forgotten after it expired): never overwrite.
            status = 409 if slot_id in self.stored or slot_id in self._uploading else 403
            return _text(status, "this slot is not (or no longer) open for upload")
        why = self.signer.check_put(
            request.query.get("v", ""), slot_id, meta.filename, meta.size, meta.content_type, time.time()
        )
        if why is not None:
            return _text(403, f"upload URL {why}")
        declared = request.content_length
        if declared is None:
            return _text(411, "Content-Length is required")
        if declared > meta.size:
            return _text(413, f"the slot is for {meta.size} bytes, not {declared}")
        if declared != meta.size:
            return _text(400, f"the slot is for {meta.size} bytes, not {declared}")
        sent_type = normal_type(request.headers.get("Content-Type"))
        if "Content-Type" in request.headers and sent_type != meta.content_type:
            return _text(400, f"the slot is for Content-Type {meta.content_type}")
        client = client_of(request).address
        opts = self.options
        if not self.ip_rate.allow(client, time.time()):
            return _text(
                429, f"too many uploads from your address: at most {opts.uploads_per_minute_per_ip} a minute"
            )
        if (
            self.running >= opts.max_concurrent
            or self.running_users[meta.owner] >= opts.max_concurrent_per_user
            or self.running_ips[client] >= opts.max_concurrent_per_ip
        ):
            return _text(429, "too many uploads at the same time; retry when one has finished")
        if not self._disk_has_room(meta.size):
            return _text(507, "the server is low on storage")
        self._uploading.add(slot_id)
        self.running += 1
        self.running_users[meta.owner] += 1
        self.running_ips[client] += 1
        try:
            return await self._receive(request, slot_id, meta)
        finally:
            self._uploading.discard(slot_id)
            self.running -= 1
            self.running_users[meta.owner] -= 1
            if not self.running_users[meta.owner]:
                del self.running_users[meta.owner]
            self.running_ips[client] -= 1
            if not self.running_ips[client]:
                del self.running_ips[client]

    async def _receive(self, request: web.Request, slot_id: str, meta: FileMeta) -> web.StreamResponse:
        """Stream the body to ``<id>.part`` in 64 KiB pieces (aiohttp's flow control bounds the
        buffer), then rename it into place; anything short, long or stalled leaves nothing behind."""
        loop = asyncio.get_running_loop()
        part = self.files / f"{slot_id}.part"
        received = 0
        idle = self.options.idle_timeout_seconds
        f = await asyncio.to_thread(open, part, "wb")
        done = False
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(request.content.readany(), idle)
                except TimeoutError:
                    return _text(408, f"nothing received for {idle:g} seconds")
                if not chunk:
                    break
                received += len(chunk)
                if received > meta.size:
                    return _text(413, f"more than the {meta.size} bytes of the slot")
                await loop.run_in_executor(None, f.write, chunk)
            if received != meta.size:
                return _text(400, f"received {received} of {meta.size} bytes")
            record = json.dumps(asdict(meta))
            await asyncio.to_thread(self._commit, f, part, slot_id, record)
            done = True
        finally:
            if not done:
                await asyncio.to_thread(_discard, f, part)
        self.pending.pop(slot_id, None)
        self.stored[slot_id] = meta
        log.info("upload %s: %d bytes from %s", slot_id, meta.size, meta.owner)
        return web.Response(status=201, text="created\n")

    def _commit(self, f: object, part: Path, slot_id: str, record: str) -> None:
        f.close()  # type: ignore[attr-defined]
        (self.files / f"{slot_id}.json").write_text(record)
        os.replace(part, self.files / slot_id)

    # -- removal -----------------------------------------------------------------------------------------
    async def _cleanup_loop(self) -> None:
        interval = min(self.options.cleanup_interval_seconds, 60.0)
        last_expiry = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                self.forget_unused(time.time())
                if time.monotonic() - last_expiry >= self.options.cleanup_interval_seconds - 0.01:
                    last_expiry = time.monotonic()
                    await self.expire(time.time())
            except Exception:
                log.exception("upload cleanup failed")

    async def expire(self, now: float) -> int:
        """Delete the files past their lifetime; how many went."""
        gone = [sid for sid, meta in self.stored.items() if self._expired(meta, now)]
        await self._delete(gone)
        return len(gone)

    async def _delete(self, slot_ids: list[str]) -> None:
        for slot_id in slot_ids:
            meta = self.stored.pop(slot_id, None) or self.pending.pop(slot_id, None)
            if meta is not None:
                self.ledger.remove(meta.owner, slot_id)
        if slot_ids:
            await asyncio.to_thread(self._unlink, slot_ids)

    def _unlink(self, slot_ids: list[str]) -> None:
        for slot_id in slot_ids:
            (self.files / slot_id).unlink(missing_ok=True)
            (self.files / f"{slot_id}.json").unlink(missing_ok=True)

    async def forget(self, owner: str) -> None:
        """An account was deleted: its files go (``delete_with_account``)."""
        mine = [sid for sid, m in [*self.stored.items(), *self.pending.items()] if m.owner == owner]
        await self._delete(mine)
        if mine:
            log.info("deleted %d uploaded files of %s", len(mine), owner)


def _discard(f: object, part: Path) -> None:
    f.close()  # type: ignore[attr-defined]
    part.unlink(missing_ok=True)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


def _refusal_error(refusal: Refusal) -> StanzaError:
    app: Element | None = None
    if refusal.too_large:
        app = Element("file-too-large", NS_UPLOAD)
        app.add("max-file-size", text=str(refusal.too_large))
    elif refusal.retry_at is not None:
        app = Element("retry", NS_UPLOAD, {"stamp": format_datetime(refusal.retry_at)})
    return StanzaError(refusal.condition, refusal.text, type=refusal.type, app=app)


_RUNTIMES: weakref.WeakKeyDictionary[Server, UploadRuntime] = weakref.WeakKeyDictionary()


def find_runtime(server: Server) -> UploadRuntime | None:
    return _RUNTIMES.get(server)


class HttpUpload(Module):
    """XEP-0363 HTTP File Upload service on its own domain."""

    name = "upload"
    xeps = (Xep(363, "1.1.0"),)
    Options = UploadOptions
    options: UploadOptions

    async def start(self) -> None:
        runtime = _RUNTIMES.get(self.server)
        if runtime is None:
            runtime = UploadRuntime(self.server, self.options)
            await runtime.start()
            _RUNTIMES[self.server] = runtime
        runtime.users += 1
        self.runtime = runtime

    async def stop(self) -> None:
        self.runtime.users -= 1
        if self.runtime.users <= 0:
            await self.runtime.stop()
            _RUNTIMES.pop(self.server, None)

    @hook(hooks.DISCO_ITEMS_HOST)
    def disco_items(self, event: DiscoItemsEvent) -> None:
        # Not advertised when no HTTP listener (nor base_url) could serve the files.
        if not event.node and self.runtime.reachable():
            event.items.append((self.runtime.domain, None, self.options.name))

    @hook(hooks.USER_DELETED)
    async def forget(self, event: UserEvent) -> None:
        if self.options.delete_with_account:
            await self.runtime.forget(f"{event.username}@{event.domain}")
