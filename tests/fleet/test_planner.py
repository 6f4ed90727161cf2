"""The tick planner: what an operator sees the fleet monitor do to a pool.

Each test feeds `plan_tick` observations as the monitor would (one per tick,
threading the returned state and decision into the next) and checks the
actions it lists (provision requests, drains, deletions) and the reason codes
behind them; a few check the words an operator reads in `why`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from spotgate.fleet import planner
from spotgate.fleet.autoscaler import AutoscalerConfig
from spotgate.fleet.capacity_mix import CapacityMixConfig
from spotgate.fleet.compute import ProvisionRequest
from spotgate.fleet.decision import Decision, DeleteRequest
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.planner import DELETE_CODES, PolicyState, TickPlan, plan_tick
from spotgate.fleet.signals import (
    ON_DEMAND,
    SPOT,
    CapacityFailure,
    EvictionSignal,
    PoolSignals,
    WorkerSignal,
)

README = Path(__file__).resolve().parents[2] / "README.md"
T0 = 1_700_000_000.0
POOL = "pool-a"
ZONES = ("1", "2", "3")


def config(
    *,
    min_workers: int = 1,
    max_workers: int = 10,
    target: float = 4.0,
    stabilisation_s: float = 300.0,
    dry_run: bool = False,
) -> FleetPolicyConfig:
    return FleetPolicyConfig(
        autoscaling=AutoscalerConfig(
            min_workers=min_workers,
            max_workers=max_workers,
            target_concurrency_per_worker=target,
            scale_down_stabilisation_s=stabilisation_s,
            idle_to_zero_s=600.0,
        ),
        mix=CapacityMixConfig(zones=ZONES),
        drain_timeout_s=300.0,
        provision_timeout_s=900.0,
        eviction_grace_s=60.0,
        dry_run=dry_run,
    )


def spot(
    wid: str, zone: str | None, state: str = "ready", *, load: float = 0.0, since: float = 0.0
) -> WorkerSignal:
    return WorkerSignal(wid, SPOT, zone, state, running=load, since=T0 + since)


def od(wid: str, state: str = "ready", *, load: float = 0.0, since: float = 0.0) -> WorkerSignal:
    return WorkerSignal(wid, ON_DEMAND, None, state, running=load, since=T0 + since)


def evicted(wid: str, zone: str, *, notice_at: float, deadline: float) -> WorkerSignal:
    """A spot worker that got a Preempt notice at `notice_at`, to be taken at `deadline`."""
    return WorkerSignal(
        wid,
        SPOT,
        zone,
        "draining",
        since=T0 + notice_at,
        evicting=True,
        deadline=T0 + deadline,
    )


def observe(
    at: float,
    workers: list[WorkerSignal],
    *,
    in_flight: int = 0,
    queued: int = 0,
    evictions: list[EvictionSignal] | None = None,
    failures: list[CapacityFailure] | None = None,
    failed_instances: tuple[str, ...] = (),
    gone: int = 0,
) -> PoolObservation:
    return PoolObservation(
        signals=PoolSignals.build(
            POOL,
            T0 + at,
            gateway_in_flight=in_flight,
            admission_queue_depth=queued,
            workers=workers,
            evictions=evictions or (),
            capacity_failures=failures or (),
        ),
        gone=gone,
        failed_instances=failed_instances,
    )


def plan(
    observation: PoolObservation,
    cfg: FleetPolicyConfig,
    *,
    state: PolicyState | None = None,
    previous: Decision | None = None,
    tick: int = 1,
) -> TickPlan:
    return plan_tick(observation, cfg, state or PolicyState({}, {}), previous, tick)


def target_state(target: int) -> PolicyState:
    """A monitor that already settled on `target` workers (not its first tick)."""
    return PolicyState({"target": target}, {})


def provisioned(decision: Decision, priority: str = SPOT) -> Counter[str | None]:
    """Workers requested per zone for one priority."""
    out: Counter[str | None] = Counter()
    for request in decision.provision:
        if request.priority == priority:
            out[request.zone] += request.count
    return out


def deleted(decision: Decision) -> list[str]:
    return [d.worker_id for d in decision.delete]


def delete_codes(decision: Decision) -> list[str]:
    return [c for c in decision.codes if c in DELETE_CODES]


def whys(decision: Decision) -> dict[str, str]:
    """Each deleted worker's reason, as the registry records it."""
    return {d.worker_id: d.why for d in decision.delete}


# --- scale up ---------------------------------------------------------------------------


