"""roost.util.logging: line format, connection ids, secret masking."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.util.logging import (
    RedactingFilter,
    SessionLogger,
    bind_conn_id,
    reading,
    redact,
    setup_logging,
)

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+)( \[[^\]]+\])? (.*)")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    path = tmp_path / "logs" / "roost.log"
    setup_logging("debug", path)
    yield path
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(path: Path) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text(encoding="utf-8").splitlines()


def test_one_line_per_event_with_time_level_logger(log_file: Path) -> None:
    logging.getLogger("roost.test").info("hello %s", "world")
    (line,) = lines(log_file)
    match = LINE.fullmatch(line)
    assert match is not None, line
    assert match.group(1, 2, 4) == ("INFO", "roost.test", "hello world")
    assert match.group(3) is None


def test_newlines_in_messages_are_escaped(log_file: Path) -> None:
    logging.getLogger("roost.test").warning("two\nlines")
    assert lines(log_file)[0].endswith(r"two\nlines")


def test_traceback_lines_are_marked_as_part_of_the_event(log_file: Path) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("roost.test").exception("failed")
    first, *rest = lines(log_file)
    assert first.endswith("failed")
    assert rest and all(line.startswith("  | ") for line in rest)
    assert "RuntimeError: boom" in rest[-1]


def test_session_logger_prefixes_connection_id(log_file: Path) -> None:
    SessionLogger(logging.getLogger("roost.c2s"), "c2s-1a2b").info("bound %s", "alice@example.org/phone")
    match = LINE.fullmatch(lines(log_file)[0])
    assert match is not None
    assert match.group(3) == " [c2s-1a2b]"
    assert match.group(4) == "bound alice@example.org/phone"


async def test_bound_connection_id_tags_every_logger_in_the_task(log_file: Path) -> None:
    async def handle() -> None:
        with bind_conn_id("c2s-beef"):
            logging.getLogger("roost.router").info("routed")
            await asyncio.sleep(0)
            logging.getLogger("roost.mod.roster").info("pushed")

    await asyncio.gather(handle(), asyncio.create_task(asyncio.sleep(0)))
    logging.getLogger("roost.server").info("outside")
    got = lines(log_file)
    assert "roost.router [c2s-beef] routed" in got[0]
    assert "roost.mod.roster [c2s-beef] pushed" in got[1]
    assert "[" not in got[2].split("roost.server", 1)[1]


async def test_reading_tags_lines_and_the_tasks_started_inside(log_file: Path) -> None:
    """The read path's binder: a plain attribute for the synchronous block; a task spawned inside
    it (Server.spawn passes task_context()) keeps the id after the block has ended."""
    from roost.util.logging import task_context

    async def later() -> None:
        await asyncio.sleep(0)
        logging.getLogger("roost.mod.mam").info("stored")

    with reading("c2s-cafe"):
        logging.getLogger("roost.router").info("routed")
        task = asyncio.get_running_loop().create_task(later(), context=task_context())
        with reading("c2s-f00d"):  # nested: the innermost wins, and the outer comes back
            logging.getLogger("roost.router").info("inner")
        logging.getLogger("roost.router").info("outer again")
    logging.getLogger("roost.server").info("outside")
    await task
    got = lines(log_file)
    assert "[c2s-cafe] routed" in got[0]
    assert "[c2s-f00d] inner" in got[1]
    assert "[c2s-cafe] outer again" in got[2]
    assert "[" not in got[3].split("roost.server", 1)[1]
    assert "roost.mod.mam [c2s-cafe] stored" in got[4]


def test_setup_twice_replaces_the_handler(log_file: Path) -> None:
    setup_logging("info", log_file)
    logging.getLogger("roost.test").info("once")
    logging.getLogger("roost.test").debug("hidden at info")
    assert [line for line in lines(log_file) if "once" in line] == [lines(log_file)[-1]]
    assert not any("hidden" in line for line in lines(log_file))


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("chatty")


def test_secrets_are_masked_in_written_lines(log_file: Path) -> None:
    log = logging.getLogger("roost.c2s")
    log.debug(
        "RECV %s",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
    )
    log.debug("register with password=hunter2")
    text = "\n".join(lines(log_file))
    assert "AGFsaWNlAHNlY3JldA==" not in text
    assert "hunter2" not in text
    assert "mechanism='PLAIN'>[redacted]</auth>" in text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1qdWxpZXQ=</auth>",
            "biwsbj1",
        ),
        ("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdzLHI9</response>", "Yz1iaXdz"),
        ('b\'<auth mechanism="PLAIN">AGFsaWNl', "AGFsaWNl"),  # one read, no closing tag yet
        ("<sasl:auth mechanism='PLAIN'>AGJvYgBwdw==</sasl:auth>", "AGJvYgBwdw=="),
        ("<initial-response>AGJvYgBwdw==</initial-response>", "AGJvYgBwdw=="),
        (
            "<query xmlns='jabber:iq:register'><username>bob</username><password>letmein</password></query>",
            "letmein",
        ),
        ("<field var='password' type='text-private'><value>letmein</value></field>", "letmein"),
        ("<field type='text-private' var='muc#roomconfig_roomsecret'><value>cave</value></field>", "cave"),
        ("password=letmein other=1", "letmein"),
        ('{"password": "letmein", "user": "bob"}', "letmein"),
        ("Password: 'letmein'", "letmein"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "[redacted]" in masked


@pytest.mark.parametrize(
    "text",
    [
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'/>",
        "<message to='juliet@example.com'><body>hello</body></message>",
        "<query xmlns='jabber:iq:auth'/>",
        "<authenticate>x</authenticate>",
        "password change requested for alice",
    ],
)
def test_redact_leaves_other_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redacting_filter_formats_args_once() -> None:
    record = logging.LogRecord(
        "x", logging.DEBUG, __file__, 1, "SEND %s to %s", ("<password>pw</password>", "a"), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "SEND <password>[redacted]</password> to a"
