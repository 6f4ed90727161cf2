"""The local spot market: spot refused per zone or everywhere, and random evictions with notice."""

from __future__ import annotations

import asyncio

import pytest

from spotgate.adapters.local.spot_market import LocalSpotMarket
from spotgate.clock import ManualClock
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import ON_DEMAND, SPOT
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import Eviction, Worker, WorkerState

CERTAIN = 1e9  # evictions per worker-hour: every draw hits
ELIGIBLE = ["s1", "s2", "s3"]


class Evictions:
    """The evict callback: records (worker, notice) and drains the worker as its agent would."""

    def __init__(self, registry: WorkerRegistry | None = None) -> None:
        self.registry = registry
        self.calls: list[tuple[str, float]] = []

    def __call__(self, worker_id: str, notice_s: float) -> object:
        self.calls.append((worker_id, notice_s))
        if self.registry is not None:
            self.registry.drain(worker_id, "spot eviction notice", event_id=f"E-{worker_id}")
        return {"EventId": f"E-{worker_id}"}


def fleet() -> WorkerRegistry:
    """Three ready spot workers, plus every kind of worker the market must never evict."""
    store = InMemoryWorkerStore()
    # a ready spot worker whose notice is already known (e.g. it came back from a Reboot event)
    store.put(
        Worker(
            "noticed",
            "default",
            "m",
            "sim",
            "http://127.0.0.1:1",
            state=WorkerState.READY,
            eviction=Eviction("E0", None, 0.0, "Reboot"),
        )
    )
    registry = WorkerRegistry(store, ManualClock())

    def register(worker_id: str, priority: str = SPOT, pool: str = "default") -> None:
        registry.register(
            worker_id,
            pool=pool,
            model="m",
            engine="sim",
            url="http://127.0.0.1:1",
            priority=priority,
        )

    for worker_id in ELIGIBLE:
        register(worker_id)
    register("od1", ON_DEMAND)
    register("draining")
    registry.drain("draining", "scale down")
    register("evicting")
    registry.drain("evicting", "spot eviction notice", event_id="E1", not_before=30.0)
    register("gone")
    registry.mark_gone("gone", "killed")
    registry.expect("booting", pool="default", model="m", engine="sim", priority=SPOT, zone="1")
    return registry


# --- capacity ----------------------------------------------------------------------------


def market() -> LocalSpotMarket:
    return LocalSpotMarket(fleet(), Evictions())


def test_spot_is_available_everywhere_until_refused() -> None:
    spot_market = market()

    assert all(spot_market.available(z) for z in ("1", "2", "3", None))
    assert spot_market.refused_zones() == []


def test_refusing_a_zone_refuses_only_that_zone() -> None:
    spot_market = market()
    spot_market.refuse("2")

    assert not spot_market.available("2")
    assert spot_market.available("1") and spot_market.available("3")
    assert spot_market.available(None)  # an unzoned request may still land elsewhere
    assert spot_market.refused_zones() == ["2"]


def test_refusing_everywhere_refuses_every_zone_and_unzoned_requests() -> None:
    spot_market = market()
    spot_market.refuse()

    assert not any(spot_market.available(z) for z in ("1", "2", "3", None))
    assert spot_market.refused_zones() == ["*"]


def test_restoring_a_zone_brings_back_that_zone_only() -> None:
    spot_market = market()
    spot_market.refuse("1")
    spot_market.refuse("2")
    spot_market.restore("1")

    assert spot_market.available("1") and not spot_market.available("2")
    assert spot_market.refused_zones() == ["2"]


def test_restoring_everywhere_clears_every_refusal() -> None:
    spot_market = market()
    spot_market.refuse("1")
    spot_market.refuse()
    spot_market.restore()

    assert all(spot_market.available(z) for z in ("1", "2", "3", None))
    assert spot_market.refused_zones() == []


# --- evictions ---------------------------------------------------------------------------


def test_a_certain_eviction_hits_only_ready_spot_workers_with_no_notice_yet() -> None:
    registry = fleet()
    evict = Evictions()
    spot_market = LocalSpotMarket(registry, evict, evictions_per_hour=CERTAIN, notice_s=45, seed=7)

    victims = spot_market.tick()

    assert sorted(victims) == ELIGIBLE
    assert sorted(evict.calls) == [(w, 45) for w in ELIGIBLE]


def test_an_evicted_worker_is_not_evicted_again() -> None:
    registry = fleet()
    evict = Evictions(registry)
    spot_market = LocalSpotMarket(registry, evict, evictions_per_hour=CERTAIN, seed=7)

    first = spot_market.tick()
    second = spot_market.tick()

    assert sorted(first) == ELIGIBLE and second == []
    assert [w for w, _ in evict.calls] == first


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_no_rate_evicts_nothing(rate: float) -> None:
    evict = Evictions()
    spot_market = LocalSpotMarket(fleet(), evict, evictions_per_hour=rate, seed=1)

    assert [spot_market.tick() for _ in range(100)] == [[]] * 100
    assert evict.calls == []


def test_the_same_seed_evicts_the_same_workers() -> None:
    """At 1800 per worker-hour and a 1 s interval each draw is a coin flip, repeatable by seed."""

    def run(seed: int) -> list[list[str]]:
        spot_market = LocalSpotMarket(fleet(), Evictions(), evictions_per_hour=1800, seed=seed)
        return [spot_market.tick() for _ in range(20)]

    first, again = run(11), run(11)

    assert first == again
    hits = [w for tick in first for w in tick]
    assert hits and set(hits) <= set(ELIGIBLE)
    assert len(hits) < 20 * len(ELIGIBLE)  # not every draw hit: the rate is honoured


def test_an_eviction_that_cannot_be_delivered_does_not_stop_the_others() -> None:
    calls: list[str] = []

    def evict(worker_id: str, _notice_s: float) -> object:
        calls.append(worker_id)
        if worker_id == "s2":
            raise LookupError("process already ended")
        return None

    spot_market = LocalSpotMarket(fleet(), evict, evictions_per_hour=CERTAIN, seed=3)

    assert sorted(spot_market.tick()) == ELIGIBLE
    assert sorted(calls) == ELIGIBLE


async def test_started_market_evicts_in_the_background_until_stopped() -> None:
    registry = fleet()
    drain = Evictions(registry)
    all_evicted = asyncio.Event()

    def evict(worker_id: str, notice_s: float) -> object:
        drain(worker_id, notice_s)
        if len(drain.calls) == len(ELIGIBLE):
            all_evicted.set()
        return None

    spot_market = LocalSpotMarket(
        registry, evict, evictions_per_hour=CERTAIN, check_interval_s=0.01, notice_s=5, seed=2
    )
    spot_market.start()
    spot_market.start()  # idempotent
    try:
        await asyncio.wait_for(all_evicted.wait(), 10)
    finally:
        await spot_market.stop()
    await spot_market.stop()  # idempotent

    assert sorted(drain.calls) == [(w, 5) for w in ELIGIBLE]
    drained = [w.id for w in registry.all() if w.state == WorkerState.DRAINING]
    assert set(ELIGIBLE) <= set(drained)
