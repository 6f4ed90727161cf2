"""One contract for the tenancy stores (keys, usage, counters): in memory, SQLite and Cosmos DB.

Authorisation, metering and rate limits rely on what is tested here only,
so a store that passes can back them. Every store gets a ManualClock: the
in-memory and SQLite counters expire by it, and the Cosmos counters compare
their items' `expires_at` with it (the emulator never deletes by TTL).

Counters are what several gateway instances share, so the concurrency tests
run every `add` at once against one store and against two "instances": two
store objects on the same SQLite file, two Cosmos clients on one database.
Cosmos runs against @vercel/cosmosdb-server (the session's `cosmos_server`
fixture, tests/adapters/conftest.py); every test gets its own database,
created by the production `ensure_database` and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from spotgate.adapters.azure.cosmos_tenancy import (
    LIMITS_CONTAINER,
    MAX_COUNTER_FIELDS,
    NO_KEY,
    USAGE_CONTAINER,
    CosmosTenancy,
    cosmos_tenancy,
)
from spotgate.adapters.azure.stores import ensure_database
from spotgate.adapters.local.sqlite_tenancy import (
    SqliteCounterStore,
    SqliteKeyStore,
    SqliteUsageStore,
)
from spotgate.clock import ManualClock
from spotgate.gateway.tenancy.keys import ApiKey, ModelPrice
from spotgate.gateway.tenancy.memory_stores import (
    SWEEP_EVERY_S,
    InMemoryCounterStore,
    InMemoryKeyStore,
    InMemoryUsageStore,
)
from spotgate.gateway.tenancy.ports import CounterStore, KeyStore, UsageStore
from spotgate.gateway.tenancy.usage import USAGE_COLUMNS, UsageRecord
from tests.adapters.conftest import CosmosServer

CONCURRENT_ADDS = 50


@dataclass
class Tenancy:
    name: str
    keys: KeyStore
    usage: UsageStore
    counters: CounterStore
    clock: ManualClock
    another_instance: Callable[[], Awaitable[CounterStore]]
    """A second counter store on the same data, as another gateway instance holds it."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def cosmos_database(server: CosmosServer) -> AsyncIterator[tuple[CosmosClient, str]]:
    """A fresh database with every production container; dropped afterwards."""
    client = CosmosClient(server.url, credential=server.key, connection_verify=False)
    name = f"tenancy-{uuid.uuid4().hex[:12]}"
    try:
        await ensure_database(client, name)
        yield client, name
        await client.delete_database(name)
    finally:
        await client.close()


@pytest.fixture(params=["memory", "sqlite", "cosmos"])
async def tenancy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tenancy]:
    clock = ManualClock()
    if request.param == "memory":
        counters = InMemoryCounterStore(clock)

        async def shared_memory() -> CounterStore:
            return counters  # one process, one store: the "other instance" is the same object

        subject = Tenancy(
            "memory", InMemoryKeyStore(), InMemoryUsageStore(), counters, clock, shared_memory
        )
        yield subject
        return
    if request.param == "sqlite":
        path = tmp_path / "tenancy.sqlite3"
        subject = Tenancy(
            "sqlite",
            SqliteKeyStore(path),
            SqliteUsageStore(path),
            SqliteCounterStore(path, clock=clock),
            clock,
            lambda: _sqlite_counters(subject, path),
        )
        try:
            yield subject
        finally:
            for store in (subject.keys, subject.usage, subject.counters):
                await store.close()
            for close in subject.closers:
                await close()
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    async with cosmos_database(server) as (client, name):
        stores = cosmos_tenancy(client.get_database_client(name), clock=clock)
        subject = Tenancy(
            "cosmos",
            stores.keys,
            stores.usage,
            stores.counters,
            clock,
            lambda: _cosmos_counters(subject, server, name),
        )
        try:
            yield subject
        finally:
            for close in subject.closers:
                await close()


async def _sqlite_counters(subject: Tenancy, path: Path) -> CounterStore:
    store = SqliteCounterStore(path, clock=subject.clock)
    subject.closers.append(store.close)
    return store


async def _cosmos_counters(subject: Tenancy, server: CosmosServer, database: str) -> CounterStore:
    """Another client, as another gateway instance has: nothing shared but the database."""
    client = CosmosClient(server.url, credential=server.key, connection_verify=False)
    subject.closers.append(client.close)
    return cosmos_tenancy(client.get_database_client(database), clock=subject.clock).counters


