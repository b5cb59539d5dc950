"""The pure parts of HTTP upload (XEP-0363): signed slot ids and URLs, quota accounting, safe headers.

Nothing here touches sockets or files, so every rule is unit-tested on its own; the module
(:mod:`roost.modules.upload.module`) does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import quote

#: XEP-0363 §1 namespace.
NS_UPLOAD = "urn:xmpp:http:upload:0"

_ID_RANDOM = 16  # bytes of randomness in a slot id
_ID_MAC = 10  # bytes of HMAC tag in a slot id
_ID_RE = re.compile(r"[A-Za-z0-9_-]{35}")  # base64url of 26 bytes, no padding


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Slot ids and upload signatures under the install's secret.

    A slot id is 16 random bytes plus an HMAC tag over them, so a made-up or altered id is refused
    before the disk is looked at; the PUT signature binds id, file name, size, type and expiry, so
    a slot cannot be reused for something else or after it expired.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("upload secret must be at least 16 bytes")
        self._key = secret

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).digest()

    def new_id(self) -> str:
        rand = secrets.token_bytes(_ID_RANDOM)
        return _b64(rand + self._mac("id", rand.hex())[:_ID_MAC])

    def valid_id(self, slot_id: str) -> bool:
        """True for ids this install made (constant-time check; anything else is False)."""
        if not _ID_RE.fullmatch(slot_id):
            return False
        raw = _unb64(slot_id)
        rand, tag = raw[:_ID_RANDOM], raw[_ID_RANDOM:]
        return hmac.compare_digest(tag, self._mac("id", rand.hex())[:_ID_MAC])

    def put_token(self, slot_id: str, filename: str, size: int, content_type: str, expires: int) -> str:
        mac = self._mac("put", slot_id, filename, str(size), content_type, str(expires))
        return f"{expires}.{_b64(mac)}"

    def check_put(
        self, token: str, slot_id: str, filename: str, size: int, content_type: str, now: float
    ) -> str | None:
        """Why the PUT token is refused ("forged", "expired"), or None when it is good."""
        expires_text, _, _ = token.partition(".")
        if not expires_text.isdigit():
            return "forged"
        expected = self.put_token(slot_id, filename, size, content_type, int(expires_text))
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return "forged"
        if int(expires_text) < now:
            return "expired"
        return None


# -- file names and served headers -----------------------------------------------------------------------

_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def safe_filename(name: str, limit: int = 128) -> str:
    """A file name fit for a URL path segment and a download: no separators, controls or dot names."""
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_NAME.sub("_", name).strip().lstrip(".")
    if len(name) > limit:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot and stem else ""
        name = name[: limit - len(ext) - 1] + "." + ext if ext else name[:limit]
    return name or "file"


#: Types shown in the browser; everything else downloads (no HTML, SVG or script runs from our origin).
_INLINE = re.compile(r"(image/(png|jpeg|gif|webp|avif|bmp)|audio/[\w.+-]+|video/[\w.+-]+|text/plain)")


def content_disposition(filename: str, content_type: str) -> str:
    """RFC 6266 ``Content-Disposition``: an ASCII fallback name, the exact one as RFC 8187 ``filename*``."""
    kind = "inline" if _INLINE.fullmatch(content_type.split(";")[0].strip().lower()) else "attachment"
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()+-]", "_", ascii_name) or "file"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


#: Served with every file: nothing from an upload may run as a page of ours (issue 12 §6).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
    "Referrer-Policy": "no-referrer",
}

_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def normal_type(content_type: str | None) -> str | None:
    """The media type in lower case without parameters, or None when it is not a valid one."""
    if not content_type:
        return "application/octet-stream"
    bare = content_type.split(";")[0].strip().lower()
    return bare if _TYPE_RE.fullmatch(bare) else None


def type_allowed(content_type: str, patterns: list[str]) -> bool:
    """``patterns`` empty: anything; else exact types or ``major/*``."""
    if not patterns:
        return True
    major = content_type.split("/")[0]
    return any(p == content_type or p == f"{major}/*" for p in patterns)


# -- quotas ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_size: int
    quota_bytes: int  # 0: no limit
    quota_files: int
    daily_bytes: int
    daily_files: int
    slots_per_minute: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a slot is refused: an XMPP error condition, its type, a text naming the limit."""

    condition: str
    type: str
    text: str
    #: For "wait" refusals: when asking again may work (XEP-0363 §5 ``<retry stamp/>``).
    retry_at: float | None = None
    #: The file was too large: the maximum (``<file-too-large><max-file-size/>``); 0 otherwise.
    too_large: int = 0


DAY = 86_400.0


@dataclass(slots=True)
class Usage:
    """One user's files (and reserved slots): (created, size, slot id) oldest first."""

    files: dict[str, tuple[float, int]] = field(default_factory=dict)
    slot_times: deque[float] = field(default_factory=deque)


class Ledger:
    """Per-user accounting of stored files and granted slots, for quotas and the slot rate."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.users: dict[str, Usage] = {}

    def add(self, user: str, slot_id: str, created: float, size: int) -> None:
        self.users.setdefault(user, Usage()).files[slot_id] = (created, size)

    def remove(self, user: str, slot_id: str) -> None:
        usage = self.users.get(user)
        if usage is not None:
            usage.files.pop(slot_id, None)
            if not usage.files and not usage.slot_times:
                del self.users[user]

    def totals(self, user: str) -> tuple[int, int]:
        usage = self.users.get(user)
        if usage is None:
            return 0, 0
        return len(usage.files), sum(s for _, s in usage.files.values())

    def check(self, user: str, size: int, now: float) -> Refusal | None:
        """Whether ``user`` may get a slot for ``size`` bytes now (None) or why not."""
        lim = self.limits
        if size > lim.max_file_size:
            return Refusal(
                "not-acceptable",
                "modify",
                f"File too large: the maximum file size is {lim.max_file_size} bytes",
                too_large=lim.max_file_size,
            )
        usage = self.users.get(user) or Usage()
        if lim.slots_per_minute:
            while usage.slot_times and usage.slot_times[0] <= now - 60:
                usage.slot_times.popleft()
            if len(usage.slot_times) >= lim.slots_per_minute:
                return Refusal(
                    "resource-constraint",
                    "wait",
                    f"Too many upload requests: at most {lim.slots_per_minute} a minute",
                    retry_at=usage.slot_times[0] + 60,
                )
        count = len(usage.files)
        total = sum(s for _, s in usage.files.values())
        if lim.quota_files and count + 1 > lim.quota_files:
            return Refusal("not-allowed", "cancel", f"Quota reached: at most {lim.quota_files} files stored")
        if lim.quota_bytes and total + size > lim.quota_bytes:
            return Refusal(
                "not-allowed", "cancel", f"Quota reached: at most {lim.quota_bytes} bytes stored in total"
            )
        recent = sorted((c, s) for c, s in usage.files.values() if c > now - DAY)
        if lim.daily_files and len(recent) + 1 > lim.daily_files:
            oldest = recent[len(recent) - lim.daily_files][0]
            return Refusal(
                "resource-constraint",
                "wait",
                f"Daily quota reached: at most {lim.daily_files} files a day",
                retry_at=oldest + DAY,
            )
        if lim.daily_bytes and sum(s for _, s in recent) + size > lim.daily_bytes:
            # When enough of today's files have aged out of the 24-hour window for this one to fit.
            need = sum(s for _, s in recent) + size - lim.daily_bytes
            freed, retry = 0, now + DAY
            for created, s in recent:
                freed += s
                if freed >= need:
                    retry = created + DAY
                    break
            return Refusal(
                "resource-constraint",
                "wait",
                f"Daily quota reached: at most {lim.daily_bytes} bytes a day",
                retry_at=retry,
            )
        return None

    def note_slot(self, user: str, now: float) -> None:
        self.users.setdefault(user, Usage()).slot_times.append(now)


class RateWindow:
    """Events per key in a sliding minute (per-IP PUT rate)."""

    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._times: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float) -> bool:
        if not self.per_minute:
            return True
        times = self._times.get(key)
        if times is None:
            if len(self._times) >= self.max_keys:
                self._times.clear()  # a flood of addresses: forget old windows rather than grow
            times = self._times[key] = deque()
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.per_minute:
            return False
        times.append(now)
        return True
