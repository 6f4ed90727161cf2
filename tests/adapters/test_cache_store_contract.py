"""One contract for every CacheStore: the in-memory test double, SQLite (local) and Cosmos DB.

The response cache only relies on what is tested here, so a store that
passes can back it. Each store gets a ManualClock: in-memory and SQLite
expire by it; the Cosmos store checks its items' `expires_at` against it
(the emulator, like Cosmos itself between sweeps, still holds the item).
Cosmos runs against @vercel/cosmosdb-server, started once per session by
tests/adapters/conftest.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from spotgate.adapters.azure.cosmos_cache_store import CosmosCacheStore, create_cosmos_cache_store
from spotgate.adapters.local.sqlite_cache_store import SqliteCacheStore
from spotgate.clock import ManualClock
from spotgate.gateway.cache.store import CacheStore, InMemoryCacheStore
from tests.adapters.conftest import CosmosServer

MAX_BYTES = 8 * 1024 * 1024
LARGE = 1_000_000  # the default CacheRule.max_entry_bytes: every store must hold one


@dataclass
class StoreUnderTest:
    name: str
    store: CacheStore
    clock: ManualClock


async def _cosmos_store(server: CosmosServer, clock: ManualClock) -> CosmosCacheStore:
    """A fresh container per test, through the production factory (creates db and container)."""
    return await create_cosmos_cache_store(
        server.url,
        server.key,
        "spotgate-test",
        f"cache-{uuid.uuid4().hex[:12]}",
        connection_verify=False,
        clock=clock,
    )


@pytest.fixture(params=["memory", "sqlite", "cosmos"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    clock = ManualClock()
    store: CacheStore
    if request.param == "memory":
        store = InMemoryCacheStore(clock, max_bytes=MAX_BYTES)
    elif request.param == "sqlite":
        store = SqliteCacheStore(tmp_path / "cache.sqlite", max_bytes=MAX_BYTES, clock=clock)
    else:
        store = await _cosmos_store(request.getfixturevalue("cosmos_server"), clock)
    try:
        yield StoreUnderTest(request.param, store, clock)
    finally:
        await store.close()


def _key() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex  # the shape of a cache key: 64 hex digits


async def test_put_then_get_returns_the_same_bytes(subject: StoreUnderTest) -> None:
    key, value = _key(), b'{"v":1}\n{"id":"chatcmpl-1","choices":[]}\x00\xff'
    await subject.store.put(key, value, 60)
    assert await subject.store.get(key) == value


async def test_missing_key_is_none(subject: StoreUnderTest) -> None:
    assert await subject.store.get(_key()) is None


async def test_entry_expires_after_its_ttl(subject: StoreUnderTest) -> None:
    key = _key()
    await subject.store.put(key, b"fresh", 10)
    subject.clock.advance(9.5)
    assert await subject.store.get(key) == b"fresh"
    subject.clock.advance(1)
    assert await subject.store.get(key) is None


async def test_put_overwrites_value_and_ttl(subject: StoreUnderTest) -> None:
    key = _key()
    await subject.store.put(key, b"old", 5)
    await subject.store.put(key, b"new", 100)
    subject.clock.advance(50)
    assert await subject.store.get(key) == b"new"


async def test_delete_removes_and_tolerates_missing(subject: StoreUnderTest) -> None:
    key = _key()
    await subject.store.put(key, b"x", 60)
    await subject.store.delete(key)
    assert await subject.store.get(key) is None
    await subject.store.delete(key)
    await subject.store.delete(_key())


async def test_large_value_roundtrips(subject: StoreUnderTest) -> None:
    key, value = _key(), os.urandom(LARGE)
    await subject.store.put(key, value, 60)
    assert await subject.store.get(key) == value


async def test_keys_are_independent(subject: StoreUnderTest) -> None:
    first, second = _key(), _key()
    await subject.store.put(first, b"one", 60)
    await subject.store.put(second, b"two", 60)
    await subject.store.delete(first)
    assert await subject.store.get(first) is None
    assert await subject.store.get(second) == b"two"


async def test_concurrent_puts_all_land(subject: StoreUnderTest) -> None:
    keys = [_key() for _ in range(20)]
    await asyncio.gather(
        *(subject.store.put(key, f"value-{i}".encode(), 60) for i, key in enumerate(keys))
    )
    found = await asyncio.gather(*(subject.store.get(key) for key in keys))
    assert found == [f"value-{i}".encode() for i in range(len(keys))]


async def test_concurrent_puts_to_one_key_leave_one_whole_value(subject: StoreUnderTest) -> None:
    key = _key()
    values = [bytes([i]) * 10_000 for i in range(10)]
    await asyncio.gather(*(subject.store.put(key, value, 60) for value in values))
    assert await subject.store.get(key) in values


# --- store-specific behaviour the contract does not cover ---


async def test_cosmos_item_past_expires_at_is_not_served(cosmos_server: CosmosServer) -> None:
    """Written directly, as an item the emulator (which never expires anything) still holds."""
    clock = ManualClock()
    store = await _cosmos_store(cosmos_server, clock)
    try:
        key = _key()
        await store._container.upsert_item(
            {
                "id": key,
                "value": base64.b64encode(b"stale").decode(),
                "expires_at": clock.now() - 1,
                "ttl": 1,
            }
        )
        assert await store.get(key) is None
        item = await store._container.read_item(key, partition_key=key)
        assert item["id"] == key  # still there: expiry was decided by get(), not the server
    finally:
        await store.close()


async def test_cosmos_items_carry_ttl_and_container_honours_item_ttl(
    cosmos_server: CosmosServer,
) -> None:
    clock = ManualClock()
    store = await _cosmos_store(cosmos_server, clock)
    try:
        key = _key()
        await store.put(key, b"x", 90.5)
        item = await store._container.read_item(key, partition_key=key)
        assert item["ttl"] == 91
        assert item["expires_at"] == pytest.approx(clock.now() + 90.5)
        properties = await store._container.read()
        assert properties["defaultTtl"] == -1
        assert properties["partitionKey"]["paths"] == ["/id"]
    finally:
        await store.close()


async def test_cosmos_factory_reuses_an_existing_container(cosmos_server: CosmosServer) -> None:
    name = f"cache-{uuid.uuid4().hex[:12]}"
    clock = ManualClock()
    first = await create_cosmos_cache_store(
        cosmos_server.url, cosmos_server.key, "spotgate-test", name, connection_verify=False
    )
    second = await create_cosmos_cache_store(
        cosmos_server.url,
        cosmos_server.key,
        "spotgate-test",
        name,
        connection_verify=False,
        clock=clock,
    )
    try:
        key = _key()
        await first.put(key, b"shared", 60)
        assert await second.get(key) == b"shared"
    finally:
        await first.close()
        await second.close()


async def test_cosmos_store_on_a_caller_owned_container(cosmos_server: CosmosServer) -> None:
    """The plain constructor leaves the caller's client open on close()."""
    async with CosmosClient(
        cosmos_server.url, credential=cosmos_server.key, connection_verify=False
    ) as client:
        factory_store = await _cosmos_store(cosmos_server, ManualClock())
        container_id = factory_store._container.id
        await factory_store.close()
        container = client.get_database_client("spotgate-test").get_container_client(container_id)
        store = CosmosCacheStore(container)
        key = _key()
        await store.put(key, b"v", 60)
        await store.close()
        assert (await container.read_item(key, partition_key=key))["id"] == key


