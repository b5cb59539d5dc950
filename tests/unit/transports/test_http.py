"""The HTTP layer's pure parts: who the client is behind proxies, the route table, host-meta documents."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict

from roost.transports.host_meta import BOSH_REL, WEBSOCKET_REL, jrd, links, xrd
from roost.transports.http import HttpRoutes, client_info, parse_networks
from roost.xml.parser import StreamParser

PROXIES = parse_networks(["10.0.0.1", "192.168.0.0/16", "::1"])


def info(peer: str, *headers: tuple[str, str], tls: bool = False, trusted=PROXIES):  # type: ignore[no-untyped-def]
    return client_info(peer, CIMultiDict(headers), tls=tls, host="xmpp.example:5280", trusted=trusted)


def test_direct_client_is_the_socket_peer_and_its_headers_are_ignored() -> None:
    got = info("203.0.113.9", ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"))
    assert (got.address, got.secure, got.host) == ("203.0.113.9", False, "xmpp.example:5280")


def test_no_trusted_proxies_configured_means_no_header_is_believed() -> None:
    got = info("10.0.0.1", ("X-Forwarded-For", "1.2.3.4"), trusted=())
    assert got.address == "10.0.0.1"


def test_trusted_proxy_reports_the_client_address_protocol_and_host() -> None:
    got = info(
        "10.0.0.1",
        ("X-Forwarded-For", "198.51.100.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "chat.example.org"),
    )
    assert (got.address, got.secure, got.direct_tls, got.host) == (
        "198.51.100.7",
        True,
        False,
        "chat.example.org",
    )
    assert got.scheme == "https"


def test_forged_hops_left_of_an_untrusted_address_are_ignored() -> None:
    # The client wrote "1.1.1.1" itself; our proxy appended the address it saw.
    got = info("10.0.0.1", ("X-Forwarded-For", "1.1.1.1, 198.51.100.7"))
    assert got.address == "198.51.100.7"


def test_a_chain_of_trusted_proxies_is_walked_back_to_the_client() -> None:
    got = info(
        "10.0.0.1", ("X-Forwarded-For", "198.51.100.7, 192.168.4.4"), ("X-Forwarded-For", "192.168.9.9")
    )
    assert got.address == "198.51.100.7"


def test_forwarded_header_wins_and_handles_ipv6_ports_and_quotes() -> None:
    got = info(
        "::1",
        ("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https;host=web.example'),
        ("X-Forwarded-For", "1.2.3.4"),
    )
    assert (got.address, got.secure, got.host) == ("2001:db8:cafe::17", True, "web.example")


def test_forwarded_with_several_elements_and_an_obfuscated_node() -> None:
    got = info("10.0.0.1", ("Forwarded", "for=198.51.100.7;proto=http, for=192.168.1.1;proto=https"))
    assert (got.address, got.secure) == ("198.51.100.7", False)
    hidden = info("10.0.0.1", ("Forwarded", "for=_hidden, for=192.168.1.1"))
    assert hidden.address == "192.168.1.1"  # the last address that could be vouched for


def test_ipv4_mapped_peer_matches_an_ipv4_proxy_entry() -> None:
    got = info("::ffff:10.0.0.1", ("X-Forwarded-For", "198.51.100.7"))
    assert got.address == "198.51.100.7"


def test_tls_to_us_is_secure_and_direct() -> None:
    got = info("203.0.113.9", tls=True)
    assert got.secure and got.direct_tls and got.scheme == "https"


def test_routes_exact_prefix_longest_match_and_unmount() -> None:
    routes = HttpRoutes()

    async def handler(request):  # type: ignore[no-untyped-def]
        raise AssertionError

    routes.mount("/http-bind", handler, owner="bosh")
    routes.mount("/upload", handler, prefix=True, owner="upload")
    routes.mount("/upload/admin", handler, prefix=True, owner="admin")
    assert routes.find("/http-bind") is not None
    assert routes.find("/http-bind/x") is None
    assert routes.find("/upload/abc/file.png").owner == "upload"  # type: ignore[union-attr]
    assert routes.find("/upload/admin/x").owner == "admin"  # type: ignore[union-attr]
    assert routes.find("/uploadx") is None
    with pytest.raises(ValueError, match="already served by bosh"):
        routes.mount("/http-bind", handler)
    with pytest.raises(ValueError):
        routes.mount("relative", handler)
    routes.unmount("/upload")
    assert routes.find("/upload/abc") is None
    assert routes.paths == ["/http-bind", "/upload/admin"]


def test_host_meta_links_follow_the_base_url() -> None:
    assert links("https://xmpp.example:5281/", websocket=True, bosh=True) == [
        (BOSH_REL, "https://xmpp.example:5281/http-bind"),
        (WEBSOCKET_REL, "wss://xmpp.example:5281/xmpp-websocket"),
    ]
    assert links("http://localhost:5280/prefix", websocket=True, bosh=False) == [
        (WEBSOCKET_REL, "ws://localhost:5280/prefix/xmpp-websocket")
    ]


def test_host_meta_documents_parse() -> None:
    pairs = links("https://example.org", websocket=True, bosh=True)
    parser = StreamParser(root=("http://docs.oasis-open.org/ns/xri/xrd-1.0", "XRD"))
    events = parser.feed(xrd(pairs))
    found = [(e.attrs["rel"], e.attrs["href"]) for e in events[1:-1]]  # type: ignore[union-attr]
    assert found == pairs
    assert json.loads(jrd(pairs)) == {"links": [{"rel": r, "href": h} for r, h in pairs]}
