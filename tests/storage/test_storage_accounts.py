"""AccountStore contract, for every backend."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from roost.storage import AccountExists, NoSuchAccount, StorageManager, StoredCredentials


def creds(hash_name: str = "SHA-256", seed: int = 1) -> StoredCredentials:
    return StoredCredentials(
        hash_name=hash_name,
        salt=bytes([seed, 0, 255]) * 4,
        iterations=4096 + seed,
        stored_key=bytes([seed]) * 32,
        server_key=bytes([seed + 1, 0]) * 16,
    )


@dataclass(frozen=True, slots=True)
class OtherCredentials:
    """Shaped like roost.stream.sasl.scram.ScramCredentials: any such object is accepted."""

    hash_name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


async def test_created_account_exists_with_its_credentials(storage: StorageManager) -> None:
    accounts = storage.accounts
    await accounts.create("example.org", "juliet", [creds("SHA-1", 1), creds("SHA-256", 2)])

    assert await accounts.exists("example.org", "juliet")
    assert await accounts.get_credentials("example.org", "juliet", "SHA-1") == creds("SHA-1", 1)
    assert await accounts.get_credentials("example.org", "juliet", "SHA-256") == creds("SHA-256", 2)
    assert await accounts.get_credentials("example.org", "juliet", "SHA-512") is None


async def test_unknown_account_has_no_credentials(storage: StorageManager) -> None:
    assert not await storage.accounts.exists("example.org", "nobody")
    assert await storage.accounts.get_credentials("example.org", "nobody", "SHA-256") is None


async def test_credentials_shaped_objects_are_accepted(storage: StorageManager) -> None:
    other = OtherCredentials("SHA-512", b"\x00salt", 10000, b"s" * 64, b"k" * 64)
    await storage.accounts.create("example.org", "romeo", [other])

    got = await storage.accounts.get_credentials("example.org", "romeo", "SHA-512")
    assert got == StoredCredentials("SHA-512", b"\x00salt", 10000, b"s" * 64, b"k" * 64)


async def test_creating_an_existing_account_fails_and_keeps_the_old_credentials(
    storage: StorageManager,
) -> None:
    await storage.accounts.create("example.org", "juliet", [creds("SHA-256", 1)])

    with pytest.raises(AccountExists):
        await storage.accounts.create("example.org", "juliet", [creds("SHA-256", 9)])

    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-256") == creds("SHA-256", 1)


async def test_account_without_credentials_can_exist(storage: StorageManager) -> None:
    await storage.accounts.create("example.org", "locked", [])

    assert await storage.accounts.exists("example.org", "locked")
    assert await storage.accounts.get_credentials("example.org", "locked", "SHA-256") is None


@pytest.mark.parametrize(
    "bad",
    [
        [creds("MD5")],
        [creds("SHA-256", 1), creds("SHA-256", 2)],
        [StoredCredentials("SHA-256", b"salt", 0, b"k", b"k")],
    ],
    ids=["unknown-hash", "duplicate-hash", "zero-iterations"],
)
async def test_invalid_credentials_are_refused_before_anything_is_stored(
    storage: StorageManager, bad: list[StoredCredentials]
) -> None:
    with pytest.raises(ValueError):
        await storage.accounts.create("example.org", "juliet", bad)
    assert not await storage.accounts.exists("example.org", "juliet")


async def test_set_credentials_replaces_every_hash(storage: StorageManager) -> None:
    await storage.accounts.create("example.org", "juliet", [creds("SHA-1", 1), creds("SHA-256", 1)])

    await storage.accounts.set_credentials("example.org", "juliet", [creds("SHA-512", 3)])

    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-1") is None
    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-256") is None
    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-512") == creds("SHA-512", 3)


async def test_set_credentials_of_unknown_account_fails(storage: StorageManager) -> None:
    with pytest.raises(NoSuchAccount):
        await storage.accounts.set_credentials("example.org", "nobody", [creds()])
    assert not await storage.accounts.exists("example.org", "nobody")


async def test_delete_removes_account_and_credentials(storage: StorageManager) -> None:
    await storage.accounts.create("example.org", "juliet", [creds("SHA-256", 1)])

    assert await storage.accounts.delete("example.org", "juliet") is True
    assert await storage.accounts.delete("example.org", "juliet") is False

    assert not await storage.accounts.exists("example.org", "juliet")
    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-256") is None
    # The name is free again, with fresh credentials.
    await storage.accounts.create("example.org", "juliet", [creds("SHA-1", 5)])
    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-256") is None


async def test_accounts_are_per_domain(storage: StorageManager) -> None:
    await storage.accounts.create("example.org", "juliet", [creds("SHA-256", 1)])
    await storage.accounts.create("example.net", "juliet", [creds("SHA-256", 2)])

    await storage.accounts.delete("example.net", "juliet")

    assert await storage.accounts.get_credentials("example.org", "juliet", "SHA-256") == creds("SHA-256", 1)
    assert not await storage.accounts.exists("example.net", "juliet")


async def test_list_and_count_are_sorted_and_filter_by_domain(storage: StorageManager) -> None:
    for domain, username in [
        ("b.example", "zoe"),
        ("a.example", "mia"),
        ("b.example", "ann"),
        ("a.example", "al"),
    ]:
        await storage.accounts.create(domain, username, [creds()])

    assert await storage.accounts.list() == [
        ("a.example", "al"),
        ("a.example", "mia"),
        ("b.example", "ann"),
        ("b.example", "zoe"),
    ]
    assert await storage.accounts.list("b.example") == [("b.example", "ann"), ("b.example", "zoe")]
    assert await storage.accounts.list("c.example") == []
    assert await storage.accounts.count() == 4
    assert await storage.accounts.count("a.example") == 2
    assert await storage.accounts.count("c.example") == 0


async def test_non_ascii_usernames_round_trip(storage: StorageManager) -> None:
    await storage.accounts.create("example.org", "джульетта", [creds()])

    assert await storage.accounts.list() == [("example.org", "джульетта")]
    assert await storage.accounts.exists("example.org", "джульетта")