def test_empty_pool_is_raised_to_min_workers_on_spot_in_distinct_zones() -> None:
    decision = plan(observe(0, []), config(min_workers=2)).decision

    assert decision.provision, decision.reason
    for request in decision.provision:
        assert set(request.to_dict()) == {"pool", "priority", "zone", "count"}
        assert request.pool == POOL and request.priority == SPOT and request.count >= 1
    assert sum(r.count for r in decision.provision) == 2
    zones = [r.zone for r in decision.provision for _ in range(r.count)]
    assert len(set(zones)) == 2 and set(zones) <= set(ZONES)
    assert (decision.desired, decision.actual, decision.spot_target) == (2, 0, 2)
    assert decision.action == "scale_up"
    assert decision.drain == [] and decision.delete == []
    assert decision.codes == ["raised_to_min"]
    assert [r.count for r in decision.provision] == [1, 1]


# (gateway in flight, admission queue, ready workers, max_workers, expected desired size)
LOAD_STEPS: dict[str, tuple[int, int, int, int, int]] = {
    "burst of queued requests": (16, 14, 1, 10, 8),
    "exact multiple of the target": (8, 8, 2, 10, 4),
    "a little over one worker": (5, 0, 1, 10, 2),
    "far more than max_workers": (400, 100, 1, 10, 10),
    "lowered max_workers": (40, 0, 1, 3, 3),
}


@pytest.mark.parametrize("name", sorted(LOAD_STEPS))
def test_a_load_step_is_provisioned_in_the_same_tick(name: str) -> None:
    in_flight, queued, live, max_workers, expected = LOAD_STEPS[name]
    workers = [spot(f"w{i}", ZONES[i % 3], load=1) for i in range(live)]
    cfg = config(min_workers=1, max_workers=max_workers, target=4)

    decision = plan(observe(0, workers, in_flight=in_flight, queued=queued), cfg).decision

    assert decision.desired == expected == min(max_workers, math.ceil((in_flight + queued) / 4))
    assert decision.load == in_flight + queued
    assert sum(r.count for r in decision.provision) == expected - live
    assert {r.priority for r in decision.provision} == {SPOT}
    # what runs plus what was asked for is exactly the placement the mix chose
    placed = Counter(w.zone for w in workers) + provisioned(decision)
    assert dict(placed) == {z: n for z, n in decision.per_zone.items() if n}
    assert decision.drain == [] and decision.delete == []


def test_workers_already_provisioning_are_not_asked_for_again() -> None:
    cfg = config(min_workers=1, max_workers=10, target=4)
    first = plan(observe(0, [spot("w0", "1", load=1)], in_flight=16, queued=14), cfg)
    zones = [zone for zone, n in provisioned(first.decision).items() for _ in range(n)]
    new = [spot(f"p{i}", zone, "provisioning", since=1) for i, zone in enumerate(zones)]
    second = plan(
        observe(10, [spot("w0", "1", load=1), *new], in_flight=16, queued=14),
        cfg,
        state=first.state,
        previous=first.decision,
        tick=2,
    ).decision

    assert second.desired == 8 and second.actual == 8
    assert second.provision == [] and second.drain == [] and second.delete == []
    assert second.provisioning == 7


# --- scale down: drain, then delete ------------------------------------------------------


def _scale_down_to_one(busy_zone: str, idle_zone: str) -> list[Decision]:
    """Two ready workers, load for one, ticks at 0 s, 299 s and 300 s."""
    cfg = config(min_workers=1, target=8, stabilisation_s=300)
    workers = [spot("busy", busy_zone, load=3), spot("idle", idle_zone)]
    state, previous, out = PolicyState({}, {}), None, []
    for tick, at in enumerate((0, 299, 300), start=1):
        step = plan(
            observe(at, workers, in_flight=3), cfg, state=state, previous=previous, tick=tick
        )
        state, previous = step.state, step.decision
        out.append(step.decision)
    return out


def test_scale_down_waits_for_the_window_then_drains_the_idle_worker_only() -> None:
    first, before, at_window = _scale_down_to_one(busy_zone="1", idle_zone="2")

    for decision in (first, before):
        assert decision.desired == 2
        assert decision.drain == [] and decision.delete == [] and decision.provision == []
        assert decision.codes == ["scale_down_pending"]
    assert at_window.desired == 1 and at_window.action == "scale_down"
    assert at_window.drain == ["idle"]
    assert at_window.delete == [] and at_window.provision == []
    assert at_window.codes == ["scale_down_after_window"]


