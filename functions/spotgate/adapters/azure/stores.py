"""The Azure host's stores, all on one Cosmos DB client: workers, the fleet journal, the cache.

Two ways in, the same stores:

    # inside the event loop, before building the registry: loaded and started
    stores = await azure_stores(endpoint, database, cache=True)

    # or where no loop runs yet (the Functions app is built at import): no I/O here;
    # `await stores.start()` (a runtime lifecycle) loads and starts them later
    stores = build_azure_stores(endpoint, database, cache=True)

then the host builds the runtime over `stores.worker_store`, `stores.journal`
and `stores.cache_store` (spotgate/hosts/azure.py); periodically
`await stores.worker_store.pull()` (apply what it returns to the registry)
and `await stores.journal.pull(pool)` (store_sync.RegistrySync does both);
`await stores.close()` on shutdown (flushes pending writes, closes the
client and the credential), after the response cache, whose store shares
the client (`Runtime.close` closes its lifecycles last).

Both stores write as one instance (`instance_id`), which other per-instance
items (shared_pool_load.py's, in `journal_container`) use too.

Containers (what Bicep deploys; names are the constants below):
  - `workers`: partition key `/pool` (WORKERS_INDEXING_POLICY indexes
    nothing: the store never queries it, it reads all items or by id);
  - `journal`: partition key `/pool`, TTL on (`defaultTtl` -1 or seconds),
    queried on kind, pool, at and seq (JOURNAL_INDEXING_POLICY);
  - `cache`: partition key `/id`, `defaultTtl` -1, nothing indexed (the
    response cache's own layout and constants, in cosmos_cache_store.py).

Creating them is OFF by default (`create_if_missing=False`): on Azure,
Bicep creates the database and containers, and the Function App's identity
holds a Cosmos DB *data-plane* role only (Built-in Data Contributor), which
cannot create databases or containers, so trying would fail with 403.
Creation is for the local emulator and for accounts reached with a key.
Without it, a missing database or container surfaces as a 404 from the
first load, in `start()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.credentials_async import AsyncTokenCredential
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from spotgate.adapters.azure.cosmos_batch_store import ensure_batch_containers
from spotgate.adapters.azure.cosmos_cache_store import (
    CACHE_CONTAINER,
    CACHE_INDEXING_POLICY,
    CACHE_PARTITION_KEY,
    CosmosCacheStore,
    ensure_cache_container,
)
from spotgate.adapters.azure.cosmos_fleet_journal import (
    JOURNAL_CONTAINER,
    JOURNAL_DEFAULT_TTL,
    JOURNAL_INDEXING_POLICY,
    JOURNAL_PARTITION_KEY,
    CosmosFleetJournal,
)
from spotgate.adapters.azure.cosmos_tenancy import ensure_tenancy_containers
from spotgate.adapters.azure.cosmos_worker_store import (
    WORKERS_CONTAINER,
    WORKERS_INDEXING_POLICY,
    WORKERS_PARTITION_KEY,
    CosmosWorkerStore,
)
from spotgate.adapters.azure.write_behind import WriteBehindOptions, new_instance_id
from spotgate.clock import Clock

__all__ = [
    "CACHE_CONTAINER",
    "CACHE_INDEXING_POLICY",
    "CACHE_PARTITION_KEY",
    "JOURNAL_CONTAINER",
    "JOURNAL_INDEXING_POLICY",
    "JOURNAL_PARTITION_KEY",
    "WORKERS_CONTAINER",
    "WORKERS_INDEXING_POLICY",
    "WORKERS_PARTITION_KEY",
    "AzureStores",
    "azure_stores",
    "build_azure_stores",
    "ensure_database",
]


@dataclass
class AzureStores:
    """The stores and the client they share; a `Lifecycle` (`start`, `close`) for the runtime."""

    worker_store: CosmosWorkerStore
    journal: CosmosFleetJournal
    cache_store: CosmosCacheStore | None
    """Only when asked for (`cache=True`): the response cache on Cosmos too."""
    client: CosmosClient
    database: str
    journal_container: ContainerProxy
    """The journal's container, where other per-instance items (shared pool demand) live too."""
    instance_id: str
    """What both stores stamp their writes with: this process, as the other instances see it."""
    create_if_missing: bool = False
    credential: AsyncTokenCredential | None = None
    """Closed by `close()`: set when the stores made it themselves."""
    started: bool = False

    async def start(self) -> None:
        """Create the containers if asked, load workers and journal, start the writers."""
        if self.started:
            return
        if self.create_if_missing:
            await ensure_database(self.client, self.database)
        await self.worker_store.load()
        await self.journal.load()
        await self.worker_store.start()
        await self.journal.start()
        self.started = True

    async def close(self) -> None:
        """Flush and stop the writers, then close the shared client (and the credential).

        The cache store uses the client too: close the response cache first.
        """
        try:
            await self.worker_store.close()
        finally:
            try:
                await self.journal.close()
            finally:
                await self.client.close()
                if self.credential is not None:
                    await self.credential.close()
                    self.credential = None
                self.started = False


