"""XMPP addresses (JIDs) per RFC 7622, with PRECIS (RFC 8264/8265) and IDNA2008.

Stored form of each part (what ``==``, ``hash`` and ``str`` use):

* localpart: PRECIS ``UsernameCaseMapped`` (RFC 8265 §3.3), minus the extra characters that
  RFC 7622 §3.3.1 forbids.
* domainpart: IDNA2008 with UTS #46 mapping, lowercase, kept as **U-labels** (Unicode), never
  A-labels: RFC 7622 §3.2.1 requires A-labels to be converted to U-labels, so
  ``xn--bcher-kva.example`` and ``Bücher.Example`` both become ``bücher.example``. Code that needs
  DNS names (s2s, SRV look-ups, TLS name checks) converts with ``idna.encode`` at that boundary.
  IPv4 literals are kept as written (they are valid LDH names); IPv6 literals are bracketed and
  stored in the canonical compressed lowercase form of :mod:`ipaddress`.
* resourcepart: PRECIS ``OpaqueString`` (RFC 8265 §4.2); case is preserved.

Pure-ASCII parts take a fast path that never calls precis/idna; it yields exactly what the slow
path yields (the unit tests check that with hypothesis).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, final

import idna
from precis_i18n import get_profile

__all__ = ["JID", "JIDError", "prepare_domain", "prepare_localpart", "prepare_resource"]

# RFC 7622 §3.3, §3.2, §3.4: every part is 1..1023 octets of UTF-8 after preparation.
MAX_PART_OCTETS = 1023

_USERNAME = get_profile("UsernameCaseMapped")
_OPAQUE = get_profile("OpaqueString")

# RFC 7622 §3.3.1: allowed by UsernameCaseMapped but not in an XMPP localpart.
_LOCAL_EXCLUDED = frozenset("\"&'/:<>@")

# ASCII characters UsernameCaseMapped accepts (U+0021..U+007E) minus the §3.3.1 exclusions.
# For such strings the PRECIS rules reduce to ASCII lowercasing: width mapping, NFC and the
# bidi rule do not touch ASCII.
_LOCAL_ASCII = re.compile(r"[!#-%(-.0-9;=?A-~]+")

# An all-ASCII domain made of LDH labels that need no IDNA work beyond lowercasing. Labels
# with "--" anywhere (A-labels "xn--…", reserved R-LDH labels) go the slow way so idna can
# decode or reject them.
_DOMAIN_ASCII = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_DNS_MAX_NAME = 253  # RFC 1034 §3.1 (without the root dot); RFC 7622 §3.2 keeps DNS limits.


class JIDError(ValueError):
    """Malformed JID; maps to the jid-malformed stanza/stream error."""


def _fail(part: str, reason: str, cause: BaseException | None = None) -> NoReturn:
    # Library messages may quote the offending label; keep what reaches logs and errors short.
    raise JIDError(f"malformed {part}: {reason[:200]}") from cause


def _check_octets(part: str, value: str) -> None:
    if len(value) > MAX_PART_OCTETS // 4 and len(value.encode("utf-8")) > MAX_PART_OCTETS:
        _fail(part, f"longer than {MAX_PART_OCTETS} octets")


# --- localpart -------------------------------------------------------------------------------


def _prepare_localpart_slow(s: str) -> str:
    try:
        out: str = _USERNAME.enforce(s)
        _check_octets("localpart", out)
    except UnicodeError as e:  # precis raises UnicodeEncodeError; lone surrogates too
        _fail("localpart", str(e), e)
    # Checked after mapping: width mapping turns e.g. U+FF20 FULLWIDTH COMMERCIAL AT into '@'.
    if not _LOCAL_EXCLUDED.isdisjoint(out):
        _fail("localpart", "contains a character forbidden by RFC 7622 §3.3.1")
    return out


def prepare_localpart(s: str) -> str:
    """Enforce RFC 7622 §3.3 on a localpart; return its stored form or raise JIDError."""
    if s.isascii() and len(s) <= MAX_PART_OCTETS and _LOCAL_ASCII.fullmatch(s):
        return s.lower()
    if not s:
        _fail("localpart", "empty")
    return _prepare_localpart_slow(s)


# --- resourcepart ----------------------------------------------------------------------------


def _prepare_resource_slow(s: str) -> str:
    try:
        out: str = _OPAQUE.enforce(s)
        _check_octets("resourcepart", out)
    except UnicodeError as e:
        _fail("resourcepart", str(e), e)
    return out


def prepare_resource(s: str) -> str:
    """Enforce RFC 7622 §3.4 (OpaqueString) on a resourcepart; case is kept.

    A leading or trailing space is accepted: OpaqueString allows it, although RFC 7622 §3.5
    lists "juliet@example.com/ foo" as invalid; the normative profile wins here.
    """
    # Printable ASCII (U+0020..U+007E) is FreeformClass-valid and left as is by OpaqueString.
    if s and s.isascii() and s.isprintable() and len(s) <= MAX_PART_OCTETS:
        return s
    if not s:
        _fail("resourcepart", "empty")
    return _prepare_resource_slow(s)


# --- domainpart ------------------------------------------------------------------------------


def _prepare_ipv6(s: str) -> str:
    inner = s[1:-1]
    # RFC 6874 zone identifiers ("%25eth0") name an interface of one host: meaningless in
    # an address other servers route to, so they are refused; so are IPvFuture literals.
    if "%" in inner:
        _fail("domainpart", "IPv6 zone identifiers are not supported")
    try:
        addr = ipaddress.IPv6Address(inner)
    except ValueError as e:
        _fail("domainpart", "invalid IPv6 literal", e)
    return f"[{addr.compressed}]"


def _prepare_domain_slow(s: str) -> str:
    if s.startswith("["):
        if not s.endswith("]"):
            _fail("domainpart", "unterminated IPv6 literal")
        return _prepare_ipv6(s)
    try:
        # RFC 7622 §3.2.1/§3.2.2: UTS #46 mapping (case, width, NFC), IDNA2008 validation;
        # decoding back turns every A-label into its U-label.
        out: str = idna.decode(idna.encode(s, uts46=True, transitional=False))
        _check_octets("domainpart", out)
    except (UnicodeError, ValueError) as e:  # idna.IDNAError is a UnicodeError
        _fail("domainpart", str(e), e)
    if out.endswith("."):
        # A mapped dot (e.g. U+3002) after the stripped one would leave an empty label.
        _fail("domainpart", "empty label")
    return out


def prepare_domain(s: str) -> str:
    """Enforce RFC 7622 §3.2 on a domainpart; return its stored (U-label) form or raise JIDError."""
    # RFC 7622 §3.2: one final dot is stripped before any other canonicalisation.
    if s.endswith("."):
        s = s[:-1]
    if s.isascii() and len(s) <= _DNS_MAX_NAME:
        lowered = s.lower()
        if "--" not in lowered and _DOMAIN_ASCII.fullmatch(lowered):
            return lowered
    if not s:
        _fail("domainpart", "empty")
    return _prepare_domain_slow(s)


# --- JID -------------------------------------------------------------------------------------


def _split(text: str) -> tuple[str | None, str, str | None]:
    # RFC 7622 §3.1/§3.2: split at the separators before any mapping, resource first (at the
    # first '/'), then local at the first '@' of what remains.
    local: str | None = None
    resource: str | None = None
    slash = text.find("/")
    if slash >= 0:
        resource = text[slash + 1 :]
        text = text[:slash]
    at = text.find("@")
    if at >= 0:
        local = text[:at]
        text = text[at + 1 :]
    return local, text, resource


def _parse(text: str) -> JID:
    local, domain, resource = _split(text)
    return JID(
        None if local is None else prepare_localpart(local),
        prepare_domain(domain),
        None if resource is None else prepare_resource(resource),
        prepared=True,
    )


# The hot path parses the same few thousand JIDs over and over. Failures are not cached.
_parse_cached = functools.lru_cache(maxsize=16384)(_parse)


def _unpickle(local: str | None, domain: str, resource: str | None) -> JID:
    return JID(local, domain, resource, prepared=True)


@final
class JID:
    """An immutable, prepared XMPP address; equal and hashed by its (prepared) parts."""

    __slots__ = ("_bare", "_str", "domain", "local", "resource")

    local: str | None
    domain: str
    resource: str | None
    _str: str
    _bare: JID

    def __init__(
        self, local: str | None, domain: str, resource: str | None = None, *, prepared: bool = False
    ) -> None:
        """Build a JID from parts; ``prepared=True`` trusts them to be normalised already."""
        if not prepared:
            if local is not None:
                local = prepare_localpart(local)
            domain = prepare_domain(domain)
            if resource is not None:
                resource = prepare_resource(resource)
        _set_local(self, local)
        _set_domain(self, domain)
        _set_resource(self, resource)
        # Parts cannot contain the separators that precede them ('@' never in local or
        # domain, '/' never in domain), so this string identifies the parts exactly and can
        # serve for equality and hashing.
        s = domain if local is None else f"{local}@{domain}"
        _set_str(self, s if resource is None else f"{s}/{resource}")
        # _bare stays unset until first asked for (see .bare).

    if TYPE_CHECKING:

        @classmethod
        def parse(cls, text: str) -> JID:
            """Parse and prepare a JID string; raise JIDError if malformed."""
            ...

    else:
        # The lru_cache wrapper itself, without a Python-level frame around it: a cache hit
        # costs one C call.
        parse = staticmethod(_parse_cached)

    @property
    def bare(self) -> JID:
        """This JID without its resource (the same object when already bare)."""
        if self.resource is None:
            return self
        try:
            return self._bare
        except AttributeError:
            bare = JID(self.local, self.domain, None, prepared=True)
            _set_bare(self, bare)
            return bare

    @property
    def bare_str(self) -> str:
        """``str(self.bare)``."""
        if self.resource is None:
            return self._str
        return self.bare._str

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        """True for a mere domainpart (no localpart, no resourcepart), e.g. a server or service."""
        return self.local is None and self.resource is None

    def with_resource(self, resource: str) -> JID:
        """This JID's bare part with ``resource`` (prepared) as its resourcepart."""
        return JID(self.local, self.domain, prepare_resource(resource), prepared=True)

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"JID({self._str!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JID):
            return self._str == other._str
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, JID):
            return self._str != other._str
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._str)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"JID is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"JID is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickle, (self.local, self.domain, self.resource))

    def __copy__(self) -> JID:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> JID:
        return self


# Immutability: JID.__setattr__ refuses every write, so __init__ stores through the slot
# descriptors directly (faster than object.__setattr__, which looks the name up each time).
def _slot_setter(name: str) -> Callable[[JID, Any], None]:
    setter: Callable[[JID, Any], None] = vars(JID)[name].__set__
    return setter


_set_local = _slot_setter("local")
_set_domain = _slot_setter("domain")
_set_resource = _slot_setter("resource")
_set_str = _slot_setter("_str")
_set_bare = _slot_setter("_bare")
