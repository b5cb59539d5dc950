"""error_condition: the defined condition of an error stanza (RFC 6120 §8.3.3), whatever else it carries."""

from __future__ import annotations

from roost.stanza import error_condition, error_reply
from roost.stanza.errors import StanzaError
from roost.xml.element import Element
from roost.xml.ns import CLIENT, STANZA_ERRORS


def test_condition_of_an_error_reply_with_text_and_app_condition() -> None:
    request = Element("iq", CLIENT, {"type": "set", "id": "1", "from": "a@example.org/r"})
    app = Element("blocked", "urn:xmpp:blocking:errors")
    reply = error_reply(request, StanzaError("not-acceptable", "no", app=app))
    assert error_condition(reply) == "not-acceptable"


def test_text_before_the_condition_is_skipped() -> None:
    stanza = Element("message", CLIENT, {"type": "error"})
    error = stanza.add("error", CLIENT, {"type": "cancel"})
    error.add("text", STANZA_ERRORS, text="gone")
    error.add("item-not-found", STANZA_ERRORS)
    assert error_condition(stanza) == "item-not-found"


def test_no_error_child_means_no_condition() -> None:
    assert error_condition(Element("message", CLIENT, {"type": "chat"})) is None
    stanza = Element("message", CLIENT, {"type": "error"})
    stanza.add("error", CLIENT, {"type": "cancel"}).add("text", STANZA_ERRORS, text="only text")
    assert error_condition(stanza) is None
