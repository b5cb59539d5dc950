from __future__ import annotations

import datetime
import hashlib
import hmac
import socket
import ssl
import stat
import threading
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from roost.transports.tls import (
    certificate_der,
    certificate_problems,
    channel_bindings,
    client_context,
    ensure_certificate,
    exporter_supported,
    server_context,
    tls_exporter,
    tls_server_end_point,
)

DOMAINS = ["example.org", "conference.example.org"]


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_certificate(tmp_path_factory.mktemp("data"), DOMAINS)


def write_cert(
    directory: Path,
    names: list[str],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
    name: str = "cert",
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(days=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=30))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    cert = builder.sign(key, hash_algorithm or hashes.SHA256())
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def memory_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "example.org"
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname=hostname)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return server, client
    raise AssertionError("handshake did not finish")


# --- ensure_certificate ---------------------------------------------------------------------------


def san_names(cert_file: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def test_ensure_certificate_generates_then_reuses(tmp_path: Path) -> None:
    cert_file, key_file = ensure_certificate(tmp_path, ["example.org"])
    assert cert_file == tmp_path / "tls" / "roost.crt"
    assert key_file == tmp_path / "tls" / "roost.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert san_names(cert_file) == {"example.org", "*.example.org"}
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= datetime.timedelta(days=3650)
    assert certificate_problems(cert_file, key_file, ["example.org", "muc.example.org"]) == []

    before = (cert_file.read_bytes(), key_file.read_bytes())
    assert ensure_certificate(tmp_path, ["example.org"]) == (cert_file, key_file)
    assert (cert_file.read_bytes(), key_file.read_bytes()) == before


def test_ensure_certificate_regenerates_for_new_domain(tmp_path: Path) -> None:
    cert_file, _ = ensure_certificate(tmp_path, ["example.org"])
    before = cert_file.read_bytes()
    ensure_certificate(tmp_path, ["example.org", "example.net"])
    assert cert_file.read_bytes() != before
    assert san_names(cert_file) == {"example.org", "*.example.org", "example.net", "*.example.net"}


def test_ensure_certificate_replaces_a_mismatched_key(tmp_path: Path) -> None:
    cert_file, key_file = ensure_certificate(tmp_path, ["example.org"])
    _, other_key = write_cert(tmp_path, ["example.org"], name="other")
    key_file.write_bytes(other_key.read_bytes())
    ensure_certificate(tmp_path, ["example.org"])
    assert certificate_problems(cert_file, key_file, ["example.org"]) == []


def test_ensure_certificate_uses_a_labels(tmp_path: Path) -> None:
    cert_file, _ = ensure_certificate(tmp_path, ["bücher.example"])
    assert "xn--bcher-kva.example" in san_names(cert_file)


def test_generated_certificate_verifies_with_itself_as_ca(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    _server, client = memory_handshake(
        server_context(cert_file, key_file),
        client_context(verify=True, cafile=cert_file),
        hostname="room.conference.example.org",
    )
    assert client.version() == "TLSv1.3"


def test_verifying_client_refuses_a_name_not_in_the_certificate(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    with pytest.raises(ssl.SSLCertVerificationError):
        memory_handshake(
            server_context(cert_file, key_file),
            client_context(verify=True, cafile=cert_file),
            hostname="example.com",
        )


# --- certificate_problems -------------------------------------------------------------------------


def test_no_problems_for_a_good_certificate(tmp_path: Path) -> None:
    cert_file, key_file = write_cert(tmp_path, ["example.org", "*.example.org"])
    assert certificate_problems(cert_file, key_file, ["example.org", "pubsub.example.org"]) == []


def test_problem_key_does_not_match(tmp_path: Path) -> None:
    cert_file, _ = write_cert(tmp_path, ["example.org"], name="a")
    _, other_key = write_cert(tmp_path, ["example.org"], name="b")
    problems = certificate_problems(cert_file, other_key, ["example.org"])
    assert len(problems) == 1
    assert "does not belong to certificate" in problems[0]


def test_problem_domain_not_covered(tmp_path: Path) -> None:
    cert_file, key_file = write_cert(tmp_path, ["example.org", "*.example.org"])
    problems = certificate_problems(
        cert_file, key_file, ["example.org", "a.b.example.org", "example.net", "xexample.org"]
    )
    assert len(problems) == 3
    assert "'a.b.example.org'" in problems[0]  # a wildcard matches exactly one label
    assert "'example.net'" in problems[1]
    assert "'xexample.org'" in problems[2]
    assert "example.org, *.example.org" in problems[1]


def test_wildcard_under_a_single_label_is_not_accepted(tmp_path: Path) -> None:
    cert_file, key_file = write_cert(tmp_path, ["*.org"])
    assert len(certificate_problems(cert_file, key_file, ["example.org"])) == 1


def test_common_name_alone_does_not_cover(tmp_path: Path) -> None:
    cert_file, key_file = write_cert(tmp_path, [])
    problems = certificate_problems(cert_file, key_file, ["test"])
    assert len(problems) == 1 and "(its subjectAltName lists: none)" in problems[0]


def test_problem_expired(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert_file, key_file = write_cert(
        tmp_path,
        ["example.org"],
        not_before=now - datetime.timedelta(days=60),
        not_after=now - datetime.timedelta(days=1),
    )
    problems = certificate_problems(cert_file, key_file, ["example.org"])
    assert len(problems) == 1 and "expired" in problems[0] and "renew" in problems[0]


def test_problem_not_yet_valid(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert_file, key_file = write_cert(
        tmp_path,
        ["example.org"],
        not_before=now + datetime.timedelta(days=2),
        not_after=now + datetime.timedelta(days=60),
    )
    problems = certificate_problems(cert_file, key_file, ["example.org"])
    assert len(problems) == 1 and "not valid before" in problems[0]


def test_problem_missing_and_garbage_files(tmp_path: Path) -> None:
    problems = certificate_problems(tmp_path / "nope.crt", tmp_path / "nope.key", ["example.org"])
    assert len(problems) == 2
    assert "does not exist" in problems[0] and "does not exist" in problems[1]
    garbage = tmp_path / "garbage"
    garbage.write_text("hello")
    problems = certificate_problems(garbage, garbage, ["example.org"])
    assert len(problems) == 2
    assert "not a PEM or DER certificate" in problems[0]
    assert "not a PEM private key" in problems[1]


def test_problem_encrypted_key(tmp_path: Path) -> None:
    cert_file, key_file = write_cert(tmp_path, ["example.org"])
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    problems = certificate_problems(cert_file, key_file, ["example.org"])
    assert len(problems) == 1 and "encrypted" in problems[0]


# --- channel bindings -----------------------------------------------------------------------------


def test_exporter_self_check_passes_here() -> None:
    # CPython with a dynamically linked OpenSSL: the ctypes bridge must work, or tls-exporter is lost.
    assert exporter_supported()


def test_tls13_exporter_equal_on_both_ends_and_unique_per_connection(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    server_ctx, client_ctx = server_context(cert_file, key_file), client_context()
    values = []
    for _ in range(2):
        server, client = memory_handshake(server_ctx, client_ctx)
        assert server.version() == client.version() == "TLSv1.3"
        server_value, client_value = tls_exporter(server), tls_exporter(client)
        assert server_value is not None and len(server_value) == 32
        assert server_value == client_value
        values.append(server_value)
    assert values[0] != values[1]


def hkdf_expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    # RFC 8446 §7.1
    info = length.to_bytes(2, "big") + bytes([6 + len(label)]) + b"tls13 " + label
    info += bytes([len(context)]) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return out[:length]


def test_tls13_exporter_matches_rfc8446_from_the_key_log(
    cert_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """Compute RFC 9266's value independently from the logged exporter secret (RFC 8446 §7.5)."""
    cert_file, key_file = cert_pair
    client_ctx = client_context()
    client_ctx.keylog_filename = str(tmp_path / "keys.log")
    server, client = memory_handshake(server_context(cert_file, key_file), client_ctx)
    secrets = dict(
        (line.split()[0], bytes.fromhex(line.split()[2]))
        for line in (tmp_path / "keys.log").read_text().splitlines()
        if line and not line.startswith("#")
    )
    cipher = client.cipher()
    assert cipher is not None
    hash_name = "sha384" if cipher[0].endswith("SHA384") else "sha256"
    empty_hash = hashlib.new(hash_name, b"").digest()
    derived = hkdf_expand_label(
        hash_name, secrets["EXPORTER_SECRET"], b"EXPORTER-Channel-Binding", empty_hash, len(empty_hash)
    )
    expected = hkdf_expand_label(hash_name, derived, b"exporter", empty_hash, 32)
    assert tls_exporter(client) == expected
    assert tls_exporter(server) == expected


class LooksLikeTls13:
    """Claims TLS 1.3 but has no real SSL object behind it: the ctypes bridge must refuse it."""

    def __init__(self, inner: object) -> None:
        self._sslobj = inner

    def version(self) -> str:
        return "TLSv1.3"


@pytest.mark.parametrize("inner", [None, object(), b"x" * 64])
def test_exporter_refuses_objects_without_a_real_ssl_pointer(inner: object) -> None:
    assert tls_exporter(LooksLikeTls13(inner)) is None  # type: ignore[arg-type]


def test_exporter_refuses_a_handshake_not_yet_done(cert_pair: tuple[Path, Path]) -> None:
    client = client_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="example.org")
    assert tls_exporter(client) is None


def test_channel_bindings_agree_on_both_ends(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    server, client = memory_handshake(server_context(cert_file, key_file), client_context())
    server_side = channel_bindings(server, certificate_der(cert_file))
    client_side = channel_bindings(client, None)
    assert set(server_side) == {"tls-server-end-point", "tls-exporter"}
    assert server_side == client_side
    assert server_side["tls-server-end-point"] == hashlib.sha256(certificate_der(cert_file)).digest()


def test_exporter_over_real_sockets(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    server_ctx, client_ctx = server_context(cert_file, key_file), client_context()
    left, right = socket.socketpair()
    results: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                results["server"] = dict(channel_bindings(tls, certificate_der(cert_file)))  # read while open
                tls.recv(1)
        except Exception as exc:
            results["server_error"] = exc

    thread = threading.Thread(target=serve, name="tls-test-server")
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname="example.org") as tls:
            results["client"] = dict(channel_bindings(tls, None))
            tls.sendall(b"x")
    finally:
        thread.join(timeout=30)
        left.close()
    assert "server_error" not in results
    client_side = results["client"]
    assert isinstance(client_side, dict) and len(client_side.get("tls-exporter", b"")) == 32
    assert results["server"] == client_side


def test_tls12_has_no_exporter_binding(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    client_ctx = client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server, client = memory_handshake(server_context(cert_file, key_file), client_ctx)
    assert server.version() == "TLSv1.2"
    assert tls_exporter(server) is None and tls_exporter(client) is None
    bindings = channel_bindings(server, certificate_der(cert_file))
    assert set(bindings) == {"tls-server-end-point"}
    assert bindings == channel_bindings(client, None)
    cipher = server.cipher()
    assert (
        cipher is not None
        and cipher[0].startswith("ECDHE-ECDSA-")
        and ("GCM" in cipher[0] or "CHACHA" in cipher[0])
    )


def old_client() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def test_tls11_client_is_refused(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    # Control: this client really can speak TLS 1.1 to a server that allows it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        permissive.minimum_version = ssl.TLSVersion.TLSv1_1
        permissive.set_ciphers("ALL:@SECLEVEL=0")
        permissive.load_cert_chain(cert_file, key_file)
    server, _ = memory_handshake(permissive, old_client())
    assert server.version() == "TLSv1.1"

    with pytest.raises(ssl.SSLError):
        memory_handshake(server_context(cert_file, key_file), old_client())


def test_context_settings(cert_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = cert_pair
    for ctx in (server_context(cert_file, key_file), client_context(), client_context(verify=True)):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.options & ssl.OP_NO_COMPRESSION
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert tls12 and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in tls12)
    assert client_context().verify_mode == ssl.CERT_NONE
    verifying = client_context(verify=True)
    assert verifying.verify_mode == ssl.CERT_REQUIRED and verifying.check_hostname


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (hashes.SHA256(), hashlib.sha256),
        (hashes.SHA384(), hashlib.sha384),
        (hashes.SHA512(), hashlib.sha512),
    ],
)
def test_tls_server_end_point_uses_the_signature_hash(
    tmp_path: Path, algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512, expected: type
) -> None:
    cert_file, _ = write_cert(tmp_path, ["example.org"], hash_algorithm=algorithm)
    der = certificate_der(cert_file)
    assert tls_server_end_point(der) == expected(der).digest()


def test_tls_server_end_point_upgrades_sha1_to_sha256() -> None:
    # cryptography no longer signs with SHA-1, so relabel an RSA/SHA-256 certificate as RSA/SHA-1:
    # sha256WithRSAEncryption (1.2.840.113549.1.1.11) and sha1WithRSAEncryption (...1.1.5) have
    # encodings of the same length. The signature no longer verifies, which this hash does not care about.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    sha256_rsa = bytes.fromhex("2a864886f70d01010b")
    der = cert.public_bytes(serialization.Encoding.DER).replace(sha256_rsa, sha256_rsa[:-1] + b"\x05")
    assert isinstance(x509.load_der_x509_certificate(der).signature_hash_algorithm, hashes.SHA1)
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()


def test_tls_server_end_point_is_undefined_for_ed25519() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    with pytest.raises(ValueError):
        tls_server_end_point(cert.public_bytes(serialization.Encoding.DER))


def test_certificate_der_takes_the_first_certificate_of_a_chain(tmp_path: Path) -> None:
    first, _ = write_cert(tmp_path, ["a.example"], name="first")
    second, _ = write_cert(tmp_path, ["b.example"], name="second")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(first.read_bytes() + second.read_bytes())
    assert certificate_der(chain) == x509.load_pem_x509_certificate(first.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