def _key(key_id: str | None = None, **changes: Any) -> ApiKey:
    values: dict[str, Any] = {
        "id": key_id or f"key_{uuid.uuid4().hex[:16]}",
        "name": "team a",
        "digest": "ab" * 32,
        "prefix": "sk-sg-abcd",
    }
    values.update(changes)
    return ApiKey(**values)


def _full_key() -> ApiKey:
    """Every field away from its default, floats that are whole numbers included."""
    return _key(
        owner="alice@example.com",
        models=["gpt-small", "auto"],
        groups=["cheap"],
        rpm=60,
        tpm=100_000,
        max_parallel=4,
        budget_usd=25.0,
        budget_period="day",
        expires_at=1_800_000_000.0,
        prices={"gpt-small": ModelPrice(1.0, 2.5), "auto": ModelPrice()},
        cache_group="research",
        metadata={"team": "a", "limits": [1, 2], "nested": {"x": None}},
        created_at=1_700_000_000.0,
        updated_at=1_700_000_100.5,
        revoked_at=None,
    )


def _record(at: float, request_id: str | None = None, **changes: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "at": at,
        "request_id": request_id or f"req-{uuid.uuid4().hex}",
        "key_id": "key_a",
        "model": "gpt-small",
        "path": "/v1/chat/completions",
        "status": 200,
    }
    values.update(changes)
    return UsageRecord(**values)


def _full_record(at: float) -> UsageRecord:
    return _record(
        at,
        pool="gpu",
        worker_id="default-w1",
        priority="spot",
        sku="Standard_NC4as_T4_v3",
        cache="MISS",
        spillover="openai",
        prompt_tokens=120,
        completion_tokens=30,
        estimated=True,
        ttft_ms=12.0,
        duration_ms=340.25,
        error_code="upstream_timeout",
        revenue_usd=0.0015,
        spillover_cost_usd=3.0,
        batch_id="batch-1",
    )


def _same_types(a: Any, b: Any) -> list[tuple[str, type, type]]:
    """Fields whose value types differ (12.0 read back as 12 would be one)."""
    left, right = a.to_dict(), b.to_dict()
    return [(k, type(left[k]), type(right[k])) for k in left if type(left[k]) is not type(right[k])]


# --- keys --------------------------------------------------------------------------------


async def test_key_put_then_get_returns_every_field(tenancy: Tenancy) -> None:
    key = _full_key()
    await tenancy.keys.put(key)
    found = await tenancy.keys.get(key.id)
    assert found == key
    assert _same_types(found, key) == []
    assert found.prices["gpt-small"] == ModelPrice(1.0, 2.5)
    assert type(found.prices["auto"].input_per_1m) is float


async def test_missing_key_is_none(tenancy: Tenancy) -> None:
    assert await tenancy.keys.get("key_missing") is None


async def test_key_put_replaces_by_id(tenancy: Tenancy) -> None:
    key = _key(rpm=10, models=["a"])
    await tenancy.keys.put(key)
    await tenancy.keys.put(_key(key.id, name="renamed", rpm=None, models=[]))
    found = await tenancy.keys.get(key.id)
    assert found is not None
    assert (found.name, found.rpm, found.models) == ("renamed", None, [])
    assert [k.id for k in await tenancy.keys.all()] == [key.id]


async def test_all_lists_every_key_revoked_ones_included_ordered_by_id(tenancy: Tenancy) -> None:
    assert await tenancy.keys.all() == []
    keys = [_key("key_c"), _key("key_a", revoked_at=1_700_000_000.0), _key("key_b")]
    for key in keys:
        await tenancy.keys.put(key)
    listed = await tenancy.keys.all()
    assert [k.id for k in listed] == ["key_a", "key_b", "key_c"]
    assert listed[0].revoked_at == 1_700_000_000.0
    assert listed[0].active(1_700_000_001.0) is False


async def test_a_stored_key_does_not_change_with_the_callers_object(tenancy: Tenancy) -> None:
    key = _key(models=["a"])
    await tenancy.keys.put(key)
    key.models.append("b")
    key.name = "changed"
    found = await tenancy.keys.get(key.id)
    assert found is not None and (found.name, found.models) == ("team a", ["a"])


