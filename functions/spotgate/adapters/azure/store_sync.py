"""Keeps this instance's registry and journal in step with the Cosmos DB stores.

Every Function App instance holds the whole registry in memory (the gateway
reads it on every request), writes its own changes behind to Cosmos, and
pulls the others' every `interval_s`. The interval must stay well below the
heartbeat timeout minus the heartbeat interval, or an instance could expire
a worker whose heartbeats land on another one.

The journal's evictions and capacity failures are pulled every round too
(the fleet monitor reads them wherever its activity runs); its decisions,
which only the fleet routes show and which cost up to `max_decisions`
documents per pool to read, every `decisions_every_s` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from spotgate.adapters.azure.stores import AzureStores
from spotgate.background import cancel_and_wait
from spotgate.fleet.registry import WorkerRegistry

log = logging.getLogger("spotgate.azure")

DECISIONS_EVERY_S = 30.0


class RegistrySync:
    """A runtime Lifecycle: load at start, pull while running, flush at close."""

    def __init__(
        self,
        stores: AzureStores,
        registry: WorkerRegistry,
        pools: Sequence[str],
        *,
        interval_s: float = 1.5,
        decisions_every_s: float = DECISIONS_EVERY_S,
    ) -> None:
        self._stores = stores
        self._registry = registry
        self._pools = list(pools)
        self._interval_s = interval_s
        self._decision_rounds = (
            max(1, round(decisions_every_s / interval_s)) if interval_s > 0 else 1
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._stores.start()
        self._registry.absorb(self._stores.worker_store.all())
        self._task = asyncio.create_task(self._run(), name="registry-sync")

    async def pull_once(self, *, decisions: bool = True) -> None:
        changes = await self._stores.worker_store.pull_changes()
        self._registry.absorb(changes.updated, changes.removed)
        for pool in self._pools:
            await self._stores.journal.pull(pool, decisions=decisions)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._stores.close()

    async def _run(self) -> None:
        rounds = 0  # since decisions were last pulled (`load()` read them at start)
        while True:
            await asyncio.sleep(self._interval_s)
            rounds += 1
            decisions = rounds >= self._decision_rounds
            try:
                await self.pull_once(decisions=decisions)
            except Exception as exc:  # Cosmos unreachable: keep serving from memory, retry
                log.warning("registry sync failed, retrying in %.1f s: %s", self._interval_s, exc)
                continue
            if decisions:
                rounds = 0
