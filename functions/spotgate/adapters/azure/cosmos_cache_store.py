"""The response cache in a Cosmos DB container, shared by every gateway instance on Azure.

One item per key, partitioned by its own id (`/id`), so every call is a
point operation on one logical partition: the cheapest thing Cosmos does.
Each item carries
  - `value`: the entry, base64 (items are JSON; the entry is bytes),
  - `ttl`: seconds until Cosmos deletes it (honoured because the container
    has `defaultTtl` -1: "items expire only when they say so"),
  - `expires_at`: the same deadline as epoch seconds, checked on every read,
    because Cosmos deletes lazily and the local emulator never does.
Nothing is indexed: the cache only ever reads by id, and indexing a
megabyte of base64 per write would cost request units for nothing.
"""

from __future__ import annotations

import base64
import contextlib
import math
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from spotgate.clock import Clock, SystemClock

# Cosmos rejects items over 2 MB; base64 grows the value by a third.
MAX_VALUE_BYTES = 1_500_000

NOT_INDEXED: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [],
    "excludedPaths": [{"path": "/*"}],
}
"""The indexing policy of a container only ever read whole or by id (the cache, the workers)."""

CACHE_CONTAINER = "cache"
CACHE_PARTITION_KEY = "/id"
CACHE_DEFAULT_TTL = -1
"""TTL on, with no default: an item expires only when its own `ttl` says so."""
CACHE_INDEXING_POLICY = NOT_INDEXED


class CosmosCacheStore:
    def __init__(
        self,
        container_proxy: ContainerProxy,
        *,
        clock: Clock | None = None,
        owned_client: CosmosClient | None = None,
    ) -> None:
        """`owned_client`, if given, is closed by `close()` (the factory hands over its own)."""
        self._container = container_proxy
        self._clock = clock or SystemClock()
        self._client = owned_client

    async def get(self, key: str) -> bytes | None:
        try:
            item = await self._container.read_item(item=key, partition_key=key)
        except CosmosResourceNotFoundError:
            return None
        expires_at = item.get("expires_at")
        if not isinstance(expires_at, int | float) or expires_at <= self._clock.now():
            return None
        value = item.get("value")
        if not isinstance(value, str):
            return None
        return base64.b64decode(value)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > MAX_VALUE_BYTES:
            raise ValueError(
                f"a {len(value)}-byte entry does not fit a Cosmos item "
                f"(at most {MAX_VALUE_BYTES} bytes before base64)"
            )
        if ttl_s <= 0:
            await self.delete(key)
            return
        item = {
            "id": key,
            "value": base64.b64encode(value).decode("ascii"),
            "expires_at": self._clock.now() + ttl_s,
            "ttl": max(1, math.ceil(ttl_s)),
        }
        await self._container.upsert_item(item, no_response=True)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(CosmosResourceNotFoundError):
            await self._container.delete_item(item=key, partition_key=key)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def ensure_cache_container(db: DatabaseProxy, container: str = CACHE_CONTAINER) -> None:
    """Create the cache container in `db` if missing (needs a key or a control-plane role)."""
    await db.create_container_if_not_exists(
        id=container,
        partition_key=PartitionKey(path=CACHE_PARTITION_KEY),
        default_ttl=CACHE_DEFAULT_TTL,
        indexing_policy=CACHE_INDEXING_POLICY,
    )


async def create_cosmos_cache_store(
    endpoint: str,
    credential: str | AsyncTokenCredential,
    database: str,
    container: str,
    *,
    connection_verify: bool = True,
    clock: Clock | None = None,
) -> CosmosCacheStore:
    """A store on `database`/`container`, creating either if missing.

    Creating needs the account key or a control-plane role: with Entra ID
    data-plane roles only, the database and container must already exist
    (deployed with the infrastructure), and are then just read here.
    """
    client = CosmosClient(endpoint, credential=credential, connection_verify=connection_verify)
    try:
        db = await client.create_database_if_not_exists(id=database)
        await ensure_cache_container(db, container)
    except BaseException:
        await client.close()
        raise
    proxy = db.get_container_client(container)
    return CosmosCacheStore(proxy, clock=clock, owned_client=client)
