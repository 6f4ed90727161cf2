"""The tenancy stores in Cosmos DB: keys, usage records and shared counters on Azure.

Three containers (Bicep deploys them; `ensure_tenancy_containers` creates
them for the emulator and for accounts reached with a key):
  - `keys`: partition key `/id`, one item per key, the record itself (`put`
    is an upsert, so it replaces by id); read whole by `all()` or by id.
  - `usage`: partition key `/key_id`, one item per request, id = request id.
    A record without a key is stored under the literal `"-"` (NO_KEY), never
    null, and read back as None. `append` creates each item and takes a 409
    as "stored already": ids are unique within a partition, and a retried
    batch repeats both the request id and the key id, so the first record
    stands as on SQLite. `query` is a cross-partition query on `at` (the
    container indexes everything), sorted here by (at, request_id), the
    order every store uses; the emulator offers no cross-partition ORDER BY.
  - `limits`: partition key `/id`, `defaultTtl` -1, nothing indexed, one
    item per counter: `{"id", "fields": {name: number}, "ttl", "expires_at"}`.

Counters are the one store the request path waits on, and every gateway
instance counts into the same item, so `add` is one server-side atomic
operation, never a read-modify-write from here:
  1. a *patch* of the item: `incr` for every delta, `set` for every stamp,
     `set` for `ttl` and `expires_at`, conditional on the item not being
     expired (`FROM c WHERE c.expires_at > now`). Cosmos applies a patch
     to one item atomically and returns the new document, so concurrent
     adds each see a distinct count, as `incr` on Redis would;
  2. a 404 (no such counter yet) -> `create_item` with the change alone.
     Of concurrent first writers exactly one create succeeds; the others
     get 409 and go back to 1, so no first increment is lost;
  3. a 412 (the item is there but past `expires_at`) -> read it and
     *replace* it with a fresh counter, guarded by its etag (`if_match`):
     of two instances resetting the same expired counter, one wins and the
     other gets 412 and goes back to 1, so neither loses the other's count.
Cosmos deletes an item `ttl` seconds after its last write, but lazily, and
the emulator (@vercel/cosmosdb-server) never does: `expires_at` (epoch
seconds, by the injected clock) is what decides expiry, and the container
TTL only keeps the container from growing. One patch holds at most 10
operations, so one `add` may name at most 8 fields (deltas and stamps).
Field names become JSON-pointer paths (`/fields/<name>`), and the limiter's
hold model names, which may hold "/" (`tok:org/model`): "%", "/" and "~" are
percent-escaped in the item (`field_part`) and unescaped on read, rather
than trusting every server to decode RFC 6901's ~0 and ~1 alike.

Cosmos ids may not hold / \\ ? #: counter ids, key ids and request ids are
escaped (`id_part`; ordinary ids are unchanged) and key ids unescaped on read.

Numbers come back from Cosmos as JSON numbers, where 12.0 may well come back
as 12: fields the records declare `float` are turned back into floats, so a
record reads back equal *and* of the same types (an export's column types
depend on it).

The stores do not own the client: whoever made it closes it (`close()` here
is a no-op), as the Azure host does for every store on its one client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from spotgate.adapters.azure.cosmos_cache_store import NOT_INDEXED
from spotgate.adapters.azure.cosmos_fleet_journal import id_part
from spotgate.clock import Clock, SystemClock
from spotgate.gateway.tenancy.keys import ApiKey, ModelPrice
from spotgate.gateway.tenancy.memory_stores import apply_change, check_ttl
from spotgate.gateway.tenancy.usage import UsageRecord

INDEX_EVERYTHING: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": '/"_etag"/?'}],
}
"""What Bicep deploys for `keys` and `usage` (bicep/modules/cosmos.bicep: indexEverything)."""

KEYS_CONTAINER = "keys"
KEYS_PARTITION_KEY = "/id"
KEYS_DEFAULT_TTL = -1
KEYS_INDEXING_POLICY = INDEX_EVERYTHING

USAGE_CONTAINER = "usage"
USAGE_PARTITION_KEY = "/key_id"
USAGE_DEFAULT_TTL = -1
USAGE_INDEXING_POLICY = INDEX_EVERYTHING
NO_KEY = "-"
"""The partition of usage records without a key: a partition key value is never null."""

LIMITS_CONTAINER = "limits"
LIMITS_PARTITION_KEY = "/id"
LIMITS_DEFAULT_TTL = -1
"""TTL on, with no default: a counter expires when its own `ttl` says so."""
LIMITS_INDEXING_POLICY = NOT_INDEXED
"""Counters are only ever patched, created, read and replaced by id."""

MAX_PATCH_OPERATIONS = 10
"""Cosmos DB's limit per patch; two of them are `ttl` and `expires_at`."""
MAX_COUNTER_FIELDS = MAX_PATCH_OPERATIONS - 2
MAX_ADD_ATTEMPTS = 16
"""Rounds of patch / create / reset one `add` tries; each lost round means another
writer made progress, so running out means something is badly wrong."""
APPEND_CONCURRENCY = 16
"""Usage items created at once by one `append` (each is one point write)."""


