"""A throw-away self-signed certificate for ``localhost``, shared by every server in a run.

ECDSA P-256 by default (what a current Let's Encrypt/certbot set-up issues), so all servers pay the same,
modest handshake cost; ``rsa`` gives RSA-2048 for comparison.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert: Path  # PEM certificate
    key: Path  # PEM private key (PKCS#8, unencrypted)
    combined: Path  # key + certificate in one file (ejabberd's certfiles)


def make_self_signed(directory: Path, domain: str = "localhost", key_type: str = "ec") -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    if key_type == "ec":
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown key type {key_type!r}; expected 'ec' or 'rsa'")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = CertFiles(directory / "cert.pem", directory / "key.pem", directory / "combined.pem")
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.combined.write_bytes(key_pem + cert_pem)
    for path in (files.key, files.combined):
        path.chmod(0o600)
    return files
