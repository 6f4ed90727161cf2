"""Batches and their line results in Cosmos DB: the `BatchStore` and `LineResults` on Azure.

Two containers (Bicep deploys them; `ensure_batch_containers` creates them
for the emulator and for accounts reached with a key):
  - `batches`: partition key `/id`, one item per batch, `BatchObject.to_dict()`
    as is. `put` is an upsert (the orchestration is the one writer after
    creation). `list` and `active` are cross-partition queries on the few
    indexed fields (owner, status, created_at), sorted here: the emulator
    offers no cross-partition ORDER BY, and an owner's batches are few.
  - `batch_results`: partition key `/batch_id`, id = the line index as a
    string, so a batch's results share one logical partition and each line
    has exactly one possible item. `put` is `create_item`: of two runners
    that finished the same line, Cosmos lets one create it and answers the
    other 409, which is the port's False. `succeeded` is stored beside the
    result, so `counts` is two COUNT queries that read no response body,
    and `scan` is one in-partition query ordered by the indexed `index`,
    read a page at a time.

Only the fields the queries use are indexed: a result carries a whole
completion or embedding, and indexing it would cost request units on
every write for nothing.

An item holds at most 2 MB: a result bigger than that (an embeddings
response for very many inputs) cannot be stored, and `put` says so with a
ValueError before trying.

The stores do not own the client: whoever made it closes it (`close()` here
is a no-op), as the Azure host does for every store on its one client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError

from spotgate.batch.objects import TERMINAL, BatchObject, LineResult


def _indexing(*paths: str) -> dict[str, Any]:
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": path} for path in paths],
        "excludedPaths": [{"path": "/*"}],
    }


BATCHES_CONTAINER = "batches"
BATCHES_PARTITION_KEY = "/id"
BATCHES_DEFAULT_TTL = -1
BATCHES_INDEXING_POLICY = _indexing("/owner/?", "/status/?", "/created_at/?")

RESULTS_CONTAINER = "batch_results"
RESULTS_PARTITION_KEY = "/batch_id"
RESULTS_DEFAULT_TTL = -1
RESULTS_INDEXING_POLICY = _indexing("/batch_id/?", "/index/?", "/succeeded/?")

_Parameters = list[dict[str, Any]]

MAX_ITEM_BYTES = 2 * 1024 * 1024 - 16 * 1024
"""Cosmos DB's item limit, less room for the system properties it adds."""
SCAN_PAGE = 200
"""Results one `scan` page reads."""


async def ensure_batch_containers(db: DatabaseProxy) -> None:
    """Create `batches` and `batch_results` in `db` if missing (needs a key or control plane)."""
    await db.create_container_if_not_exists(
        id=BATCHES_CONTAINER,
        partition_key=PartitionKey(path=BATCHES_PARTITION_KEY),
        default_ttl=BATCHES_DEFAULT_TTL,
        indexing_policy=BATCHES_INDEXING_POLICY,
    )
    await db.create_container_if_not_exists(
        id=RESULTS_CONTAINER,
        partition_key=PartitionKey(path=RESULTS_PARTITION_KEY),
        default_ttl=RESULTS_DEFAULT_TTL,
        indexing_policy=RESULTS_INDEXING_POLICY,
    )


def _newest_first(batch: BatchObject) -> tuple[int, str]:
    return batch.created_at, batch.id


class CosmosBatchStore:
    """A `BatchStore` on the `batches` container."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    async def put(self, batch: BatchObject) -> None:
        await self._container.upsert_item(batch.to_dict())

    async def get(self, batch_id: str) -> BatchObject | None:
        try:
            item = await self._container.read_item(item=batch_id, partition_key=batch_id)
        except CosmosResourceNotFoundError:
            return None
        return BatchObject.from_dict(item)

    async def active(self) -> list[BatchObject]:
        """Oldest first: the batch nearest its deadline leads."""
        items = self._container.query_items(
            "SELECT * FROM c WHERE NOT ARRAY_CONTAINS(@terminal, c.status)",
            parameters=[{"name": "@terminal", "value": sorted(TERMINAL)}],
        )
        running = [BatchObject.from_dict(item) async for item in items]
        return sorted(running, key=_newest_first)

    async def list(self, owner: str, *, after: str | None, limit: int) -> list[BatchObject]:
        """Newest first (ties by id); `after` another owner's or an unknown batch: empty."""
        query = "SELECT * FROM c WHERE c.owner = @owner"
        parameters: _Parameters = [{"name": "@owner", "value": owner}]
        cursor: tuple[int, str] | None = None
        if after is not None:
            anchor = await self.get(after)
            if anchor is None or anchor.owner != owner:
                return []
            cursor = _newest_first(anchor)
            query += " AND c.created_at <= @created_at"
            parameters.append({"name": "@created_at", "value": anchor.created_at})
        batches = [
            BatchObject.from_dict(item)
            async for item in self._container.query_items(query, parameters=parameters)
        ]
        if cursor is not None:
            batches = [b for b in batches if _newest_first(b) < cursor]
        batches.sort(key=_newest_first, reverse=True)
        return batches[: max(limit, 0)]

    async def close(self) -> None:
        return None


class CosmosLineResults:
    """`LineResults` on the `batch_results` container: one item per line, created once."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    async def put(self, result: LineResult) -> bool:
        item = {**result.to_dict(), "id": str(result.index), "succeeded": result.succeeded}
        size = len(orjson.dumps(item))
        if size > MAX_ITEM_BYTES:
            raise ValueError(
                f"line {result.index} of {result.batch_id}: a {size}-byte result does not fit "
                f"a Cosmos DB item (at most {MAX_ITEM_BYTES} bytes)"
            )
        try:
            await self._container.create_item(item)
        except CosmosResourceExistsError:
            return False
        return True

    async def has(self, batch_id: str, index: int) -> bool:
        try:
            await self._container.read_item(item=str(index), partition_key=batch_id)
        except CosmosResourceNotFoundError:
            return False
        return True

    async def counts(self, batch_id: str) -> tuple[int, int]:
        total = await self._count(batch_id, "")
        succeeded = await self._count(batch_id, " AND c.succeeded = true")
        return succeeded, total - succeeded

    async def _count(self, batch_id: str, condition: str) -> int:
        items = self._container.query_items(
            f"SELECT VALUE COUNT(1) FROM c WHERE c.batch_id = @batch{condition}",
            parameters=[{"name": "@batch", "value": batch_id}],
            partition_key=batch_id,
        )
        found: list[Any] = [n async for n in items]
        return int(sum(found))

    async def scan(self, batch_id: str) -> AsyncIterator[LineResult]:
        items = self._container.query_items(
            "SELECT * FROM c WHERE c.batch_id = @batch ORDER BY c.index",
            parameters=[{"name": "@batch", "value": batch_id}],
            partition_key=batch_id,
            max_item_count=SCAN_PAGE,
        )
        async for item in items:
            yield LineResult.from_dict(item)

    async def close(self) -> None:
        return None
