"""The ``roost`` command line, run in-process against a temporary config and SQLite database."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import roost.cli.main as cli
from roost.cli.check import _port_in_use as real_port_in_use
from roost.cli.main import main
from roost.config import CONFIG_ENV_VAR, Config
from roost.storage.api import StoredCredentials
from roost.storage.manager import StorageManager
from roost.stream.sasl.scram import derive_credentials

PASSWORD = "s3cret-Pa55word"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No $ROOST_CONFIG from the environment; root logger restored after commands reconfigure it."""
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    # No default server of this machine's (its control socket link) is found by these tests.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    # `roost check` probes its listen ports; the default ones may be taken by anything on a test
    # machine. The probe itself is tested below with a port this test holds.
    monkeypatch.setattr("roost.cli.check._port_in_use", lambda host, port: "")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "roost.toml"
    path.write_text(
        '[server]\ndomains = ["example.org", "example.net"]\ndata_dir = "data"\n'
        '[storage]\nscram_hashes = ["SHA-1", "SHA-256"]\nscram_iterations = 4096\n',
        encoding="utf-8",
    )
    return path


def run(*argv: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(list(argv))


def credentials(config_file: Path, domain: str, user: str, hash_name: str) -> StoredCredentials | None:
    async def get() -> StoredCredentials | None:
        storage = await StorageManager.open(f"sqlite:///{config_file.parent / 'data' / 'roost.db'}")
        try:
            return await storage.accounts.get_credentials(domain, user, hash_name)
        finally:
            await storage.close()

    return asyncio.run(get())


def password_matches(creds: StoredCredentials | None, password: str) -> bool:
    assert creds is not None
    again = derive_credentials(password, creds.hash_name, creds.iterations, salt=creds.salt)
    return again.stored_key == creds.stored_key


def users(config_file: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    capsys.readouterr()
    assert main(["-c", str(config_file), "user", "list", *args]) == 0
    return capsys.readouterr().out.splitlines()


# --- user add / list / passwd / del -------------------------------------------------------------


def test_user_add_then_list(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "alice@example.org", "--password", PASSWORD]) == 0
    assert "created alice@example.org" in capsys.readouterr().out
    assert users(config_file, capsys) == ["alice@example.org"]
    for hash_name in ("SHA-1", "SHA-256"):
        creds = credentials(config_file, "example.org", "alice", hash_name)
        assert password_matches(creds, PASSWORD)
        assert creds is not None and creds.iterations == 4096
    assert credentials(config_file, "example.org", "alice", "SHA-512") is None  # not in scram_hashes


def test_user_add_normalizes_the_jid(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "Alice@Example.ORG", "--password", PASSWORD]) == 0
    assert users(config_file, capsys) == ["alice@example.org"]


def test_user_add_existing_fails_with_exit_1(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "bob@example.org", "--password", "one"]) == 0
    assert main(["-c", str(config_file), "user", "add", "bob@example.org", "--password", "two"]) == 1
    assert "bob@example.org already exists" in capsys.readouterr().err
    assert password_matches(credentials(config_file, "example.org", "bob", "SHA-256"), "one")


def test_user_add_password_stdin(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "user", "add", "carol@example.org", "--password-stdin", "-c", str(config_file),
        stdin="with space \n", monkeypatch=monkeypatch,
    )  # fmt: skip
    assert code == 0
    assert password_matches(credentials(config_file, "example.org", "carol", "SHA-1"), "with space ")


def test_user_add_reads_piped_line_without_option(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = run(
        "-c", str(config_file), "user", "add", "dan@example.org", stdin="piped\n", monkeypatch=monkeypatch
    )
    assert code == 0
    assert password_matches(credentials(config_file, "example.org", "dan", "SHA-1"), "piped")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_user_add_prompts_twice_on_a_terminal(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return "typed-twice"

    monkeypatch.setattr("sys.stdin", _Tty())
    monkeypatch.setattr(cli.getpass, "getpass", fake_getpass)
    assert main(["-c", str(config_file), "user", "add", "erin@example.org"]) == 0
    assert len(prompts) == 2
    assert password_matches(credentials(config_file, "example.org", "erin", "SHA-1"), "typed-twice")


def test_user_add_prompt_mismatch_is_a_usage_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["first", "second"])
    monkeypatch.setattr("sys.stdin", _Tty())
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(answers))
    assert main(["-c", str(config_file), "user", "add", "fay@example.org"]) == 2
    assert "do not match" in capsys.readouterr().err
    assert users(config_file, capsys) == []


def test_user_add_empty_password_refused(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run("-c", str(config_file), "user", "add", "gus@example.org", stdin="\n", monkeypatch=monkeypatch)
        == 2
    )
    assert "password is empty" in capsys.readouterr().err