async def ensure_tenancy_containers(db: DatabaseProxy) -> None:
    """Create `keys`, `usage` and `limits` in `db` if missing (needs a key or control plane)."""
    await db.create_container_if_not_exists(
        id=KEYS_CONTAINER,
        partition_key=PartitionKey(path=KEYS_PARTITION_KEY),
        default_ttl=KEYS_DEFAULT_TTL,
        indexing_policy=KEYS_INDEXING_POLICY,
    )
    await db.create_container_if_not_exists(
        id=USAGE_CONTAINER,
        partition_key=PartitionKey(path=USAGE_PARTITION_KEY),
        default_ttl=USAGE_DEFAULT_TTL,
        indexing_policy=USAGE_INDEXING_POLICY,
    )
    await db.create_container_if_not_exists(
        id=LIMITS_CONTAINER,
        partition_key=PartitionKey(path=LIMITS_PARTITION_KEY),
        default_ttl=LIMITS_DEFAULT_TTL,
        indexing_policy=LIMITS_INDEXING_POLICY,
    )


@dataclass(frozen=True)
class CosmosTenancy:
    """The three stores over one database's containers (the client is the caller's)."""

    keys: CosmosKeyStore
    usage: CosmosUsageStore
    counters: CosmosCounterStore


def cosmos_tenancy(db: DatabaseProxy, *, clock: Clock | None = None) -> CosmosTenancy:
    """The stores on `db`'s `keys`, `usage` and `limits` containers; no I/O here."""
    return CosmosTenancy(
        keys=CosmosKeyStore(db.get_container_client(KEYS_CONTAINER)),
        usage=CosmosUsageStore(db.get_container_client(USAGE_CONTAINER)),
        counters=CosmosCounterStore(db.get_container_client(LIMITS_CONTAINER), clock=clock),
    )


# --- types back from JSON ---------------------------------------------------------------


@functools.cache
def _float_fields(cls: type) -> frozenset[str]:
    """The fields `cls` declares `float` or `float | None`: what JSON may hand back as ints."""
    found = set()
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if float in options and int not in options:
            found.add(name)
    return frozenset(found)


