"""MapStore contract, for every backend."""

from __future__ import annotations

import pytest

from roost.storage import StorageManager


async def test_values_round_trip_per_key(storage: StorageManager) -> None:
    store = storage.map("private")
    await store.set("example.org", "juliet", "storage:bookmarks", {"conference": ["a@b"]})
    await store.set("example.org", "juliet", "", "empty key")
    await store.set("example.org", "juliet", "ключ", 0)

    assert await store.get("example.org", "juliet", "storage:bookmarks") == {"conference": ["a@b"]}
    assert await store.get("example.org", "juliet", "") == "empty key"
    assert await store.get("example.org", "juliet", "ключ") == 0
    assert await store.get("example.org", "juliet", "missing") is None


async def test_set_overwrites_and_none_deletes(storage: StorageManager) -> None:
    store = storage.map("private")
    await store.set("example.org", "juliet", "k", 1)
    await store.set("example.org", "juliet", "k", [2])
    assert await store.get("example.org", "juliet", "k") == [2]

    await store.set("example.org", "juliet", "k", None)
    await store.set("example.org", "juliet", "never-set", None)

    assert await store.get("example.org", "juliet", "k") is None
    assert await store.items("example.org", "juliet") == {}


async def test_items_returns_all_keys_of_one_user(storage: StorageManager) -> None:
    store = storage.map("blocklist")
    await store.set("example.org", "juliet", "tybalt@example.net", True)
    await store.set("example.org", "juliet", "paris@example.net", {"reason": "suitor"})
    await store.set("example.org", "romeo", "tybalt@example.net", False)

    assert await store.items("example.org", "juliet") == {
        "tybalt@example.net": True,
        "paris@example.net": {"reason": "suitor"},
    }
    assert await store.items("example.org", "nobody") == {}


async def test_set_many_sets_and_deletes_together(storage: StorageManager) -> None:
    store = storage.map("pep")
    await store.set_many("example.org", "juliet", {"a": 1, "b": 2, "c": 3})

    await store.set_many("example.org", "juliet", {"a": None, "b": 20, "d": 4, "never-set": None})

    assert await store.items("example.org", "juliet") == {"b": 20, "c": 3, "d": 4}


async def test_set_many_with_nothing_changes_nothing(storage: StorageManager) -> None:
    store = storage.map("pep")
    await store.set("example.org", "juliet", "a", 1)

    await store.set_many("example.org", "juliet", {})

    assert await store.items("example.org", "juliet") == {"a": 1}


async def test_set_many_with_a_bad_value_changes_nothing(storage: StorageManager) -> None:
    store = storage.map("pep")
    await store.set_many("example.org", "juliet", {"a": 1, "b": 2})

    with pytest.raises(ValueError):
        await store.set_many("example.org", "juliet", {"a": None, "b": 3, "c": float("nan")})

    assert await store.items("example.org", "juliet") == {"a": 1, "b": 2}


async def test_delete_user_clears_only_that_user_in_that_store(storage: StorageManager) -> None:
    await storage.map("private").set_many("example.org", "juliet", {"a": 1, "b": 2})
    await storage.map("private").set("example.org", "romeo", "a", 1)
    await storage.map("private").set("example.net", "juliet", "a", 1)
    await storage.map("pep").set("example.org", "juliet", "a", 1)

    await storage.map("private").delete_user("example.org", "juliet")

    assert await storage.map("private").items("example.org", "juliet") == {}
    assert await storage.map("private").items("example.org", "romeo") == {"a": 1}
    assert await storage.map("private").items("example.net", "juliet") == {"a": 1}
    assert await storage.map("pep").items("example.org", "juliet") == {"a": 1}


async def test_many_keys_in_one_call(storage: StorageManager) -> None:
    store = storage.map("pep")
    await store.set_many("example.org", "juliet", {f"k{i}": i for i in range(1200)})

    await store.set_many("example.org", "juliet", {f"k{i}": None for i in range(0, 1200, 2)})

    assert await store.items("example.org", "juliet") == {f"k{i}": i for i in range(1, 1200, 2)}