async def test_ids_with_characters_cosmos_forbids_round_trip(tenancy: Tenancy) -> None:
    """Ids are the caller's: a request id from X-Request-ID may hold / ? # or %."""
    key = _key("key/with?odd#chars%2F")
    await tenancy.keys.put(key)
    assert await tenancy.keys.get(key.id) == key
    assert [k.id for k in await tenancy.keys.all()] == [key.id]
    record = _record(10.0, "req/1?x#y%2F")
    await tenancy.usage.append([record])
    assert await tenancy.usage.query(0.0) == [record]
    assert await tenancy.counters.add("rpm/key?1#x", {"requests": 1}, ttl_s=60) == {"requests": 1.0}


# --- usage -------------------------------------------------------------------------------


async def test_usage_record_round_trips_every_field(tenancy: Tenancy) -> None:
    record = _full_record(1_700_000_000.25)
    assert set(record.to_dict()) == set(USAGE_COLUMNS)
    await tenancy.usage.append([record])
    [found] = await tenancy.usage.query(1_700_000_000.0)
    assert found == record
    assert _same_types(found, record) == []


async def test_usage_record_without_a_key_round_trips(tenancy: Tenancy) -> None:
    record = _record(5.0, key_id=None, status=401, error_code="invalid_api_key")
    await tenancy.usage.append([record])
    [found] = await tenancy.usage.query(0.0)
    assert found.key_id is None
    assert found == record


async def test_usage_query_is_half_open_and_oldest_first(tenancy: Tenancy) -> None:
    records = [_record(at, f"req-{at}") for at in (30.0, 10.0, 20.0, 40.0, 10.5)]
    await tenancy.usage.append(records[:2])
    await tenancy.usage.append(records[2:])
    assert [r.at for r in await tenancy.usage.query(10.0, 30.0)] == [10.0, 10.5, 20.0]
    assert [r.at for r in await tenancy.usage.query(10.5)] == [10.5, 20.0, 30.0, 40.0]
    assert [r.at for r in await tenancy.usage.query(0.0, 10.0)] == []
    assert [r.at for r in await tenancy.usage.query(40.0, 40.0)] == []
    assert [r.at for r in await tenancy.usage.query(40.0, 40.5)] == [40.0]


async def test_usage_records_at_the_same_time_are_ordered_by_request_id(
    tenancy: Tenancy,
) -> None:
    await tenancy.usage.append([_record(7.0, "req-b"), _record(7.0, "req-c")])
    await tenancy.usage.append([_record(7.0, "req-a", key_id=None)])
    assert [r.request_id for r in await tenancy.usage.query(0.0)] == ["req-a", "req-b", "req-c"]


async def test_usage_append_ignores_a_request_id_already_stored(tenancy: Tenancy) -> None:
    first = _record(1.0, "req-1", status=200)
    await tenancy.usage.append([first, _record(2.0, "req-2")])
    # a retried batch, and a duplicate within one batch: the first record stands
    await tenancy.usage.append([_record(1.0, "req-1", status=500), _record(3.0, "req-3")])
    await tenancy.usage.append([_record(4.0, "req-4"), _record(4.0, "req-4", status=429)])
    found = await tenancy.usage.query(0.0)
    assert [r.request_id for r in found] == ["req-1", "req-2", "req-3", "req-4"]
    assert found[0] == first
    assert found[3].status == 200


async def test_usage_append_of_nothing_stores_nothing(tenancy: Tenancy) -> None:
    await tenancy.usage.append([])
    assert await tenancy.usage.query(0.0) == []


async def test_usage_append_of_a_large_batch(tenancy: Tenancy) -> None:
    records = [_record(float(i), f"req-{i:04d}", key_id=f"key_{i % 7}") for i in range(200)]
    await tenancy.usage.append(records)
    assert await tenancy.usage.query(0.0) == records
    assert await tenancy.usage.query(50.0, 60.0) == records[50:60]


# --- counters ----------------------------------------------------------------------------


async def test_counter_fields_start_at_zero_and_deltas_add(tenancy: Tenancy) -> None:
    assert await tenancy.counters.add("c1", {"requests": 1, "tokens": 150}, ttl_s=60) == {
        "requests": 1.0,
        "tokens": 150.0,
    }
    assert await tenancy.counters.add("c1", {"tokens": 2.5}, ttl_s=60) == {
        "requests": 1.0,
        "tokens": 152.5,
    }
    assert await tenancy.counters.add("c1", {"requests": -1, "spend": 0.25}, ttl_s=60) == {
        "requests": 0.0,
        "tokens": 152.5,
        "spend": 0.25,
    }
    assert await tenancy.counters.add("c1", {}, ttl_s=60) == {
        "requests": 0.0,
        "tokens": 152.5,
        "spend": 0.25,
    }