async def ensure_database(client: CosmosClient, database: str) -> DatabaseProxy:
    """Create the database and its containers if missing (needs a key or control plane):
    the fleet's three, the tenancy's three (keys, usage, limits) and the Batch API's two."""
    db = await client.create_database_if_not_exists(id=database)
    await db.create_container_if_not_exists(
        id=WORKERS_CONTAINER,
        partition_key=PartitionKey(path=WORKERS_PARTITION_KEY),
        indexing_policy=WORKERS_INDEXING_POLICY,
    )
    await db.create_container_if_not_exists(
        id=JOURNAL_CONTAINER,
        partition_key=PartitionKey(path=JOURNAL_PARTITION_KEY),
        default_ttl=JOURNAL_DEFAULT_TTL,
        indexing_policy=JOURNAL_INDEXING_POLICY,
    )
    await ensure_cache_container(db)
    await ensure_tenancy_containers(db)
    await ensure_batch_containers(db)
    return db


def build_azure_stores(
    endpoint: str | None,
    database: str,
    *,
    cache: bool = False,
    credential: str | AsyncTokenCredential | None = None,
    create_if_missing: bool = False,
    connection_verify: bool = True,
    options: WriteBehindOptions | None = None,
    instance_id: str | None = None,
    clock: Clock | None = None,
) -> AzureStores:
    """The stores, built without I/O (no event loop needed); `await start()` loads them.

    `credential`: None for the managed identity (`DefaultAzureCredential`,
    closed with the stores), or a key / token credential the caller owns.
    `create_if_missing`: see the module docstring; off on Azure.
    `connection_verify=False` is for the emulator's self-signed certificate.
    `instance_id`: what both stores write as (a fresh one if None).
    """
    if not endpoint:
        raise ValueError("store_backend=cosmos needs cosmos_endpoint (SPOTGATE_COSMOS_ENDPOINT)")
    owned: AsyncTokenCredential | None = None
    if credential is None:
        from azure.identity.aio import DefaultAzureCredential

        credential = owned = DefaultAzureCredential()
    client = CosmosClient(endpoint, credential=credential, connection_verify=connection_verify)
    db = client.get_database_client(database)
    instance_id = instance_id or new_instance_id()
    journal_container = db.get_container_client(JOURNAL_CONTAINER)
    return AzureStores(
        worker_store=CosmosWorkerStore(
            db.get_container_client(WORKERS_CONTAINER), options=options, instance_id=instance_id
        ),
        journal=CosmosFleetJournal(journal_container, options=options, instance_id=instance_id),
        cache_store=(
            CosmosCacheStore(db.get_container_client(CACHE_CONTAINER), clock=clock)
            if cache
            else None
        ),
        client=client,
        database=database,
        journal_container=journal_container,
        instance_id=instance_id,
        create_if_missing=create_if_missing,
        credential=owned,
    )


async def azure_stores(
    endpoint: str | None,
    database: str,
    *,
    cache: bool = False,
    credential: str | AsyncTokenCredential | None = None,
    create_if_missing: bool = False,
    connection_verify: bool = True,
    start: bool = True,
    options: WriteBehindOptions | None = None,
    instance_id: str | None = None,
    clock: Clock | None = None,
) -> AzureStores:
    """`build_azure_stores`, then (unless `start=False`) `start()`: loaded and writing.

    If starting fails, everything built is closed before the error propagates.
    """
    stores = build_azure_stores(
        endpoint,
        database,
        cache=cache,
        credential=credential,
        create_if_missing=create_if_missing,
        connection_verify=connection_verify,
        options=options,
        instance_id=instance_id,
        clock=clock,
    )
    if start:
        try:
            await stores.start()
        except BaseException:
            await stores.close()
            raise
    return stores
