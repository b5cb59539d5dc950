"""Logging set-up: one line per event, the connection id on every line of a session, secrets masked.

A session's id reaches its log lines two ways: explicitly through :class:`SessionLogger`, or
implicitly through :data:`conn_id_var`, which a connection's task sets once so that every logger used
while handling that connection (router, modules, storage) tags its lines too.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import Context, ContextVar, Token, copy_context
from pathlib import Path
from typing import Any

__all__ = [
    "LEVELS",
    "ConnIdFilter",
    "LineFormatter",
    "RedactingFilter",
    "SessionLogger",
    "bind_conn_id",
    "conn_id_var",
    "current_conn_id",
    "reading",
    "redact",
    "setup_logging",
    "task_context",
]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: The id of the connection the current task serves (e.g. "c2s-1a2b"), or None.
conn_id_var: ContextVar[str | None] = ContextVar("roost_conn_id", default=None)


class _Reading:
    """The connection whose input is being handled right now, synchronously (see :class:`reading`)."""

    conn_id: str | None = None


#: For the hottest read path (``C2SDriver.receive_data``, once per read of every connection): it sets
#: ``READING.conn_id`` itself in a try/finally, as :class:`reading` would, without the object and its
#: ``__enter__``/``__exit__`` calls.
READING = _Reading


class reading:
    """Tag log lines with ``conn_id`` while a connection's input is handled, synchronously.

    The read path of every connection runs this once per read: a plain attribute set and restored,
    where a ContextVar set/reset allocated a new context mapping each time (measured: ~4 % of the
    server's CPU at 1:1 saturation). Only for code that does not await inside the block; a task it
    spawns through :meth:`roost.core.server.Server.spawn` inherits the id (:func:`task_context`).
    """

    __slots__ = ("_conn_id", "_prev")

    def __init__(self, conn_id: str) -> None:
        self._conn_id = conn_id

    def __enter__(self) -> None:
        self._prev = _Reading.conn_id
        _Reading.conn_id = self._conn_id

    def __exit__(self, *exc: object) -> None:
        _Reading.conn_id = self._prev


def current_conn_id() -> str | None:
    """The connection id log lines get now: the innermost synchronous :class:`reading`, else the task's."""
    return _Reading.conn_id or conn_id_var.get()


def task_context() -> Context | None:
    """A context for a task started inside :class:`reading`: it carries the connection id; None
    outside one (the task copies the current context as usual)."""
    conn_id = _Reading.conn_id
    if conn_id is None:
        return None
    context = copy_context()
    context.run(conn_id_var.set, conn_id)
    return context


class bind_conn_id:
    """Tag every log line emitted in this context (and tasks it starts) with ``conn_id``.

    A class rather than a ``@contextmanager`` generator: it runs on every read of every connection,
    and a generator frame per read cost more than the two ContextVar calls it wraps.
    """

    __slots__ = ("_conn_id", "_token")

    _token: Token[str | None]

    def __init__(self, conn_id: str) -> None:
        self._conn_id = conn_id

    def __enter__(self) -> None:
        self._token = conn_id_var.set(self._conn_id)

    def __exit__(self, *exc: object) -> None:
        conn_id_var.reset(self._token)


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for one connection: every line carries its id, e.g. ``[c2s-1a2b]``."""

    def __init__(self, logger: logging.Logger, conn_id: str) -> None:
        super().__init__(logger, {"conn_id": conn_id})
        self.conn_id = conn_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["conn_id"] = self.conn_id
        kwargs["extra"] = extra
        return msg, kwargs


class ConnIdFilter(logging.Filter):
    """Fill ``record.conn_id`` from :data:`conn_id_var` when the caller did not set it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "conn_id", None) is None:
            record.conn_id = _Reading.conn_id or conn_id_var.get()
        return True


# --- redaction ---------------------------------------------------------------------------------

_MASK = "[redacted]"

# Text content of elements that carry credentials: SASL <auth>/<response> (RFC 6120 §6.4.2, §6.4.3;
# base64 of PLAIN passwords or SCRAM proofs), SASL2 <initial-response> (XEP-0388), <password> (XEP-0077
# registration, XEP-0078, MUC room passwords). The closing tag may be missing when a trace shows
# one read of a stream, so the mask runs to the next '<' or the end of the text.
_SECRET_ELEMENT = re.compile(
    r"(<(?:[\w.-]+:)?(?:auth|response|initial-response|password)(?:\s[^<>]*)?(?<!/)>)([^<]+)",
    re.IGNORECASE,
)
# Data-form fields whose var names a password or secret (XEP-0077 forms, MUC room config).
_SECRET_FIELD = re.compile(
    r"(<field\b[^<>]*\bvar\s*=\s*[\"'][^\"']*(?:password|secret)[^\"']*[\"'][^<>]*>\s*<value\s*>)([^<]+)",
    re.IGNORECASE,
)
# key=value / key: value / "key": "value" pairs in free text.
_SECRET_PAIR = re.compile(
    r"""(["']?\b(?:password|passwd|pw|secret)["']?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;&)}\]]+)""",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Mask passwords and SASL payloads in a log message."""
    text = _SECRET_ELEMENT.sub(lambda m: m.group(1) + _MASK, text)
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + _MASK, text)
    return _SECRET_PAIR.sub(lambda m: m.group(1) + _MASK, text)


class RedactingFilter(logging.Filter):
    """Rewrite each record's message with :func:`redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it for the handler to report
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


# --- formatting --------------------------------------------------------------------------------


class LineFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO roost.core.router [c2s-1a2b] message``, one line per event.

    Newlines inside the message are escaped so each event stays on one line; a traceback follows on
    lines starting with ``  | `` so it is still visibly part of the event.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        conn_id = getattr(record, "conn_id", None)
        tag = f" [{conn_id}]" if conn_id else ""
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{stamp}.{millis:03d}Z {record.levelname} {record.name}{tag} {message}"
        extra = ""
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            extra = record.exc_text
        if record.stack_info:
            extra = (
                f"{extra}\n{self.formatStack(record.stack_info)}"
                if extra
                else self.formatStack(record.stack_info)
            )
        if extra:
            line += "\n" + "\n".join("  | " + part for part in extra.splitlines())
        return line


class _RoostHandlerMarker:
    """Marks handlers installed by setup_logging so a second call replaces rather than adds."""


def setup_logging(level: str, file: Path | None = None) -> logging.Handler:
    """Send every log line at ``level`` or above to ``file`` (appended) or standard error.

    Calling it again replaces the previous set-up. Returns the handler installed.
    """
    try:
        numeric = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}") from None
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    handler.addFilter(ConnIdFilter())
    handler.addFilter(RedactingFilter())
    setattr(handler, "_roost", _RoostHandlerMarker)  # noqa: B010

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_roost", None) is _RoostHandlerMarker:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # Libraries that narrate every query (SQLAlchemy logs each statement at INFO once its logger is
    # enabled) would drown Roost's own lines: they speak only for warnings and errors.
    for noisy in ("aiosqlite", "asyncio", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    return handler
