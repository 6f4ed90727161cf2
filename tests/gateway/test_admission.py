"""The admission line: FIFO, bounded, with a deadline, event-driven and cancellation-safe."""

from __future__ import annotations

import asyncio
import random

import pytest

from spotgate.clock import ManualClock
from spotgate.errors import NoCapacity, RateLimited
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.admission import (
    Admission,
    AdmissionTimeout,
    Admitted,
    PoolCapacity,
    QueueFull,
)


class Slots:
    """Capacity per pool that a test sets by hand, counting how often it is read."""

    def __init__(self, **pools: int) -> None:
        self.pools = dict(pools)
        self.reads = 0

    def __call__(self, pool: str) -> int:
        self.reads += 1
        return self.pools.get(pool, 0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def queue(admission: Admission, pool: str, deadline_s: float = 5.0) -> asyncio.Task[Admitted]:
    return asyncio.create_task(admission.acquire(pool, deadline_s))


async def test_free_slots_admit_at_once_and_release_gives_them_back() -> None:
    admission = Admission(Slots(p=2))
    first = await admission.acquire("p", 1.0)
    second = await admission.acquire("p", 1.0)
    assert (first.waited_s, admission.in_use("p"), admission.depth("p")) == (0.0, 2, 0)
    first.release()
    first.release()  # twice is harmless
    second.release()
    assert admission.in_use("p") == 0


async def test_waiters_are_admitted_first_in_first_out() -> None:
    admission = Admission(Slots(p=1))
    holder = await admission.acquire("p", 1.0)
    order: list[str] = []

    async def request(name: str) -> None:
        async with admission.slot("p", 5.0):
            order.append(name)
            await asyncio.sleep(0)

    tasks = []
    for name in "abcd":
        tasks.append(asyncio.create_task(request(name)))
        await settle()
    assert admission.depth("p") == 4
    holder.release()
    await asyncio.gather(*tasks)
    assert order == list("abcd")
    assert admission.in_use("p") == 0 and admission.depth("p") == 0


async def test_a_full_line_is_a_429_with_retry_after() -> None:
    admission = Admission(Slots(p=1), max_queue=2, queue_full_retry_after_s=3)
    await admission.acquire("p", 1.0)
    waiting = [queue(admission, "p"), queue(admission, "p")]
    await settle()
    with pytest.raises(QueueFull) as caught:
        await admission.acquire("p", 1.0)
    assert isinstance(caught.value, RateLimited) and caught.value.status_code == 429
    assert caught.value.headers == {"Retry-After": "3"}
    assert admission.state("p", ready_workers=1).queue_full
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_waiting_past_the_deadline_is_a_503_and_leaves_the_line() -> None:
    admission = Admission(Slots(p=1))
    await admission.acquire("p", 1.0)
    with pytest.raises(AdmissionTimeout) as caught:
        await admission.acquire("p", 0.05)
    assert isinstance(caught.value, NoCapacity) and caught.value.status_code == 503
    assert caught.value.headers["Retry-After"] == "5"
    assert admission.depth("p") == 0
    with pytest.raises(AdmissionTimeout):
        await admission.acquire("p", 0)  # no deadline: no wait at all


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_gets_the_slot() -> None:
    admission = Admission(Slots(p=1))
    holder = await admission.acquire("p", 1.0)
    gone, kept = queue(admission, "p"), queue(admission, "p")
    await settle()
    gone.cancel()
    await settle()
    assert admission.depth("p") == 1
    holder.release()
    ticket = await kept
    assert admission.in_use("p") == 1 and gone.cancelled()
    ticket.release()
    assert admission.in_use("p") == 0


async def test_a_waiter_cancelled_right_after_its_grant_hands_the_slot_on() -> None:
    admission = Admission(Slots(p=1))
    holder = await admission.acquire("p", 1.0)
    unlucky, next_one = queue(admission, "p"), queue(admission, "p")
    await settle()
    holder.release()  # grants `unlucky` synchronously...
    unlucky.cancel()  # ...which is cancelled before it runs again
    ticket = await next_one
    assert unlucky.cancelled()
    assert admission.in_use("p") == 1
    ticket.release()
    assert admission.in_use("p") == 0


async def test_new_capacity_wakes_waiters_by_event_not_by_polling() -> None:
    slots = Slots(p=0)
    admission = Admission(slots)
    tasks = [queue(admission, "p") for _ in range(3)]
    await settle()
    reads = slots.reads
    await asyncio.sleep(0.1)
    assert slots.reads == reads, "nobody polls the capacity while waiting"
    assert not any(task.done() for task in tasks)
    slots.pools["p"] = 2
    admission.notify("p")
    await settle()
    assert [task.done() for task in tasks] == [True, True, False]
    (await tasks[0]).release()
    (await tasks[2]).release()
    (await tasks[1]).release()
    assert admission.in_use("p") == 0


async def test_late_arrivals_do_not_jump_the_line() -> None:
    slots = Slots(p=0)
    admission = Admission(slots)
    early = queue(admission, "p")
    await settle()
    slots.pools["p"] = 1  # capacity grew but nobody called notify
    late = queue(admission, "p")
    await settle()
    assert early.done() and not late.done()
    (await early).release()
    (await late).release()


async def test_pools_are_independent_and_counted_for_the_autoscaler() -> None:
    admission = Admission(Slots(a=1, b=1), max_queue=8)
    await admission.acquire("a", 1.0)
    await admission.acquire("b", 1.0)
    tasks = [queue(admission, "a") for _ in range(3)] + [queue(admission, "b")]
    await settle()
    assert (admission.depth("a"), admission.depth("b")) == (3, 1)
    state = admission.state("a", ready_workers=1)
    assert (state.capacity, state.in_use, state.waiting, state.queue_full) == (1, 1, 3, False)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (admission.depth("a"), admission.depth("b")) == (0, 0)


async def test_concurrent_load_never_exceeds_capacity_and_everyone_is_served() -> None:
    admission = Admission(Slots(p=4), max_queue=1000)
    running = peak = served = 0
    rng = random.Random(7)

    async def request() -> None:
        nonlocal running, peak, served
        async with admission.slot("p", 10.0):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(rng.random() / 500)
            running -= 1
            served += 1

    async def impatient() -> None:
        task = asyncio.create_task(request())
        await asyncio.sleep(rng.random() / 200)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    await asyncio.gather(*(request() for _ in range(150)), *(impatient() for _ in range(50)))
    assert peak == 4 and served >= 150
    assert admission.in_use("p") == 0 and admission.depth("p") == 0


async def test_pool_capacity_follows_the_registry_and_wakes_the_line() -> None:
    registry = WorkerRegistry(InMemoryWorkerStore(), ManualClock())
    capacity = PoolCapacity(registry, per_worker=2)
    admission = Admission(capacity)
    capacity.on_change(admission.notify)
    waiting = [queue(admission, "spot") for _ in range(3)]
    await settle()
    assert capacity("spot") == 0 and admission.depth("spot") == 3
    registry.register("w1", pool="spot", model="m", engine="sim", url="http://w1")
    await settle()
    assert capacity("spot") == 2 and capacity.ready_workers("spot") == 1
    assert [task.done() for task in waiting] == [True, True, False]
    registry.drain("w1", "evicted")
    assert capacity("spot") == 0
    (await waiting[0]).release()
    await settle()
    assert not waiting[2].done(), "a drained worker's slots are not handed out"
    registry.register("w2", pool="spot", model="m", engine="sim", url="http://w2")
    (await waiting[2]).release()
    (await waiting[1]).release()
    assert admission.in_use("spot") == 0