def test_scale_down_drains_the_idle_worker_whatever_zone_it_is_in() -> None:
    *_, at_window = _scale_down_to_one(busy_zone="2", idle_zone="1")

    assert at_window.drain == ["idle"]


def _after_drain(at: float, draining: WorkerSignal) -> Decision:
    """The tick after `_scale_down_to_one` drained "idle": the monitor's target is 1."""
    workers = [spot("busy", "1", load=3), draining]
    cfg = config(min_workers=1, target=8)
    return plan(observe(at, workers, in_flight=3), cfg, state=target_state(1)).decision


def test_a_drained_worker_with_nothing_in_flight_is_deleted_next_tick() -> None:
    decision = _after_drain(310, spot("idle", "2", "draining", since=300))

    assert deleted(decision) == ["idle"] and delete_codes(decision) == ["delete_drained"]
    assert decision.drain == [] and decision.provision == []
    assert (decision.ready, decision.draining, decision.actual) == (1, 1, 1)


# (seconds after T0 of the tick, deleted?) for a worker that started draining at 300 s
# with 2 requests still in flight; drain_timeout_s is 300
DRAIN_DEADLINE: dict[str, tuple[float, bool]] = {
    "just after the drain started": (310, False),
    "a second before the deadline": (599, False),
    "at the deadline": (600, True),
    "long after the deadline": (5000, True),
}


@pytest.mark.parametrize("name", sorted(DRAIN_DEADLINE))
def test_a_busy_draining_worker_is_deleted_only_at_the_drain_deadline(name: str) -> None:
    at, gone = DRAIN_DEADLINE[name]
    decision = _after_drain(at, spot("idle", "2", "draining", load=2, since=300))

    assert deleted(decision) == (["idle"] if gone else [])
    assert delete_codes(decision) == (["delete_drain_deadline"] if gone else [])
    assert decision.provision == []


def test_a_replacement_still_provisioning_does_not_let_a_ready_worker_drain() -> None:
    """Swapping on-demand back for spot: the on-demand worker leaves only once spot is ready."""
    cfg = config(min_workers=2, max_workers=4, target=8)
    coming = [spot("s1", "1"), od("o1"), spot("s2", "2", "provisioning", since=5)]

    waiting = plan(observe(10, coming), cfg, state=target_state(2)).decision
    assert (waiting.spot_target, waiting.on_demand_target) == (2, 0)
    assert waiting.drain == [] and waiting.delete == [] and waiting.provision == []
    assert waiting.ready == 2

    arrived = [spot("s1", "1"), od("o1"), spot("s2", "2", since=60)]
    swap = plan(observe(60, arrived), cfg, state=target_state(2), previous=waiting).decision
    assert swap.drain == ["o1"] and swap.delete == [] and swap.provision == []

    gone = [spot("s1", "1"), od("o1", "draining", since=60), spot("s2", "2", since=60)]
    after = plan(observe(70, gone), cfg, state=target_state(2), previous=swap).decision
    assert deleted(after) == ["o1"] and delete_codes(after) == ["delete_drained"]
    assert after.ready == 2 and after.provision == []


def test_spot_wanted_back_is_asked_for_before_on_demand_drains() -> None:
    """Spot is healthy, so on-demand should go: but only after a spot replacement exists."""
    cfg = config(min_workers=2, max_workers=4, target=8)
    decision = plan(observe(0, [spot("s1", "1"), od("o1")]), cfg, state=target_state(2)).decision

    assert decision.drain == []
    assert provisioned(decision) and sum(provisioned(decision).values()) == 1
    assert decision.action == "replace"


# --- eviction -------------------------------------------------------------------------


def _eviction_tick(at: float, previous: Decision | None = None) -> Decision:
    cfg = config(min_workers=3, max_workers=6, target=8)
    workers = [
        spot("s1", "1"),
        spot("s2", "2"),
        evicted("s3", "3", notice_at=0, deadline=30),
    ]
    if at > 0:  # the replacement asked for in the first tick is on its way
        workers.append(spot("s4", "1", "provisioning", since=at - 1))
    return plan(
        observe(at, workers, evictions=[EvictionSignal("3", T0)]),
        cfg,
        state=target_state(3),
        previous=previous,
        tick=1 + int(at),
    ).decision


