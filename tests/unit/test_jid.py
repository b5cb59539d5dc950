"""Tests for roost.jid (RFC 7622 addresses)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.jid import (
    JID,
    JIDError,
    _prepare_domain_slow,
    _prepare_localpart_slow,
    _prepare_resource_slow,
    prepare_domain,
    prepare_localpart,
    prepare_resource,
)

# --- RFC 7622 §3.5 examples ---------------------------------------------------------------

LEGAL = [
    # (number, JID, (local, domain, resource))
    (1, "juliet@example.com", ("juliet", "example.com", None)),
    (2, "juliet@example.com/foo", ("juliet", "example.com", "foo")),
    (3, "juliet@example.com/foo bar", ("juliet", "example.com", "foo bar")),
    (4, "juliet@example.com/foo@bar", ("juliet", "example.com", "foo@bar")),
    (5, "foo\\20bar@example.com", ("foo\\20bar", "example.com", None)),
    (6, "fussball@example.com", ("fussball", "example.com", None)),
    (7, "fu\u00dfball@example.com", ("fu\u00dfball", "example.com", None)),
    (8, "\u03c0@example.com", ("\u03c0", "example.com", None)),
    (9, "\u03a3@example.com/foo", ("\u03c3", "example.com", "foo")),
    (10, "\u03c3@example.com/foo", ("\u03c3", "example.com", "foo")),
    (11, "\u03c2@example.com/foo", ("\u03c2", "example.com", "foo")),
    (12, "king@example.com/\u265a", ("king", "example.com", "\u265a")),
    (13, "example.com", (None, "example.com", None)),
    (14, "example.com/foobar", (None, "example.com", "foobar")),
    (15, "a.example.com/b@example.net", (None, "a.example.com", "b@example.net")),
]

ILLEGAL = [
    (16, '"juliet"@example.com'),
    (17, "foo bar@example.com"),
    # 18 ("juliet@example.com/ foo") is deliberately accepted: see test_rfc7622_example_18.
    (19, "@example.com/"),
    (20, "henry\u2163@example.com"),
    (21, "\u265a@example.com"),
    (22, "juliet@"),
    (23, "/foobar"),
]


@pytest.mark.parametrize(("number", "text", "parts"), LEGAL)
def test_rfc7622_legal_examples_parse_to_expected_parts(
    number: int, text: str, parts: tuple[str | None, str, str | None]
) -> None:
    jid = JID.parse(text)
    assert (jid.local, jid.domain, jid.resource) == parts, f"example {number}"


@pytest.mark.parametrize(("number", "text"), ILLEGAL)
def test_rfc7622_illegal_examples_are_rejected(number: int, text: str) -> None:
    with pytest.raises(JIDError):
        JID.parse(text)


def test_rfc7622_example_18_leading_space_in_resource_is_accepted() -> None:
    # RFC 7622 §3.5 lists it as invalid, but §3.4 makes the resourcepart an OpaqueString
    # (RFC 8265 §4.2), which allows leading and trailing spaces; we follow the normative rule.
    assert JID.parse("juliet@example.com/ foo").resource == " foo"


def test_sigma_examples_9_and_10_match_but_final_sigma_does_not() -> None:
    assert JID.parse("\u03a3@example.com/foo") == JID.parse("\u03c3@example.com/foo")
    assert JID.parse("\u03c2@example.com/foo") != JID.parse("\u03c3@example.com/foo")


def test_eszett_and_ss_are_distinct_localparts() -> None:
    assert JID.parse("fussball@example.com") != JID.parse("fu\u00dfball@example.com")


# --- case and mapping ---------------------------------------------------------------------


def test_localpart_and_domain_are_case_folded_resource_keeps_case() -> None:
    jid = JID.parse("Juliet@Example.COM/Balcony")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "example.com", "Balcony")
    assert jid == JID.parse("juliet@example.com/Balcony")
    assert jid != JID.parse("juliet@example.com/balcony")


def test_non_ascii_localpart_is_case_mapped() -> None:
    assert JID.parse("\u00c9lodie@example.com").local == "\u00e9lodie"


def test_fullwidth_characters_are_width_mapped() -> None:
    jid = JID.parse("\uff2a\uff55\uff4c\uff49\uff45\uff54@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com")
    assert (jid.local, jid.domain) == ("juliet", "example.com")


def test_resource_non_ascii_space_is_mapped_to_ascii_space() -> None:
    assert JID.parse("a@example.com/x\u00a0y").resource == "x y"


def test_resource_is_nfc_normalised() -> None:
    assert JID.parse("a@example.com/A\u030a").resource == "\u00c5"


@pytest.mark.parametrize("char", ['"', "&", "'", ":", "<", ">"])
def test_localpart_rejects_characters_excluded_by_rfc7622_3_3_1(char: str) -> None:
    with pytest.raises(JIDError):
        JID.parse(f"ju{char}liet@example.com")
    with pytest.raises(JIDError):
        prepare_localpart(f"ju{char}liet")


@pytest.mark.parametrize("char", ["/", "@"])
def test_prepare_localpart_rejects_separators(char: str) -> None:
    with pytest.raises(JIDError):
        prepare_localpart(f"ju{char}liet")


def test_localpart_rejects_fullwidth_at_that_maps_to_excluded_at() -> None:
    with pytest.raises(JIDError):
        JID.parse("ju\uff20liet@example.com")


def test_resource_rejects_control_characters() -> None:
    with pytest.raises(JIDError):
        JID.parse("a@example.com/x\ty")


# --- separators and empty parts -----------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "@example.org", "a@b/", "a@", "@", "/", "a@/r", "example.com/", "a@b@example.com"]
)
def test_empty_or_misplaced_parts_are_rejected(text: str) -> None:
    with pytest.raises(JIDError):
        JID.parse(text)


def test_resource_is_split_at_first_slash() -> None:
    jid = JID.parse("a@example.com/b/c@d")
    assert (jid.local, jid.domain, jid.resource) == ("a", "example.com", "b/c@d")


def test_at_sign_after_first_slash_belongs_to_resource() -> None:
    jid = JID.parse("example.com/a@b")
    assert (jid.local, jid.domain, jid.resource) == (None, "example.com", "a@b")


# --- lengths (RFC 7622 §3.1: 1..1023 octets of UTF-8 after preparation) --------------------


def test_localpart_of_1023_octets_is_accepted_1024_rejected() -> None:
    assert len(JID.parse("a" * 1023 + "@example.com").local or "") == 1023
    with pytest.raises(JIDError):
        JID.parse("a" * 1024 + "@example.com")


def test_localpart_length_counts_utf8_octets() -> None:
    ok = "\u00e9" * 511 + "a"  # 1023 octets
    assert JID.parse(ok + "@example.com").local == ok
    with pytest.raises(JIDError):
        JID.parse("\u00e9" * 512 + "@example.com")  # 512 characters, 1024 octets


def test_localpart_length_is_checked_after_mapping() -> None:
    # 1023 fullwidth letters are 3069 octets before width mapping, 1023 after.
    assert JID.parse("\uff41" * 1023 + "@example.com").local == "a" * 1023


def test_resource_of_1023_octets_is_accepted_1024_rejected() -> None:
    assert JID.parse("a@example.com/" + "R" * 1023).resource == "R" * 1023
    with pytest.raises(JIDError):
        JID.parse("a@example.com/" + "R" * 1024)
    ok = "\u265a" * 341  # 1023 octets
    assert JID.parse("a@example.com/" + ok).resource == ok
    with pytest.raises(JIDError):
        JID.parse("a@example.com/" + ok + "a")


def test_domain_follows_dns_length_limits() -> None:
    # RFC 7622 §3.2: the 1023-octet cap does not override RFC 1034 (63 per label, 253 in all).
    label63 = "a" * 63
    assert JID.parse(label63 + ".com").domain == label63 + ".com"
    with pytest.raises(JIDError):
        JID.parse("a" * 64 + ".com")
    name253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name253) == 253
    assert JID.parse(name253).domain == name253
    with pytest.raises(JIDError):
        JID.parse(name253 + "a")


# --- domainpart ---------------------------------------------------------------------------


def test_one_trailing_dot_is_stripped_from_domain() -> None:
    assert JID.parse("juliet@example.com./balcony") == JID.parse("juliet@example.com/balcony")
    assert JID.parse("example.com.").domain == "example.com"


@pytest.mark.parametrize(
    "domain", [".", "..", "example.com..", ".example.com", "a..example.com", "example.com\u3002."]
)
def test_empty_domain_labels_are_rejected(domain: str) -> None:
    with pytest.raises(JIDError):
        prepare_domain(domain)


def test_idn_domain_is_stored_as_lowercase_u_label() -> None:
    assert JID.parse("B\u00fccher.Example").domain == "b\u00fccher.example"


def test_a_label_domain_is_converted_to_u_label() -> None:
    # RFC 7622 §3.2.1: A-labels are converted to U-labels during preparation.
    assert JID.parse("a@xn--bcher-kva.example") == JID.parse("a@b\u00fccher.example")
    assert JID.parse("XN--BCHER-KVA.example").domain == "b\u00fccher.example"


def test_domain_keeps_eszett_nontransitional() -> None:
    assert JID.parse("fu\u00dfball.example").domain == "fu\u00dfball.example"


@pytest.mark.parametrize(
    "domain",
    [
        "a_b.example",
        "-a.example",
        "a-.example",
        "ab--cd.example",
        "xn--.example",
        "a b.example",
        "a\uff0fb.example",
        "a:b",
        "\u0661.example",
        "a\u200db.example",
    ],
)
def test_invalid_domains_are_rejected(domain: str) -> None:
    with pytest.raises(JIDError):
        prepare_domain(domain)


def test_ipv4_literal_is_accepted() -> None:
    jid = JID.parse("juliet@192.0.2.1/balcony")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "192.0.2.1", "balcony")


def test_ipv6_literal_is_accepted_and_canonicalised() -> None:
    assert JID.parse("juliet@[2001:DB8:0:0::1]/balcony").domain == "[2001:db8::1]"
    assert JID.parse("[0:0:0:0:0:0:0:1]") == JID.parse("[::1]")


@pytest.mark.parametrize(
    "domain", ["[::1", "::1", "[zz::1]", "[::1%25eth0]", "[::1%eth0]", "[]", "[1.2.3.4]"]
)
def test_malformed_ip_literals_are_rejected(domain: str) -> None:
    with pytest.raises(JIDError):
        prepare_domain(domain)


# --- the JID object -----------------------------------------------------------------------


def test_bare_of_bare_jid_is_same_object() -> None:
    jid = JID.parse("juliet@example.com")
    assert jid.bare is jid
    assert jid.is_bare and not jid.is_domain


def test_bare_of_full_jid_drops_resource_and_is_reused() -> None:
    jid = JID.parse("juliet@example.com/balcony")
    assert jid.bare == JID.parse("juliet@example.com")
    assert jid.bare is jid.bare
    assert not jid.is_bare
    assert jid.bare_str == "juliet@example.com"


def test_is_domain_only_for_mere_domainpart() -> None:
    assert JID.parse("example.com").is_domain
    assert not JID.parse("example.com/r").is_domain
    assert not JID.parse("a@example.com").is_domain


def test_with_resource_prepares_the_resource() -> None:
    full = JID.parse("Juliet@example.com/old").with_resource("new\u00a0one")
    assert str(full) == "juliet@example.com/new one"
    with pytest.raises(JIDError):
        JID.parse("juliet@example.com").with_resource("")


def test_str_and_repr() -> None:
    assert str(JID.parse("Juliet@Example.com/Balcony")) == "juliet@example.com/Balcony"
    assert str(JID.parse("example.com")) == "example.com"
    assert repr(JID.parse("juliet@example.com")) == "JID('juliet@example.com')"


def test_constructor_prepares_parts() -> None:
    jid = JID("Juliet", "Example.COM.", "Balcony")
    assert jid == JID.parse("juliet@example.com/Balcony")
    with pytest.raises(JIDError):
        JID("", "example.com")
    with pytest.raises(JIDError):
        JID("juliet", "example.com", "")


def test_constructor_with_prepared_trusts_its_parts() -> None:
    assert JID("Juliet", "example.com", prepared=True).local == "Juliet"


def test_equality_and_hash_follow_parts() -> None:
    a = JID.parse("juliet@example.com/r")
    b = JID("JULIET", "EXAMPLE.com", "r")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, JID.parse("juliet@example.com")}) == 2
    assert a != "juliet@example.com/r"
    # Distinct part splits never collide although the separators may appear in the resource.
    assert JID.parse("example.com/a@b") != JID.parse("a@example.com")


def test_jid_is_immutable() -> None:
    jid = JID.parse("juliet@example.com")
    with pytest.raises(AttributeError):
        jid.local = "romeo"
    with pytest.raises(AttributeError):
        del jid.domain
    assert not hasattr(jid, "__dict__")


def test_parse_caches_the_jid_object() -> None:
    text = "cached-romeo@example.net/orchard"
    assert JID.parse(text) is JID.parse(text)


def test_jid_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        JID.parse("@example.com")


def test_pickle_and_copy_roundtrip() -> None:
    jid = JID.parse("juliet@example.com/balcony")
    again = pickle.loads(pickle.dumps(jid))
    assert again == jid and str(again) == str(jid) and again.bare == jid.bare
    assert copy.copy(jid) is jid and copy.deepcopy(jid) is jid


# --- property tests -----------------------------------------------------------------------

_ascii = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40)
_ascii_domainish = st.one_of(
    _ascii,
    st.from_regex(r"[A-Za-z0-9._\-]{0,30}\.?", fullmatch=True),
    st.from_regex(
        r"(xn--)?[a-zA-Z0-9]{1,8}(-{1,2}[a-z0-9]{1,4})?(\.[A-Za-z0-9-]{1,10}){0,3}\.?", fullmatch=True
    ),
)


def _outcome(fn: Callable[[str], str], s: str) -> str | type[JIDError]:
    try:
        return fn(s)
    except JIDError:
        return JIDError


def _domain_slow(s: str) -> str:
    # prepare_domain strips one trailing dot before anything else; the slow path expects it done.
    return _prepare_domain_slow(s[:-1] if s.endswith(".") else s)


@settings(deadline=None)
@given(_ascii)
def test_localpart_ascii_fast_path_matches_precis(s: str) -> None:
    assert _outcome(prepare_localpart, s) == _outcome(_prepare_localpart_slow, s)


@settings(deadline=None)
@given(_ascii)
def test_resource_ascii_fast_path_matches_precis(s: str) -> None:
    assert _outcome(prepare_resource, s) == _outcome(_prepare_resource_slow, s)


@settings(deadline=None)
@given(_ascii_domainish)
def test_domain_ascii_fast_path_matches_idna(s: str) -> None:
    assert _outcome(prepare_domain, s) == _outcome(_domain_slow, s)


@pytest.mark.parametrize(
    ("fast", "slow", "s"),
    [
        (prepare_localpart, _prepare_localpart_slow, "a" * 1024),
        (prepare_resource, _prepare_resource_slow, "a" * 1024),
        (prepare_domain, _domain_slow, ".".join(["a" * 50] * 5)),
    ],
)
def test_fast_path_matches_slow_path_on_overlong_ascii(
    fast: Callable[[str], str], slow: Callable[[str], str], s: str
) -> None:
    assert _outcome(fast, s) is JIDError
    assert _outcome(slow, s) is JIDError


_label = st.text(
    alphabet=st.characters(categories=["Ll", "Lu", "Lo", "Nd"], max_codepoint=0x2FFFF), min_size=1, max_size=8
)
_domain = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "Example.COM.",
            "b\u00fccher.example",
            "xn--bcher-kva.example",
            "192.0.2.1",
            "[2001:DB8::1]",
            "localhost",
            "\uff45\uff58.com",
        ]
    ),
    st.lists(_label, min_size=1, max_size=3).map(".".join),
)
_any_text = st.text(max_size=12)
_jidish = st.builds(
    lambda local, domain, resource: (
        (f"{local}@" if local is not None else "") + domain + (f"/{resource}" if resource is not None else "")
    ),
    st.none() | _any_text,
    _domain,
    st.none() | _any_text,
)


@settings(deadline=None, max_examples=300)
@given(st.one_of(_jidish, st.text(max_size=30)))
def test_str_of_parsed_jid_parses_to_the_same_jid(text: str) -> None:
    try:
        jid = JID.parse(text)
    except JIDError:
        return
    again = JID.parse(str(jid))
    assert again == jid
    assert (again.local, again.domain, again.resource) == (jid.local, jid.domain, jid.resource)
    assert JID(jid.local, jid.domain, jid.resource) == jid  # stored parts are already prepared


@settings(deadline=None)
@given(st.text(max_size=20))
def test_preparation_is_idempotent(s: str) -> None:
    for prepare in (prepare_localpart, prepare_resource, prepare_domain):
        first = _outcome(prepare, s)
        if isinstance(first, str):
            assert prepare(first) == first
