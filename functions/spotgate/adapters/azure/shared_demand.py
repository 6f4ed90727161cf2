"""Pool load across every gateway instance, through the Cosmos DB journal container.

On Azure the API runs on several Function App instances; each has its own
admission queue, and the fleet monitor's activity runs on just one of them.
So every instance publishes its own counts per pool (one small item per
instance and pool, upserted behind the request path every second), and the
monitor sums the fresh ones. Items of an instance that stopped publishing
age out of the sum after `max_age_s` (and out of Cosmos by their `ttl`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from azure.cosmos.aio import ContainerProxy

from spotgate.adapters.azure.cosmos_fleet_journal import id_part
from spotgate.adapters.azure.write_behind import (
    WriteBehind,
    WriteBehindOptions,
    WriteOp,
    new_instance_id,
)
from spotgate.background import cancel_and_wait
from spotgate.clock import Clock, SystemClock
from spotgate.fleet.observation import DemandSource, PoolDemand

log = logging.getLogger("spotgate.azure")

LOAD = "load"


class SharedDemand:
    """A DemandSource (the sum over instances) and a Lifecycle (this instance's publisher)."""

    def __init__(
        self,
        container: ContainerProxy,
        local: DemandSource,
        pools: Sequence[str],
        *,
        instance_id: str | None = None,
        clock: Clock | None = None,
        publish_interval_s: float = 1.0,
        max_age_s: float = 10.0,
        options: WriteBehindOptions | None = None,
    ) -> None:
        self._container = container
        self._local = local
        self._pools = list(pools)
        self.instance_id = instance_id or new_instance_id()
        self._clock = clock or SystemClock()
        self._interval_s = publish_interval_s
        self._max_age_s = max_age_s
        self._writes = WriteBehind(container, name="pool-load", options=options)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._writes.start()
        self._task = asyncio.create_task(self._publish_forever(), name="pool-load-publisher")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._writes.close()

    async def publish(self) -> None:
        """Queue this instance's counts for every pool (written behind, coalesced)."""
        now = self._clock.now()
        for pool in self._pools:
            mine = await self._local.of(pool)
            item_id = f"{LOAD}:{id_part(pool)}:{id_part(self.instance_id)}"
            item: dict[str, Any] = {
                "id": item_id,
                "pool": pool,
                "kind": LOAD,
                "instance": self.instance_id,
                "queued": mine.admission_queue_depth,
                "in_flight": mine.gateway_in_flight,
                "batch_in_flight": mine.batch_in_flight,
                "at": now,
                "ttl": max(60, int(self._max_age_s * 6)),
            }
            self._writes.enqueue(WriteOp("upsert", pool, item_id, item))

    async def of(self, pool: str) -> PoolDemand:
        """Every instance's fresh counts summed; never below what this instance sees now."""
        mine = await self._local.of(pool)
        query = "SELECT * FROM c WHERE c.kind = @kind AND c.pool = @pool"
        params: list[dict[str, Any]] = [
            {"name": "@kind", "value": LOAD},
            {"name": "@pool", "value": pool},
        ]
        horizon = self._clock.now() - self._max_age_s
        queued = in_flight = batch = 0
        async for item in self._container.query_items(query, parameters=params):
            if float(item.get("at", 0)) < horizon or item.get("instance") == self.instance_id:
                continue
            queued += int(item.get("queued", 0))
            in_flight += int(item.get("in_flight", 0))
            batch += int(item.get("batch_in_flight", 0))
        return replace(
            mine,
            admission_queue_depth=queued + mine.admission_queue_depth,
            gateway_in_flight=in_flight + mine.gateway_in_flight,
            batch_in_flight=batch + mine.batch_in_flight,
        )

    async def _publish_forever(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:  # never let a publishing hiccup stop the instance
                log.warning("publishing pool demand failed: %s", exc)
            await asyncio.sleep(self._interval_s)