def test_an_evicted_worker_is_replaced_at_once_in_another_zone() -> None:
    decision = _eviction_tick(0)

    assert decision.actual == 2 and decision.desired == 3
    assert decision.evicting == ["s3"]
    assert sum(r.count for r in decision.provision) == 1
    assert set(provisioned(decision)) <= {"1", "2"}, decision.provision
    assert decision.per_zone["3"] == 0
    assert decision.delete == [] and decision.drain == []


# (seconds after the notice, deleted?) for a notice with NotBefore at 30 s, grace 60 s
EVICTION_DEADLINE: dict[str, tuple[float, bool]] = {
    "before NotBefore": (10, False),
    "after NotBefore, inside the grace": (89, False),
    "at NotBefore plus the grace": (90, True),
    "long after": (1000, True),
}


@pytest.mark.parametrize("name", sorted(EVICTION_DEADLINE))
def test_an_evicted_worker_is_left_to_the_platform_until_its_grace_runs_out(name: str) -> None:
    at, gone = EVICTION_DEADLINE[name]
    decision = _eviction_tick(at)

    assert deleted(decision) == (["s3"] if gone else [])
    assert delete_codes(decision) == (["delete_evicted_overdue"] if gone else [])
    assert decision.provision == []  # the replacement is already provisioning


def test_an_eviction_is_news_once() -> None:
    first = _eviction_tick(0)
    second = _eviction_tick(5, previous=first)

    assert first.new_evictions == ["s3"]
    assert second.new_evictions == [] and second.evicting == ["s3"]


# --- instances that never came up, or failed ----------------------------------------------


# (seconds the worker has been provisioning, deleted?) with provision_timeout_s 900
PROVISION_TIMEOUT: dict[str, tuple[float, bool]] = {
    "still booting": (899, False),
    "at the timeout": (900, True),
    "well past it": (4000, True),
}


@pytest.mark.parametrize("name", sorted(PROVISION_TIMEOUT))
def test_a_worker_that_never_becomes_ready_is_deleted_and_replaced(name: str) -> None:
    age, gone = PROVISION_TIMEOUT[name]
    workers = [spot("s1", "1"), spot("p2", "2", "provisioning", since=0)]

    decision = plan(observe(age, workers), config(min_workers=2), state=target_state(2)).decision

    if gone:
        assert deleted(decision) == ["p2"]
        assert delete_codes(decision) == ["delete_provision_timeout"]
        assert sum(r.count for r in decision.provision) == 1
    else:
        assert decision.delete == [] and decision.provision == []


def test_a_failed_instance_is_deleted() -> None:
    decision = plan(
        observe(0, [spot("s1", "1")], failed_instances=("vm-9",)),
        config(min_workers=1),
        state=target_state(1),
    ).decision

    assert deleted(decision) == ["vm-9"]
    assert delete_codes(decision) == ["delete_instance_failed"]
    assert decision.provision == []


def test_a_failed_instance_the_registry_knew_is_deleted_and_replaced() -> None:
    workers = [spot("s1", "1"), spot("p2", "2", "provisioning", since=0)]
    decision = plan(
        observe(30, workers, failed_instances=("p2",)),
        config(min_workers=2),
        state=target_state(2),
    ).decision

    assert deleted(decision) == ["p2"]
    assert delete_codes(decision) == ["delete_instance_failed"]
    assert sum(r.count for r in decision.provision) == 1


def test_a_failed_instance_past_its_provision_timeout_is_deleted_once() -> None:
    workers = [spot("s1", "1"), spot("p2", "2", "provisioning", since=0)]
    decision = plan(
        observe(1000, workers, failed_instances=("p2",)),
        config(min_workers=2),
        state=target_state(2),
    ).decision

    assert deleted(decision) == ["p2"]


# --- spot refused ------------------------------------------------------------------------


def test_spot_refused_everywhere_provisions_on_demand_instead() -> None:
    refusal = CapacityFailure(SPOT, None, "sku_not_available", T0 - 10)
    decision = plan(observe(0, [], failures=[refusal]), config(min_workers=2)).decision

    assert decision.provision == [ProvisionRequest(POOL, ON_DEMAND, None, 2)]
    assert (decision.spot_target, decision.on_demand_target) == (0, 2)
    assert decision.codes == ["raised_to_min", "spot_refused_all_zones"]


# (refused zones, evicting zones, zones new spot may land in) for an empty pool of 2
PLACEMENT: dict[str, tuple[list[str], list[str], set[str]]] = {
    "nothing wrong": ([], [], {"1", "2"}),
    "zone 1 refused spot": (["1"], [], {"2", "3"}),
    "zone 2 just evicted": ([], ["2"], {"1", "3"}),
    "zone 1 refused, zone 3 evicted": (["1"], ["3"], {"2"}),
}