def test_user_add_domain_not_served(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "x@elsewhere.com", "--password", PASSWORD]) == 2
    err = capsys.readouterr().err
    assert "'elsewhere.com' is not a domain of this server" in err
    assert "example.org, example.net" in err


@pytest.mark.parametrize("jid", ["example.org", "a@example.org/res", "a b@example.org"])
def test_user_add_bad_jid(config_file: Path, capsys: pytest.CaptureFixture[str], jid: str) -> None:
    assert main(["-c", str(config_file), "user", "add", jid, "--password", PASSWORD]) == 2
    assert jid in capsys.readouterr().err


def test_password_never_printed(
    config_file: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    main(
        [
            "-c",
            str(config_file),
            "--log-level",
            "debug",
            "user",
            "add",
            "hal@example.org",
            "--password",
            PASSWORD,
        ]
    )
    main(["-c", str(config_file), "user", "add", "hal@example.org", "--password", PASSWORD])
    main(["-c", str(config_file), "user", "passwd", "hal@example.org", "--password", PASSWORD + "2"])
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err + caplog.text


def test_user_passwd(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "ivy@example.net", "--password", "old"]) == 0
    assert main(["-c", str(config_file), "user", "passwd", "ivy@example.net", "--password", "new"]) == 0
    assert "password changed for ivy@example.net" in capsys.readouterr().out
    creds = credentials(config_file, "example.net", "ivy", "SHA-256")
    assert password_matches(creds, "new")
    assert not password_matches(creds, "old")


def test_user_passwd_unknown_user(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "passwd", "nobody@example.org", "--password", "x"]) == 1
    assert "no such user: nobody@example.org" in capsys.readouterr().err


def test_user_del(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("jay", "kim"):
        assert main(["-c", str(config_file), "user", "add", f"{name}@example.org", "--password", "pw"]) == 0
    assert main(["-c", str(config_file), "user", "del", "jay@example.org"]) == 0
    assert users(config_file, capsys) == ["kim@example.org"]
    assert main(["-c", str(config_file), "user", "del", "jay@example.org"]) == 1
    assert "no such user: jay@example.org" in capsys.readouterr().err


def test_user_list_by_domain(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for jid in ("zed@example.org", "amy@example.org", "lou@example.net"):
        assert main(["-c", str(config_file), "user", "add", jid, "--password", "pw"]) == 0
    assert users(config_file, capsys) == ["lou@example.net", "amy@example.org", "zed@example.org"]
    assert users(config_file, capsys, "Example.ORG") == ["amy@example.org", "zed@example.org"]
    assert main(["-c", str(config_file), "user", "list", "not a domain"]) == 2


# --- user import -------------------------------------------------------------------------------


def test_user_import(tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "old@example.org", "--password", "keep"]) == 0
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "# exported from the old server\n"  # 1
        "jid,password\n"  # 2
        "new1@example.org,pw one\n"  # 3
        "\n"  # 4
        "old@example.org,changed\n"  # 5: exists, skipped
        "bad,line,with,fields\n"  # 6: error
        'new2@example.net,"a,b ""c"""\n'  # 7: quoted
        "x@elsewhere.com,pw\n"  # 8: error
        "new1@example.org,again\n"  # 9: duplicate
        "new3@example.org,\n",  # 10: empty password
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["-c", str(config_file), "user", "import", str(csv_file)]) == 1
    err = capsys.readouterr().err
    assert "line 6: expected 2 fields" in err
    assert "line 8: 'elsewhere.com' is not a domain of this server" in err
    assert "line 9: new1@example.org is already on line 3" in err
    assert "line 10: new3@example.org: empty password" in err
    assert "import finished: 7/7 rows: 2 created, 1 skipped (already exist), 4 errors" in err
    assert users(config_file, capsys) == ["new2@example.net", "new1@example.org", "old@example.org"]
    assert password_matches(credentials(config_file, "example.org", "new1", "SHA-256"), "pw one")
    assert password_matches(credentials(config_file, "example.net", "new2", "SHA-1"), 'a,b "c"')
    assert password_matches(credentials(config_file, "example.org", "old", "SHA-1"), "keep")


def test_user_import_without_header_reports_progress(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "IMPORT_PROGRESS_EVERY", 2)
    csv_file = tmp_path / "users.csv"
    csv_file.write_text("".join(f"u{i}@example.org,pw{i}\n" for i in range(5)), encoding="utf-8")
    assert main(["user", "import", str(csv_file), "--config", str(config_file)]) == 0
    err = capsys.readouterr().err
    assert "import: 2/5 rows: 2 created" in err
    assert "import: 4/5 rows: 4 created" in err
    assert "import finished: 5/5 rows: 5 created, 0 skipped (already exist), 0 errors" in err
    assert len(users(config_file, capsys)) == 5


