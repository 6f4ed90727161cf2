"""Virtual keys as an admin makes them and every gateway instance sees them.

The secret is shown once and the store keeps only an HMAC of it; the
directory is the in-memory view each instance serves from, re-read from the
shared store, and it keeps serving the last keys it knew when the store fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable

import pytest

from spotgate.clock import ManualClock
from spotgate.errors import InvalidRequest, NotFound
from spotgate.gateway.tenancy.directory import KeyDirectory
from spotgate.gateway.tenancy.keys import ApiKey, digest, new_secret
from spotgate.gateway.tenancy.memory_stores import InMemoryKeyStore

SALT = "salt-for-tests"


def directory(
    store: InMemoryKeyStore | None = None,
    *,
    clock: ManualClock | None = None,
    salt: str = SALT,
    refresh_s: float = 2.0,
) -> KeyDirectory:
    return KeyDirectory(
        store or InMemoryKeyStore(), clock or ManualClock(), lambda: salt, refresh_s=refresh_s
    )


async def eventually(check: Callable[[], bool], within_s: float = 2.0) -> bool:
    """Whether `check()` holds before `within_s` (polled: a loaded machine is slow)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class FailingKeyStore(InMemoryKeyStore):
    """A key store whose reads fail while `failing` is set (writes still work)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.reads = 0

    async def all(self) -> list[ApiKey]:
        self.reads += 1
        if self.failing:
            raise ConnectionError("key store unreachable")
        return await super().all()


# the secret and what is kept of it


async def test_the_secret_is_shown_once_and_the_store_keeps_only_its_hmac() -> None:
    store = InMemoryKeyStore()
    keys = directory(store)
    key, secret = await keys.create("alice")
    assert secret.startswith("sk-sg-") and len(secret) == len("sk-sg-") + 43
    stored = await store.get(key.id)
    assert stored is not None
    assert secret not in repr(stored.to_dict()), "the store must not hold the secret"
    assert secret not in repr(stored.public())
    expected = hmac.new(SALT.encode(), secret.encode(), hashlib.sha256).hexdigest()
    assert stored.digest == expected
    assert "digest" not in stored.public(), "the admin view shows no digest either"
    assert stored.prefix == secret[:10], "only a short prefix, to tell keys apart"


async def test_two_keys_get_different_secrets_and_ids() -> None:
    keys = directory()
    first, first_secret = await keys.create("a")
    second, second_secret = await keys.create("b")
    assert first_secret != second_secret
    assert first.id != second.id and first.digest != second.digest


def test_a_different_salt_gives_a_different_digest() -> None:
    secret = new_secret()
    assert digest(secret, "salt-one") != digest(secret, "salt-two")
    assert digest(secret, "salt-one") == digest(secret, "salt-one")


async def test_a_store_read_under_another_salt_knows_none_of_the_keys() -> None:
    store = InMemoryKeyStore()
    _, secret = await directory(store, salt="salt-one").create("alice")
    rotated = directory(store, salt="salt-two")
    await rotated.reload()
    assert rotated.get("alice") is not None, "the record is there"
    assert rotated.lookup(secret) is None, "but the secret no longer matches it"


async def test_without_a_salt_no_key_can_be_made() -> None:
    keys = KeyDirectory(InMemoryKeyStore(), ManualClock(), lambda: None)
    with pytest.raises(RuntimeError, match="key-salt"):
        await keys.create("alice")


# create, update, revoke


async def test_lookup_finds_a_key_by_its_secret_and_nothing_for_any_other() -> None:
    keys = directory()
    key, secret = await keys.create("alice", models=["m1"], rpm=5)
    found = keys.lookup(secret)
    assert found is not None and found.id == key.id
    assert (found.models, found.rpm) == (["m1"], 5)
    assert keys.lookup(new_secret()) is None
    assert keys.lookup(secret + "x") is None


async def test_get_finds_a_key_by_id_or_by_name() -> None:
    keys = directory()
    key, _ = await keys.create("alice")
    by_id, by_name = keys.get(key.id), keys.get("alice")
    assert by_id is not None and by_name is not None
    assert by_id.id == by_name.id == key.id
    assert keys.get("bob") is None


async def test_update_changes_what_the_key_may_do_and_its_secret_still_works() -> None:
    clock = ManualClock()
    store = InMemoryKeyStore()
    keys = directory(store, clock=clock)
    key, secret = await keys.create("alice", rpm=5)
    clock.advance(30)
    updated = await keys.update("alice", {"rpm": 50, "models": ["m2"]})
    assert (updated.rpm, updated.models) == (50, ["m2"])
    assert updated.updated_at == key.created_at + 30
    stored = await store.get(key.id)
    assert stored is not None and (stored.rpm, stored.models) == (50, ["m2"])
    found = keys.lookup(secret)
    assert found is not None and found.rpm == 50


@pytest.mark.parametrize(
    "changes",
    [{"digest": "0" * 64}, {"id": "key_other"}, {"revoked_at": None}, {"colour": "red"}],
)
async def test_update_refuses_fields_an_admin_may_not_set(changes: dict[str, object]) -> None:
    store = InMemoryKeyStore()
    keys = directory(store)
    key, secret = await keys.create("alice")
    await keys.revoke("alice")
    with pytest.raises(InvalidRequest) as refused:
        await keys.update(key.id, changes)
    assert refused.value.status_code == 400
    assert next(iter(changes)) in refused.value.message
    stored = await store.get(key.id)
    assert stored is not None and stored.digest == key.digest and stored.revoked_at is not None
    assert keys.lookup(secret) is not None


async def test_create_refuses_unknown_fields_and_stores_nothing() -> None:
    store = InMemoryKeyStore()
    keys = directory(store)
    with pytest.raises(InvalidRequest, match="digest"):
        await keys.create("alice", digest="0" * 64)
    with pytest.raises(InvalidRequest):
        await keys.create("")
    assert await store.all() == [] and keys.count == 0


async def test_update_or_revoke_of_a_key_that_does_not_exist_is_404() -> None:
    keys = directory()
    with pytest.raises(NotFound) as missing:
        await keys.update("nobody", {"rpm": 1})
    assert (missing.value.status_code, missing.value.code) == (404, "key_not_found")
    with pytest.raises(NotFound):
        await keys.revoke("nobody")


async def test_revoke_marks_the_key_once_and_keeps_the_record() -> None:
    clock = ManualClock()
    store = InMemoryKeyStore()
    keys = directory(store, clock=clock)
    key, secret = await keys.create("alice")
    clock.advance(10)
    revoked = await keys.revoke(key.id)
    assert revoked.revoked_at == key.created_at + 10
    clock.advance(10)
    again = await keys.revoke(key.id)
    assert again.revoked_at == key.created_at + 10, "revoking twice keeps the first time"
    stored = await store.get(key.id)
    assert stored is not None and stored.revoked_at == key.created_at + 10
    found = keys.lookup(secret)
    assert found is not None and found.revoked_at is not None


async def test_a_name_is_unique_among_active_keys_and_free_again_once_revoked() -> None:
    keys = directory()
    await keys.create("alice")
    with pytest.raises(InvalidRequest) as taken:
        await keys.create("alice")
    assert taken.value.param == "name"
    await keys.revoke("alice")
    fresh, secret = await keys.create("alice")
    found = keys.lookup(secret)
    assert found is not None and found.id == fresh.id


async def test_a_name_reused_after_revocation_still_finds_the_active_key() -> None:
    keys = directory()
    await keys.create("alice")
    await keys.revoke("alice")
    fresh, _ = await keys.create("alice")
    found = keys.get("alice")
    assert found is not None and found.id == fresh.id
    updated = await keys.update("alice", {"rpm": 7})
    assert updated.id == fresh.id


async def test_a_rename_to_the_name_of_another_active_key_is_refused() -> None:
    keys = directory()
    await keys.create("alice")
    bob, _ = await keys.create("bob")
    with pytest.raises(InvalidRequest) as taken:
        await keys.update(bob.id, {"name": "alice"})
    assert taken.value.param == "name"
    found = keys.get("bob")
    assert found is not None and found.id == bob.id, "the refused rename changed nothing"


# several instances over one store


async def test_another_instance_sees_a_new_and_a_revoked_key_after_reload() -> None:
    store = InMemoryKeyStore()
    first, second = directory(store), directory(store)
    key, secret = await first.create("alice")
    assert second.lookup(secret) is None, "nothing is known before a reload"
    await second.reload()
    seen = second.lookup(secret)
    assert seen is not None and seen.id == key.id and seen.revoked_at is None
    await first.revoke(key.id)
    await second.reload()
    seen = second.lookup(secret)
    assert seen is not None and seen.revoked_at is not None


async def test_another_instance_picks_up_changes_within_its_refresh_interval() -> None:
    store = InMemoryKeyStore()
    first, second = directory(store, refresh_s=0.05), directory(store, refresh_s=0.05)
    await first.start()
    await second.start()
    try:
        key, secret = await first.create("alice")
        assert await eventually(lambda: second.lookup(secret) is not None)
        await first.revoke(key.id)

        def revoked() -> bool:
            seen = second.lookup(secret)
            return seen is not None and seen.revoked_at is not None

        assert await eventually(revoked), "the revocation reaches the other instance"
    finally:
        await first.close()
        await second.close()


async def test_the_last_known_keys_are_served_while_the_store_cannot_be_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingKeyStore()
    writer = directory(store)
    key, secret = await writer.create("alice")
    reader = directory(store, refresh_s=0.02)
    await reader.start()
    try:
        store.failing = True
        reads = store.reads
        with caplog.at_level(logging.WARNING, logger="spotgate.keys"):
            assert await eventually(lambda: store.reads >= reads + 3), "it goes on trying"
        found = reader.lookup(secret)
        assert found is not None and found.id == key.id
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "one warning for the whole outage"
        _, later = await writer.create("bob")
        store.failing = False
        assert await eventually(lambda: reader.lookup(later) is not None), "new keys arrive"
    finally:
        await reader.close()


async def test_a_failed_reload_leaves_the_known_keys_in_place() -> None:
    store = FailingKeyStore()
    keys = directory(store)
    _, secret = await keys.create("alice")
    store.failing = True
    with pytest.raises(ConnectionError):
        await keys.reload()
    assert keys.lookup(secret) is not None and keys.get("alice") is not None
