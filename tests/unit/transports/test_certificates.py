"""Per-domain certificates chosen by SNI: the right one is presented, and it validates."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from roost.transports import tls
from roost.transports.certificates import Certificates
from tests.support.testca import TestCA
from tests.unit.transports.test_tls import memory_handshake


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> ssl.SSLObject:
    """A TLS handshake over memory BIOs; the server's end (a verifying client checked the name)."""
    return memory_handshake(server_ctx, client_ctx, name)[0]


def _verifying_client(ca: TestCA) -> ssl.SSLContext:
    return tls.client_context(verify=True, cafile=ca.ca_file)


@pytest.fixture
def two_domains(tmp_path: Path) -> tuple[TestCA, Certificates]:
    ca = TestCA(tmp_path / "ca")
    b = ca.issue("b.test", "conference.b.test")
    c = ca.issue("c.test", "conference.c.test")
    return ca, Certificates((b.cert, b.key), {"c.test": (c.cert, c.key)})


@pytest.mark.parametrize("name", ["b.test", "c.test", "conference.c.test", "conference.b.test"])
def test_each_name_gets_a_certificate_that_validates_for_it(
    two_domains: tuple[TestCA, Certificates], name: str
) -> None:
    ca, certificates = two_domains
    server = _handshake(certificates.server_context(), _verifying_client(ca), name)
    # The channel binding (tls-server-end-point) names the certificate this connection presented.
    expected = certificates.der_for(name)
    assert certificates.presented_der(server) == expected
    domain = "c.test" if name.endswith("c.test") else "b.test"
    assert expected == tls.certificate_der(ca.directory / f"{domain}.crt")


def test_without_the_domain_certificate_the_client_refuses(tmp_path: Path) -> None:
    """The check above can fail: the default certificate alone does not validate for c.test."""
    ca = TestCA(tmp_path / "ca")
    b = ca.issue("b.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(Certificates((b.cert, b.key), {}).server_context(), _verifying_client(ca), "c.test")


def test_outgoing_s2s_presents_the_local_domains_certificate(
    two_domains: tuple[TestCA, Certificates],
) -> None:
    ca, certificates = two_domains
    server_ctx = tls.server_context(ca.directory / "b.test.crt", ca.directory / "b.test.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=str(ca.ca_file))
    for local in ("b.test", "c.test"):
        server = _handshake(server_ctx, certificates.client_context(local), "b.test")
        presented = server.getpeercert(binary_form=True)
        assert presented == tls.certificate_der(ca.directory / f"{local}.crt")


def test_the_closest_configured_parent_domain_wins(two_domains: tuple[TestCA, Certificates]) -> None:
    _, certificates = two_domains
    assert certificates.files_for("upload.c.test") == certificates.domains["c.test"]
    assert certificates.files_for("C.TEST.") == certificates.domains["c.test"]
    assert certificates.files_for("xc.test") == certificates.default
    assert certificates.files_for(None) == certificates.default
