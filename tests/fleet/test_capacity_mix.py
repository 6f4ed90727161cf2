"""The spot-first capacity mix, through named scenarios: what runs where, and what is drained."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spotgate.fleet import capacity_mix
from spotgate.fleet.capacity_mix import (
    CODES,
    CapacityMix,
    CapacityMixConfig,
    CapacityMixState,
    SpotFirst,
)
from spotgate.fleet.capacity_plan import CapacityPlan
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
CONFIG = CapacityMixConfig(
    zones=("1", "2", "3"),
    spot_failure_window_s=600,
    eviction_window_s=600,
    eviction_burst_threshold=3,
    overprovision_eviction_threshold=3,
    overprovision_spot=1,
    spot_healthy_cooldown_s=900,
    zone_cooldown_s=900,
)


def spot(wid: str, zone: str, state: str = "ready", load: float = 0.0) -> WorkerSignal:
    return WorkerSignal(wid, SPOT, zone, state, running=load)


def od(wid: str, state: str = "ready", load: float = 0.0) -> WorkerSignal:
    return WorkerSignal(wid, ON_DEMAND, "1", state, running=load)


def refused(zone: str | None, at: float) -> CapacityFailure:
    return CapacityFailure(SPOT, zone, "SkuNotAvailable", T0 + at)


@dataclass
class Case:
    desired: int
    workers: list[WorkerSignal]
    expect: dict[str, object]
    at: float = 0.0
    evictions: list[EvictionSignal] = field(default_factory=list)
    failures: list[CapacityFailure] = field(default_factory=list)
    state: CapacityMixState | None = None
    config: CapacityMixConfig = CONFIG


CASES: dict[str, Case] = {
    "spot first, spread over zones": Case(
        3,
        [],
        {
            "op": "scale_up",
            "spot_target": 3,
            "on_demand_target": 0,
            "per_zone": {"1": 1, "2": 1, "3": 1},
            "drain": [],
            "codes": [],
        },
    ),
    "base on-demand is kept under spot": Case(
        3,
        [],
        {"spot_target": 2, "on_demand_target": 1, "codes": []},
        config=CapacityMixConfig(base_on_demand=1),
    ),
    "spot refused everywhere: on-demand fills the gap": Case(
        3,
        [spot("s1", "1")],
        {
            "op": "scale_up",
            "spot_target": 1,
            "on_demand_target": 2,
            "drain": [],
            "codes": ["spot_refused_all_zones"],
        },
        at=100,
        failures=[refused("1", 50), refused("2", 60), refused("3", 70)],
    ),
    "spot refused in one zone: other zones take the spot": Case(
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
    "two zones refused, the third only cooling: spot goes to the cooling one": Case(
        2,
        [spot("s4", "3")],
        {
            "spot_target": 2,
            "on_demand_target": 0,
            "per_zone": {"1": 0, "2": 1, "3": 1},
            "codes": ["spot_refused"],
        },
        at=100,
        evictions=[EvictionSignal("2", T0)],
        failures=[refused("1", 50), refused("3", 60)],
    ),
    "refused in every zone, one also cooling: on-demand fills the gap": Case(
        2,
        [spot("s4", "3")],
        {
            "spot_target": 1,
            "on_demand_target": 1,
            "per_zone": {"1": 0, "2": 0, "3": 1},
            "codes": ["spot_refused_all_zones"],
        },
        at=100,
        evictions=[EvictionSignal("2", T0)],
        failures=[refused("1", 50), refused("2", 70), refused("3", 60)],
    ),
    "a zone not cooling is preferred to an emptier cooling one, never a refused one": Case(
        3,
        [spot("s1", "3"), spot("s2", "3")],
        {
            "spot_target": 3,
            "on_demand_target": 0,
            "per_zone": {"1": 0, "2": 0, "3": 3},
            "codes": ["spot_refused"],
        },
        at=100,
        evictions=[EvictionSignal("2", T0)],
        failures=[refused("1", 50)],
    ),
    "on-demand kept until spot is healthy for the cool-down": Case(
        3,
        [spot("s1", "1"), od("o1"), od("o2")],
        {
            "op": "noop",
            "spot_target": 1,
            "on_demand_target": 2,
            "drain": [],
            "codes": ["on_demand_kept"],
        },
        at=899,
        state=CapacityMixState(last_trouble_at=T0),
    ),
    "after the cool-down spot replaces on-demand, make before break": Case(
        3,
        [spot("s1", "1"), od("o1"), od("o2")],
        {
            "op": "replace",
            "spot_target": 3,
            "on_demand_target": 0,
            "drain": [],
            "codes": ["releasing_on_demand"],
        },
        at=900,
        state=CapacityMixState(last_trouble_at=T0),
    ),
    "replacement spot ready: on-demand drained first, even when spot is idler": Case(
        3,
        [spot("s1", "1"), spot("s2", "2"), spot("s3", "3"), od("o1", load=0), od("o2")],
        {
            "op": "scale_down",
            "spot_target": 3,
            "on_demand_target": 0,
            "drain": ["o1", "o2"],
            "codes": ["releasing_on_demand"],
        },
        at=1000,
        state=CapacityMixState(last_trouble_at=T0),
    ),
    "eviction burst: on-demand fallback plus spot overprovisioning away from the zone": Case(
        3,
        [spot("s1", "1", "draining"), spot("s2", "2"), spot("s3", "3")],
        {
            "op": "scale_up",
            "spot_target": 3,
            "on_demand_target": 1,
            "per_zone": {"1": 0, "2": 2, "3": 1},
            "codes": ["eviction_burst", "overprovision_for_risk"],
        },
        at=100,
        evictions=[
            EvictionSignal("1", T0 + 40),
            EvictionSignal("1", T0 + 50),
            EvictionSignal("1", T0 - 100),
        ],
    ),
    "zone cool-down: new spot avoids the zone that just evicted": Case(
        3,
        [spot("s1", "1")],
        {"per_zone": {"1": 2, "2": 0, "3": 1}, "codes": []},
        at=100,
        evictions=[EvictionSignal("2", T0)],
    ),
    "zone usable again after its cool-down": Case(
        3,
        [spot("s1", "1")],
        {"per_zone": {"1": 1, "2": 1, "3": 1}, "codes": []},
        at=900,
        evictions=[EvictionSignal("2", T0)],
    ),
    "scale-in drains the idle worker, never a busy one": Case(
        2,
        [spot("s1", "1", load=3), spot("s2", "1"), spot("s3", "2", load=1)],
        {"op": "scale_down", "spot_target": 2, "drain": ["s2"], "codes": []},
    ),
    "scale-in prefers on-demand while spot is healthy": Case(
        2,
        [spot("s1", "1", load=1), spot("s2", "2", load=1), od("o1", load=1)],
        {
            "op": "scale_down",
            "spot_target": 2,
            "on_demand_target": 0,
            "drain": ["o1"],
            "codes": ["releasing_on_demand"],
        },
        config=CapacityMixConfig(base_on_demand=0),
    ),
    "scale-in takes a provisioning worker before a ready one": Case(
        1,
        [spot("s1", "1"), spot("s2", "2", "provisioning")],
        {"op": "scale_down", "drain": ["s2"], "codes": []},
    ),
    "scale to zero drains everything": Case(
        0,
        [spot("s1", "1"), od("o1")],
        {
            "op": "scale_down",
            "spot_target": 0,
            "on_demand_target": 0,
            "drain": ["o1", "s1"],
            "codes": ["releasing_on_demand"],
        },
    ),
    "nothing to do": Case(
        2,
        [spot("s1", "1"), spot("s2", "2")],
        {"op": "noop", "drain": [], "codes": []},
    ),
}


def decide(case: Case) -> tuple[CapacityPlan, CapacityMixState]:
    signals = PoolSignals.build(
        "pool-a",
        T0 + case.at,
        workers=case.workers,
        evictions=case.evictions,
        capacity_failures=case.failures,
    )
    return CapacityMix.make("spot-first", case.config).decide(case.desired, signals, case.state)


@pytest.mark.parametrize("name", sorted(CASES))
def test_scenario(name: str) -> None:
    decision, _ = decide(CASES[name])
    seen = decision.to_dict()
    assert {k: seen[k] for k in CASES[name].expect} == CASES[name].expect, decision.reason


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trips_are_identical(name: str) -> None:
    case = CASES[name]
    decision, state = decide(case)
    assert CapacityPlan.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision
    policy = SpotFirst(case.config)
    assert policy.load_state(json.loads(json.dumps(policy.dump_state(state)))) == state
    assert decide(case) == (decision, state)


def test_every_code_is_documented_and_seen_in_a_scenario() -> None:
    seen = {code for name in CASES for code in decide(CASES[name])[0].codes}
    # the other mixes' own codes are seen in tests/fleet/test_capacity_mixes.py
    others = {
        capacity_mix.RELEASING_SPOT,
        capacity_mix.SPOT_REFUSED_NO_FALLBACK,
        capacity_mix.ON_DEMAND_COVERS_GAP,
        capacity_mix.OVERPROVISION_HEDGE,
    }
    assert seen == set(CODES) - others
    assert all(f"`{code}`" in (capacity_mix.__doc__ or "") for code in CODES)


def test_refusal_text_says_where_and_why_as_the_readme_shows() -> None:
    """The monitor's `why` while spot is refused: which zones, the cloud's reason, the fallback."""
    readme = README.read_text(encoding="utf-8")
    sku = "sku_not_available"
    one_zone = Case(2, [], {}, at=100, failures=[CapacityFailure(SPOT, "1", sku, T0 + 50)])
    every_zone = Case(
        2,
        [spot("s1", "1")],
        {},
        at=100,
        failures=[CapacityFailure(SPOT, z, sku, T0 + 50) for z in ("1", "2", "3")],
    )
    for case, code, text in [
        (one_zone, "spot_refused", "spot refused in zone 1 (sku_not_available)"),
        (every_zone, "spot_refused_all_zones", "spot refused in all zones, on-demand fills 1"),
    ]:
        plan, _ = decide(case)
        assert plan.codes == [code]
        assert text in plan.reason.split("; "), plan.reason
        assert f"`{text}`" in readme

    plan, _ = decide(
        CASES["two zones refused, the third only cooling: spot goes to the cooling one"]
    )
    assert "zone 1 (SkuNotAvailable), zone 3 (SkuNotAvailable)" in plan.reason


def test_spot_outage_then_recovery_over_time() -> None:
    """Refusal -> on-demand; refusals stop -> on-demand held for the cool-down -> back to spot."""
    policy = SpotFirst(CONFIG)
    fails = [refused(None, 0)]
    state: CapacityMixState | None = None
    timeline: list[tuple[str, int, int]] = []
    codes: list[list[str]] = []
    for at, workers in [
        (10, []),
        (300, [od("o1"), od("o2")]),
        (700, [od("o1"), od("o2")]),
        (899, [od("o1"), od("o2")]),
        (900, [od("o1"), od("o2")]),
    ]:
        signals = PoolSignals.build("pool-a", T0 + at, workers=workers, capacity_failures=fails)
        decision, state = policy.decide(2, signals, state)
        timeline.append((decision.op, decision.spot_target, decision.on_demand_target))
        codes.append(decision.codes)
    assert timeline == [
        ("scale_up", 0, 2),
        ("noop", 0, 2),
        ("noop", 0, 2),
        ("noop", 0, 2),
        ("replace", 2, 0),
    ]
    assert codes == [
        ["spot_refused_all_zones"],
        ["spot_refused_all_zones"],
        ["on_demand_kept"],
        ["on_demand_kept"],
        ["releasing_on_demand"],
    ]


def test_unknown_policy_names_the_known_ones() -> None:
    assert isinstance(CapacityMix.make(), SpotFirst)
    with pytest.raises(ValueError, match="spot-first"):
        CapacityMix.make("cheapest")