async def test_sqlite_evicts_least_recently_read_past_the_cap(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteCacheStore(tmp_path / "cache.sqlite", max_bytes=3000, clock=clock)
    try:
        for name in ("a", "b", "c"):
            await store.put(name, b"x" * 1000, 60)
            clock.advance(1)
        assert await store.get("a") == b"x" * 1000  # now "b" is the least recently read
        clock.advance(1)
        await store.put("d", b"y" * 1000, 60)
        assert await store.get("b") is None
        assert [await store.get(k) is not None for k in ("a", "c", "d")] == [True, True, True]
        await store.put("huge", b"z" * 3001, 60)  # larger than the cap: not stored at all
        assert await store.get("huge") is None
        assert await store.get("d") is not None
    finally:
        await store.close()


async def test_sqlite_file_is_shared_and_survives_reopen(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "cache.sqlite"
    writer = SqliteCacheStore(path, max_bytes=MAX_BYTES, clock=clock)
    reader = SqliteCacheStore(path, max_bytes=MAX_BYTES, clock=clock)
    try:
        await writer.put("k", b"v", 60)
        assert await reader.get("k") == b"v"
    finally:
        await writer.close()
        await reader.close()
    reopened = SqliteCacheStore(path, max_bytes=MAX_BYTES, clock=clock)
    try:
        assert await reopened.get("k") == b"v"
    finally:
        await reopened.close()


async def test_in_memory_evicts_least_recently_used(tmp_path: Path) -> None:
    clock = ManualClock()
    store = InMemoryCacheStore(clock, max_bytes=3000)
    for name in ("a", "b", "c"):
        await store.put(name, b"x" * 1000, 60)
    await store.get("a")
    await store.put("d", b"y" * 1000, 60)
    assert await store.get("b") is None
    assert store.size_bytes == 3000 and len(store) == 3
