from __future__ import annotations

import pytest

from roost.stream.sasl.plain import parse_plain, verify_password
from roost.stream.sasl.scram import HASH_NAMES, SaslFailure, derive_credentials


def test_parse_without_authzid() -> None:
    assert parse_plain(b"\0juliet\0r0m30myr0m30") == (None, "juliet", "r0m30myr0m30")


def test_parse_with_authzid_and_case_mapped_username() -> None:
    assert parse_plain(b"juliet@example.com\0Juliet\0pw") == ("juliet@example.com", "juliet", "pw")


def test_password_is_returned_raw() -> None:
    assert parse_plain("\0u\0pass\u00a0word".encode()) == (None, "u", "pass\u00a0word")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"juliet\0pw",  # one NUL
        b"\0juliet\0pw\0",  # three NULs
        b"\0\0pw",  # empty username
        b"\0juliet\0",  # empty password
    ],
)
def test_malformed_messages(message: bytes) -> None:
    with pytest.raises(SaslFailure) as info:
        parse_plain(message)
    assert info.value.condition == "malformed-request"


@pytest.mark.parametrize("message", [b"\0jul\xffiet\0pw", b"\0juliet\0\xc3(", b"\xe2\x82\0u\0pw"])
def test_invalid_utf8_is_incorrect_encoding(message: bytes) -> None:
    with pytest.raises(SaslFailure) as info:
        parse_plain(message)
    assert info.value.condition == "incorrect-encoding"


def test_username_failing_precis_is_not_authorized() -> None:
    with pytest.raises(SaslFailure) as info:
        parse_plain(b"\0two words\0pw")
    assert info.value.condition == "not-authorized"


@pytest.mark.parametrize("hash_name", HASH_NAMES)
def test_verify_password(hash_name: str) -> None:
    creds = derive_credentials("correct horse", hash_name, 16)
    assert verify_password("correct horse", creds)
    assert not verify_password("correct horsE", creds)
    assert not verify_password("", creds)


def test_verify_password_applies_opaque_string() -> None:
    creds = derive_credentials("pass word", "SHA-256", 16)
    assert verify_password("pass\u00a0word", creds)
