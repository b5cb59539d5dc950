"""XEP-0115 Entity Capabilities: verification strings, their check, and the cache by hash. Pure.

A client's presence carries ``<c xmlns='http://jabber.org/protocol/caps' hash ver node/>``; the
server asks the client once per unknown ``ver`` for its disco#info, checks that the answer hashes to
``ver`` (§5.4: a mismatch is not cached, so one client cannot poison the features of others) and
keeps the features by (hash, ver) in a bounded cache shared by every account.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from typing import Final

from roost.util.bounded import BoundedDict
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS, DISCO_INFO

CAPS: Final = "http://jabber.org/protocol/caps"
#: Hash functions of the IANA registry we verify (§5.1, §8.2); others are not cached (§5.4 step 2).
HASHES: Final[dict[str, Callable[[bytes], bytes]]] = {
    "sha-1": lambda b: hashlib.sha1(b).digest(),
    "sha-224": lambda b: hashlib.sha224(b).digest(),
    "sha-256": lambda b: hashlib.sha256(b).digest(),
    "sha-384": lambda b: hashlib.sha384(b).digest(),
    "sha-512": lambda b: hashlib.sha512(b).digest(),
}
#: The node the server names in its own caps (a URI for the software, §4).
SERVER_NODE: Final = "https://roost.im"


class IllFormed(ValueError):
    """A disco#info answer §5.4 calls ill-formed (duplicate identities, features or forms)."""


def verification_string(query: Element) -> str:
    """S of §5.1 for a disco#info ``<query/>``; raises :class:`IllFormed` (§5.4 step 3.3–3.5)."""
    identities = []
    for ident in query.elements("identity", DISCO_INFO):
        identities.append(
            "/".join(
                (
                    ident.get("category", ""),
                    ident.get("type", ""),
                    ident.get("xml:lang", ""),
                    ident.get("name", ""),
                )
            )
        )
    if len(set(identities)) != len(identities):
        raise IllFormed("duplicate identity")
    features = [f.get("var", "") for f in query.elements("feature", DISCO_INFO)]
    if len(set(features)) != len(features):
        raise IllFormed("duplicate feature")
    forms: dict[str, list[str]] = {}
    for x in query.elements("x", DATA_FORMS):
        form_type: str | None = None
        fields: list[tuple[str, list[str]]] = []
        for fld in x.elements("field", DATA_FORMS):
            values = [v.text for v in fld.elements("value", DATA_FORMS)]
            if fld.get("var") == "FORM_TYPE":
                if len(set(values)) > 1:
                    raise IllFormed("FORM_TYPE with several values")
                if fld.get("type") == "hidden" and values:
                    form_type = values[0]
            else:
                fields.append((fld.get("var", ""), values))
        if form_type is None:
            continue  # §5.4 step 3.6: ignored, processing continues
        if form_type in forms:
            raise IllFormed("two forms with one FORM_TYPE")
        parts = [form_type]
        for var, values in sorted(fields, key=lambda f: f[0].encode()):
            parts.append(var)
            parts.extend(sorted(values, key=str.encode))
        forms[form_type] = parts
    out = [i + "<" for i in sorted(identities, key=str.encode)]
    out += [f + "<" for f in sorted(features, key=str.encode)]
    for form_type in sorted(forms, key=str.encode):
        out += [p + "<" for p in forms[form_type]]
    return "".join(out)


def ver_of(query: Element, algo: str) -> str:
    """The verification string hashed with ``algo`` and Base64-encoded (§5.1 steps 8–9)."""
    return base64.b64encode(HASHES[algo](verification_string(query).encode("utf-8"))).decode("ascii")


def verify(query: Element, algo: str, ver: str) -> bool:
    """Whether the disco#info ``query`` hashes to ``ver`` (§5.4 step 3.7–3.8)."""
    if algo not in HASHES:
        return False
    try:
        return ver_of(query, algo) == ver
    except IllFormed:
        return False


def features_of(query: Element) -> frozenset[str]:
    return frozenset(f.get("var", "") for f in query.elements("feature", DISCO_INFO))


def caps_element(query: Element, node: str = SERVER_NODE, algo: str = "sha-1") -> Element:
    """The ``<c/>`` an entity with this disco#info advertises (§4)."""
    return Element("c", CAPS, {"hash": algo, "node": node, "ver": ver_of(query, algo)})


def read_caps(presence: Element) -> tuple[str, str, str] | None:
    """(hash, ver, node) of a presence's ``<c/>``, or None (legacy caps without 'hash': §5.4 step 1)."""
    c = presence.find("c", CAPS)
    if c is None:
        return None
    algo, ver = c.get("hash"), c.get("ver")
    if not algo or not ver:
        return None
    return algo.lower(), ver, c.get("node", "")


class CapsCache:
    """Verified features by (hash, ver); bounded, shared by every account of the server."""

    def __init__(self, limit: int) -> None:
        self._known: BoundedDict[tuple[str, str], frozenset[str]] = BoundedDict(limit)

    def get(self, algo: str, ver: str) -> frozenset[str] | None:
        return self._known.get((algo, ver))

    def put(self, algo: str, ver: str, features: Iterable[str]) -> frozenset[str]:
        value = frozenset(features)
        self._known[(algo, ver)] = value
        return value

    def __len__(self) -> int:
        return len(self._known)


def notify_nodes(features: Iterable[str]) -> frozenset[str]:
    """Nodes whose events an entity wants: its ``<node>+notify`` features (XEP-0163 §4, XEP-0060 §9.2)."""
    return frozenset(f[: -len("+notify")] for f in features if f.endswith("+notify"))
