from __future__ import annotations

import base64

import pytest

from roost.stream.sasl.scram import (
    HASH_NAMES,
    SaslFailure,
    ScramClient,
    ScramCredentials,
    ScramServer,
    derive_credentials,
    mechanism_name,
    parse_mechanism,
    salted_password,
    ssdp_string,
)

# Few iterations keep the round trips quick; the RFC vectors use the real 4096.
FAST = 16
CB = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}

RFC5802_CLIENT_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
RFC5802_SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
RFC5802_CLIENT_FINAL = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
RFC5802_SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

RFC7677_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

VECTORS = [
    pytest.param(
        "SHA-1",
        "fyko+d2lbbFgONRv9qkxdawL",
        "3rfcNHYJY1ZVvWVs7j",
        "QSXCR+Q6sek8bf92",
        (RFC5802_CLIENT_FIRST, RFC5802_SERVER_FIRST, RFC5802_CLIENT_FINAL, RFC5802_SERVER_FINAL),
        id="rfc5802-sha1",
    ),
    pytest.param(
        "SHA-256",
        "rOprNGfwEbeRWgbNEkqO",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "W22ZaJ0SNY7soEsUEjb6gQ==",
        (RFC7677_CLIENT_FIRST, RFC7677_SERVER_FIRST, RFC7677_CLIENT_FINAL, RFC7677_SERVER_FINAL),
        id="rfc7677-sha256",
    ),
]


def make_server(
    hash_name: str = "SHA-256",
    *,
    plus: bool = False,
    channel_bindings: dict[str, bytes] | None = None,
    cb_offered: bool = False,
) -> ScramServer:
    return ScramServer(
        hash_name,
        plus=plus,
        channel_bindings=CB if channel_bindings is None else channel_bindings,
        cb_offered=cb_offered,
    )


def run(client: ScramClient, server: ScramServer, creds: ScramCredentials | None) -> str:
    """A full exchange; returns the username the server authenticated."""
    username = server.start(client.first())
    client_final = client.respond(server.challenge(creds))
    client.verify(server.finish(client_final))
    return username


@pytest.mark.parametrize(("hash_name", "client_nonce", "server_nonce", "salt", "messages"), VECTORS)
def test_rfc_vector_client_side(
    hash_name: str, client_nonce: str, server_nonce: str, salt: str, messages: tuple[bytes, ...]
) -> None:
    client_first, server_first, client_final, server_final = messages
    client = ScramClient(hash_name, "user", "pencil", nonce=client_nonce)
    assert client.first() == client_first
    assert client.respond(server_first) == client_final
    client.verify(server_final)
    assert client.salt == base64.b64decode(salt)
    assert client.iterations == 4096


@pytest.mark.parametrize(("hash_name", "client_nonce", "server_nonce", "salt", "messages"), VECTORS)
def test_rfc_vector_server_side(
    hash_name: str, client_nonce: str, server_nonce: str, salt: str, messages: tuple[bytes, ...]
) -> None:
    client_first, server_first, client_final, server_final = messages
    creds = derive_credentials("pencil", hash_name, 4096, base64.b64decode(salt))
    server = ScramServer(hash_name, plus=False, channel_bindings={}, cb_offered=False, nonce=server_nonce)
    assert server.start(client_first) == "user"
    assert server.authzid is None
    assert server.challenge(creds) == server_first
    assert server.finish(client_final) == server_final


