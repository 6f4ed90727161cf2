"""The on-demand-only, spot-only and spot-hedge mixes: what each runs where, and what it drains.

Scenarios are hand-built signals with the plan worked out by hand (zones are
filled lightest first, ties to the lower zone, cooling zones last, refused
ones never while another is left). Each policy also goes through `plan_tick`
by its registry name, and every name through `FleetPolicyConfig` and the
settings, so a name a simulator or an operator writes works end to end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from spotgate.fleet import capacity_mix
from spotgate.fleet.autoscaler import AutoscalerConfig
from spotgate.fleet.capacity_mix import (
    CODES,
    ON_DEMAND_COVERS_GAP,
    OVERPROVISION_HEDGE,
    RELEASING_SPOT,
    SPOT_REFUSED_NO_FALLBACK,
    CapacityMix,
    CapacityMixConfig,
    CapacityMixState,
    SpotFirst,
)
from spotgate.fleet.capacity_mixes import HEDGE_SPOT_DEFAULT, OnDemandOnly, SpotHedge, SpotOnly
from spotgate.fleet.capacity_plan import CapacityPlan
from spotgate.fleet.compute import ProvisionRequest
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.planner import DELETE_NOT_NEEDED, PolicyState, TickPlan, plan_tick
from spotgate.fleet.signals import (
    ON_DEMAND,
    SPOT,
    CapacityFailure,
    EvictionSignal,
    PoolSignals,
    WorkerSignal,
)
from spotgate.settings import Settings

T0 = 1_700_000_000.0
POOL = "pool-a"
CONFIG = CapacityMixConfig(
    zones=("1", "2", "3"),
    spot_failure_window_s=600,
    eviction_window_s=600,
    eviction_burst_threshold=3,
    overprovision_eviction_threshold=3,
    overprovision_spot=0,
    spot_healthy_cooldown_s=900,
    zone_cooldown_s=900,
    spot_ready_cooldown_s=120,
)
NEW_CODES = {RELEASING_SPOT, SPOT_REFUSED_NO_FALLBACK, ON_DEMAND_COVERS_GAP, OVERPROVISION_HEDGE}


def spot(wid: str, zone: str, state: str = "ready", load: float = 0.0) -> WorkerSignal:
    return WorkerSignal(wid, SPOT, zone, state, running=load, since=T0)


def od(wid: str, state: str = "ready", load: float = 0.0) -> WorkerSignal:
    return WorkerSignal(wid, ON_DEMAND, None, state, running=load, since=T0)


def preempted(wid: str, zone: str) -> WorkerSignal:
    """A spot worker with an eviction notice: draining, no longer live."""
    return WorkerSignal(wid, SPOT, zone, "draining", since=T0, evicting=True, deadline=T0 + 200)


def refused(zone: str | None, at: float) -> CapacityFailure:
    return CapacityFailure(SPOT, zone, "SkuNotAvailable", T0 + at)


def evicted(zone: str, at: float) -> EvictionSignal:
    return EvictionSignal(zone, T0 + at)


REFUSED_EVERYWHERE = [refused("1", 50), refused("2", 60), refused("3", 70)]


@dataclass
class Case:
    policy: str
    desired: int
    workers: list[WorkerSignal]
    expect: dict[str, object]
    at: float = 0.0
    evictions: list[EvictionSignal] = field(default_factory=list)
    failures: list[CapacityFailure] = field(default_factory=list)
    state: CapacityMixState | None = None
    config: CapacityMixConfig = CONFIG


def signals_of(case: Case) -> PoolSignals:
    return PoolSignals.build(
        POOL,
        T0 + case.at,
        workers=case.workers,
        evictions=case.evictions,
        capacity_failures=case.failures,
    )


def decide(case: Case) -> tuple[CapacityPlan, CapacityMixState]:
    mix = CapacityMix.make(case.policy, case.config)
    return mix.decide(case.desired, signals_of(case), case.state)


NO_ZONES = {"1": 0, "2": 0, "3": 0}

ON_DEMAND_ONLY: dict[str, Case] = {
    "an empty pool is all on-demand": Case(
        "on-demand-only",
        3,
        [],
        {
            "op": "scale_up",
            "spot_target": 0,
            "on_demand_target": 3,
            "per_zone": NO_ZONES,
            "drain": [],
            "codes": [],
        },
    ),
    "spot refusals and evictions change nothing": Case(
        "on-demand-only",
        2,
        [od("o1"), od("o2")],
        {"op": "noop", "spot_target": 0, "on_demand_target": 2, "drain": [], "codes": []},
        at=100,
        evictions=[evicted("1", 40), evicted("1", 50), evicted("2", 60)],
        failures=REFUSED_EVERYWHERE,
    ),
    "switching from spot: on-demand first, no spot drained yet": Case(
        "on-demand-only",
        2,
        [spot("s1", "1"), spot("s2", "2")],
        {
            "op": "replace",
            "spot_target": 0,
            "on_demand_target": 2,
            "drain": [],
            "codes": ["releasing_spot"],
        },
    ),
    "on-demand still provisioning: ready spot stays, provisioning spot goes": Case(
        "on-demand-only",
        2,
        [
            spot("s1", "1"),
            spot("s2", "2"),
            spot("s3", "3", "provisioning"),
            od("o1", "provisioning"),
            od("o2", "provisioning"),
        ],
        {"op": "scale_down", "on_demand_target": 2, "drain": ["s3"], "codes": ["releasing_spot"]},
    ),
    "one on-demand ready: one spot goes, the idle one": Case(
        "on-demand-only",
        2,
        [spot("s1", "1", load=2), spot("s2", "2"), od("o1"), od("o2", "provisioning")],
        {"op": "scale_down", "drain": ["s2"], "codes": ["releasing_spot"]},
    ),
    "all on-demand ready: every spot worker goes": Case(
        "on-demand-only",
        2,
        [spot("s1", "1", load=2), spot("s2", "2"), od("o1"), od("o2")],
        {"op": "scale_down", "drain": ["s1", "s2"], "codes": ["releasing_spot"]},
    ),
}

SPOT_ONLY: dict[str, Case] = {
    "spot spread over the zones": Case(
        "spot-only",
        3,
        [],
        {
            "op": "scale_up",
            "spot_target": 3,
            "on_demand_target": 0,
            "per_zone": {"1": 1, "2": 1, "3": 1},
            "codes": [],
        },
    ),
    "base on-demand is kept": Case(
        "spot-only",
        3,
        [],
        {"spot_target": 2, "on_demand_target": 1, "codes": []},
        config=CapacityMixConfig(base_on_demand=1),
    ),
    "refused in every zone: the pool runs short, no on-demand": Case(
        "spot-only",
        3,
        [spot("s1", "1")],
        {
            "op": "noop",
            "spot_target": 1,
            "on_demand_target": 0,
            "per_zone": {"1": 1, "2": 0, "3": 0},
            "drain": [],
            "codes": ["spot_refused_no_fallback"],
        },
        at=100,
        failures=REFUSED_EVERYWHERE,
    ),
    "refused in one zone: the others take the spot": Case(
        "spot-only",
        2,
        [],
        {
            "spot_target": 2,
            "on_demand_target": 0,
            "per_zone": {"1": 0, "2": 1, "3": 1},
            "codes": ["spot_refused"],
        },
        at=100,
        failures=[refused("1", 50)],
    ),
    "eviction burst: replacements away from the zone, no on-demand": Case(
        "spot-only",
        3,
        [preempted("s1", "1"), spot("s2", "2"), spot("s3", "3")],
        {
            "op": "scale_up",
            "spot_target": 3,
            "on_demand_target": 0,
            "per_zone": {"1": 0, "2": 2, "3": 1},
            "codes": [],
        },
        at=100,
        evictions=[evicted("1", 40), evicted("1", 50), evicted("1", -100)],
    ),
    "eviction risk with overprovision_spot set: extra spot, still no on-demand": Case(
        "spot-only",
        3,
        [preempted("s1", "1"), spot("s2", "2"), spot("s3", "3")],
        {
            "spot_target": 4,
            "on_demand_target": 0,
            "per_zone": {"1": 0, "2": 2, "3": 2},
            "codes": ["overprovision_for_risk"],
        },
        at=100,
        evictions=[evicted("1", 40), evicted("1", 50), evicted("1", -100)],
        config=CapacityMixConfig(overprovision_spot=1),
    ),
    "on-demand left by another mix goes once spot is ready in its place": Case(
        "spot-only",
        3,
        [spot("s1", "1"), od("o1"), od("o2")],
        {
            "op": "replace",
            "spot_target": 3,
            "on_demand_target": 0,
            "per_zone": {"1": 1, "2": 1, "3": 1},
            "drain": [],
            "codes": ["releasing_on_demand"],
        },
    ),
}

SPOT_HEDGE: dict[str, Case] = {
    "cold start: spot for the size plus a spare, on-demand for the spot not yet ready": Case(
        "spot-hedge",
        3,
        [],
        {
            "op": "scale_up",
            "spot_target": 4,
            "on_demand_target": 3,
            "per_zone": {"1": 2, "2": 1, "3": 1},
            "drain": [],
            "codes": ["on_demand_covers_gap", "overprovision_hedge"],
        },
    ),
    "healthy: one spare spot always, no on-demand": Case(
        "spot-hedge",
        3,
        [spot("s1", "1"), spot("s2", "2"), spot("s3", "3"), spot("s4", "1")],
        {
            "op": "noop",
            "spot_target": 4,
            "on_demand_target": 0,
            "per_zone": {"1": 2, "2": 1, "3": 1},
            "drain": [],
            "codes": ["overprovision_hedge"],
        },
    ),
    "one preemption: the spare absorbs it, its replacement avoids the zone": Case(
        "spot-hedge",
        3,
        [spot("s1", "1"), spot("s2", "2"), spot("s3", "3"), preempted("s4", "1")],
        {
            "op": "scale_up",
            "spot_target": 4,
            "on_demand_target": 0,
            "per_zone": {"1": 1, "2": 2, "3": 1},
            "codes": ["overprovision_hedge"],
        },
        at=100,
        evictions=[evicted("1", 90)],
    ),
    "two preemptions: on-demand for the gap at once, new spot away from the zone": Case(
        "spot-hedge",
        3,
        [spot("s1", "1"), preempted("s2", "2"), preempted("s3", "2"), spot("s4", "3")],
        {
            "op": "scale_up",
            "spot_target": 4,
            "on_demand_target": 1,
            "per_zone": {"1": 2, "2": 0, "3": 2},
            "codes": ["on_demand_covers_gap", "overprovision_hedge"],
        },
        at=100,
        evictions=[evicted("2", 90), evicted("2", 95)],
    ),
    "spot refused in every zone: spot kept as it is, on-demand fills the gap": Case(
        "spot-hedge",
        3,
        [spot("s1", "1")],
        {
            "op": "scale_up",
            "spot_target": 1,
            "on_demand_target": 2,
            "per_zone": {"1": 1, "2": 0, "3": 0},
            "codes": ["spot_refused_all_zones"],
        },
        at=100,
        failures=REFUSED_EVERYWHERE,
    ),
    "spot refused in one zone: the others take the spot and its spare": Case(
        "spot-hedge",
        2,
        [],
        {
            "spot_target": 3,
            "on_demand_target": 2,
            "per_zone": {"1": 0, "2": 2, "3": 1},
            "codes": ["spot_refused", "on_demand_covers_gap", "overprovision_hedge"],
        },
        at=100,
        failures=[refused("1", 50)],
    ),
    "overprovision_spot set: that many spare": Case(
        "spot-hedge",
        2,
        [spot("s1", "1"), spot("s2", "2"), spot("s3", "3"), spot("s4", "1")],
        {
            "op": "noop",
            "spot_target": 4,
            "on_demand_target": 0,
            "per_zone": {"1": 2, "2": 1, "3": 1},
            "codes": ["overprovision_hedge"],
        },
        config=CapacityMixConfig(overprovision_spot=2),
    ),
    "base on-demand: the fallback covers only the spot part": Case(
        "spot-hedge",
        3,
        [spot("s1", "1"), od("o1")],
        {
            "spot_target": 3,
            "on_demand_target": 2,
            "per_zone": {"1": 1, "2": 1, "3": 1},
            "codes": ["on_demand_covers_gap", "overprovision_hedge"],
        },
        config=CapacityMixConfig(base_on_demand=1),
    ),
    "scale to zero: no spare, no on-demand, even in the cool-down": Case(
        "spot-hedge",
        0,
        [spot("s1", "1"), od("o1")],
        {
            "op": "scale_down",
            "spot_target": 0,
            "on_demand_target": 0,
            "drain": ["o1", "s1"],
            "codes": ["releasing_on_demand"],
        },
        at=10,
        state=CapacityMixState(last_trouble_at=T0),
    ),
}

CASES = {
    f"{case.policy}: {name}": case
    for cases in (ON_DEMAND_ONLY, SPOT_ONLY, SPOT_HEDGE)
    for name, case in cases.items()
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scenario(name: str) -> None:
    plan, _ = decide(CASES[name])
    seen = plan.to_dict()
    assert {k: seen[k] for k in CASES[name].expect} == CASES[name].expect, plan.reason


@pytest.mark.parametrize("name", sorted(CASES))
def test_reason_has_the_head_then_one_part_per_code_and_round_trips(name: str) -> None:
    case = CASES[name]
    plan, state = decide(case)
    live = [w for w in case.workers if w.live]
    spot_have = sum(w.priority == SPOT for w in live)
    head = f"spot {spot_have}->{plan.spot_target}, on-demand {len(live) - spot_have}->"
    parts = plan.reason.split("; ")
    assert parts[0] == f"{head}{plan.on_demand_target}"
    assert len(parts) == len(plan.codes) + 1, plan.reason
    assert set(plan.codes) <= set(CODES)
    assert CapacityPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    mix = CapacityMix.make(case.policy, case.config)
    assert mix.load_state(json.loads(json.dumps(mix.dump_state(state)))) == state
    assert decide(case) == (plan, state)


def test_reason_text_for_the_new_codes() -> None:
    texts = {
        "on-demand-only: switching from spot: on-demand first, no spot drained yet": (
            "on-demand only, releasing 2 spot"
        ),
        "spot-only: refused in every zone: the pool runs short, no on-demand": (
            "spot refused in all zones, 2 short (no on-demand fallback)"
        ),
        "spot-hedge: two preemptions: on-demand for the gap at once, new spot away from the zone": (
            "spot ready 2 of 3, on-demand covers 1"
        ),
        "spot-hedge: healthy: one spare spot always, no on-demand": "+1 spot hedge",
        "spot-hedge: spot refused in every zone: spot kept as it is, on-demand fills the gap": (
            "spot refused in all zones, on-demand fills 2"
        ),
    }
    for name, text in texts.items():
        plan, _ = decide(CASES[name])
        assert text in plan.reason.split("; "), plan.reason


def test_every_new_code_is_documented_and_seen_in_a_scenario() -> None:
    seen = {code for case in CASES.values() for code in decide(case)[0].codes}
    assert seen >= NEW_CODES
    assert set(CODES) >= NEW_CODES
    assert all(f"`{code}`" in (capacity_mix.__doc__ or "") for code in CODES)


# --- on-demand-only ---------------------------------------------------------------------


def test_on_demand_only_drains_spot_only_as_on_demand_becomes_ready() -> None:
    """Make-before-break: the pool never has fewer ready workers than it is asked for."""
    mix = OnDemandOnly(CONFIG)
    spot_workers = [spot("s1", "1"), spot("s2", "2", load=1)]
    drained = []
    for on_demand in (
        [od("o1", "provisioning"), od("o2", "provisioning")],
        [od("o1"), od("o2", "provisioning")],
        [od("o1"), od("o2")],
    ):
        signals = PoolSignals.build(POOL, T0, workers=spot_workers + on_demand)
        plan, _ = mix.decide(2, signals)
        drained.append(plan.drain)
        ready_after = sum(
            w.state == "ready" and w.worker_id not in plan.drain for w in signals.workers
        )
        assert ready_after >= 2
    assert drained == [[], ["s1"], ["s1", "s2"]]


# --- spot-only --------------------------------------------------------------------------


@pytest.mark.parametrize("desired", [0, 1, 3, 6])
def test_spot_only_never_asks_for_on_demand(desired: int) -> None:
    """Refusals, bursts, a pool running short: on-demand stays at the base, whatever happens."""
    for base in (0, 1):
        config = CapacityMixConfig(base_on_demand=base, overprovision_spot=1)
        for workers, evictions, failures in [
            ([], [], REFUSED_EVERYWHERE),
            ([spot("s1", "1")], [], [refused(None, 90)]),
            ([preempted("s1", "1"), spot("s2", "2")], [evicted("1", 40)] * 5, []),
            ([spot("s1", "1"), od("o1"), od("o2")], [evicted("2", 95)] * 3, REFUSED_EVERYWHERE),
        ]:
            signals = PoolSignals.build(
                POOL, T0 + 100, workers=workers, evictions=evictions, capacity_failures=failures
            )
            plan, _ = SpotOnly(config).decide(desired, signals)
            assert plan.on_demand_target == min(base, desired), plan.reason


def test_spot_only_asks_again_once_the_refusals_age_out() -> None:
    """Refused everywhere: no zone is asked again until its refusal leaves the 600 s window."""
    mix = SpotOnly(CONFIG)
    timeline = []
    for at in (100, 660, 671):
        signals = PoolSignals.build(
            POOL, T0 + at, workers=[spot("s1", "1")], capacity_failures=REFUSED_EVERYWHERE
        )
        plan, _ = mix.decide(3, signals)
        timeline.append((plan.spot_target, plan.on_demand_target, plan.per_zone, plan.codes))
    assert timeline == [
        (1, 0, {"1": 1, "2": 0, "3": 0}, ["spot_refused_no_fallback"]),
        # zone 1's refusal (at 50) is past the window, 2 and 3 are not: both new go to zone 1
        (3, 0, {"1": 3, "2": 0, "3": 0}, ["spot_refused"]),
        (3, 0, {"1": 1, "2": 1, "3": 1}, []),
    ]


# --- spot-hedge -------------------------------------------------------------------------


def test_spot_hedge_defaults_to_one_spare_and_takes_a_configured_number() -> None:
    assert HEDGE_SPOT_DEFAULT == 1
    assert SpotHedge(CapacityMixConfig()).spare == 1
    assert SpotHedge(CapacityMixConfig(overprovision_spot=3)).spare == 3
    assert CapacityMixConfig().spot_ready_cooldown_s == 120.0


def test_spot_hedge_preemption_gap_then_release_after_the_cool_down() -> None:
    """Two of four spot preempted in zone 1 at 95 s: on-demand covers desired minus ready spot
    at once; the replacements come up in zones 2 and 3; the on-demand stays 120 s after the
    gap last needed it (100 s), and goes at 220 s though the spare is still provisioning."""
    mix = SpotHedge(CONFIG)
    zone_1_lost = [evicted("1", 95), evicted("1", 96)]
    back = [spot("s2", "2"), spot("s3", "3"), spot("s5", "2"), spot("s6", "3", "provisioning")]
    state: CapacityMixState | None = None
    timeline = []
    for at, workers in [
        (0, [spot("s1", "1"), spot("s2", "2"), spot("s3", "3"), spot("s4", "1")]),
        (100, [preempted("s1", "1"), spot("s2", "2"), spot("s3", "3"), preempted("s4", "1")]),
        (160, [*back, od("o1")]),
        (219, [*back, od("o1")]),
        (220, [*back, od("o1")]),
    ]:
        signals = PoolSignals.build(
            POOL, T0 + at, workers=workers, evictions=zone_1_lost if at else ()
        )
        plan, state = mix.decide(3, signals, state)
        timeline.append((at, plan.op, plan.spot_target, plan.on_demand_target, plan.drain))
        assert plan.codes[-1] == "overprovision_hedge"
        if at == 100:
            assert plan.per_zone == {"1": 0, "2": 2, "3": 2}
            assert plan.codes == ["on_demand_covers_gap", "overprovision_hedge"]
        if at in (160, 219):
            assert plan.codes == ["on_demand_kept", "overprovision_hedge"]
        if at == 220:
            assert plan.codes == ["releasing_on_demand", "overprovision_hedge"]
    assert timeline == [
        (0, "noop", 4, 0, []),
        (100, "scale_up", 4, 1, []),  # 3 wanted - 2 ready = 1 on-demand
        (160, "noop", 4, 1, []),
        (219, "noop", 4, 1, []),
        (220, "scale_down", 4, 0, ["o1"]),
    ]
    assert state == CapacityMixState(last_trouble_at=T0 + 100)
    left = decide(Case("spot-hedge", 3, [*back, od("o1")], {}, at=160, state=state))[0]
    assert "spot ready again, on-demand kept 60s more" in left.reason


def test_spot_hedge_cool_down_is_configurable_and_zero_releases_at_once() -> None:
    """With no cool-down the on-demand goes as soon as spot is ready again, as SkyServe does."""
    back = [spot("s2", "2"), spot("s3", "3"), spot("s5", "2"), spot("s6", "3", "provisioning")]
    signals = PoolSignals.build(POOL, T0 + 160, workers=[*back, od("o1")])
    state = CapacityMixState(last_trouble_at=T0 + 100)
    for cooldown, on_demand, drain in [(0.0, 0, ["o1"]), (30.0, 0, ["o1"]), (61.0, 1, [])]:
        config = CapacityMixConfig(spot_ready_cooldown_s=cooldown)
        plan, _ = SpotHedge(config).decide(3, signals, state)
        assert (plan.on_demand_target, plan.drain) == (on_demand, drain), cooldown


def test_spot_hedge_reuses_held_on_demand_when_spot_is_lost_again_in_the_cool_down() -> None:
    """No flapping: a second loss inside the cool-down is covered by the on-demand still
    held (no new on-demand request), and the cool-down starts again from it."""
    workers = [
        spot("s2", "2"),
        spot("s3", "3"),
        preempted("s5", "2"),
        spot("s6", "3", "provisioning"),
        od("o1"),
    ]
    signals = PoolSignals.build(POOL, T0 + 170, workers=workers, evictions=[evicted("2", 168)])
    plan, state = SpotHedge(CONFIG).decide(3, signals, CapacityMixState(T0 + 100))
    assert (plan.op, plan.spot_target, plan.on_demand_target) == ("scale_up", 4, 1)
    assert plan.per_zone == {"1": 1, "2": 1, "3": 2}
    assert plan.codes == ["on_demand_covers_gap", "overprovision_hedge"]
    assert state == CapacityMixState(last_trouble_at=T0 + 170)


def test_spot_hedge_shrinks_on_demand_to_the_gap_only_after_the_cool_down() -> None:
    """Three on-demand stood in for three lost spot; two spot come back (gap 1): the extra two
    on-demand stay for the cool-down, then go make-before-break, leaving one for the gap."""
    workers = [
        spot("s1", "1"),
        spot("s2", "2"),
        spot("s3", "3", "provisioning"),
        spot("s4", "1", "provisioning"),
        od("o1"),
        od("o2", load=1),
        od("o3"),
    ]
    state = CapacityMixState(last_trouble_at=T0)
    plans = {}
    for at in (60, 120):
        signals = PoolSignals.build(POOL, T0 + at, workers=workers)
        plans[at], next_state = SpotHedge(CONFIG).decide(3, signals, state)
        assert next_state == state  # a gap smaller than the on-demand held renews nothing
    assert (plans[60].on_demand_target, plans[60].drain) == (3, [])
    assert plans[60].codes == ["on_demand_covers_gap", "on_demand_kept", "overprovision_hedge"]
    assert (plans[120].on_demand_target, plans[120].drain) == (1, ["o1", "o3"])
    assert plans[120].codes == [
        "on_demand_covers_gap",
        "releasing_on_demand",
        "overprovision_hedge",
    ]


# --- through the planner, by registry name ----------------------------------------------


def fixed(name: str, workers: int, mix: CapacityMixConfig = CONFIG) -> FleetPolicyConfig:
    return FleetPolicyConfig(capacity_mix=name, mix=mix).fixed_size(workers)


def observe(
    at: float,
    workers: list[WorkerSignal],
    *,
    evictions: list[EvictionSignal] | None = None,
    failures: list[CapacityFailure] | None = None,
) -> PoolObservation:
    signals = PoolSignals.build(
        POOL, T0 + at, workers=workers, evictions=evictions or (), capacity_failures=failures or ()
    )
    return PoolObservation(signals=signals)


def first_tick(observation: PoolObservation, config: FleetPolicyConfig) -> TickPlan:
    return plan_tick(observation, config, PolicyState({}, {}), None, 1)


def test_on_demand_only_through_the_planner() -> None:
    config = fixed("on-demand-only", 2)
    first = first_tick(observe(0, [spot("s1", "1"), spot("s2", "2")]), config)
    assert first.decision.provision == [ProvisionRequest(POOL, ON_DEMAND, None, 2)]
    assert first.decision.drain == [] and first.decision.delete == []
    assert (first.decision.spot_target, first.decision.on_demand_target) == (0, 2)
    assert "releasing_spot" in first.decision.codes

    workers = [spot("s1", "1"), spot("s2", "2"), od("o1"), od("o2")]
    second = plan_tick(observe(60, workers), config, first.state, first.decision, 2)
    assert second.decision.provision == []
    assert second.decision.drain == ["s1", "s2"]


def test_spot_only_through_the_planner() -> None:
    config = fixed("spot-only", 3)
    observation = observe(100, [spot("s1", "1")], failures=REFUSED_EVERYWHERE)
    tick = first_tick(observation, config)
    assert tick.decision.provision == []  # no zone left to ask, and never on-demand
    assert (tick.decision.spot_target, tick.decision.on_demand_target) == (1, 0)
    assert "spot_refused_no_fallback" in tick.decision.codes

    burst = [evicted("1", 40), evicted("1", 50), evicted("1", 60)]
    workers = [preempted("s1", "1"), spot("s2", "2"), spot("s3", "3")]
    tick = plan_tick(observe(100, workers, evictions=burst), config, tick.state, tick.decision, 2)
    assert tick.decision.provision == [ProvisionRequest(POOL, SPOT, "2", 1)]


def test_spot_hedge_through_the_planner_keeps_its_memory_across_ticks() -> None:
    config = fixed("spot-hedge", 3)
    tick = first_tick(observe(0, []), config)
    assert tick.decision.provision == [
        ProvisionRequest(POOL, SPOT, "1", 2),
        ProvisionRequest(POOL, SPOT, "2", 1),
        ProvisionRequest(POOL, SPOT, "3", 1),
        ProvisionRequest(POOL, ON_DEMAND, None, 3),
    ]
    assert tick.state.mix == {"last_trouble_at": T0}

    spot_ready = [spot("s1", "1"), spot("s2", "2"), spot("s3", "3"), spot("s4", "1")]
    on_demand = [od("o1"), od("o2", "provisioning"), od("o3", "provisioning")]
    tick = plan_tick(observe(60, spot_ready + on_demand), config, tick.state, tick.decision, 2)
    assert tick.decision.on_demand_target == 3 and tick.decision.drain == []
    assert "on_demand_kept" in tick.decision.codes

    tick = plan_tick(observe(120, spot_ready + on_demand), config, tick.state, tick.decision, 3)
    assert tick.decision.on_demand_target == 0
    assert tick.decision.drain == ["o1"]
    assert sorted(d.worker_id for d in tick.decision.delete) == ["o2", "o3"]
    assert DELETE_NOT_NEEDED in tick.decision.codes
    assert "releasing_on_demand" in tick.decision.codes


# --- the names, wherever spot-first can be named ----------------------------------------


def test_the_registry_has_every_mix() -> None:
    assert CapacityMix.names() == ["on-demand-only", "spot-first", "spot-hedge", "spot-only"]
    assert CapacityMix.default == "spot-first"
    kinds = {name: type(CapacityMix.make(name)) for name in CapacityMix.names()}
    assert kinds == {
        "on-demand-only": OnDemandOnly,
        "spot-first": SpotFirst,
        "spot-hedge": SpotHedge,
        "spot-only": SpotOnly,
    }


@pytest.mark.parametrize("name", CapacityMix.names())
def test_every_mix_name_round_trips_through_the_fleet_policy(name: str) -> None:
    mix = CapacityMixConfig(zones=("a", "b"), overprovision_spot=2, spot_ready_cooldown_s=30)
    config = FleetPolicyConfig(
        capacity_mix=name, mix=mix, autoscaling=AutoscalerConfig(max_workers=5)
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["capacity_mix"] == name
    assert data["mix"]["spot_ready_cooldown_s"] == 30
    assert FleetPolicyConfig.from_dict(data) == config


@pytest.mark.parametrize("name", CapacityMix.names())
def test_every_mix_name_is_selectable_per_pool_from_the_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {"gpu": {"capacity_mix": name, "mix": {"spot_ready_cooldown_s": 45}}}
    monkeypatch.setenv("SPOTGATE_POOL_POLICIES", json.dumps(overrides))
    settings = Settings()
    assert settings.fleet_policy("gpu").capacity_mix == name
    assert settings.fleet_policy("gpu").mix.spot_ready_cooldown_s == 45
    assert settings.fleet_policy("other").capacity_mix == "spot-first"


def test_an_unknown_mix_name_fails_at_start_and_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="on-demand-only, spot-first, spot-hedge, spot-only"):
        FleetPolicyConfig(capacity_mix="spot-hedging")