def _with_floats(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    floats = _float_fields(cls)
    return {
        name: float(value)
        if name in floats and isinstance(value, int) and not isinstance(value, bool)
        else value
        for name, value in data.items()
    }


# --- keys --------------------------------------------------------------------------------


class CosmosKeyStore:
    """A `KeyStore`: one item per key in `keys`, partitioned by its own id."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    async def put(self, key: ApiKey) -> None:
        item = key.to_dict()
        item["id"] = id_part(key.id)
        await self._container.upsert_item(item, no_response=True)

    async def get(self, key_id: str) -> ApiKey | None:
        item_id = id_part(key_id)
        try:
            item = await self._container.read_item(item=item_id, partition_key=item_id)
        except CosmosResourceNotFoundError:
            return None
        return _key_from_item(item)

    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, ordered by id like every store."""
        keys = [_key_from_item(item) async for item in self._container.read_all_items()]
        return sorted(keys, key=lambda key: key.id)

    async def close(self) -> None:
        return None


def _key_from_item(item: dict[str, Any]) -> ApiKey:
    data = _with_floats(ApiKey, dict(item))
    data["id"] = unquote(str(item["id"]))
    data["prices"] = {
        model: _with_floats(ModelPrice, dict(price))
        for model, price in (data.get("prices") or {}).items()
    }
    return ApiKey.from_dict(data)


# --- usage -------------------------------------------------------------------------------


class CosmosUsageStore:
    """A `UsageStore`: one item per request in `usage`, partitioned by key id."""

    def __init__(self, container: ContainerProxy, *, concurrency: int = APPEND_CONCURRENCY) -> None:
        self._container = container
        self._concurrency = max(1, concurrency)

    async def append(self, records: list[UsageRecord]) -> None:
        """Create every record's item; one already there (409) is left as it is.

        Waits for every write, then raises the first failure: the caller may
        retry the whole batch, and the records that did land are not doubled.
        """
        # Within one batch the creates race each other: keep the first of each request id
        # here, so that "the first record stands" holds inside a batch too.
        firsts: dict[str, UsageRecord] = {}
        for record in records:
            firsts.setdefault(record.request_id, record)
        if not firsts:
            return
        gate = asyncio.Semaphore(self._concurrency)

        async def create(record: UsageRecord) -> None:
            async with gate:
                # a 409: stored by an earlier attempt, and the first record stands
                with contextlib.suppress(CosmosResourceExistsError):
                    await self._container.create_item(_usage_item(record), no_response=True)

        outcomes = await asyncio.gather(
            *(create(r) for r in firsts.values()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def query(self, since: float, until: float | None = None) -> list[UsageRecord]:
        """`since <= at < until`, across every key's partition, oldest first."""
        query = "SELECT * FROM c WHERE c.at >= @since"
        params: list[dict[str, Any]] = [{"name": "@since", "value": since}]
        if until is not None:
            query += " AND c.at < @until"
            params.append({"name": "@until", "value": until})
        # No partition key: the aio client makes this a cross-partition query itself
        # (azure-cosmos 4.17 documents `enable_cross_partition_query` but passes it on
        # to aiohttp, which refuses it).
        items = self._container.query_items(query, parameters=params)
        records = [_usage_from_item(item) async for item in items]
        records.sort(key=lambda record: (record.at, record.request_id))
        return records

    async def close(self) -> None:
        return None


def _usage_item(record: UsageRecord) -> dict[str, Any]:
    item = record.to_dict()
    item["id"] = id_part(record.request_id)
    item["key_id"] = NO_KEY if record.key_id is None else record.key_id
    return item


def _usage_from_item(item: dict[str, Any]) -> UsageRecord:
    data = _with_floats(UsageRecord, dict(item))
    if data.get("key_id") == NO_KEY:
        data["key_id"] = None
    return UsageRecord.from_dict(data)


# --- counters ----------------------------------------------------------------------------


class CosmosCounterStore:
    """A `CounterStore` over `limits`: atomic across instances (see the module docstring)."""

    def __init__(self, container: ContainerProxy, *, clock: Clock | None = None) -> None:
        self._container = container
        self._clock = clock or SystemClock()

    async def add(
        self,
        counter_id: str,
        deltas: Mapping[str, float],
        *,
        ttl_s: float,
        stamps: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        check_ttl(ttl_s)
        stamps = stamps or {}
        if "" in deltas or "" in stamps:
            raise ValueError("a counter field name may not be empty")
        if len(deltas) + len(stamps) > MAX_COUNTER_FIELDS:
            raise ValueError(
                f"one add may change at most {MAX_COUNTER_FIELDS} fields on Cosmos DB (a patch "
                f"holds {MAX_PATCH_OPERATIONS} operations), not {len(deltas) + len(stamps)}"
            )
        item_id = id_part(counter_id)
        for _ in range(MAX_ADD_ATTEMPTS):
            now = self._clock.now()
            ttl = max(1, math.ceil(ttl_s))
            expires_at = now + ttl_s
            operations: list[dict[str, Any]] = [
                {"op": "incr", "path": f"/fields/{field_part(name)}", "value": delta}
                for name, delta in deltas.items()
            ]
            operations += [
                {"op": "set", "path": f"/fields/{field_part(name)}", "value": value}
                for name, value in stamps.items()
            ]
            operations += [
                {"op": "set", "path": "/ttl", "value": ttl},
                {"op": "set", "path": "/expires_at", "value": expires_at},
            ]
            try:
                item = await self._container.patch_item(
                    item=item_id,
                    partition_key=item_id,
                    patch_operations=operations,
                    filter_predicate=f"FROM c WHERE c.expires_at > {now:.6f}",
                )
                return _fields(item)
            except CosmosResourceNotFoundError:
                pass  # no such counter yet: create it below
            except CosmosAccessConditionFailedError:
                # there, but expired by our clock
                fresh = await self._reset(item_id, now, deltas, stamps, ttl, expires_at)
                if fresh is not None:
                    return fresh
                continue  # another instance reset or changed it first: patch that one
            fresh_item = _counter_item(item_id, apply_change({}, deltas, stamps), ttl, expires_at)
            try:
                await self._container.create_item(fresh_item, no_response=True)
            except CosmosResourceExistsError:
                continue  # another instance created it first: patch that one
            return _fields(fresh_item)
        raise RuntimeError(
            f"counter {counter_id!r}: no add landed after {MAX_ADD_ATTEMPTS} attempts"
        )

    async def _reset(
        self,
        item_id: str,
        now: float,
        deltas: Mapping[str, float],
        stamps: Mapping[str, float],
        ttl: int,
        expires_at: float,
    ) -> dict[str, float] | None:
        """Replace an expired counter by this change alone, unless it changed since read."""
        try:
            item = await self._container.read_item(item=item_id, partition_key=item_id)
        except CosmosResourceNotFoundError:
            return None  # deleted by its TTL meanwhile: the next round creates it
        stored = item.get("expires_at")
        if isinstance(stored, int | float) and stored > now:
            return None  # reset by another instance: the next round patches it
        fresh_item = _counter_item(item_id, apply_change({}, deltas, stamps), ttl, expires_at)
        try:
            await self._container.replace_item(
                item=item_id,
                body=fresh_item,
                etag=item["_etag"],
                match_condition=MatchConditions.IfNotModified,
                no_response=True,
            )
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return None
        return _fields(fresh_item)

    async def close(self) -> None:
        return None


def field_part(name: str) -> str:
    """A field name as it is stored: "%", "/" and "~" escaped, so it is one JSON-pointer
    segment on every server; `unquote` reverses it (a literal "%" is escaped too)."""
    return name.replace("%", "%25").replace("/", "%2F").replace("~", "%7E")


def _counter_item(
    item_id: str, fields: dict[str, float], ttl: int, expires_at: float
) -> dict[str, Any]:
    stored = {field_part(name): value for name, value in fields.items()}
    return {"id": item_id, "fields": stored, "ttl": ttl, "expires_at": expires_at}


def _fields(item: Mapping[str, Any]) -> dict[str, float]:
    return {unquote(str(name)): float(value) for name, value in (item.get("fields") or {}).items()}
