"""roost.config: defaults, file loading, overrides, path resolution and the wording of errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from roost.config import (
    CONFIG_ENV_VAR,
    Config,
    ConfigError,
    ModuleOptions,
    load_config,
    parse_address,
    register_section,
    unregister_section,
)
from roost.config.schema import CORE_SECTIONS, redact_url


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)


def write(tmp_path: Path, text: str, name: str = "roost.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return info.value


# --- defaults ----------------------------------------------------------------------------------


def test_no_file_gives_documented_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.path is None
    assert config.server.domains == ["localhost"]
    assert config.server.data_dir == tmp_path / "roost-data"
    assert config.server.admins == []
    assert config.tls.cert is None and config.tls.key is None
    # Loopback only (IPv4 and IPv6) until the operator opens the server up.
    assert config.listen.c2s == "localhost:5222"
    assert config.listen.c2s_tls == "localhost:5223"
    assert config.listen.http == "localhost:5280"
    assert config.c2s.require_encryption is True
    assert config.c2s.max_stanza_bytes == 262144
    assert config.c2s.max_auth_failures == 3
    assert config.c2s.auth_timeout_seconds == 30
    assert config.c2s.idle_ping_seconds == 300
    assert config.c2s.ping_timeout_seconds == 60
    assert config.c2s.max_send_queue_bytes == 4 * 1024 * 1024
    assert config.c2s.sasl_mechanisms == [
        "SCRAM-SHA-512-PLUS",
        "SCRAM-SHA-512",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
        "PLAIN",
    ]
    assert config.storage.scram_iterations == 4096
    assert config.storage.scram_hashes == ["SHA-1", "SHA-256", "SHA-512"]
    assert config.log.level == "info"
    assert config.log.file is None


def test_storage_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\ndata_dir = "state"\n'))
    assert config.storage.url == f"sqlite:///{tmp_path}/state/roost.db"
    assert config.storage_url == config.storage.url


def test_empty_file_equals_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from_file = load_config(write(tmp_path, ""))
    defaults = load_config(None)
    assert from_file.model_dump(exclude={"path"}) == defaults.model_dump(exclude={"path"})


def test_config_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[server]\ndomains = ["env.example"]\n')
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    config = load_config(None)
    assert config.server.domains == ["env.example"]
    assert config.path == path


def test_explicit_path_wins_over_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, '[server]\ndomains = ["env.example"]\n', "a.toml")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(env_file))
    config = load_config(write(tmp_path, '[server]\ndomains = ["file.example"]\n', "b.toml"))
    assert config.server.domains == ["file.example"]


# --- paths -------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(
        write(
            etc,
            '[server]\ndata_dir = "data"\n[tls]\ncert = "certs/c.pem"\nkey = "certs/k.pem"\n'
            '[log]\nfile = "log/roost.log"\n[storage]\nurl = "sqlite:///db/x.db"\n',
        )
    )
    assert config.server.data_dir == etc / "data"
    assert config.tls.cert == etc / "certs/c.pem"
    assert config.tls.key == etc / "certs/k.pem"
    assert config.log.file == etc / "log/roost.log"
    assert config.storage_url == f"sqlite:///{etc}/db/x.db"


def test_relative_config_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[server]\ndata_dir = "d"\n')
    config = load_config(Path("roost.toml"))
    assert config.path == tmp_path / "roost.toml"
    assert config.server.data_dir == tmp_path / "d"


def test_absolute_paths_and_urls_are_kept(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[server]\ndata_dir = "/srv/roost"\n[storage]\nurl = "sqlite:////srv/x.db"\n')
    )
    assert config.server.data_dir == Path("/srv/roost")
    assert config.storage_url == "sqlite:////srv/x.db"


# --- overrides ---------------------------------------------------------------------------------


def test_overrides_win_over_the_file_and_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevel = "warning"\n[c2s]\nmax_stanza_bytes = 65536\n')
    config = load_config(
        path,
        overrides={
            "log.level": "debug",  # not valid TOML: taken as a string
            "c2s.max_stanza_bytes": "131072",
            "c2s.require_encryption": "false",
            "server.domains": '["a.example", "b.example"]',
            "listen.c2s_tls": '""',
        },
    )
    assert config.log.level == "debug"
    assert config.c2s.max_stanza_bytes == 131072
    assert config.c2s.require_encryption is False
    assert config.server.domains == ["a.example", "b.example"]
    assert config.listen.c2s_tls is None


def test_bad_override_is_blamed_on_the_command_line(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, ""), overrides={"c2s.max_stanza_bytes": "12"})
    assert str(error).startswith("command line: [c2s] max_stanza_bytes:")


def test_override_with_unknown_key_suggests_spelling(tmp_path: Path) -> None:
    error = error_of(None, overrides={"log.levle": "debug"})
    assert "[log] levle: unknown key; did you mean 'level'?" in str(error)


def test_override_without_section_is_refused() -> None:
    error = error_of(None, overrides={"debug": "true"})
    assert "expected section.key" in str(error)


# --- errors ------------------------------------------------------------------------------------


def test_unknown_key_names_file_section_and_nearest_spelling(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "[c2s]\nrequre_encryption = true\n"))
    assert str(error) == (
        f"{tmp_path / 'roost.toml'}: [c2s] requre_encryption: unknown key; did you mean 'require_encryption'?"
    )
    assert error.key == "c2s.requre_encryption"


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "[c2s]\nzzz = 1\n"))
    assert str(error).endswith("[c2s] zzz: unknown key")


def test_unknown_section_suggests_nearest(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[srever]\ndomains = ["x"]\n'))
    assert str(error).endswith("[srever]: unknown section; did you mean 'server'?")


def test_wrong_type_says_expected_and_found(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[c2s]\nrequire_encryption = "yes"\nmax_stanza_bytes = "big"\n'))
    text = str(error)
    assert "[c2s] require_encryption: expected true or false, found 'yes'" in text
    assert "[c2s] max_stanza_bytes: expected an integer, found 'big'" in text
    assert {p.key for p in error.problems} == {"c2s.require_encryption", "c2s.max_stanza_bytes"}


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "c2s = 5\n"))
    assert "[c2s]: expected a table" in str(error)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[c2s]\nmax_stanza_bytes = 100\n",
            "[c2s] max_stanza_bytes: expected a value from 1024 to 16777216, found 100",
        ),
        (
            "[c2s]\nmax_stanza_bytes = 999999999\n",
            "[c2s] max_stanza_bytes: expected a value from 1024 to 16777216, found 999999999",
        ),
        ("[storage]\nscram_iterations = 1000\n", "[storage] scram_iterations: expected a value from 4096"),
        ("[c2s]\nping_timeout_seconds = 0\n", "[c2s] ping_timeout_seconds: expected more than 0, found 0"),
    ],
)
def test_out_of_bounds_values(tmp_path: Path, toml: str, message: str) -> None:
    assert message in str(error_of(write(tmp_path, toml)))


def test_literal_choice_lists_the_choices(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[log]\nlevel = "verbose"\n'))
    assert "[log] level: expected one of 'debug', 'info', 'warning' or 'error', found 'verbose'" in str(error)


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[log]\nlevel = "DEBUG"\n')).log.level == "debug"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    error = error_of(path)
    assert str(error) == f"{path}: config file not found (looked for {path})"


def test_missing_file_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "gone.toml"))
    assert "gone.toml: config file not found" in str(error_of(None))


def test_bad_toml_gives_line_and_column(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[server]\ndomains = ["a"]\ndata_dir = \n'))
    assert str(error).startswith(f"{tmp_path / 'roost.toml'}: line 3, column 12: invalid TOML:")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_bytes(b'[server]\ndata_dir = "\xff"\n')
    assert "line 2: not UTF-8" in str(error_of(path))


def test_cert_without_key(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[tls]\ncert = "c.pem"\n'))
    assert str(error).endswith(
        "[tls]: cert is set but key is not: set both, or neither to use a generated self-signed certificate"
    )


def test_key_without_cert(tmp_path: Path) -> None:
    assert "key is set but cert is not" in str(error_of(write(tmp_path, '[tls]\nkey = "k.pem"\n')))


def test_bad_domain(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[server]\ndomains = ["exa mple.org"]\n'))
    assert "[server] domains: 'exa mple.org' is not a valid domain name" in str(error)


def test_domains_are_normalized_and_duplicates_refused(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\ndomains = ["Example.ORG."]\n'))
    assert config.server.domains == ["example.org"]
    error = error_of(write(tmp_path, '[server]\ndomains = ["example.org", "EXAMPLE.org"]\n'))
    assert "listed twice" in str(error)


def test_empty_domain_list_is_refused(tmp_path: Path) -> None:
    assert "expected at least 1 item" in str(error_of(write(tmp_path, "[server]\ndomains = []\n")))


def test_admins_must_be_bare_user_jids(tmp_path: Path) -> None:
    ok = load_config(write(tmp_path, '[server]\nadmins = ["Admin@Example.org"]\n'))
    assert ok.server.admins == ["admin@example.org"]
    assert "not a bare user JID" in str(error_of(write(tmp_path, '[server]\nadmins = ["a@b/c"]\n')))
    assert "not a bare user JID" in str(error_of(write(tmp_path, '[server]\nadmins = ["example.org"]\n')))


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "[c2s]\nmax_auth_failures = 0\n[log]\nlevel = 3\n[nope]\n"))
    assert len(error.problems) == 3
    assert len(str(error).splitlines()) == 3


def test_unknown_sasl_mechanism(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[c2s]\nsasl_mechanisms = ["DIGEST-MD5"]\n'))
    assert "unknown SASL mechanism 'DIGEST-MD5'" in str(error)


def test_scram_mechanism_needs_its_hash_stored(tmp_path: Path) -> None:
    text = '[c2s]\nsasl_mechanisms = ["SCRAM-SHA-1", "PLAIN"]\n[storage]\nscram_hashes = ["SHA-256"]\n'
    error = error_of(write(tmp_path, text))
    assert error.key == "c2s.sasl_mechanisms"
    assert "SCRAM-SHA-1 needs 'SHA-1' in storage.scram_hashes" in str(error)


def test_default_mechanisms_follow_stored_hashes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[storage]\nscram_hashes = ["SHA-256"]\n'))
    assert config.c2s.sasl_mechanisms == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]


def test_unsupported_storage_url_hides_password(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[storage]\nurl = "mysql://root:hunter2@db/roost"\n'))
    assert "[storage] url:" in str(error)
    assert "hunter2" not in str(error)


def test_redact_url() -> None:
    assert redact_url("postgresql://roost:s3cret@db:5432/roost") == "postgresql://roost:***@db:5432/roost"
    assert redact_url("sqlite:////var/lib/roost.db") == "sqlite:////var/lib/roost.db"


# --- listen addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:5222", ("0.0.0.0", 5222)),
        ("[::1]:5222", ("::1", 5222)),
        (":5222", ("", 5222)),
        ("localhost:5223", ("localhost", 5223)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("5222", "write ':5222'"),
        ("::1:5222", "IPv6 addresses need brackets"),
        ("host", "has no port"),
        ("host:99999", "not a number from 0 to 65535"),
        ("[nothex]:5222", "not an IPv6 address"),
        ("bad host:1", "not a host name"),
    ],
)
def test_parse_address_errors_explain(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        parse_address(text)


def test_empty_listen_address_disables(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listen]\nc2s = ""\nc2s_tls = "[::]:5223"\n'))
    assert config.listen.c2s is None and config.listen.c2s_address is None
    assert config.listen.c2s_tls_address == ("::", 5223)


def test_bad_listen_address_in_file(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '[listen]\nc2s = "5222"\n'))
    assert "[listen] c2s: '5222' has no host; write ':5222' for every interface" in str(error)


# --- module sections ---------------------------------------------------------------------------


class _GreeterOptions(ModuleOptions):
    greeting: str = Field(default="hello", description="What to say.")
    max_words: int = Field(default=10, ge=1, description="How much to say.")


@pytest.fixture
def greeter() -> Iterator[type[_GreeterOptions]]:
    register_section("greeter_test", _GreeterOptions)
    try:
        yield _GreeterOptions
    finally:
        unregister_section("greeter_test")


def test_registered_module_section_is_loaded_and_typed(
    tmp_path: Path, greeter: type[_GreeterOptions]
) -> None:
    config = load_config(write(tmp_path, '[greeter_test]\ngreeting = "hi"\nenabled = false\n'))
    options = config.module_options("greeter_test", greeter)
    assert isinstance(options, greeter)
    assert options.greeting == "hi" and options.max_words == 10 and options.enabled is False


def test_registered_module_without_section_gets_defaults(
    tmp_path: Path, greeter: type[_GreeterOptions]
) -> None:
    options = load_config(write(tmp_path, "")).module_options("greeter_test", greeter)
    assert options.greeting == "hello" and options.enabled is True


def test_module_section_errors_name_the_module_key(tmp_path: Path, greeter: type[_GreeterOptions]) -> None:
    error = error_of(write(tmp_path, "[greeter_test]\ngreting = 1\nmax_words = 0\n"))
    text = str(error)
    assert "[greeter_test] greting: unknown key; did you mean 'greeting'?" in text
    assert "[greeter_test] max_words: expected at least 1, found 0" in text


def test_unregistered_module_section_is_unknown(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "[greeter_test]\nenabled = true\n"))
    assert "[greeter_test]: unknown section" in str(error)


def test_unknown_section_suggests_registered_module(tmp_path: Path, greeter: type[_GreeterOptions]) -> None:
    error = error_of(write(tmp_path, "[greeter_tset]\n"))
    assert "did you mean 'greeter_test'?" in str(error)


def test_module_options_of_unregistered_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        Config().module_options("no_such_module_here")


def test_register_section_rules() -> None:
    class Undocumented(ModuleOptions):
        x: int = 1

    with pytest.raises(ValueError, match="without a description: x"):
        register_section("undocumented_test", Undocumented)
    with pytest.raises(ValueError, match="built-in section"):
        register_section("server", _GreeterOptions)
    with pytest.raises(TypeError):
        register_section("plain_test", Config)
    register_section("twice_test", _GreeterOptions)
    try:
        register_section("twice_test", _GreeterOptions)  # same model again: harmless

        class Other(ModuleOptions):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_section("twice_test", Other)
    finally:
        unregister_section("twice_test")


def test_built_in_module_sections_are_found_without_importing_them_first(tmp_path: Path) -> None:
    """Modules register their section on import; the loader imports them when the file names them."""
    from roost.config import registered_sections
    from roost.config.loader import discover_modules

    discover_modules()
    sections = registered_sections()
    if not sections:
        pytest.skip("no built-in module declares a section yet")
    name = sorted(n for n, m in sections.items() if m.__module__.startswith("roost."))[0]
    config = load_config(write(tmp_path, f"[{name}]\nenabled = false\n"))
    assert config.module_options(name).enabled is False


# --- the schema itself ---------------------------------------------------------------------------


def test_every_core_option_has_description_and_example() -> None:
    for section, model in CORE_SECTIONS.items():
        for key, field in model.model_fields.items():
            assert field.description, f"{section}.{key} has no description"
            assert field.examples, f"{section}.{key} has no example"


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.c2s.max_stanza_bytes = 1  # type: ignore[misc]


def test_listen_array_of_tables(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[[listen]]\nkind = "c2s"\naddress = "127.0.0.1:5222"\n\n'
            '[[listen]]\nkind = "c2s"\naddress = "[::1]:5222"\n\n'
            '[[listen]]\nkind = "https"\naddress = ":5443"\nbacklog = 64\n',
        )
    )
    assert [(e.kind, e.host_port) for e in config.listeners] == [
        ("c2s", ("127.0.0.1", 5222)),
        ("c2s", ("::1", 5222)),
        ("https", ("", 5443)),
    ]
    assert config.listeners[2].backlog == 64


def test_listen_shorthand_table_becomes_entries(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listen]\nc2s = "127.0.0.1:5222"\nc2s_tls = ""\n'))
    # The HTTP listener (WebSocket, BOSH, /chat) is on by default, loopback only.
    assert [(e.kind, e.address) for e in config.listeners] == [
        ("c2s", "127.0.0.1:5222"),
        ("http", "localhost:5280"),
    ]
    config = load_config(write(tmp_path, '[listen]\nc2s = "127.0.0.1:5222"\nc2s_tls = ""\nhttp = ""\n'))
    assert [(e.kind, e.address) for e in config.listeners] == [("c2s", "127.0.0.1:5222")]


def test_listen_forms_cannot_be_mixed(tmp_path: Path) -> None:
    error = error_of(
        write(tmp_path, '[listen]\nc2s = ":5222"\n\n[[listen]]\nkind = "c2s_tls"\naddress = ":5223"\n')
    )
    assert "uses both the [listen] table" in str(error)
    assert "keep one form" in str(error)


def test_listen_entry_errors_name_the_entry(tmp_path: Path) -> None:
    error = error_of(
        write(
            tmp_path,
            '[[listen]]\nkind = "c2s"\naddress = "5222"\n\n[[listen]]\nkind = "smtp"\naddress = ":25"\n',
        )
    )
    text = str(error)
    assert "[listen[0]] address: '5222' has no host" in text or "listen[0].address" in text
    assert "kind" in text and "smtp" in text


def test_same_address_twice_is_refused(tmp_path: Path) -> None:
    error = error_of(
        write(
            tmp_path,
            '[[listen]]\nkind = "c2s"\naddress = ":5222"\n[[listen]]\nkind = "c2s_tls"\naddress = ":5222"\n',
        )
    )
    assert "same address as listen[0]" in str(error)