def test_user_import_from_stdin(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = run(
        "-c", str(config_file), "user", "import", "-", stdin="p@example.org,x\n", monkeypatch=monkeypatch
    )
    assert code == 0
    assert password_matches(credentials(config_file, "example.org", "p", "SHA-1"), "x")


def test_user_import_missing_file(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(config_file), "user", "import", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


# --- global options ----------------------------------------------------------------------------


def test_config_option_after_the_subcommand(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "add", "q@example.net", "--password", "pw", "--config", str(config_file)]) == 0
    assert main(["user", "list", "-c", str(config_file)]) == 0
    assert "q@example.net" in capsys.readouterr().out


def test_config_from_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(config_file))
    assert main(["user", "add", "r@example.net", "--password", "pw"]) == 0
    assert main(["user", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "r@example.net"


def test_missing_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "missing.toml"), "user", "list"]) == 2
    assert "missing.toml: config file not found" in capsys.readouterr().err


def test_run_passes_config_with_overrides_to_serve(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Config] = []

    def fake_serve(config: Config, overrides: dict[str, str] | None = None) -> int:
        seen.append(config)
        return 0

    import roost.app

    monkeypatch.setattr(roost.app, "serve", fake_serve)
    code = main(
        ["--log-level", "warning", "run", "-c", str(config_file), "--log-level", "debug",
         "--set", "c2s.max_stanza_bytes=65536"]
    )  # fmt: skip
    assert code == 0
    (config,) = seen
    assert config.path == config_file
    assert config.log.level == "debug"  # the later option wins
    assert config.c2s.max_stanza_bytes == 65536


def test_run_with_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[c2s]\nrequre_encryption = false\n", encoding="utf-8")
    assert main(["run", "-c", str(bad)]) == 2
    assert "did you mean 'require_encryption'?" in capsys.readouterr().err


def test_bad_set_option(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "--set", "novalue", "check"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "examples:" in capsys.readouterr().err


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["check", "--help"],
        ["user", "--help"],
        ["user", "add", "--help"],
        ["user", "del", "--help"],
        ["user", "passwd", "--help"],
        ["user", "list", "--help"],
        ["user", "import", "--help"],
    ],
)
def test_help_teaches_with_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "roost " in out.split("examples:", 1)[1]


# --- check -------------------------------------------------------------------------------------


