"""Usage records leave the request path at once and reach the store in batches.

`record` only appends to a bounded buffer: a slow or failing usage store
never slows a request. A background task writes the buffer every `flush_s`;
a batch that fails stays at the front and is tried again (the store ignores
a request id it holds already, so a retried batch is never counted twice).
When the buffer is full, new records are dropped, with one warning per
episode and the count when it ends. `close` writes what is left, so a clean
shutdown loses nothing; a crash loses at most what arrived since the last
flush (`flush_s`, one second by default).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from spotgate.background import cancel_and_wait
from spotgate.gateway.tenancy.ports import UsageStore
from spotgate.gateway.tenancy.usage import UsageRecord

log = logging.getLogger("spotgate.usage")

BATCH = 500
CLOSE_TIMEOUT_S = 10.0
CLOSE_RETRY_S = 0.2


class UsageRecorder:
    def __init__(self, store: UsageStore, *, flush_s: float = 1.0, max_buffer: int = 50_000):
        self._store = store
        self._flush_s = flush_s
        self._max_buffer = max_buffer
        self._buffer: deque[UsageRecord] = deque()
        self._dropped = 0
        self.dropped_total = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0

    @property
    def store(self) -> UsageStore:
        return self._store

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def record(self, record: UsageRecord) -> None:
        if len(self._buffer) >= self._max_buffer:
            if self._dropped == 0:
                log.warning(
                    "usage buffer full (%d records): dropping usage records until the store "
                    "catches up",
                    self._max_buffer,
                )
            self._dropped += 1
            self.dropped_total += 1
            return
        self._buffer.append(record)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flushing())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                while self._buffer:
                    if not await self.flush():
                        await asyncio.sleep(CLOSE_RETRY_S)
        except TimeoutError:
            pass
        if self._buffer:
            log.error("usage store unwritable at shutdown: %d records lost", len(self._buffer))
        await self._store.close()

    async def flush(self) -> bool:
        """Write what is buffered, a batch at a time; False if the store refused a batch."""
        async with self._lock:
            while self._buffer:
                batch = [self._buffer[i] for i in range(min(BATCH, len(self._buffer)))]
                try:
                    await self._store.append(batch)
                except Exception as exc:
                    if not self._failing:
                        log.warning("usage store write failed, will retry: %r", exc)
                    self._failing = True
                    return False
                for _ in batch:
                    self._buffer.popleft()
                self.written += len(batch)
                if self._failing:
                    log.info("usage store writable again")
                    self._failing = False
            if self._dropped:
                log.warning("usage buffer drained; %d records were dropped", self._dropped)
                self._dropped = 0
            return True

    async def _flushing(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()
