"""A pool's demand on Azure: this instance's admission queue, Azure Monitor, the batch queue.

On Azure the gateway runs as several Function App instances, so one
process's admission queue is a lower bound of the pool's load; Azure Monitor
has every instance's figures but a minute or more late. Taking the larger of
the two keeps scale-up immediate for what this instance sees and still
counts what the others see. Queued batch lines come from the Storage queue,
or from the in-process source (a `WithBatchBacklog`, which also knows the
deadlines and pace), the larger count when both have one.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from spotgate.adapters.azure.monitor_signals import MonitorSignals
from spotgate.adapters.azure.queue_depth import StorageQueueDepth
from spotgate.fleet.observation import DemandSource, PoolDemand

log = logging.getLogger("spotgate.fleet")


class AzureDemand:
    def __init__(
        self,
        in_process: DemandSource,
        *,
        monitor: MonitorSignals | None = None,
        batch: StorageQueueDepth | None = None,
    ) -> None:
        self._in_process = in_process
        self._monitor = monitor
        self._batch = batch

    async def of(self, pool: str) -> PoolDemand:
        local = await self._in_process.of(pool)
        queued, in_flight = local.admission_queue_depth, local.gateway_in_flight
        if self._monitor is not None:
            seen = await self._monitor.gateway_load(pool)
            if seen.measured:
                queued = max(queued, seen.admission_queue_depth)
                in_flight = max(in_flight, seen.gateway_in_flight)
        batch = local.batch_queue_depth
        if self._batch is not None:
            try:
                batch = max(batch, await self._batch.depth(pool))
            except Exception as exc:  # an unreadable backlog must not stop the pool's tick
                log.warning("batch queue depth of %s unavailable: %s", pool, exc)
        return replace(
            local,
            admission_queue_depth=queued,
            gateway_in_flight=in_flight,
            batch_queue_depth=batch,
        )