async def test_counter_values_are_floats(tenancy: Tenancy) -> None:
    found = await tenancy.counters.add("c1", {"requests": 1}, ttl_s=60, stamps={"window": 5})
    assert {name: type(value) for name, value in found.items()} == {
        "requests": float,
        "window": float,
    }


async def test_counter_stamps_set_fields(tenancy: Tenancy) -> None:
    first = await tenancy.counters.add(
        "c1", {"requests": 1}, ttl_s=60, stamps={"window_start": 1000.0}
    )
    assert first == {"requests": 1.0, "window_start": 1000.0}
    second = await tenancy.counters.add(
        "c1", {"requests": 1}, ttl_s=60, stamps={"window_start": 1060.0}
    )
    assert second == {"requests": 2.0, "window_start": 1060.0}
    # a stamp on a field with a delta too: the stamp is applied last and wins
    third = await tenancy.counters.add("c1", {"requests": 5}, ttl_s=60, stamps={"requests": 0})
    assert third == {"requests": 0.0, "window_start": 1060.0}


async def test_counter_field_names_may_hold_any_character(tenancy: Tenancy) -> None:
    """The limiter names fields after models, and model names may hold "/" (org/model)."""
    names = ["tok:meta-llama/Llama-3.1-8B", "req:a~0b~1c", "x%2Fy", "sp ace.dot:colon"]
    first = await tenancy.counters.add(
        "c1", {name: 1 for name in names}, ttl_s=60, stamps={"t/at": 5.0}
    )
    assert first == {**{name: 1.0 for name in names}, "t/at": 5.0}
    again = await tenancy.counters.add("c1", {names[0]: 2}, ttl_s=60)
    assert again == {**first, names[0]: 3.0}


async def test_counters_are_independent(tenancy: Tenancy) -> None:
    await tenancy.counters.add("rpm:key_a", {"requests": 3}, ttl_s=60)
    assert await tenancy.counters.add("rpm:key_b", {"requests": 1}, ttl_s=60) == {"requests": 1.0}
    assert await tenancy.counters.add("rpm:key_a", {"requests": 1}, ttl_s=60) == {"requests": 4.0}


async def test_counter_expires_ttl_after_its_last_change(tenancy: Tenancy) -> None:
    await tenancy.counters.add("c1", {"requests": 1}, ttl_s=10, stamps={"mark": 7})
    tenancy.clock.advance(9.5)
    assert await tenancy.counters.add("c1", {"requests": 1}, ttl_s=10) == {
        "requests": 2.0,
        "mark": 7.0,
    }
    tenancy.clock.advance(9.5)  # 19 s after the first change, 9.5 after the last
    assert await tenancy.counters.add("c1", {"requests": 1}, ttl_s=10) == {
        "requests": 3.0,
        "mark": 7.0,
    }
    tenancy.clock.advance(10.5)
    assert await tenancy.counters.add("c1", {"requests": 1}, ttl_s=10) == {"requests": 1.0}
    tenancy.clock.advance(11)
    assert await tenancy.counters.add("c1", {"tokens": 5}, ttl_s=10, stamps={"mark": 1}) == {
        "tokens": 5.0,
        "mark": 1.0,
    }


async def test_counter_ttl_is_set_by_each_change(tenancy: Tenancy) -> None:
    """A shorter TTL on a later change makes the counter expire sooner."""
    await tenancy.counters.add("c1", {"requests": 1}, ttl_s=3600)
    await tenancy.counters.add("c1", {"requests": 1}, ttl_s=5)
    tenancy.clock.advance(6)
    assert await tenancy.counters.add("c1", {"requests": 1}, ttl_s=5) == {"requests": 1.0}


async def test_counter_ttl_must_be_positive(tenancy: Tenancy) -> None:
    for ttl in (0, -1.0):
        with pytest.raises(ValueError, match="ttl_s"):
            await tenancy.counters.add("c1", {"requests": 1}, ttl_s=ttl)


