"""TLS contexts, the self-signed default certificate, certificate checks and channel bindings.

Channel bindings feed SCRAM-*-PLUS (roost.stream.sasl.scram): ``tls-server-end-point`` (RFC 5929 §4)
works on every TLS version; ``tls-exporter`` (RFC 9266) only on TLS 1.3, where it is the recommended type.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import logging
import os
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import idna
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CERT_FILE_NAME = "roost.crt"
KEY_FILE_NAME = "roost.key"
_VALIDITY = datetime.timedelta(days=3650)

# TLS 1.2 suites: forward-secret ECDHE with AEAD only (RFC 7525 §4.2); TLS 1.3 suites are all AEAD.
_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 §2


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2+, AEAD suites, no compression, no renegotiation, no session tickets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    # Stateless tickets would keep one ticket key for the process lifetime, weakening forward secrecy.
    ctx.options |= ssl.OP_NO_TICKET
    # TLS 1.3 sends session tickets after the handshake unless told not to: each one costs work on
    # the connection's first write, and stateful ones also fill OpenSSL's session cache.
    ctx.num_tickets = 0
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def client_context(verify: bool = False, cafile: Path | None = None) -> ssl.SSLContext:
    """A client context (tests, load generator, s2s); ``verify`` checks the chain and the host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
        if cafile is not None:
            ctx.load_verify_locations(cafile=str(cafile))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


# --- certificates ---------------------------------------------------------------------------------


def ensure_certificate(data_dir: Path, domains: Sequence[str]) -> tuple[Path, Path]:
    """Return (cert, key) under ``data_dir/tls``, generating a self-signed certificate when needed.

    An existing pair is kept while it is usable and covers every domain; otherwise (missing, broken,
    expired, or a domain was added) a new ECDSA P-256 certificate replaces it. P-256 because its
    handshakes are several times cheaper than RSA-2048's.
    """
    if not domains:
        raise ValueError("ensure_certificate needs at least one domain")
    tls_dir = data_dir / "tls"
    cert_file, key_file = tls_dir / CERT_FILE_NAME, tls_dir / KEY_FILE_NAME
    if not certificate_problems(cert_file, key_file, domains):
        return cert_file, key_file
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_pem, key_pem = _self_signed(domains)
    _write_atomic(key_file, key_pem, 0o600)
    _write_atomic(cert_file, cert_pem, 0o644)
    log.info("generated a self-signed TLS certificate for %s in %s", ", ".join(domains), cert_file)
    return cert_file, key_file


