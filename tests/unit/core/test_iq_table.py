"""The IQ table (handlers by type, payload and target) and the tracker of IQs the server sent."""

from __future__ import annotations

import pytest

from roost.core.hooks import StanzaEvent
from roost.core.iq import IqTable, Target
from roost.xml.element import Element


def handler(event: StanzaEvent) -> Element | None:
    return None


def other(event: StanzaEvent) -> Element | None:
    return None


async def async_handler(event: StanzaEvent) -> Element | None:
    return None


def test_lookup_by_type_payload_and_target_in_the_order_asked() -> None:
    table = IqTable()
    table.register("get", "urn:x", "query", Target.ACCOUNT, handler)
    table.register("get", "urn:x", "query", Target.SELF, other)
    payload = Element("query", "urn:x")
    assert table.lookup("get", payload, (Target.SELF, Target.ACCOUNT)) == (other, False)
    assert table.lookup("get", payload, (Target.ACCOUNT,)) == (handler, False)
    assert table.lookup("set", payload, (Target.SELF, Target.ACCOUNT)) is None
    assert table.lookup("get", Element("other", "urn:x"), (Target.ACCOUNT,)) is None
    assert table.lookup("get", payload, (Target.HOST,)) is None


def test_async_handlers_are_known_as_such_at_registration() -> None:
    table = IqTable()
    table.register("set", "urn:x", "q", Target.HOST, async_handler)
    assert table.lookup("set", Element("q", "urn:x"), (Target.HOST,)) == (async_handler, True)


def test_one_handler_per_key_and_removal_undoes_registration() -> None:
    table = IqTable()
    remove = table.register("get", "urn:x", "q", Target.HOST, handler)
    with pytest.raises(ValueError, match="already registered"):
        table.register("get", "urn:x", "q", Target.HOST, other)
    assert table.has("urn:x", Target.HOST)
    assert table.namespaces() == {"urn:x"}
    remove()
    assert not table.has("urn:x", Target.HOST)
    table.register("get", "urn:x", "q", Target.HOST, other)
    remove()  # a stale remover does not remove the new handler
    assert table.lookup("get", Element("q", "urn:x"), (Target.HOST,)) == (other, False)


async def test_tracker_ids_are_unpredictable_and_only_the_queried_entity_answers() -> None:
    from roost.core.iq import IqTracker

    tracker = IqTracker()
    ids = {tracker.new_id() for _ in range(100)}
    assert len(ids) == 100
    iq_id = tracker.new_id()
    future = tracker.expect(iq_id, "juliet@localhost/balcony")
    spoofed = Element("iq", "jabber:client", {"type": "result", "id": iq_id, "from": "mallory@localhost/x"})
    assert tracker.resolve(spoofed) is False
    assert not future.done()
    real = Element("iq", "jabber:client", {"type": "result", "id": iq_id, "from": "Juliet@localhost/balcony"})
    assert tracker.resolve(real) is True
    assert (await future) is real
    assert tracker.resolve(real) is False  # once