def test_client_reuses_cached_salted_password() -> None:
    first = ScramClient("SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    first.first()
    first.respond(RFC5802_SERVER_FIRST)
    assert first.salted_password is not None
    cached = ScramClient(
        "SHA-1", "user", "ignored", nonce="fyko+d2lbbFgONRv9qkxdawL", salted_password=first.salted_password
    )
    assert cached.respond(RFC5802_SERVER_FIRST) == RFC5802_CLIENT_FINAL
    assert first.salted_password == salted_password(
        "pencil", "SHA-1", base64.b64decode("QSXCR+Q6sek8bf92"), 4096
    )


@pytest.mark.parametrize("hash_name", HASH_NAMES)
@pytest.mark.parametrize("cb_type", [None, "tls-exporter", "tls-server-end-point"])
def test_round_trip(hash_name: str, cb_type: str | None) -> None:
    plus = cb_type is not None
    creds = derive_credentials("s3cr3t ünïcode", hash_name, FAST)
    server = make_server(hash_name, plus=plus, cb_offered=True)
    client = ScramClient(
        hash_name,
        "Juliet",
        "s3cr3t ünïcode",
        plus=plus,
        cb_type=cb_type,
        cb_data=CB[cb_type] if cb_type else b"",
        server_supports_plus=True,
    )
    assert run(client, server, creds) == "juliet"
    assert server.channel_binding == cb_type


def test_authzid_and_escaped_username_round_trip() -> None:
    creds = derive_credentials("pw", "SHA-256", FAST)
    client = ScramClient("SHA-256", "a,b=c", "pw", authzid="admin@example.org,x=y")
    assert client.first().startswith(b"n,a=admin@example.org=2Cx=3Dy,n=a=2Cb=3Dc,r=")
    server = make_server()
    assert run(client, server, creds) == "a,b=c"
    assert server.authzid == "admin@example.org,x=y"


def test_password_is_prepared_with_opaque_string() -> None:
    # OpaqueString maps non-ASCII spaces to U+0020 (RFC 8265 §4.2.2)
    creds = derive_credentials("pass\u00a0word", "SHA-256", FAST)
    assert run(ScramClient("SHA-256", "u", "pass word"), make_server(), creds) == "u"


def test_wrong_password_is_not_authorized() -> None:
    creds = derive_credentials("right", "SHA-256", FAST)
    client = ScramClient("SHA-256", "romeo", "wrong")
    server = make_server()
    server.start(client.first())
    final = client.respond(server.challenge(creds))
    with pytest.raises(SaslFailure) as info:
        server.finish(final)
    assert info.value.condition == "not-authorized"


def test_client_rejects_wrong_server_signature() -> None:
    client = ScramClient("SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    client.first()
    client.respond(RFC5802_SERVER_FIRST)
    with pytest.raises(SaslFailure) as info:
        client.verify(b"v=" + base64.b64encode(b"\0" * 20))
    assert info.value.condition == "not-authorized"


def test_client_reports_server_error_attribute() -> None:
    client = ScramClient("SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    client.respond(RFC5802_SERVER_FIRST)
    with pytest.raises(SaslFailure) as info:
        client.verify(b"e=invalid-proof")
    assert info.value.condition == "not-authorized"
    assert info.value.text is not None and "invalid-proof" in info.value.text


def test_client_rejects_server_nonce_not_extending_its_own() -> None:
    client = ScramClient("SHA-1", "user", "pencil", nonce="abc")
    with pytest.raises(SaslFailure):
        client.respond(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")


def test_channel_binding_mismatch_is_not_authorized() -> None:
    creds = derive_credentials("pw", "SHA-256", FAST)
    server = make_server(plus=True, cb_offered=True)
    # e.g. a man in the middle: the client's TLS session differs from the server's
    client = ScramClient("SHA-256", "u", "pw", plus=True, cb_type="tls-exporter", cb_data=b"X" * 32)
    server.start(client.first())
    final = client.respond(server.challenge(creds))
    with pytest.raises(SaslFailure) as info:
        server.finish(final)
    assert info.value.condition == "not-authorized"


def test_y_flag_when_server_offered_plus_is_a_downgrade() -> None:
    # The client can bind but saw no -PLUS mechanism (someone stripped it): it sends "y".
    client = ScramClient("SHA-256", "u", "pw", cb_type="tls-exporter", cb_data=CB["tls-exporter"])
    assert client.first().startswith(b"y,,")
    with pytest.raises(SaslFailure) as info:
        make_server(cb_offered=True).start(client.first())
    assert info.value.condition == "not-authorized"


def test_y_flag_is_fine_when_server_offered_no_plus() -> None:
    creds = derive_credentials("pw", "SHA-256", FAST)
    client = ScramClient("SHA-256", "u", "pw", cb_type="tls-exporter", cb_data=b"whatever")
    assert run(client, make_server(channel_bindings={}, cb_offered=False), creds) == "u"


def test_client_binding_capable_sends_n_when_not_binding_but_plus_offered() -> None:
    client = ScramClient("SHA-256", "u", "pw", cb_type="tls-exporter", server_supports_plus=True)
    assert client.first().startswith(b"n,,")


def test_p_flag_on_non_plus_mechanism_fails() -> None:
    client = ScramClient("SHA-256", "u", "pw", plus=True, cb_type="tls-exporter", cb_data=CB["tls-exporter"])
    with pytest.raises(SaslFailure) as info:
        make_server(plus=False, cb_offered=True).start(client.first())
    assert info.value.condition == "not-authorized"


def test_plus_mechanism_without_p_flag_fails() -> None:
    with pytest.raises(SaslFailure) as info:
        make_server(plus=True, cb_offered=True).start(b"n,,n=u,r=abcdef")
    assert info.value.condition == "not-authorized"


def test_unsupported_channel_binding_type_fails() -> None:
    client = ScramClient("SHA-256", "u", "pw", plus=True, cb_type="tls-unique", cb_data=b"x")
    server = make_server(plus=True, cb_offered=True)
    with pytest.raises(SaslFailure) as info:
        server.start(client.first())
    assert info.value.condition == "not-authorized"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,n=u,r=abc",  # GS2 header lacks its second comma
        b"x,,n=u,r=abc",  # unknown cbind flag
        b"p,,n=u,r=abc",  # "p" without "=cb-name"
        b"p=tls exporter,,n=u,r=abc",  # invalid cb-name
        b"n,b=admin,n=u,r=abc",  # authzid must be a=
        b"n,,r=abc,n=u",  # attribute order is fixed
        b"n,,n=u",  # no nonce
        b"n,,n=,r=abc",  # empty username
        b"n,,n=u=2Dx,r=abc",  # '=' not followed by 2C or 3D
        b"n,,n=u,r=ab,c",  # trailing garbage that is not an attribute
        b"n,,n=u,r=",  # empty nonce
        b"n,,n=u,r=a\x7fb",  # nonce not printable
        b"n,,m=ext,n=u,r=abc",  # mandatory extension (RFC 5802 §5.1)
        b"n,,n=u\x00,r=abc",
    ],
)
def test_malformed_client_first_is_malformed_request(message: bytes) -> None:
    with pytest.raises(SaslFailure) as info:
        make_server().start(message)
    assert info.value.condition == "malformed-request"


def test_client_first_that_is_not_utf8_is_incorrect_encoding() -> None:
    with pytest.raises(SaslFailure) as info:
        make_server().start(b"n,,n=\xff\xfe,r=abc")
    assert info.value.condition == "incorrect-encoding"


def test_username_failing_precis_is_not_authorized() -> None:
    with pytest.raises(SaslFailure) as info:
        make_server().start(b"n,,n=a b,r=abc")
    assert info.value.condition == "not-authorized"


def test_unknown_optional_extensions_are_ignored() -> None:
    server = make_server()
    assert server.start(b"n,,n=u,r=abc,x=future") == "u"


@pytest.mark.parametrize(
    "final",
    [
        b"c=biws,r=NONCE",  # no proof
        b"r=NONCE,c=biws,p=AAAA",  # wrong order
        b"c=biws,r=NONCE,p=not*base64",
        b"c=bi,r=NONCE,p=AAAA",  # bad padding
        b"c=biws,r=NONCE,p=AAAA",  # proof of the wrong length
        b"c=biws,r=NONCE,,p=AAAA",  # empty attribute
    ],
)
def test_malformed_client_final_is_malformed_request(final: bytes) -> None:
    server = make_server()
    server.start(b"n,,n=u,r=abc")
    server_first = server.challenge(derive_credentials("pw", "SHA-256", FAST))
    nonce = server_first.split(b",")[0][2:]
    with pytest.raises(SaslFailure) as info:
        server.finish(final.replace(b"NONCE", nonce))
    assert info.value.condition == "malformed-request"


def test_client_final_with_other_nonce_is_not_authorized() -> None:
    creds = derive_credentials("pw", "SHA-256", FAST)
    client = ScramClient("SHA-256", "u", "pw")
    server = make_server()
    server.start(client.first())
    final = client.respond(server.challenge(creds))
    nonce = final.split(b",")[1]
    with pytest.raises(SaslFailure) as info:
        server.finish(final.replace(nonce, nonce + b"x"))
    assert info.value.condition == "not-authorized"


def test_client_final_with_changed_gs2_header_is_not_authorized() -> None:
    # c= must repeat the GS2 header, which protects the authzid and the cb flag
    creds = derive_credentials("pw", "SHA-256", FAST)
    client = ScramClient("SHA-256", "u", "pw")
    server = make_server()
    server.start(client.first())
    final = client.respond(server.challenge(creds))
    tampered = final.replace(b"c=biws", b"c=" + base64.b64encode(b"y,,"))
    with pytest.raises(SaslFailure) as info:
        server.finish(tampered)
    assert info.value.condition == "not-authorized"


def fake_salt(username: str, hash_name: str = "SHA-256") -> bytes:
    server = make_server(hash_name)
    server.start(f"n,,n={username},r=abc".encode())
    attrs = dict(a.split("=", 1) for a in server.challenge(None).decode().split(","))
    assert attrs["i"] == "4096"
    return base64.b64decode(attrs["s"])


def test_unknown_user_gets_stable_fake_salt_and_fails() -> None:
    salt = fake_salt("ghost")
    assert len(salt) == 16
    assert fake_salt("ghost") == salt
    assert fake_salt("ghost2") != salt
    assert fake_salt("ghost", "SHA-1") != salt

    client = ScramClient("SHA-256", "ghost", "anything")
    server = make_server()
    server.start(client.first())
    final = client.respond(server.challenge(None))
    with pytest.raises(SaslFailure) as info:
        server.finish(final)
    assert info.value.condition == "not-authorized"


def test_challenge_refuses_credentials_for_another_hash() -> None:
    server = make_server("SHA-256")
    server.start(b"n,,n=u,r=abc")
    with pytest.raises(ValueError):
        server.challenge(derive_credentials("pw", "SHA-1", FAST))


def test_server_steps_out_of_order_raise() -> None:
    server = make_server()
    with pytest.raises(RuntimeError):
        server.challenge(None)
    server.start(b"n,,n=u,r=abc")
    with pytest.raises(RuntimeError):
        server.finish(b"c=biws,r=x,p=AAAA")


def test_mechanism_names() -> None:
    assert mechanism_name("SHA-256", True) == "SCRAM-SHA-256-PLUS"
    assert mechanism_name("SHA-1", False) == "SCRAM-SHA-1"
    for hash_name in HASH_NAMES:
        for plus in (False, True):
            assert parse_mechanism(mechanism_name(hash_name, plus)) == (hash_name, plus)
    assert parse_mechanism("SCRAM-SHA-224") is None
    assert parse_mechanism("PLAIN") is None
    assert parse_mechanism("SCRAM-SHA-256-plus") is None
    with pytest.raises(ValueError):
        mechanism_name("MD5", False)


def test_derive_credentials_uses_random_salt() -> None:
    a = derive_credentials("pw", "SHA-512", FAST)
    b = derive_credentials("pw", "SHA-512", FAST)
    assert len(a.salt) == 16
    assert a.salt != b.salt and a.stored_key != b.stored_key
    assert len(a.stored_key) == len(a.server_key) == 64


def test_invalid_password_cannot_be_stored() -> None:
    with pytest.raises(ValueError):
        derive_credentials("", "SHA-256", FAST)


def test_sasl_failure_rejects_unknown_condition() -> None:
    with pytest.raises(ValueError):
        SaslFailure("bad-password")
    failure = SaslFailure("temporary-auth-failure", "database down")
    assert failure.condition == "temporary-auth-failure" and failure.text == "database down"


# -- XEP-0474 SSDP ------------------------------------------------------------------------------------


def test_ssdp_string_follows_the_xep_0474_algorithm() -> None:
    mechs = ["SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"]
    s = ssdp_string(mechs, ["tls-server-end-point", "tls-exporter"])
    assert s == b"SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1eSCRAM-SHA-256\x1ftls-exporter\x1etls-server-end-point"
    assert ssdp_string(["SCRAM-SHA-1"], None) == b"SCRAM-SHA-1"
    assert ssdp_string(["SCRAM-SHA-1"], []) == b"SCRAM-SHA-1\x1f"


def _ssdp_exchange(server_lists: bytes, client_lists: bytes | None) -> None:
    server = ScramServer("SHA-256", plus=False, channel_bindings={}, cb_offered=False, ssdp=server_lists)
    client = ScramClient("SHA-256", "user", "pencil", ssdp=client_lists)
    server.start(client.first())
    final = client.respond(server.challenge(derive_credentials("pencil", "SHA-256", FAST)))
    client.verify(server.finish(final))


def test_ssdp_hash_matches_when_nothing_was_stripped() -> None:
    offered = ssdp_string(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], ["tls-exporter"])
    _ssdp_exchange(offered, offered)
    _ssdp_exchange(offered, None)  # a client without SSDP ignores the attribute


@pytest.mark.parametrize(
    "seen",
    [
        (["SCRAM-SHA-256"], ["tls-exporter"]),  # -PLUS stripped
        (["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], []),  # channel-binding types stripped
        (["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], None),  # the XEP-0440 element removed
    ],
)
def test_ssdp_detects_a_stripped_list(seen: tuple[list[str], list[str] | None]) -> None:
    offered = ssdp_string(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], ["tls-exporter"])
    with pytest.raises(SaslFailure, match="downgrade"):
        _ssdp_exchange(offered, ssdp_string(*seen))


def _tls_exchange(server_tls: str | None, client_tls: str | None) -> bytes:
    """A SCRAM exchange where the server sends t=``server_tls`` (XEP-0515) and the client sees
    ``client_tls``: the server-first-message, or SaslFailure from the client."""
    server = ScramServer("SHA-256", plus=False, channel_bindings={}, cb_offered=False, tls_version=server_tls)
    client = ScramClient("SHA-256", "user", "pencil", tls_version=client_tls)
    server.start(client.first())
    server_first = server.challenge(derive_credentials("pencil", "SHA-256", FAST))
    client.verify(server.finish(client.respond(server_first)))
    return server_first


def test_tls_version_attribute_is_signed_and_checked() -> None:
    assert _tls_exchange("0304", "0304").endswith(b",t=0304")
    assert b",t=" not in _tls_exchange(None, "0304"), "a server without TLS info sends no t="
    _tls_exchange("0303", None)  # a client that does not check ignores it
    with pytest.raises(SaslFailure, match=r"downgrade.*0303.*0304"):
        _tls_exchange("0303", "0304")  # TLS 1.2 on the server's arm, 1.3 on ours
    with pytest.raises(SaslFailure, match="downgrade"):
        _tls_exchange("0304", "")  # we have no TLS at all, the server has


def test_tls_version_attribute_cannot_be_stripped() -> None:
    """t= is in the AuthMessage: a MITM removing it makes the client's proof fail (XEP-0515 §6)."""
    server = ScramServer("SHA-256", plus=False, channel_bindings={}, cb_offered=False, tls_version="0303")
    client = ScramClient("SHA-256", "user", "pencil", tls_version="0304")
    server.start(client.first())
    server_first = server.challenge(derive_credentials("pencil", "SHA-256", FAST))
    tampered = server_first.replace(b",t=0303", b"")
    with pytest.raises(SaslFailure, match=r"not-authorized"):
        server.finish(client.respond(tampered))
