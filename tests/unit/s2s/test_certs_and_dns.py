"""Peer certificate checks (RFC 6125) and SRV ordering (RFC 2782)."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from roost.s2s.certs import load_store, valid_for
from roost.s2s.dns import StaticResolver, Target, _order
from tests.support.testca import TestCA


def der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_certificate_from_the_trusted_ca_is_valid_for_its_names_only(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("a.example", "conference.a.example")
    store = load_store(ca.ca_file)
    chain = [der(issued.cert)]
    assert valid_for(chain, "a.example", store) is None
    assert valid_for(chain, "conference.a.example", store) is None
    why = valid_for(chain, "b.example", store)
    assert why is not None and "not b.example" in why


def test_certificate_from_another_ca_does_not_validate(tmp_path: Path) -> None:
    ours, theirs = TestCA(tmp_path / "ours"), TestCA(tmp_path / "theirs")
    issued = theirs.issue("a.example")
    why = valid_for([der(issued.cert)], "a.example", load_store(ours.ca_file))
    assert why is not None and "does not validate" in why


def test_no_certificate_is_not_valid(tmp_path: Path) -> None:
    assert valid_for([], "a.example", load_store(TestCA(tmp_path).ca_file)) == "no certificate"


def test_srv_records_are_ordered_by_priority_then_weight() -> None:
    random.seed(7)
    records = [(20, 0, 5269, "c."), (10, 0, 5269, "b."), (10, 100, 5269, "a.")]
    firsts = {_order(records)[0][3] for _ in range(50)}
    assert _order(records)[-1][3] == "c."
    assert firsts <= {"a.", "b."}
    # Weight 100 against 0: "a." comes first almost always (RFC 2782 weighted selection).
    assert sum(_order(records)[0][3] == "a." for _ in range(100)) > 90


async def test_static_resolver_maps_test_domains_and_falls_back_to_5269() -> None:
    resolver = StaticResolver({"a.test": ("127.0.0.1", 15269)})
    assert await resolver.targets("a.test") == [Target("127.0.0.1", 15269)]
    assert await resolver.targets("b.test") == [Target("b.test", 5269)]
