"""A pool's batch backlog for the autoscaler: the queue's depth, the nearest deadline,
and how long a line has been holding a slot here."""

from __future__ import annotations

from collections.abc import Callable

from spotgate.batch.objects import IN_PROGRESS
from spotgate.batch.ports import BatchStore, LineQueue
from spotgate.clock import Clock
from spotgate.fleet.observation import BatchBacklogView


class QueueBacklog:
    """`BatchBacklog` (fleet/observation.py) over the line queue and the batch store."""

    def __init__(
        self,
        queue: LineQueue,
        batches: BatchStore,
        line_seconds: Callable[[str], float | None],
        clock: Clock,
    ) -> None:
        self._queue = queue
        self._batches = batches
        self._line_seconds = line_seconds
        self._clock = clock

    async def backlog(self, pool: str) -> BatchBacklogView:
        lines = await self._queue.depth(pool)
        running = [b for b in await self._batches.active() if b.pool == pool]
        expiries = [b.expires_at for b in running if b.status == IN_PROGRESS]
        deadline = min(expiries) - self._clock.now() if expiries else None
        return BatchBacklogView(lines, deadline, self._line_seconds(pool))