@pytest.mark.parametrize("name", sorted(PLACEMENT))
def test_new_spot_avoids_zones_that_refused_or_evicted_recently(name: str) -> None:
    refused, evicting, allowed = PLACEMENT[name]
    observation = observe(
        100,
        [],
        failures=[CapacityFailure(SPOT, z, "sku_not_available", T0 + 50) for z in refused],
        evictions=[EvictionSignal(z, T0 + 60) for z in evicting],
    )

    decision = plan(observation, config(min_workers=2)).decision

    assert sum(provisioned(decision).values()) == 2
    assert set(provisioned(decision)) <= allowed, decision.provision
    assert provisioned(decision, ON_DEMAND) == Counter()


# --- dry run, determinism, state -----------------------------------------------------------


def test_dry_run_still_lists_every_action() -> None:
    live = plan(observe(0, []), config(min_workers=2)).decision
    dry = plan(observe(0, []), config(min_workers=2, dry_run=True)).decision

    assert dry.dry_run is True and live.dry_run is False
    assert dry.provision == live.provision and dry.provision
    assert replace(dry, dry_run=False) == live


def _busy_observation(at: float) -> PoolObservation:
    workers = [
        spot("s1", "1", load=3),
        spot("s2", "2"),
        evicted("s3", "3", notice_at=at - 5, deadline=at + 25),
        od("o1", "draining", since=at - 400, load=1),
        spot("p4", "2", "provisioning", since=at - 2000),
    ]
    return observe(
        at,
        workers,
        in_flight=3,
        evictions=[EvictionSignal("3", T0 + at - 5)],
        failures=[CapacityFailure(SPOT, "1", "sku_not_available", T0 + at - 30)],
        failed_instances=("vm-x",),
    )


def test_the_same_inputs_give_the_same_decision() -> None:
    cfg = config(min_workers=1)
    one = plan(_busy_observation(0), cfg, tick=7)
    two = plan(_busy_observation(0), cfg, tick=7)

    assert one.decision.to_dict() == two.decision.to_dict()
    assert one.state == two.state
    round_tripped = Decision.from_dict(json.loads(json.dumps(one.decision.to_dict())))
    assert round_tripped == one.decision


def test_the_policy_state_survives_json_to_the_same_next_plan() -> None:
    cfg = config(min_workers=1, target=8, stabilisation_s=300)
    workers = [spot("busy", "1", load=3), spot("idle", "2")]
    first = plan(observe(0, workers, in_flight=3), cfg)
    assert first.state.autoscaler.get("lower_since") == T0  # something worth carrying

    carried = PolicyState.from_dict(json.loads(json.dumps(first.state.to_dict())))
    assert carried == first.state
    for at in (100, 300):
        direct = plan(observe(at, workers, in_flight=3), cfg, state=first.state, tick=2)
        revived = plan(observe(at, workers, in_flight=3), cfg, state=carried, tick=2)
        assert direct.decision.to_dict() == revived.decision.to_dict()
        assert direct.state == revived.state
    assert revived.decision.drain == ["idle"]


def test_an_observation_that_crossed_the_boundary_plans_the_same() -> None:
    cfg = config(min_workers=1)
    observation = _busy_observation(0)
    wire = PoolObservation.from_dict(json.loads(json.dumps(observation.to_dict())))

    assert plan(wire, cfg).decision.to_dict() == plan(observation, cfg).decision.to_dict()


# --- the reason an operator reads -------------------------------------------------------


def test_reason_joins_the_sizing_the_mix_and_every_action() -> None:
    decision = plan(_busy_observation(0), config(min_workers=1)).decision
    parts = decision.reason.split("; ")

    # the autoscaler's why; load 4: the engines report 4 running though this gateway sees 3
    assert parts[0].startswith("holding 3: load 4 needs 1"), parts
    assert parts[1].startswith("spot ")  # the mix's head: spot a->b, on-demand c->d
    acted = [p for p in parts if p.startswith(("provision ", "drain ", "delete "))]
    expected = [f"delete {d.worker_id} ({d.why})" for d in decision.delete]
    expected += [f"drain {w}" for w in decision.drain]
    expected += [f"provision {r.count} spot zone {r.zone}" for r in decision.provision]
    assert sorted(acted) == sorted(expected) and acted
    # each deletion's reason says what an operator needs: what is still in flight, how long
    assert whys(decision) == {
        "o1": "drain deadline (1 still in flight)",
        "p4": "not ready after 900s",
        "vm-x": "instance failed",
    }
    assert "eviction notice s3" in parts
    assert decision.codes == [
        "scale_down_pending",
        "spot_refused",
        "delete_drain_deadline",
        "delete_provision_timeout",
        "delete_instance_failed",
    ]


