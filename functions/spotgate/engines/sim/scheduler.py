"""Batch slots like vLLM's `max_num_seqs`: a fixed number run, the rest queue FIFO.

Running, waiting and KV-cache figures come from here, so `/metrics` shows a
gateway the same back-pressure a real worker would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType


class Scheduler:
    def __init__(self, max_running: int, kv_capacity_tokens: int) -> None:
        self._max_running = max_running
        self._kv_capacity = max(1, kv_capacity_tokens)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.running = 0
        self.kv_tokens = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def kv_usage(self) -> float:
        return min(1.0, self.kv_tokens / self._kv_capacity)

    def has_free_slot(self) -> bool:
        return self.running < self._max_running and not self._waiters

    async def acquire(self) -> None:
        if self.has_free_slot():
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the client left: pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Hands the slot straight to the oldest waiter, so a newcomer cannot overtake it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1

    def slot(self) -> Slot:
        return Slot(self)


class Slot:
    """One running request and the KV-cache tokens it holds, all given back on exit."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._held = 0

    def hold(self, tokens: int) -> None:
        self._held += tokens
        self._scheduler.kv_tokens += tokens

    async def __aenter__(self) -> Slot:
        await self._scheduler.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._scheduler.kv_tokens -= self._held
        self._held = 0
        self._scheduler.release()
