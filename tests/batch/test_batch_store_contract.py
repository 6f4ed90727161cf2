"""One contract for where batches live: in memory, SQLite and Cosmos DB (the emulator).

GET /v1/batches pages an owner's batches newest first with `after`; the
autoscaler and the orchestrations read every batch not yet terminal; the
orchestration rewrites a batch as it moves on. Cosmos runs against
@vercel/cosmosdb-server; each test gets a database of its own, with the
containers `ensure_batch_containers` creates.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient

from spotgate.adapters.azure.cosmos_batch_store import (
    BATCHES_CONTAINER,
    CosmosBatchStore,
    ensure_batch_containers,
)
from spotgate.adapters.local.sqlite_batch_store import SqliteBatchStore
from spotgate.batch.memory_stores import InMemoryBatchStore
from spotgate.batch.objects import TERMINAL, BatchObject, RequestCounts
from spotgate.batch.ports import BatchStore
from tests.adapters.conftest import CosmosServer

STATUSES = ["validating", "in_progress", "finalizing", "cancelling", "completed", "failed",
            "expired", "cancelled"]  # fmt: skip


@pytest.fixture(params=["memory", "sqlite", "cosmos"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BatchStore]:
    if request.param == "memory":
        yield InMemoryBatchStore()
        return
    if request.param == "sqlite":
        sqlite = SqliteBatchStore(tmp_path / "batches.sqlite3")
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    client = CosmosClient(server.url, credential=server.key, connection_verify=False)
    name = f"batches-{uuid.uuid4().hex[:12]}"
    try:
        db = await client.create_database_if_not_exists(id=name)
        await ensure_batch_containers(db)
        yield CosmosBatchStore(db.get_container_client(BATCHES_CONTAINER))
        await client.delete_database(name)
    finally:
        await client.close()


def a_batch(batch_id: str, owner: str = "key-a", created_at: int = 100) -> BatchObject:
    return BatchObject(batch_id, owner, "/v1/chat/completions", "file-1", "24h", created_at,
                       created_at + 86_400)  # fmt: skip


async def test_a_batch_reads_back_whole_and_a_second_put_replaces_it(store: BatchStore) -> None:
    batch = a_batch("batch_1")
    batch.metadata = {"job": "nightly", "note": "héllo ✓"}
    await store.put(batch)
    assert await store.get("batch_1") == batch
    running = batch.moved_to("in_progress", 200)
    running.model, running.pool = "smollm2", "default"
    running.request_counts = RequestCounts(total=3, completed=1, failed=1)
    await store.put(running)
    assert await store.get("batch_1") == running
    failed = a_batch("batch_2").moved_to("failed", 300)
    failed.errors = [{"code": "invalid_json", "message": "Line 2 is not JSON.", "param": None,
                      "line": 2}]  # fmt: skip
    await store.put(failed)
    assert await store.get("batch_2") == failed
    assert await store.get("batch_missing") is None


async def test_an_owner_pages_their_batches_newest_first(store: BatchStore) -> None:
    for i, created_at in enumerate([10, 30, 20, 30, 5]):
        await store.put(a_batch(f"batch_{i}", created_at=created_at))
    await store.put(a_batch("batch_other", owner="key-b", created_at=40))
    everything = [b.id for b in await store.list("key-a", after=None, limit=10)]
    assert everything == ["batch_3", "batch_1", "batch_2", "batch_0", "batch_4"], "ties by id"
    pages: list[str] = []
    after: str | None = None
    while page := await store.list("key-a", after=after, limit=2):
        pages += [b.id for b in page]
        after = page[-1].id
    assert pages == everything
    assert await store.list("key-a", after=None, limit=0) == []
    assert [b.id for b in await store.list("key-b", after=None, limit=10)] == ["batch_other"]
    assert await store.list("key-c", after=None, limit=10) == []


async def test_after_another_owners_or_an_unknown_batch_is_an_empty_page(
    store: BatchStore,
) -> None:
    await store.put(a_batch("batch_a"))
    await store.put(a_batch("batch_b", owner="key-b"))
    assert await store.list("key-a", after="batch_b", limit=10) == []
    assert await store.list("key-a", after="batch_unknown", limit=10) == []


async def test_active_is_every_batch_not_yet_terminal_oldest_first(store: BatchStore) -> None:
    for i, status in enumerate(STATUSES):
        batch = a_batch(f"batch_{i}", owner=f"key-{i % 2}", created_at=100 - i)
        await store.put(batch.moved_to(status, 1))
    active = await store.active()
    assert [b.status for b in active] == list(reversed(STATUSES[:4]))
    assert not {b.status for b in active} & TERMINAL


async def test_a_batch_that_ends_leaves_the_active_ones(store: BatchStore) -> None:
    batch = a_batch("batch_1").moved_to("in_progress", 1)
    await store.put(batch)
    assert [b.id for b in await store.active()] == ["batch_1"]
    await store.put(batch.moved_to("completed", 2))
    assert await store.active() == []