def test_reason_names_zone_and_count_of_each_provision() -> None:
    decision = plan(
        observe(0, [spot("s1", "1")], in_flight=12), config(min_workers=1, target=4)
    ).decision

    assert decision.provision == [
        ProvisionRequest(POOL, SPOT, "2", 1),
        ProvisionRequest(POOL, SPOT, "3", 1),
    ]
    assert decision.codes == ["scale_up_for_load"]
    assert "provision 1 spot zone 2" in decision.reason
    assert "provision 1 spot zone 3" in decision.reason


def test_the_readme_why_example_reads_as_shown() -> None:
    """README's custom status example: an eviction notice, its replacement asked for at once."""
    readme = README.read_text(encoding="utf-8")
    shown = re.search(r'"why": "([^"]*)"', readme)
    assert shown, "README no longer shows a `why` example"
    workers = [
        WorkerSignal(
            "default-w1", SPOT, "1", "draining", since=T0, evicting=True, deadline=T0 + 30
        ),
        WorkerSignal("default-w2", SPOT, "2", "ready", since=T0 - 600),
    ]
    observation = PoolObservation(
        signals=PoolSignals.build(
            "default", T0, workers=workers, evictions=[EvictionSignal("1", T0)]
        )
    )
    before = Decision("default", 8, "noop", "", T0 - 2, desired=2, actual=2, ready=2)

    decision = plan_tick(
        observation, config(min_workers=2), PolicyState({"target": 2}, {}), before, 9
    ).decision

    assert decision.reason == shown[1]
    assert (decision.action, decision.desired, decision.actual) == ("scale_up", 2, 1)
    assert decision.provision == [ProvisionRequest("default", SPOT, "3", 1)]
    assert decision.codes == ["steady"]


def test_every_delete_code_is_documented() -> None:
    assert all(f"`{code}`" in (planner.__doc__ or "") for code in DELETE_CODES)


# --- the decision's JSON: custom status, journal, orchestration history ------------------

DECISION_JSON = {
    "pool": "default",
    "tick": 9,
    "action": "scale_up",
    "reason": "steady: load 0 fits 2; spot 1->2, on-demand 0->0; provision 1 spot zone 3",
    "observed_at": T0,
    "desired": 2,
    "actual": 1,
    "ready": 1,
    "draining": 1,
    "provisioning": 0,
    "gone": 0,
    "load": 0.0,
    "spot_target": 2,
    "on_demand_target": 0,
    "per_zone": {"1": 0, "2": 1, "3": 1},
    "provision": [{"priority": "spot", "zone": "3", "count": 1, "pool": "default"}],
    "drain": ["default-w4"],
    "delete": [{"worker_id": "default-w3", "why": "drained"}],
    "dry_run": False,
    "expired": [],
    "evicting": ["default-w1"],
    "new_evictions": ["default-w1"],
    "changes": ["eviction notice default-w1"],
    "codes": ["steady", "delete_drained"],
}
DECISION = Decision(
    pool="default",
    tick=9,
    action="scale_up",
    reason="steady: load 0 fits 2; spot 1->2, on-demand 0->0; provision 1 spot zone 3",
    observed_at=T0,
    desired=2,
    actual=1,
    ready=1,
    draining=1,
    spot_target=2,
    per_zone={"1": 0, "2": 1, "3": 1},
    provision=[ProvisionRequest("default", SPOT, "3", 1)],
    drain=["default-w4"],
    delete=[DeleteRequest("default-w3", "drained")],
    evicting=["default-w1"],
    new_evictions=["default-w1"],
    changes=["eviction notice default-w1"],
    codes=["steady", "delete_drained"],
)


def test_decision_json_keeps_its_shape() -> None:
    """Same keys in the same order as the monitor has always written, plus `codes`."""
    assert json.dumps(DECISION.to_dict()) == json.dumps(DECISION_JSON)
    assert Decision.from_dict(json.loads(json.dumps(DECISION_JSON))) == DECISION


def test_decision_json_written_before_codes_still_loads() -> None:
    old = {k: v for k, v in DECISION_JSON.items() if k != "codes"}
    assert Decision.from_dict(old) == replace(DECISION, codes=[])
