"""Keeps this instance's registry and journal in step with the Cosmos DB stores.

Every Function App instance holds the whole registry in memory (the gateway
reads it on every request), writes its own changes behind to Cosmos, and
pulls the others' every `interval_s`. The interval must stay well below the
heartbeat timeout minus the heartbeat interval, or an instance could expire
a worker whose heartbeats land on another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from spotgate.adapters.azure.stores import AzureStores
from spotgate.fleet.registry import WorkerRegistry

log = logging.getLogger("spotgate.azure")


class RegistrySync:
    """A runtime Lifecycle: load at start, pull while running, flush at close."""

    def __init__(
        self,
        stores: AzureStores,
        registry: WorkerRegistry,
        pools: Sequence[str],
        *,
        interval_s: float = 1.5,
    ) -> None:
        self._stores = stores
        self._registry = registry
        self._pools = list(pools)
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._stores.start()
        self._registry.absorb(self._stores.worker_store.all())
        self._task = asyncio.create_task(self._run(), name="registry-sync")

    async def pull_once(self) -> None:
        changes = await self._stores.worker_store.pull_changes()
        self._registry.absorb(changes.updated, changes.removed)
        for pool in self._pools:
            await self._stores.journal.pull(pool)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stores.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.pull_once()
            except Exception as exc:  # Cosmos unreachable: keep serving from memory, retry
                log.warning("registry sync failed, retrying in %.1f s: %s", self._interval_s, exc)
