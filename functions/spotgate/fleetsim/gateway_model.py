"""The simulated gateway: cache hits, least-loaded routing, the admission queue, resumes.

It behaves like the real one where the fleet can tell: a request goes to the
ready worker with the fewest outstanding requests that has a free slot;
with none free it waits in the pool's queue, up to `capacity_wait_s`, then
fails (or spills to a managed endpoint, when one is configured); a request
waiting on a pool with no ready worker wakes the monitor; jobs a reclaimed
VM held resume on another worker with what they had generated. It is also
the monitor's `DemandSource` (queue depth and requests in flight).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from spotgate.fleet.observation import PoolDemand
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import WorkerState
from spotgate.fleetsim.cloud import SimCloud, SimVM
from spotgate.fleetsim.events import EventQueue, _Event
from spotgate.fleetsim.worker_model import Job, SimWorker

CACHE_HIT_S = 0.002


@dataclass(frozen=True)
class Spillover:
    """A managed endpoint that takes what the fleet cannot: its latency and price."""

    ttft_s: float = 0.6
    tokens_per_s: float = 60.0
    price_in_per_1m: float = 0.15
    price_out_per_1m: float = 0.60


class SimGateway:
    def __init__(
        self,
        events: EventQueue,
        registry: WorkerRegistry,
        pool: str,
        rng: random.Random,
        *,
        slots_per_worker: int,
        capacity_wait_s: float,
        cache_hit_rate: float,
        wake: Callable[[str], Awaitable[None]],
        spillover: Spillover | None = None,
        queue_limit: int = 256,
    ) -> None:
        self._events = events
        self._registry = registry
        self._pool = pool
        self._rng = rng
        self._slots = slots_per_worker
        self._wait_s = capacity_wait_s
        self._cache_hit_rate = cache_hit_rate
        self._wake = wake
        self._spillover = spillover
        self._queue_limit = queue_limit
        self.cloud: SimCloud | None = None
        self.queue: deque[Job] = deque()
        self._deadlines: dict[int, _Event] = {}
        self._timers: dict[str, _Event] = {}
        self.extra_demand = 0
        """In-flight requests the monitor is told of on top of the real ones (a warm start)."""

    # DemandSource and the monitor's in-flight view

    async def of(self, pool: str) -> PoolDemand:
        in_flight = sum(vm.worker.outstanding for vm in self._vms() if vm.worker is not None)
        return PoolDemand(
            admission_queue_depth=len(self.queue),
            gateway_in_flight=in_flight + self.extra_demand,
        )

    def in_flight(self, worker_id: str) -> int:
        vm = self.cloud.vms.get(worker_id) if self.cloud is not None else None
        return vm.worker.outstanding if vm is not None and vm.worker is not None else 0

    # requests

    async def arrive(self, job: Job) -> None:
        now = self._events.now()
        if self._cache_hit_rate > 0 and self._rng.random() < self._cache_hit_rate:
            job.status = "cached"
            job.first_token_at = job.done_at = now + CACHE_HIT_S
            return
        await self._place(job)

    async def resume(self, jobs: list[Job]) -> None:
        """Jobs a reclaimed VM held: the rest of each goes to another worker, its prompt now
        including what was generated (as a resumed stream asks for)."""
        for job in jobs:
            prompt = job.prompt_tokens if job.todo_prompt is None else job.todo_prompt
            completion = (
                job.completion_tokens if job.todo_completion is None else job.todo_completion
            )
            left = max(0, round(job.decode_left)) if job.first_token_at is not None else completion
            generated = completion - left
            job.todo_prompt = prompt + generated
            job.todo_completion = max(1, left) if job.first_token_at is None else left
            job.resumed += 1
            job.worker_id = None
            await self._place(job)

    def worker_ready(self, vm: SimVM) -> None:
        self._dispatch_queue()

    def worker_event(self, worker: SimWorker) -> None:
        """A worker's next moment came: settle it, then hand queued jobs to free slots."""
        worker.advance(self._events.now())
        self._dispatch_queue()
        self._reschedule(worker)

    async def _place(self, job: Job) -> None:
        if self._dispatch(job):
            return
        ready = bool(self._ready_workers())
        if self._spillover is not None and (not ready or len(self.queue) >= self._queue_limit):
            self._spill(job)  # as the gateway spills: no ready worker, or a full queue
            return
        self.queue.append(job)
        deadline = self._events.after(self._wait_s, lambda: self._expire(job))
        self._deadlines[job.id] = deadline
        if not ready:
            await self._wake(self._pool)  # a request waits on a pool at zero

    def _spill(self, job: Job) -> None:
        assert self._spillover is not None
        now = self._events.now()
        job.status = "spilled"
        if job.first_token_at is None:
            job.first_token_at = now + self._spillover.ttft_s
        job.done_at = (
            now + self._spillover.ttft_s + job.completion_tokens / self._spillover.tokens_per_s
        )

    def _expire(self, job: Job) -> None:
        self._deadlines.pop(job.id, None)
        if job in self.queue:
            self.queue.remove(job)
            if self._spillover is not None:
                self._spill(job)
                return
            job.status = "failed"
            job.done_at = self._events.now()

    def _vms(self) -> list[SimVM]:
        return self.cloud.ready(self._pool) if self.cloud is not None else []

    def _ready_workers(self) -> list[SimWorker]:
        out = []
        for vm in self._vms():
            worker = self._registry.get(vm.worker_id)
            if vm.worker is not None and worker is not None and worker.state == WorkerState.READY:
                out.append(vm.worker)
        return out

    def _dispatch(self, job: Job) -> bool:
        free = [w for w in self._ready_workers() if w.outstanding < self._slots]
        if not free:
            return False
        worker = min(free, key=lambda w: (w.outstanding, w.id))
        worker.submit(job, self._events.now())
        self._reschedule(worker)
        return True

    def _dispatch_queue(self) -> None:
        while self.queue and self._dispatch(self.queue[0]):
            job = self.queue.popleft()
            deadline = self._deadlines.pop(job.id, None)
            if deadline is not None:
                EventQueue.cancel(deadline)

    def _reschedule(self, worker: SimWorker) -> None:
        old = self._timers.pop(worker.id, None)
        if old is not None:
            EventQueue.cancel(old)
        due = worker.next_event_at()
        if due != float("inf"):
            self._timers[worker.id] = self._events.at(due, lambda: self.worker_event(worker))