def test_check_good_config(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "self-signed certificate for example.org, example.net will be generated" in out
    assert "config OK: 2 domains (example.org, example.net), c2s on localhost:5222" in out
    assert "bind loopback only" in out


def test_check_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    assert "config OK: 1 domain (localhost)" in capsys.readouterr().out


def test_check_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "roost.toml"
    bad.write_text('[server]\ndomains = ["ok.example"]\n[c2s]\nmax_stanza_bytes = 5\n', encoding="utf-8")
    assert main(["-c", str(bad), "check"]) == 1
    out = capsys.readouterr().out
    assert "problem:" in out and "[c2s] max_stanza_bytes: expected a value from 1024" in out
    assert "config OK" not in out


def test_check_missing_certificate_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "roost.toml"
    path.write_text('[tls]\ncert = "nope.crt"\nkey = "nope.key"\n', encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"TLS certificate {tmp_path / 'nope.crt'} does not exist" in out
    assert "problems found" in out


def test_check_configured_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from roost.transports.tls import ensure_certificate

    cert, key = ensure_certificate(tmp_path / "gen", ["example.org"])
    path = tmp_path / "roost.toml"
    path.write_text(
        f'[server]\ndomains = ["example.org"]\n[tls]\ncert = "{cert}"\nkey = "{key}"\n', encoding="utf-8"
    )
    assert main(["check", "-c", str(path)]) == 0
    assert f"TLS from {cert}" in capsys.readouterr().out

    path.write_text(
        f'[server]\ndomains = ["other.org"]\n[tls]\ncert = "{cert}"\nkey = "{key}"\n', encoding="utf-8"
    )
    assert main(["check", "-c", str(path)]) == 1
    assert "does not cover the domain 'other.org'" in capsys.readouterr().out


def test_check_unwritable_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    path = tmp_path / "roost.toml"
    path.write_text('[server]\ndata_dir = "file"\n', encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    assert f"server.data_dir {blocker} is not a directory" in capsys.readouterr().out


def test_check_all_listeners_disabled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "roost.toml"
    listen = '[listen]\nc2s = ""\nc2s_tls = ""\nhttp = ""\n'
    path.write_text('[server]\ndata_dir = "d"\n' + listen, encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert "every client listener is disabled" in out
    assert "fix:" in out


def test_check_hides_database_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("asyncpg")
    path = tmp_path / "roost.toml"
    path.write_text('[storage]\nurl = "postgresql://roost:hunter2@db/roost"\n', encoding="utf-8")
    main(["check", "-c", str(path)])
    out = capsys.readouterr().out
    assert "postgresql://roost:***@db/roost" in out
    assert "hunter2" not in out


# --- operators' safety: prompts, data directory, domains -----------------------------------------


@pytest.mark.parametrize(
    ("raised", "code", "message"), [(EOFError, 2, "no password given"), (KeyboardInterrupt, 130, "cancelled")]
)
def test_password_prompt_ctrl_d_and_ctrl_c_end_cleanly(
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: type[BaseException],
    code: int,
    message: str,
) -> None:
    def interrupted(prompt: str = "") -> str:
        raise raised

    monkeypatch.setattr("sys.stdin", _Tty())
    monkeypatch.setattr(cli.getpass, "getpass", interrupted)
    assert main(["-c", str(config_file), "user", "add", "hal@example.org"]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert users(config_file, capsys) == []


def test_user_commands_name_the_database(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config_file), "user", "add", "ida@example.org", "--password", "pw"]) == 0
    db = config_file.parent / "data" / "roost.db"
    assert f"created ida@example.org (database sqlite:///{db})" in capsys.readouterr().out
    assert main(["-c", str(config_file), "user", "list"]) == 0
    assert f"1 user in database sqlite:///{db}" in capsys.readouterr().err


def test_without_config_no_new_database_in_an_unexpected_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["user", "add", "jo@localhost", "--password", "pw"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "roost-data" / "roost.db") in err and "nothing was created" in err
    assert not (tmp_path / "roost-data").exists()
    assert main(["user", "list"]) == 1


def test_user_list_of_an_unhosted_domain_is_an_error(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(config_file), "user", "list", "elsewhere.com"]) == 2
    assert "'elsewhere.com' is not a domain of this server" in capsys.readouterr().err


def test_check_reports_a_busy_port_and_every_bad_domain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setattr("roost.cli.check._port_in_use", real_port_in_use)
    path = tmp_path / "roost.toml"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        listen = f'[listen]\nc2s = "127.0.0.1:{port}"\nc2s_tls = "127.0.0.1:0"\nhttp = ""\n'
        path.write_text(listen, encoding="utf-8")
        assert main(["check", "-c", str(path)]) == 1
        out = capsys.readouterr().out
        assert (
            f"listen.c2s 127.0.0.1:{port} is already in use (another program listens on 127.0.0.1:{port})"
            in out
        )
    assert real_port_in_use("127.0.0.1", 0) == ""
    path.write_text('[server]\ndomains = ["ok.example", "bad domain", "also bad!"]\n', encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert "'bad domain'" in out and "'also bad!'" in out


def test_check_warns_of_a_certificate_expiring_soon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=80))
        .not_valid_after(now + datetime.timedelta(days=5))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.org")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path = tmp_path / "roost.toml"
    path.write_text(
        '[server]\ndomains = ["example.org"]\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n', encoding="utf-8"
    )
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "expires on" in out and "within 14 days" in out


# --- federation and components --------------------------------------------------------------------


def test_check_warns_about_federation_with_a_self_signed_certificate_and_an_open_component_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(
        f'[server]\ndomains = ["example.org"]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[listen]]\nkind = "c2s"\naddress = ":0"\n'
        '[[listen]]\nkind = "s2s"\naddress = ":0"\n'
        '[[listen]]\nkind = "component"\naddress = "0.0.0.0:0"\n'
        '[components."irc.example.org"]\nsecret = "s"\n',
        encoding="utf-8",
    )
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "only dialback works" in out
    assert "not on loopback" in out


def test_check_federation_needs_a_domain(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(config_file), "federation"]) == 2
    assert "needs the remote domain" in capsys.readouterr().err


def test_component_domain_must_not_be_a_served_domain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(
        '[server]\ndomains = ["example.org"]\n[[listen]]\nkind = "component"\naddress = "127.0.0.1:0"\n'
        '[components."example.org"]\nsecret = "s"\n',
        encoding="utf-8",
    )
    assert main(["check", "-c", str(path)]) == 1
    assert "a component needs its own" in capsys.readouterr().out


def test_check_warns_when_the_web_chat_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "roost.toml"
    empty = tmp_path / "no-converse"
    empty.mkdir()
    path.write_text(
        f'[server]\ndata_dir = "d"\n[listen]\nc2s = "127.0.0.1:0"\nc2s_tls = ""\nhttp = "127.0.0.1:0"\n'
        f'[http]\nwebchat_assets = "{empty}"\n',
        encoding="utf-8",
    )
    main(["check", "-c", str(path)])
    out = capsys.readouterr().out
    assert f"warning: the web chat (/chat) is not installed: {empty} lacks converse.min.js" in out
