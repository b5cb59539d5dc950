"""KeyValueStore contract, for every backend."""

from __future__ import annotations

import pytest

from roost.storage import JSON, StorageManager

DOCUMENTS: list[JSON] = [
    {"items": [{"jid": "romeo@example.net", "name": "Romeo ♥", "groups": ["Friends"]}], "ver": 7},
    [1, 2.5, -3, True, False, None, "", {"nested": {"deep": []}}],
    "just a string",
    0,
    False,
    2**70,
    1e-300,
]


@pytest.mark.parametrize("value", DOCUMENTS, ids=lambda value: type(value).__name__)
async def test_documents_round_trip(storage: StorageManager, value: JSON) -> None:
    store = storage.keyvalue("roster")

    await store.set("example.org", "juliet", value)

    got = await store.get("example.org", "juliet")
    assert got == value
    assert type(got) is type(value)  # False stays False, 0 stays 0


async def test_missing_document_is_none(storage: StorageManager) -> None:
    assert await storage.keyvalue("roster").get("example.org", "juliet") is None


async def test_set_overwrites(storage: StorageManager) -> None:
    store = storage.keyvalue("vcard")
    await store.set("example.org", "juliet", {"fn": "Juliet"})

    await store.set("example.org", "juliet", {"nickname": "J"})

    assert await store.get("example.org", "juliet") == {"nickname": "J"}


async def test_setting_none_deletes(storage: StorageManager) -> None:
    store = storage.keyvalue("vcard")
    await store.set("example.org", "juliet", {"fn": "Juliet"})

    await store.set("example.org", "juliet", None)
    await store.set("example.org", "nobody", None)  # deleting nothing is fine

    assert await store.get("example.org", "juliet") is None


async def test_documents_are_separate_per_store_domain_and_user(storage: StorageManager) -> None:
    places = [
        ("roster", "example.org", "juliet"),
        ("roster", "example.org", "romeo"),
        ("roster", "example.net", "juliet"),
        ("vcard", "example.org", "juliet"),
        ("roster", "example.org", ""),  # host-wide
    ]
    for n, (name, domain, user) in enumerate(places):
        await storage.keyvalue(name).set(domain, user, {"n": n})

    await storage.keyvalue("roster").set("example.org", "juliet", None)

    assert await storage.keyvalue("roster").get("example.org", "juliet") is None
    for n, (name, domain, user) in enumerate(places[1:], start=1):
        assert await storage.keyvalue(name).get(domain, user) == {"n": n}


async def test_returned_documents_are_copies(storage: StorageManager) -> None:
    store = storage.keyvalue("roster")
    value: dict[str, JSON] = {"items": ["a"]}
    await store.set("example.org", "juliet", value)

    value["items"] = ["changed"]
    got = await store.get("example.org", "juliet")
    assert isinstance(got, dict)
    got["items"] = ["changed too"]

    assert await store.get("example.org", "juliet") == {"items": ["a"]}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        ({"x": float("inf")}, ValueError),
        ({"x": object()}, TypeError),
        ("lone \ud800 surrogate", ValueError),
    ],
    ids=["nan", "infinity", "object", "surrogate"],
)
async def test_values_json_cannot_carry_are_refused(
    storage: StorageManager, value: object, error: type[Exception]
) -> None:
    store = storage.keyvalue("roster")
    await store.set("example.org", "juliet", {"kept": True})

    with pytest.raises(error):
        await store.set("example.org", "juliet", value)  # type: ignore[arg-type]

    assert await store.get("example.org", "juliet") == {"kept": True}


async def test_nul_characters_inside_json_strings_round_trip(storage: StorageManager) -> None:
    await storage.keyvalue("private").set("example.org", "juliet", {"a\x00b": "c\x00d"})

    assert await storage.keyvalue("private").get("example.org", "juliet") == {"a\x00b": "c\x00d"}


async def test_store_names_must_not_be_empty(storage: StorageManager) -> None:
    with pytest.raises(ValueError):
        storage.keyvalue("")


async def test_reads_after_writes_see_the_writes_across_stores(storage: StorageManager) -> None:
    """SQL serves a user's reads from a short-lived snapshot of all their rows: writes show at once."""
    roster = storage.map("roster")
    vcard = storage.keyvalue("vcard")
    assert await roster.items("example.org", "snap") == {}
    assert await vcard.get("example.org", "snap") is None  # both now cached as empty
    await roster.set("example.org", "snap", "a@b", {"name": "A"})
    await vcard.set("example.org", "snap", {"fn": "Snap"})
    assert await roster.items("example.org", "snap") == {"a@b": {"name": "A"}}
    assert await roster.get("example.org", "snap", "a@b") == {"name": "A"}
    assert await vcard.get("example.org", "snap") == {"fn": "Snap"}
    await roster.set_many("example.org", "snap", {"a@b": None, "c@d": {"name": "C"}})
    assert await roster.items("example.org", "snap") == {"c@d": {"name": "C"}}
    await storage.delete_user("example.org", "snap")
    assert await roster.items("example.org", "snap") == {}
    assert await vcard.get("example.org", "snap") is None


async def test_set_users_writes_and_deletes_several_users_at_once(storage: StorageManager) -> None:
    last = storage.keyvalue("last")
    await last.set("example.org", "gone", {"time": 1})
    assert await last.get("example.org", "gone") == {"time": 1}  # cached in the user's snapshot now
    await last.set_users("example.org", {"a": {"time": 2}, "b": {"time": 3}, "gone": None})
    assert await last.get("example.org", "a") == {"time": 2}
    assert await last.get("example.org", "b") == {"time": 3}
    assert await last.get("example.org", "gone") is None
    assert await storage.keyvalue("other").get("example.org", "a") is None  # one store only
    await last.set_users("example.org", {})