async def test_counter_add_may_change_eight_fields_at_once(tenancy: Tenancy) -> None:
    """The most one Cosmos patch holds beside ttl and expires_at; every store must take it."""
    deltas = {f"d{i}": i for i in range(MAX_COUNTER_FIELDS // 2)}
    stamps = {f"s{i}": i for i in range(MAX_COUNTER_FIELDS - len(deltas))}
    found = await tenancy.counters.add("c1", deltas, ttl_s=60, stamps=stamps)
    assert found == {name: float(value) for name, value in {**deltas, **stamps}.items()}


async def test_concurrent_adds_all_land(tenancy: Tenancy) -> None:
    returned = await asyncio.gather(
        *(tenancy.counters.add("hot", {"requests": 1}, ttl_s=60) for _ in range(CONCURRENT_ADDS))
    )
    assert sorted(r["requests"] for r in returned) == [float(n + 1) for n in range(50)]
    assert await tenancy.counters.add("hot", {}, ttl_s=60) == {"requests": 50.0}


async def test_concurrent_adds_from_two_instances_all_land(tenancy: Tenancy) -> None:
    other = await tenancy.another_instance()
    stores = [tenancy.counters, other]
    returned = await asyncio.gather(
        *(
            stores[n % 2].add("hot", {"requests": 1, "tokens": 10}, ttl_s=60)
            for n in range(CONCURRENT_ADDS)
        )
    )
    assert sorted(r["requests"] for r in returned) == [float(n + 1) for n in range(50)]
    assert sorted(r["tokens"] for r in returned) == [10.0 * (n + 1) for n in range(50)]
    assert await other.add("hot", {}, ttl_s=60) == {"requests": 50.0, "tokens": 500.0}


async def test_concurrent_adds_to_an_expired_counter_restart_it_once(tenancy: Tenancy) -> None:
    """Every instance sees the counter expired; only one may reset it, and no add is lost."""
    other = await tenancy.another_instance()
    await tenancy.counters.add("hot", {"requests": 7}, ttl_s=10)
    tenancy.clock.advance(11)
    stores = [tenancy.counters, other]
    returned = await asyncio.gather(
        *(stores[n % 2].add("hot", {"requests": 1}, ttl_s=10) for n in range(20))
    )
    assert sorted(r["requests"] for r in returned) == [float(n + 1) for n in range(20)]


# --- store-specific behaviour the contract does not cover ---------------------------------


async def test_in_memory_counters_sweep_expired_ones() -> None:
    clock = ManualClock()
    store = InMemoryCounterStore(clock)
    for n in range(5):
        await store.add(f"c{n}", {"requests": 1}, ttl_s=1)
    assert len(store) == 5
    clock.advance(SWEEP_EVERY_S + 1)
    await store.add("fresh", {"requests": 1}, ttl_s=1)
    assert len(store) == 1


async def test_sqlite_prunes_expired_counters(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteCounterStore(tmp_path / "tenancy.sqlite3", clock=clock)
    try:
        for n in range(5):
            await store.add(f"c{n}", {"requests": 1}, ttl_s=10)
        await store.add("long", {"requests": 1}, ttl_s=100)
        assert await store.count() == 6
        clock.advance(11)
        await store.add("fresh", {"requests": 1}, ttl_s=10)
        assert await store.count() == 2  # "long" and "fresh"
    finally:
        await store.close()


async def test_sqlite_file_is_private_shared_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tenancy.sqlite3"
    clock = ManualClock()
    keys, usage, counters = (
        SqliteKeyStore(path),
        SqliteUsageStore(path),
        SqliteCounterStore(path, clock=clock),
    )
    key, record = _full_key(), _full_record(10.0)
    try:
        await keys.put(key)
        await usage.append([record])
        await counters.add("c1", {"requests": 2}, ttl_s=60)
    finally:
        for store in (keys, usage, counters):
            await store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    again_keys, again_usage = SqliteKeyStore(path), SqliteUsageStore(path)
    again_counters = SqliteCounterStore(path, clock=clock)
    try:
        assert await again_keys.all() == [key]
        assert await again_usage.query(0.0) == [record]
        assert await again_counters.add("c1", {"requests": 1}, ttl_s=60) == {"requests": 3.0}
    finally:
        for store in (again_keys, again_usage, again_counters):
            await store.close()


async def test_sqlite_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteCounterStore(tmp_path / "tenancy.sqlite3")
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await store.add("c1", {"requests": 1}, ttl_s=60)


_ADDER = textwrap.dedent(
    """
    import asyncio, sys
    from spotgate.adapters.local.sqlite_tenancy import SqliteCounterStore

    async def main() -> None:
        store = SqliteCounterStore(sys.argv[1])
        seen = [
            (await store.add("hot", {"requests": 1}, ttl_s=600))["requests"]
            for _ in range(int(sys.argv[2]))
        ]
        await store.close()
        print(" ".join(str(int(value)) for value in seen))

    asyncio.run(main())
    """
)


async def test_sqlite_adds_from_several_processes_all_land(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE holds the file's write lock from the read: no two processes see
    the same old count, so their returned values are all distinct."""
    path, per_process, processes = tmp_path / "tenancy.sqlite3", 60, 3
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ADDER,
            str(path),
            str(per_process),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    outputs = await asyncio.gather(*(run.communicate() for run in runs))
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()
    seen = sorted(int(v) for out, _ in outputs for v in out.decode().split())
    assert seen == list(range(1, per_process * processes + 1))


@contextlib.asynccontextmanager
async def cosmos_subject(
    server: CosmosServer,
) -> AsyncIterator[tuple[DatabaseProxy, ManualClock, CosmosTenancy]]:
    async with cosmos_database(server) as (client, name):
        db = client.get_database_client(name)
        clock = ManualClock()
        yield db, clock, cosmos_tenancy(db, clock=clock)


async def test_cosmos_counter_item_layout_and_container(cosmos_server: CosmosServer) -> None:
    async with cosmos_subject(cosmos_server) as (db, clock, stores):
        await stores.counters.add("rpm:key_a", {"requests": 1}, ttl_s=59.5, stamps={"w": 3})
        limits = db.get_container_client(LIMITS_CONTAINER)
        item = await limits.read_item("rpm:key_a", partition_key="rpm:key_a")
        assert item["fields"] == {"requests": 1, "w": 3}
        assert item["ttl"] == 60
        assert item["expires_at"] == pytest.approx(clock.now() + 59.5)
        properties = await limits.read()
        assert properties["defaultTtl"] == -1
        assert properties["partitionKey"]["paths"] == ["/id"]


async def test_cosmos_expired_counter_the_emulator_still_holds_is_replaced(
    cosmos_server: CosmosServer,
) -> None:
    async with cosmos_subject(cosmos_server) as (db, clock, stores):
        limits = db.get_container_client(LIMITS_CONTAINER)
        await limits.upsert_item(
            {"id": "c1", "fields": {"requests": 41}, "ttl": 1, "expires_at": clock.now() - 1}
        )
        assert await stores.counters.add("c1", {"requests": 1}, ttl_s=30) == {"requests": 1.0}
        item = await limits.read_item("c1", partition_key="c1")
        assert (item["fields"], item["ttl"]) == ({"requests": 1}, 30)


async def test_cosmos_usage_without_a_key_is_in_the_dash_partition(
    cosmos_server: CosmosServer,
) -> None:
    async with cosmos_subject(cosmos_server) as (db, _, stores):
        await stores.usage.append([_record(1.0, "req-anon", key_id=None)])
        usage = db.get_container_client(USAGE_CONTAINER)
        item = await usage.read_item("req-anon", partition_key=NO_KEY)
        assert item["key_id"] == NO_KEY
        assert item["request_id"] == "req-anon"


async def test_cosmos_counter_add_refuses_more_fields_than_a_patch_holds(
    cosmos_server: CosmosServer,
) -> None:
    async with cosmos_subject(cosmos_server) as (_, _, stores):
        too_many = {f"f{i}": 1 for i in range(MAX_COUNTER_FIELDS + 1)}
        with pytest.raises(ValueError, match="at most 8 fields"):
            await stores.counters.add("c1", too_many, ttl_s=60)
        with pytest.raises(ValueError, match="field name"):
            await stores.counters.add("c1", {"": 1}, ttl_s=60)


async def test_cosmos_counter_field_names_are_escaped_in_the_item(
    cosmos_server: CosmosServer,
) -> None:
    async with cosmos_subject(cosmos_server) as (db, _, stores):
        await stores.counters.add("c1", {"tok:org/model~1%2F": 3}, ttl_s=60)
        limits = db.get_container_client(LIMITS_CONTAINER)
        item = await limits.read_item("c1", partition_key="c1")
        assert item["fields"] == {"tok:org%2Fmodel%7E1%252F": 3}
