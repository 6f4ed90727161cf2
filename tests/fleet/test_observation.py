"""What one fleet-monitor tick sees of a pool, built from a real registry and the cloud's list.

A real `WorkerRegistry` over the in-memory store and a `ManualClock`: the
observation expires silent workers, reconciles the registry with the
instances the cloud lists, and describes what is left as policy signals.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from spotgate.clock import ManualClock
from spotgate.fleet.compute import Instance
from spotgate.fleet.observation import PoolDemand, PoolObservation, observe_pool
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import ON_DEMAND, SPOT, CapacityFailure, EvictionSignal
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import WorkerState

POOL = "default"
HEARTBEAT_TIMEOUT_S = 6.0
GRACE_S = 30.0


def make_registry() -> tuple[WorkerRegistry, ManualClock]:
    clock = ManualClock()
    return WorkerRegistry(InMemoryWorkerStore(), clock), clock


def register(
    registry: WorkerRegistry,
    worker_id: str,
    *,
    pool: str = POOL,
    priority: str = SPOT,
    zone: str | None = "1",
) -> None:
    registry.register(
        worker_id,
        pool=pool,
        model="m",
        engine="sim",
        url=f"http://127.0.0.1:1/{worker_id}",
        priority=priority,
        zone=zone,
    )


def running(worker_id: str, state: str = "running") -> Instance:
    return Instance(worker_id, POOL, SPOT, "1", state)


def observe(
    registry: WorkerRegistry,
    clock: ManualClock,
    pool: str = POOL,
    *,
    demand: PoolDemand | None = None,
    in_flight: Callable[[str], int] = lambda _wid: 0,
    evictions: Iterable[EvictionSignal] = (),
    capacity_failures: Iterable[CapacityFailure] = (),
    instances: list[Instance] | None = None,
) -> PoolObservation:
    return observe_pool(
        registry,
        pool,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        now=clock.now(),
        demand=demand,
        in_flight=in_flight,
        evictions=evictions,
        capacity_failures=capacity_failures,
        instances=instances,
        instance_grace_s=GRACE_S,
    )


def states(observation: PoolObservation) -> dict[str, str]:
    return {w.worker_id: w.state for w in observation.signals.workers}


# --- heartbeats --------------------------------------------------------------------------


def test_a_silent_worker_is_reported_expired_once_and_leaves_the_signals() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    register(registry, "b")
    clock.advance(4)
    registry.heartbeat("b", {})
    clock.advance(3)  # a silent for 7 s, b for 3 s

    first = observe(registry, clock)
    second = observe(registry, clock)

    assert first.expired == ("a",)
    assert states(first) == {"b": "ready"} and first.gone == 1
    assert second.expired == ()
    assert states(second) == {"b": "ready"} and second.gone == 1
    gone = registry.get("a")
    assert gone is not None and gone.state == WorkerState.GONE


def test_a_provisioning_worker_does_not_expire_for_want_of_heartbeats() -> None:
    registry, clock = make_registry()
    registry.expect("p", pool=POOL, model="m", engine="sim", priority=SPOT, zone="2")
    clock.advance(600)

    seen = observe(registry, clock)

    assert seen.expired == () and states(seen) == {"p": "provisioning"}


def test_an_expiry_in_this_pool_is_reported_to_this_pool_only() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    register(registry, "x", pool="other")
    clock.advance(7)

    seen = observe(registry, clock)

    assert seen.expired == ("a",)
    assert states(seen) == {}


def test_an_expiry_in_another_pool_is_still_news_to_that_pool() -> None:
    """Each pool has its own monitor over one registry (settings.pools: one monitor each)."""
    registry, clock = make_registry()
    register(registry, "a")
    register(registry, "x", pool="other")
    clock.advance(7)

    observe(registry, clock, POOL)
    other = observe(registry, clock, "other")

    assert other.expired == ("x",)


# --- reconciling with the cloud ----------------------------------------------------------


def test_a_worker_the_cloud_no_longer_lists_is_gone_only_after_the_grace() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    register(registry, "b")
    listed = [running("b")]

    clock.advance(GRACE_S - 1)
    registry.heartbeat("a", {})
    registry.heartbeat("b", {})
    early = observe(registry, clock, instances=listed)
    clock.advance(1)
    registry.heartbeat("a", {})
    due = observe(registry, clock, instances=listed)
    after = observe(registry, clock, instances=listed)

    assert early.vanished == () and states(early) == {"a": "ready", "b": "ready"}
    assert due.vanished == ("a",) and states(due) == {"b": "ready"} and due.gone == 1
    assert after.vanished == ()
    gone = registry.get("a")
    assert gone is not None and gone.state == WorkerState.GONE
    assert gone.reason == "instance no longer exists"


def test_without_a_listing_nothing_is_declared_gone() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    clock.advance(GRACE_S + 1)
    registry.heartbeat("a", {})

    seen = observe(registry, clock, instances=None)

    assert seen.vanished == () and states(seen) == {"a": "ready"}


def test_a_worker_just_asked_for_is_not_gone_while_the_listing_lags() -> None:
    registry, clock = make_registry()
    registry.expect("p", pool=POOL, model="", engine="", priority=SPOT, zone="1")
    clock.advance(GRACE_S / 2)

    lagging = observe(registry, clock, instances=[])
    clock.advance(GRACE_S / 2)
    late = observe(registry, clock, instances=[])

    assert lagging.vanished == () and states(lagging) == {"p": "provisioning"}
    assert late.vanished == ("p",) and states(late) == {}


def test_an_unknown_listed_instance_is_adopted_as_provisioning() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    listed = [
        running("a"),
        Instance("vm-7", POOL, ON_DEMAND, "2", "running"),
        Instance("vm-8", POOL, SPOT, "3", "creating"),
        Instance("vm-9", POOL, SPOT, "1", "deleting"),
        Instance("vm-x", "other", SPOT, "1", "running"),
    ]

    first = observe(registry, clock, instances=listed)
    second = observe(registry, clock, instances=listed)

    assert first.adopted == ("vm-7", "vm-8")
    assert second.adopted == ()
    by_id = {w.worker_id: w for w in first.signals.workers}
    assert set(by_id) == {"a", "vm-7", "vm-8"}
    assert (by_id["vm-7"].state, by_id["vm-7"].priority, by_id["vm-7"].zone) == (
        "provisioning",
        ON_DEMAND,
        "2",
    )
    assert (by_id["vm-8"].priority, by_id["vm-8"].zone) == (SPOT, "3")
    adopted = registry.get("vm-7")
    assert adopted is not None and adopted.pool == POOL
    assert adopted.state == WorkerState.PROVISIONING
    assert registry.get("vm-9") is None and registry.get("vm-x") is None
    assert first.signals.provisioning == {SPOT: 1, ON_DEMAND: 1}


def test_an_adopted_worker_registers_as_ready_when_its_agent_arrives() -> None:
    registry, clock = make_registry()
    observe(registry, clock, instances=[Instance("vm-7", POOL, SPOT, "2")])
    register(registry, "vm-7", zone="2")

    seen = observe(registry, clock, instances=[Instance("vm-7", POOL, SPOT, "2")])

    assert states(seen) == {"vm-7": "ready"} and seen.adopted == ()


def test_a_failed_instance_is_reported_and_not_adopted() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    listed = [running("a"), Instance("vm-f", POOL, SPOT, "2", "failed")]

    seen = observe(registry, clock, instances=listed)

    assert seen.failed_instances == ("vm-f",)
    assert seen.adopted == () and registry.get("vm-f") is None
    assert states(seen) == {"a": "ready"}


def test_a_known_worker_whose_instance_failed_is_reported_failed() -> None:
    registry, clock = make_registry()
    registry.expect("p", pool=POOL, model="", engine="", priority=SPOT, zone="1")

    seen = observe(registry, clock, instances=[running("p", state="failed")])

    assert seen.failed_instances == ("p",)
    assert states(seen) == {"p": "provisioning"}  # the planner deletes it


# --- what the signals say about each worker ------------------------------------------------


def test_in_flight_is_the_larger_of_the_engine_and_the_gateway_counts() -> None:
    registry, clock = make_registry()
    register(registry, "engine-lags")
    register(registry, "gateway-lags")
    registry.heartbeat("engine-lags", {"num_requests_running": 1, "num_requests_waiting": 2})
    registry.heartbeat("gateway-lags", {"num_requests_running": 4, "kv_cache_usage_perc": 0.25})
    gateway = {"engine-lags": 5, "gateway-lags": 1}

    seen = observe(registry, clock, in_flight=lambda wid: gateway.get(wid, 0))

    by_id = {w.worker_id: w for w in seen.signals.workers}
    assert (by_id["engine-lags"].running, by_id["engine-lags"].waiting) == (5.0, 2.0)
    assert by_id["engine-lags"].in_flight == 7.0
    assert (by_id["gateway-lags"].running, by_id["gateway-lags"].kv_cache_usage) == (4.0, 0.25)
    assert seen.signals.waiting == 2.0


def test_a_worker_drained_by_an_eviction_notice_is_evicting_with_its_deadline() -> None:
    registry, clock = make_registry()
    register(registry, "evicted", zone="3")
    register(registry, "scaled-in")
    register(registry, "serving", priority=ON_DEMAND, zone=None)
    clock.advance(2)
    not_before = clock.now() + 30
    registry.drain("evicted", "spot eviction notice", event_id="E1", not_before=not_before)
    registry.drain("scaled-in", "scale down")
    drained_at = clock.now()

    seen = observe(registry, clock)

    by_id = {w.worker_id: w for w in seen.signals.workers}
    evicted = by_id["evicted"]
    assert (evicted.state, evicted.evicting, evicted.deadline) == ("draining", True, not_before)
    assert (evicted.priority, evicted.zone, evicted.since) == (SPOT, "3", drained_at)
    scaled_in = by_id["scaled-in"]
    assert (scaled_in.state, scaled_in.evicting, scaled_in.deadline) == ("draining", False, None)
    assert by_id["serving"].priority == ON_DEMAND and by_id["serving"].evicting is False
    assert seen.evicting == ["evicted"]
    assert (seen.count("ready"), seen.count("draining"), seen.actual) == (1, 2, 1)


def test_load_evictions_and_refusals_pass_through_to_the_signals() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    eviction = EvictionSignal("2", clock.now() - 10)
    refusal = CapacityFailure(SPOT, "1", "sku_not_available", clock.now() - 5)

    seen = observe(
        registry,
        clock,
        demand=PoolDemand(admission_queue_depth=3, gateway_in_flight=4, batch_queue_depth=2),
        evictions=[eviction],
        capacity_failures=[refusal],
    )

    signals = seen.signals
    assert (signals.pool, signals.now) == (POOL, clock.now())
    assert (signals.admission_queue_depth, signals.gateway_in_flight) == (3, 4)
    assert signals.batch_queue_depth == 2
    assert signals.evictions == (eviction,) and signals.capacity_failures == (refusal,)
    assert seen.pool == POOL and seen.observed_at == clock.now()


def test_an_observation_survives_json_unchanged() -> None:
    registry, clock = make_registry()
    register(registry, "a")
    register(registry, "b", zone="2")
    register(registry, "silent", zone="3")
    registry.expect("p", pool=POOL, model="", engine="", priority=ON_DEMAND, zone=None)
    clock.advance(GRACE_S + 1)
    for wid in ("a", "b"):
        registry.heartbeat(wid, {"num_requests_running": 2, "num_requests_waiting": 1})
    registry.drain("b", "spot eviction notice", event_id="E", not_before=clock.now() + 30)
    listed = [
        running("a"),
        running("b"),
        running("silent"),
        Instance("vm-new", POOL, SPOT, "1", "creating"),
        Instance("vm-bad", POOL, SPOT, "2", "failed"),
    ]
    observation = observe(
        registry,
        clock,
        demand=PoolDemand(admission_queue_depth=1, gateway_in_flight=2, batch_queue_depth=3),
        in_flight=lambda wid: 3 if wid == "a" else 0,
        evictions=[EvictionSignal("2", clock.now())],
        capacity_failures=[CapacityFailure(SPOT, None, "quota", clock.now() - 1)],
        instances=listed,
    )
    assert observation.expired == ("silent",) and observation.vanished == ("p",)
    assert observation.adopted == ("vm-new",) and observation.failed_instances == ("vm-bad",)

    wire = json.loads(json.dumps(observation.to_dict()))
    revived = PoolObservation.from_dict(wire)

    assert revived == observation
    assert revived.to_dict() == observation.to_dict()
    assert revived.evicting == ["b"] and revived.count("provisioning") == 1