def _self_signed(domains: Sequence[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for domain in domains:
        ip = _ip_literal(domain)
        if ip is not None:
            names.append(x509.IPAddress(ip))
            continue
        a_label = _a_label(domain)
        for name in (a_label, "*." + a_label):
            entry = x509.DNSName(name)
            if entry not in names:
                names.append(entry)
    common_name = _a_label(domains[0]) if _ip_literal(domains[0]) is None else "Roost"
    if len(common_name) > 64:  # X.520 ub-common-name
        common_name = "Roost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate clock skew
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # clientAuth too: the same certificate serves s2s connections we initiate
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or the platform ignored the mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def certificate_der(cert_file: Path) -> bytes:
    """DER bytes of the first (leaf) certificate in a PEM chain file (or a DER file)."""
    return _load_leaf(cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)


def _load_leaf(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)[0]
    return x509.load_der_x509_certificate(data)


def certificate_problems(cert_file: Path, key_file: Path, domains: Sequence[str]) -> list[str]:
    """Everything that would make this certificate fail for these domains, each with a way to fix it."""
    problems: list[str] = []
    cert: x509.Certificate | None = None
    try:
        cert = _load_leaf(cert_file.read_bytes())
    except FileNotFoundError:
        problems.append(
            f"TLS certificate {cert_file} does not exist: point the configuration at your certificate "
            "chain (PEM) or remove the setting to use a generated self-signed one"
        )
    except OSError as exc:
        problems.append(f"TLS certificate {cert_file} cannot be read ({exc.strerror}): check its permissions")
    except ValueError:
        problems.append(
            f"TLS certificate {cert_file} is not a PEM or DER certificate: it should start with "
            "'-----BEGIN CERTIFICATE-----'"
        )

    key_public: bytes | None = None
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        key_public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except FileNotFoundError:
        problems.append(f"TLS key {key_file} does not exist: configure the private key of {cert_file}")
    except OSError as exc:
        problems.append(
            f"TLS key {key_file} cannot be read ({exc.strerror}): make it readable by the user running "
            "Roost (and by nobody else: chmod 600)"
        )
    except TypeError:
        problems.append(
            f"TLS key {key_file} is encrypted: Roost needs it unencrypted, e.g. "
            f"'openssl pkey -in {key_file} -out {key_file}.plain' and chmod 600"
        )
    except (ValueError, UnsupportedAlgorithm):
        problems.append(
            f"TLS key {key_file} is not a PEM private key (expected '-----BEGIN PRIVATE KEY-----')"
        )

    if cert is None:
        return problems
    cert_public = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if key_public is not None and key_public != cert_public:
        problems.append(
            f"TLS key {key_file} does not belong to certificate {cert_file}: configure the key that "
            "was issued together with this certificate"
        )
    now = datetime.datetime.now(datetime.UTC)
    if now < cert.not_valid_before_utc:
        problems.append(
            f"TLS certificate {cert_file} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check the system clock or wait"
        )
    if now > cert.not_valid_after_utc:
        problems.append(
            f"TLS certificate {cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d} UTC: renew it"
        )
    dns_names, ips = _san(cert)
    for domain in domains:
        if not _covers(dns_names, ips, domain):
            listed = ", ".join([*dns_names, *(str(ip) for ip in ips)]) or "none"
            problems.append(
                f"TLS certificate {cert_file} does not cover the domain {domain!r} (its subjectAltName "
                f"lists: {listed}): get a certificate that includes {domain!r}"
            )
    return problems


def _san(cert: x509.Certificate) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        # RFC 9525 §6.3 (updating RFC 6125): no fallback to the subject's CN
        return [], []
    dns = [name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)]
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for ip in san.get_values_for_type(x509.IPAddress):
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ips.append(ip)
    return dns, ips


def _covers(dns_names: Sequence[str], ips: Sequence[object], domain: str) -> bool:
    ip = _ip_literal(domain)
    if ip is not None:
        return ip in ips
    try:
        reference = _a_label(domain)
    except ValueError:
        return False
    for name in dns_names:
        if name == reference:
            return True
        # RFC 6125 §6.4.3: '*' only as the whole left-most label, matching exactly one label;
        # like OpenSSL, refuse wildcards directly under a single label ("*.com").
        if name.startswith("*.") and name.count(".") >= 2:
            head, _, rest = reference.partition(".")
            if head and rest == name[2:]:
                return True
    return False


def _ip_literal(domain: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _a_label(domain: str) -> str:
    domain = domain.rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{domain!r} is not a valid domain name: {exc}")


# --- channel bindings -----------------------------------------------------------------------------


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1: the certificate hashed with its signature's hash, MD5 and SHA-1 raised to SHA-256.

    Raises ValueError for signatures without a single hash (Ed25519, Ed448), for which the binding is
    undefined.
    """
    algorithm = x509.load_der_x509_certificate(cert_der).signature_hash_algorithm
    if algorithm is None:
        raise ValueError("tls-server-end-point is undefined for this certificate's signature algorithm")
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


def tls_exporter(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """RFC 9266 tls-exporter: 32 bytes of the TLS 1.3 exporter with label "EXPORTER-Channel-Binding".

    Returns None on TLS 1.2 (RFC 9266 §3 would require the extended master secret, which we cannot
    check) and whenever the exporter is not reachable, so the server just does not offer the type.

    Python's ssl module does not wrap SSL_export_keying_material, so we call OpenSSL through ctypes:

    * the function is looked up through the handle of the ``_ssl`` extension itself, so it comes from
      exactly the libssl that ``_ssl`` uses (dlsym searches a library and its dependencies), and the
      library's OpenSSL_version_num must equal ssl.OPENSSL_VERSION_NUMBER;
    * the ``SSL *`` is read from the ``_ssl._SSLSocket`` behind the object (``._sslobj``), whose C struct
      starts ``{PyObject_HEAD; PyObject *Socket; SSL *ssl; PySSLContext *ctx; ...}`` (CPython 3.8-3.13).
      Before trusting that, the slot after ``ssl`` must hold exactly ``id(obj.context)``, and
      SSL_get_SSL_CTX of the candidate pointer must equal the ``SSL_CTX *`` that opens the context
      object's own struct. A different layout fails these checks without dereferencing anything unknown;
    * once per process, both ends of a TLS 1.3 handshake in memory must derive the same 32 bytes, and
      two handshakes must differ. Any failure disables tls-exporter (logged once) instead of guessing.
    """
    if ssl_object.version() != "TLSv1.3":
        return None
    exporter = _exporter()
    if exporter is None:
        return None
    return exporter.export(ssl_object)


def exporter_supported() -> bool:
    """Whether tls-exporter works in this process (runs the one-time self-check); for start-up logs."""
    return _exporter() is not None


#: XEP-0515 §4.1: TLS versions as four lower-case hex digits (RFC 8446 / RFC 5246 version numbers).
TLS_VERSION_CODES: dict[str, str] = {"TLSv1.3": "0304", "TLSv1.2": "0303", "TLSv1.1": "0302", "TLSv1": "0301"}


def channel_bindings(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, own_cert_der: bytes | None
) -> ChannelBindings:
    """Binding type -> data for one connection.

    The server passes its own certificate (the one it sent on this connection); a client passes None and
    the peer's certificate is used, since tls-server-end-point always names the server's certificate.
    """
    return ChannelBindings(ssl_object, own_cert_der)


class ChannelBindings(Mapping[str, bytes]):
    """The channel-binding types a connection supports, each value computed when first read.

    Which types exist is known at once (it decides the mechanisms offered); the data is needed only by
    a -PLUS login, so the common login does not pay for the exporter call or the certificate hash.
    """

    __slots__ = ("_cert_der", "_ssl_object", "_types", "_values", "tls_version")

    def __init__(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, own_cert_der: bytes | None) -> None:
        self._ssl_object = ssl_object
        self._values: dict[str, bytes] = {}
        types: list[str] = []
        cert_der = own_cert_der if own_cert_der is not None else ssl_object.getpeercert(binary_form=True)
        self._cert_der = cert_der
        if cert_der and _end_point_defined(cert_der):
            types.append("tls-server-end-point")
        if ssl_object.version() == "TLSv1.3" and _exporter() is not None:
            types.append("tls-exporter")
        self._types = tuple(types)
        #: XEP-0515: the TLS version as SCRAM's t= attribute writes it ("0304").
        self.tls_version = TLS_VERSION_CODES.get(ssl_object.version() or "")

    def __getitem__(self, kind: str) -> bytes:
        value = self._values.get(kind)
        if value is not None:
            return value
        if kind not in self._types:
            raise KeyError(kind)
        if kind == "tls-server-end-point":
            assert self._cert_der is not None
            value = _cached_end_point(self._cert_der)
        else:
            value = tls_exporter(self._ssl_object)
            if value is None:  # the exporter failed on this connection: the type is not usable
                raise KeyError(kind)
        self._values[kind] = value
        return value

    def __contains__(self, kind: object) -> bool:
        return kind in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


# One server certificate serves every connection: hash it once (keyed by the DER bytes themselves).
_end_points: dict[bytes, bytes | None] = {}


def _cached_end_point(cert_der: bytes) -> bytes:
    value = _end_points.get(cert_der)
    if value is None:
        value = tls_server_end_point(cert_der)
        if len(_end_points) >= 16:
            _end_points.clear()
        _end_points[cert_der] = value
    return value


def _end_point_defined(cert_der: bytes) -> bool:
    if _end_points.get(cert_der) is not None:
        return True
    try:
        _cached_end_point(cert_der)
    except ValueError:
        return False
    return True


class _Exporter:
    """The ctypes bridge to SSL_export_keying_material; see tls_exporter for why each check exists."""

    def __init__(self) -> None:
        import _ssl

        if sys.implementation.name != "cpython":
            raise OSError("not CPython: the _ssl object layout is unknown")
        lib = ctypes.CDLL(_ssl.__file__)
        version_num = lib.OpenSSL_version_num
        version_num.restype = ctypes.c_ulong
        version_num.argtypes = []
        if version_num() != ssl.OPENSSL_VERSION_NUMBER:
            raise OSError("the libssl found through _ssl is not the one _ssl was built with")
        self._export = lib.SSL_export_keying_material
        self._export.restype = ctypes.c_int
        self._export.argtypes = [
            ctypes.c_void_p,  # SSL *s
            ctypes.c_char_p,  # unsigned char *out
            ctypes.c_size_t,  # size_t olen
            ctypes.c_char_p,  # const char *label
            ctypes.c_size_t,  # size_t llen
            ctypes.c_char_p,  # const unsigned char *context
            ctypes.c_size_t,  # size_t contextlen
            ctypes.c_int,  # int use_context
        ]
        self._get_ctx = lib.SSL_get_SSL_CTX
        self._get_ctx.restype = ctypes.c_void_p
        self._get_ctx.argtypes = [ctypes.c_void_p]
        # _SSLSocket is not in typeshed's _ssl stub
        self._socket_type: type = getattr(_ssl, "_SSLSocket")  # noqa: B009
        self._context_type: type = _ssl._SSLContext
        self._head = object.__basicsize__  # PyObject_HEAD, whatever the build adds to it
        self._ptr = ctypes.sizeof(ctypes.c_void_p)
        if self._socket_type.__basicsize__ < self._head + 3 * self._ptr:
            raise OSError("_ssl._SSLSocket is smaller than expected")
        if self._context_type.__basicsize__ < self._head + self._ptr:
            raise OSError("_ssl._SSLContext is smaller than expected")

    def _ssl_pointer(self, inner: object) -> int | None:
        if type(inner) is not self._socket_type:
            return None
        context = inner.context  # type: ignore[attr-defined]
        if not isinstance(context, self._context_type):
            return None
        base = id(inner)
        ssl_ptr = ctypes.c_void_p.from_address(base + self._head + self._ptr).value
        ctx_slot = ctypes.c_void_p.from_address(base + self._head + 2 * self._ptr).value
        if not ssl_ptr or ctx_slot != id(context):
            return None
        ssl_ctx_ptr = ctypes.c_void_p.from_address(id(context) + self._head).value
        if not ssl_ctx_ptr or self._get_ctx(ssl_ptr) != ssl_ctx_ptr:
            return None
        return ssl_ptr

    def export(self, ssl_object: object) -> bytes | None:
        inner = ssl_object if type(ssl_object) is self._socket_type else getattr(ssl_object, "_sslobj", None)
        if inner is None:
            return None
        ssl_ptr = self._ssl_pointer(inner)
        if ssl_ptr is None:
            return None
        out = ctypes.create_string_buffer(32)
        # RFC 9266 §2: empty context (in TLS 1.3 the same as no context, RFC 8446 §7.5)
        # `inner` (a local) keeps the SSL object alive for the duration of the call.
        ok = self._export(ssl_ptr, out, 32, _EXPORTER_LABEL, len(_EXPORTER_LABEL), b"", 0, 1)
        return out.raw if ok == 1 else None


_exporter_lock = threading.Lock()
_exporter_state: list[_Exporter | None] = []  # empty until checked


def _exporter() -> _Exporter | None:
    if _exporter_state:
        return _exporter_state[0]
    with _exporter_lock:
        if not _exporter_state:
            exporter: _Exporter | None
            try:
                exporter = _Exporter()
                problem = _self_check(exporter)
            except (OSError, AttributeError, ImportError, ValueError, ssl.SSLError) as exc:
                exporter, problem = None, str(exc)
            if problem is not None:
                log.warning("tls-exporter channel binding disabled: %s", problem)
                exporter = None
            _exporter_state.append(exporter)
    return _exporter_state[0]


def _self_check(exporter: _Exporter) -> str | None:
    with tempfile.TemporaryDirectory(prefix="roost-tls-check-") as tmp:
        cert_pem, key_pem = _self_signed(["selfcheck.invalid"])
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(cert_pem)
        _write_atomic(key_file, key_pem, 0o600)
        server_ctx = server_context(cert_file, key_file)
    client_ctx = client_context()
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    results = []
    for _ in range(2):
        server, client = _memory_handshake(server_ctx, client_ctx)
        ends = [exporter.export(server), exporter.export(client)]
        if ends[0] is None or ends[0] != ends[1] or len(ends[0]) != 32 or not any(ends[0]):
            return "both ends of a local TLS 1.3 handshake did not derive the same exporter value"
        results.append(ends[0])
    if results[0] == results[1]:
        return "two local TLS 1.3 handshakes derived the same exporter value"
    return None


def _memory_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname="selfcheck.invalid")
    done = [False, False]
    for _ in range(10):
        for index, end in enumerate((client, server)):
            if not done[index]:
                try:
                    end.do_handshake()
                    done[index] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done):
            return server, client
    raise ssl.SSLError("local handshake did not complete")


def expires_within(cert_file: Path, days: int) -> datetime.datetime | None:
    """The certificate's expiry when it is less than ``days`` away (and not past), else None."""
    try:
        cert = _load_leaf(cert_file.read_bytes())
    except (OSError, ValueError):
        return None
    expiry = cert.not_valid_after_utc
    now = datetime.datetime.now(datetime.UTC)
    if now <= expiry < now + datetime.timedelta(days=days):
        return expiry
    return None
