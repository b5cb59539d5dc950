"""Peer certificates on s2s streams: is this certificate a valid one for that domain (RFC 6125 / 9525)?

The chain is checked against the configured CA file (``[s2s] ca_file``) or the system store with
``cryptography``'s X.509 verifier (validity, signatures, basic constraints, key usage, the server-auth
policy), and the domain against the DNS names in the subjectAltName (``*`` as the whole left-most
label only). Done outside OpenSSL's handshake so that a peer with a certificate we cannot validate
can still connect and authenticate with dialback (unless ``secure_auth`` forbids it).
"""

from __future__ import annotations

import datetime
import logging
import ssl
import warnings
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from roost.transports.tls import _covers, _san

log = logging.getLogger("roost.s2s")

_ENCODING_DER = 2  # _ssl.ENCODING_DER (public as ssl.ENCODING_DER... only from Python 3.13)


def load_store(ca_file: Path | None) -> Store | None:
    """The trust anchors: ``ca_file``, else the system's default CA file; None if there are none."""
    path: str | None = str(ca_file) if ca_file is not None else None
    if path is None:
        paths = ssl.get_default_verify_paths()
        path = paths.cafile or paths.openssl_cafile
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old CA certificates with non-positive serial numbers
            certs = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        log.warning("no CA certificates for s2s from %s: %s", path, e)
        return None
    return Store(certs) if certs else None


def chain_of(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The peer's certificate chain as sent (DER, leaf first); empty if it sent none."""
    inner = getattr(ssl_object, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return [c.public_bytes(_ENCODING_DER) for c in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def valid_for(chain: Sequence[bytes], domain: str, store: Store | None) -> str | None:
    """None if ``chain`` is a valid certificate chain for ``domain``; otherwise why not."""
    if not chain:
        return "no certificate"
    if store is None:
        return "no trusted CA certificates configured"
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        intermediates = [x509.load_der_x509_certificate(c) for c in chain[1:]]
    except ValueError as e:
        return f"unreadable certificate: {e}"
    dns, ips = _san(leaf)
    if not _covers(dns, ips, domain):
        return f"the certificate is for {', '.join(dns) or 'no DNS name'}, not {domain}"
    # Servers present their server certificate on both ends of s2s (XEP-0178 §2): the server-auth
    # policy applies both ways.
    try:
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(datetime.datetime.now(datetime.UTC))
            .build_server_verifier(x509.DNSName(domain))
        )
        verifier.verify(leaf, intermediates)
    except VerificationError as e:
        return f"the certificate does not validate: {e}"
    return None
