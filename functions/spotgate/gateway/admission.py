"""Admission: a request runs only while its pool has a free slot; otherwise it waits in line.

A pool's slots are its ready workers times their concurrency (vLLM's
max_num_seqs). Past that, sending more only queues inside vLLM, where the
gateway can neither order, bound nor count the wait; here the line is FIFO,
bounded (a full line is a 429, or the cue to spill over) and has a deadline,
and its depth is the backlog the autoscaler reads.

Waiters are woken by events (a slot released, capacity added), never by
polling. A slot is granted synchronously, inside `release` or `notify`, so
two waiters never see the same free slot; a waiter cancelled after its grant
hands the slot straight back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from spotgate.errors import NoCapacity, RateLimited
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker, WorkerState

CapacityFn = Callable[[str], int]


class QueueFull(RateLimited):
    """The pool's line is full: a 429 with Retry-After, or the cue to spill over."""

    def __init__(self, pool: str, depth: int, retry_after_s: int) -> None:
        super().__init__(
            f"All workers for this model are busy and {depth} requests are already waiting. "
            "Retry shortly.",
            code="queue_full",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.pool = pool


class AdmissionTimeout(NoCapacity):
    """The request waited its whole deadline without a free slot: a 503 with Retry-After."""

    def __init__(self, pool: str, waited_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"No worker had room for this request within {waited_s:.0f} s; capacity is being "
            "added. Retry shortly.",
            code="no_capacity",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.pool = pool


@dataclass(frozen=True, slots=True)
class PoolState:
    """What spillover and the autoscaler decide on, read at one instant."""

    pool: str
    ready_workers: int
    capacity: int
    in_use: int
    waiting: int
    queue_limit: int

    @property
    def queue_full(self) -> bool:
        return self.waiting >= self.queue_limit


class _Waiter:
    __slots__ = ("future", "granted")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.granted = False


class _Pool:
    __slots__ = ("background", "in_use", "waiters")

    def __init__(self) -> None:
        self.in_use = 0
        self.background = 0  # of in_use: batch lines on spare slots
        self.waiters: deque[_Waiter] = deque()


class Admitted:
    """A held slot. Release it once the request (or its stream) is over; twice is harmless."""

    __slots__ = ("_admission", "_released", "background", "pool", "waited_s")

    def __init__(
        self, admission: Admission, pool: str, waited_s: float, *, background: bool = False
    ) -> None:
        self._admission = admission
        self.pool = pool
        self.waited_s = waited_s
        self.background = background
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self.pool, background=self.background)


class Admission:
    def __init__(
        self,
        capacity: CapacityFn,
        *,
        max_queue: int = 256,
        queue_full_retry_after_s: int = 1,
        timeout_retry_after_s: int = 5,
    ) -> None:
        """`capacity(pool)` is the pool's slot count now; call `notify` when it grows."""
        self._capacity = capacity
        self._max_queue = max_queue
        self._full_retry = queue_full_retry_after_s
        self._timeout_retry = timeout_retry_after_s
        self._pools: dict[str, _Pool] = {}
        self._cold_listeners: list[Callable[[str], None]] = []
        self._wait_listeners: list[Callable[[str, float], None]] = []

    def on_wait_ended(self, listener: Callable[[str, float], None]) -> None:
        """`listener(pool, waited_s)` each time a request gets its slot (0 when one was free)
        or gives up waiting: the admission wait an operator charts."""
        self._wait_listeners.append(listener)

    def on_cold_wait(self, listener: Callable[[str], None]) -> None:
        """`listener(pool)` when a request starts waiting on a pool with no capacity at all.

        A scaled-to-zero pool gets no slot until a worker is started, so this is
        the moment to wake the fleet monitor rather than wait for its next tick.
        """
        self._cold_listeners.append(listener)

    async def acquire(self, pool: str, deadline_s: float) -> Admitted:
        """A slot in `pool`, waiting up to `deadline_s` behind earlier requests.

        Raises QueueFull at once when the line is full, AdmissionTimeout when the
        deadline passes; a caller cancelled while waiting leaves the line.
        """
        state = self._pools.get(pool)
        if state is None:
            state = self._pools[pool] = _Pool()
        if state.waiters:
            self._grant(pool, state)  # capacity may have grown without a notify
        if not state.waiters and state.in_use < self._capacity(pool):
            state.in_use += 1
            return self._admitted(pool, 0.0)
        if len(state.waiters) >= self._max_queue:
            raise QueueFull(pool, len(state.waiters), self._full_retry)
        if deadline_s <= 0:
            raise AdmissionTimeout(pool, 0.0, self._timeout_retry)
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = _Waiter(loop.create_future())
        state.waiters.append(waiter)
        if len(state.waiters) == 1 and self._capacity(pool) == 0:
            for listener in self._cold_listeners:
                listener(pool)
        try:
            async with asyncio.timeout(deadline_s):
                await waiter.future
        except TimeoutError:
            if not waiter.granted:  # a grant that raced the deadline still counts
                self._forget(state, waiter)
                waited = loop.time() - started
                self._wait_ended(pool, waited)
                raise AdmissionTimeout(pool, waited, self._timeout_retry) from None
        except BaseException:
            if waiter.granted:
                self._release(pool)
            else:
                self._forget(state, waiter)
            raise
        return self._admitted(pool, loop.time() - started)

    def try_acquire_background(self, pool: str) -> Admitted | None:
        """A slot for background work (a batch line) now, or None: it never waits, never
        counts as a wait, and is told apart in `interactive_in_use`, so the work that fills
        spare slots is not mistaken for load the pool must grow for."""
        state = self._pools.get(pool)
        if state is None:
            state = self._pools[pool] = _Pool()
        if state.waiters or state.in_use >= self._capacity(pool):
            return None
        state.in_use += 1
        state.background += 1
        return Admitted(self, pool, 0.0, background=True)

    @contextlib.asynccontextmanager
    async def slot(self, pool: str, deadline_s: float) -> AsyncIterator[Admitted]:
        ticket = await self.acquire(pool, deadline_s)
        try:
            yield ticket
        finally:
            ticket.release()

    def notify(self, pool: str | None = None) -> None:
        """Capacity may have grown (a worker became ready): admit whoever now fits."""
        names = [pool] if pool is not None else list(self._pools)
        for name in names:
            state = self._pools.get(name)
            if state is not None and state.waiters:
                self._grant(name, state)

    # metrics

    def depth(self, pool: str) -> int:
        state = self._pools.get(pool)
        return len(state.waiters) if state else 0

    def in_use(self, pool: str) -> int:
        state = self._pools.get(pool)
        return state.in_use if state else 0

    def capacity(self, pool: str) -> int:
        return self._capacity(pool)

    def background_in_use(self, pool: str) -> int:
        state = self._pools.get(pool)
        return state.background if state else 0

    def interactive_in_use(self, pool: str) -> int:
        return self.in_use(pool) - self.background_in_use(pool)

    def state(self, pool: str, ready_workers: int) -> PoolState:
        return PoolState(
            pool=pool,
            ready_workers=ready_workers,
            capacity=self._capacity(pool),
            in_use=self.in_use(pool),
            waiting=self.depth(pool),
            queue_limit=self._max_queue,
        )

    # internals

    def _admitted(self, pool: str, waited_s: float) -> Admitted:
        self._wait_ended(pool, waited_s)
        return Admitted(self, pool, waited_s)

    def _wait_ended(self, pool: str, waited_s: float) -> None:
        for listener in self._wait_listeners:
            listener(pool, waited_s)

    def _release(self, pool: str, *, background: bool = False) -> None:
        state = self._pools[pool]
        state.in_use -= 1
        state.background -= int(background)
        if state.waiters:
            self._grant(pool, state)

    def _grant(self, pool: str, state: _Pool) -> None:
        capacity = self._capacity(pool)
        while state.waiters and state.in_use < capacity:
            waiter = state.waiters.popleft()
            if waiter.future.done():  # cancelled; its task is about to leave the line
                continue
            waiter.granted = True
            state.in_use += 1
            waiter.future.set_result(None)

    @staticmethod
    def _forget(state: _Pool, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            state.waiters.remove(waiter)


class PoolCapacity:
    """Slots per pool = ready workers x per-worker concurrency, kept current from registry
    events so the hot path reads a dict instead of scanning the fleet."""

    def __init__(self, registry: WorkerRegistry, per_worker: int) -> None:
        self._registry = registry
        self._per_worker = max(0, per_worker)
        self._ready: dict[str, int] = {}
        self._listeners: list[Callable[[str], None]] = []
        self.refresh()
        registry.subscribe(self._changed)

    def __call__(self, pool: str) -> int:
        return self._ready.get(pool, 0) * self._per_worker

    def ready_workers(self, pool: str) -> int:
        return self._ready.get(pool, 0)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """`listener(pool)` after any worker in the pool changed state: wire Admission.notify."""
        self._listeners.append(listener)

    def refresh(self) -> None:
        ready: dict[str, int] = {}
        for worker in self._registry.all():
            if worker.state == WorkerState.READY:
                ready[worker.pool] = ready.get(worker.pool, 0) + 1
        self._ready = ready

    def _changed(self, worker: Worker) -> None:
        self.refresh()
        for listener in self._listeners:
            listener(worker.pool)
