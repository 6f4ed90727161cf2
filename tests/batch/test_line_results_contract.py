"""One contract for batch line results: in memory, SQLite and Cosmos DB (the emulator).

Lines are delivered at least once, so two runners may finish the same
line; the output file must still hold it once, with the first answer.
Finalisation streams results in line order and the batch's request counts
come from `counts`: what is tested here is what a user sees in the output
file and in `request_counts`.

Cosmos runs against @vercel/cosmosdb-server; each test gets a database of
its own, with the containers `ensure_batch_containers` creates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos.aio import CosmosClient

from spotgate.adapters.azure import cosmos_batch_store
from spotgate.adapters.azure.cosmos_batch_store import (
    RESULTS_CONTAINER,
    CosmosLineResults,
    ensure_batch_containers,
)
from spotgate.adapters.local import sqlite_line_results
from spotgate.adapters.local.sqlite_line_results import SqliteLineResults
from spotgate.batch.memory_queue import InMemoryLineResults
from spotgate.batch.objects import LineResult
from spotgate.batch.ports import LineResults
from tests.adapters.conftest import CosmosServer


@pytest.fixture(params=["memory", "sqlite", "cosmos"])
async def results(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LineResults]:
    if request.param == "memory":
        yield InMemoryLineResults()
        return
    if request.param == "sqlite":
        store = SqliteLineResults(tmp_path / "batch_lines.sqlite3")
        try:
            yield store
        finally:
            await store.close()
        return
    server: CosmosServer = request.getfixturevalue("cosmos_server")
    client = CosmosClient(server.url, credential=server.key, connection_verify=False)
    name = f"batch-{uuid.uuid4().hex[:12]}"
    try:
        db = await client.create_database_if_not_exists(id=name)
        await ensure_batch_containers(db)
        yield CosmosLineResults(db.get_container_client(RESULTS_CONTAINER))
        await client.delete_database(name)
    finally:
        await client.close()


def ok(batch_id: str, index: int, text: str = "hi") -> LineResult:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{index}",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    response = {"status_code": 200, "request_id": f"req-{index}", "body": body}
    return LineResult(batch_id, index, f"request-{index}", response)


def refused(batch_id: str, index: int, status: int = 400) -> LineResult:
    body = {"error": {"message": "bad", "type": "invalid_request_error", "param": None,
                      "code": None}}  # fmt: skip
    response = {"status_code": status, "request_id": f"req-{index}", "body": body}
    return LineResult(batch_id, index, f"request-{index}", response)


def unanswered(batch_id: str, index: int) -> LineResult:
    error = {"code": "batch_expired", "message": "This line was not run in time."}
    return LineResult(batch_id, index, f"request-{index}", None, error)


async def scanned(results: LineResults, batch_id: str) -> list[LineResult]:
    return [result async for result in results.scan(batch_id)]


async def test_a_result_reads_back_as_it_was_written(results: LineResults) -> None:
    written = [ok("batch_a", 0, "héllo ✓"), refused("batch_a", 1, 500), unanswered("batch_a", 2)]
    for result in written:
        assert await results.put(result) is True
    assert await scanned(results, "batch_a") == written


async def test_the_first_result_of_a_line_stands(results: LineResults) -> None:
    assert await results.put(ok("batch_a", 7, "first")) is True
    assert await results.put(ok("batch_a", 7, "second")) is False
    assert await results.put(refused("batch_a", 7)) is False
    assert await scanned(results, "batch_a") == [ok("batch_a", 7, "first")]
    assert await results.counts("batch_a") == (1, 0)


async def test_of_runners_finishing_one_line_at_once_exactly_one_stores_it(
    results: LineResults,
) -> None:
    stored = await asyncio.gather(*(results.put(ok("batch_a", 3, f"run {n}")) for n in range(12)))
    assert stored.count(True) == 1
    [kept] = await scanned(results, "batch_a")
    assert kept == ok("batch_a", 3, f"run {stored.index(True)}")


async def test_has_tells_whether_a_line_is_done(results: LineResults) -> None:
    assert await results.has("batch_a", 0) is False
    await results.put(ok("batch_a", 0))
    assert await results.has("batch_a", 0) is True
    assert await results.has("batch_a", 1) is False
    assert await results.has("batch_b", 0) is False


async def test_counts_split_on_status_200(results: LineResults) -> None:
    assert await results.counts("batch_a") == (0, 0)
    for result in [
        ok("batch_a", 0),
        ok("batch_a", 1),
        refused("batch_a", 2, 400),
        refused("batch_a", 3, 500),
        unanswered("batch_a", 4),
        ok("batch_b", 0),
    ]:
        await results.put(result)
    assert await results.counts("batch_a") == (2, 3)
    assert await results.counts("batch_b") == (1, 0)


async def test_scan_is_by_line_index_and_per_batch(
    results: LineResults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_line_results, "SCAN_PAGE", 4)
    monkeypatch.setattr(cosmos_batch_store, "SCAN_PAGE", 4)
    order = [13, 2, 0, 21, 5, 8, 1, 34, 3]
    for index in order:
        await results.put(ok("batch_a", index) if index % 2 else refused("batch_a", index))
        await results.put(ok("batch_b", index + 100))
    got = await scanned(results, "batch_a")
    assert [r.index for r in got] == sorted(order), "pages follow one another in index order"
    assert {r.batch_id for r in got} == {"batch_a"}
    assert [r.index for r in await scanned(results, "batch_b")] == sorted(i + 100 for i in order)
    assert await scanned(results, "batch_unknown") == []
