"""PRECIS preparation of what SASL carries (RFC 8265): user names and passwords.

Both profiles reduce to something trivial for the strings nearly every login sends, and
``precis_i18n`` walks its Unicode tables per character whatever the input (about 9 µs for
``user17``), so printable ASCII takes a fast path that yields exactly what the profile yields (the
unit tests compare the two with hypothesis). Anything else, and every error, comes from the profile.
"""

from __future__ import annotations

import re
from typing import Final

from precis_i18n import get_profile

USERNAME: Final = get_profile("UsernameCaseMapped")
OPAQUE: Final = get_profile("OpaqueString")

#: U+0021..U+007E: the ASCII that IdentifierClass allows (RFC 8264 §9.11, ASCII7). For these the
#: UsernameCaseMapped rules (RFC 8265 §3.3.2) only lowercase: width mapping, NFC and the bidi rule
#: leave ASCII as it is.
_USERNAME_ASCII: Final = re.compile(r"[!-~]+")


def prepare_username(username: str) -> str:
    """A simple user name under UsernameCaseMapped (RFC 8265 §3.3); raises UnicodeError if refused."""
    if username.isascii() and _USERNAME_ASCII.fullmatch(username):
        return username.lower()
    return str(USERNAME.enforce(username))


def prepare_password(password: str) -> str:
    """A password under OpaqueString (RFC 8265 §4.2); raises UnicodeError if refused.

    Printable ASCII, space included, is FreeformClass-valid and no OpaqueString rule changes it.
    """
    if password and password.isascii() and password.isprintable():
        return password
    return str(OPAQUE.enforce(password))
