"""Replays of the local sim stack's fault injection through `plan_tick`, one tick at a time.

A tiny stand-in for the monitor's loop: each tick observes the pool, plans,
and carries the plan out the way the activities do. A spot request the market
refuses is recorded as `provision_workers` records it (a spot `CapacityFailure`
in the requested zone, at the tick's time, reason `sku_not_available` as the
local compute raises it) and so appears in the next tick's signals; an
eviction is recorded with its zone, as the agent's report is. Time is
injected, ten seconds a tick, well inside every window of the default mix.

The first scenario is the reported livelock: 2 workers over zones 1-3, kill
w1, evict w2, refuse spot everywhere, kill w3. The pool sat at 1 of 2 ready
asking for "1 spot zone 1" forever, because the zone that had just evicted was
cooling, cooling did not count as refused, and placement fell back to the
zone that had already refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from spotgate.fleet.capacity_mix import CapacityMixConfig
from spotgate.fleet.decision import Decision
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.planner import PolicyState, plan_tick
from spotgate.fleet.signals import (
    ON_DEMAND,
    SPOT,
    CapacityFailure,
    EvictionSignal,
    PoolSignals,
    WorkerSignal,
)
from spotgate.fleet.worker import WorkerState

T0 = 1_700_000_000.0
TICK_S = 10.0
POOL = "default"
ZONES = ("1", "2", "3")
REFUSAL = "sku_not_available"
NOTICE_S = 30.0
SETTLE_TICKS = 10
"""Ticks a scenario may take to get whole again after one event before the replay gives up."""


def sim_policy() -> FleetPolicyConfig:
    """The dev stack's fixed pool of 2, with the default mix (zone cool-down 900 s)."""
    return FleetPolicyConfig(mix=CapacityMixConfig(zones=ZONES)).fixed_size(2)


@dataclass
class SimPool:
    """The cloud, the registry and the journal of one local pool, driven by `plan_tick`."""

    config: FleetPolicyConfig = field(default_factory=sim_policy)
    now: float = T0
    workers: dict[str, WorkerSignal] = field(default_factory=dict)
    evictions: list[EvictionSignal] = field(default_factory=list)
    failures: list[CapacityFailure] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    decisions: list[Decision] = field(default_factory=list)
    spot_asks: list[tuple[int, str | None, bool]] = field(default_factory=list)
    """Every spot request: (tick, zone, refused?)."""
    state: PolicyState = field(default_factory=lambda: PolicyState({}, {}))
    counter: int = 0

    # the market and the faults an operator injects

    def spot_available(self, zone: str | None) -> bool:
        return "*" not in self.refused and (zone or "") not in self.refused

    def kill(self, worker_id: str) -> None:
        del self.workers[worker_id]

    def evict(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        self.workers[worker_id] = replace(
            worker,
            state=WorkerState.DRAINING,
            since=self.now,
            evicting=True,
            deadline=self.now + NOTICE_S,
        )
        self.evictions.append(EvictionSignal(worker.zone, self.now))

    def refuse(self, zone: str | None) -> None:
        self.refused.add(zone or "*")

    # one monitor tick

    def tick(self) -> Decision:
        self.now += TICK_S
        for wid, w in list(self.workers.items()):
            if w.evicting and w.deadline is not None and self.now >= w.deadline:
                del self.workers[wid]  # the platform took the VM back
            elif w.state == WorkerState.PROVISIONING:
                self.workers[wid] = replace(w, state=WorkerState.READY, since=self.now)
        since = self.now - self.config.lookback_s
        observation = PoolObservation(
            PoolSignals.build(
                POOL,
                self.now,
                workers=self.workers.values(),
                evictions=[e for e in self.evictions if e.at >= since],
                capacity_failures=[f for f in self.failures if f.at >= since],
            )
        )
        previous = self.decisions[-1] if self.decisions else None
        tick = len(self.decisions) + 1
        decision, self.state = plan_tick(observation, self.config, self.state, previous, tick)
        self.decisions.append(decision)
        for gone in decision.delete:
            self.workers.pop(gone.worker_id, None)
        for wid in decision.drain:
            self.workers[wid] = replace(self.workers[wid], state=WorkerState.DRAINING)
        for request in decision.provision:
            self.provision(tick, request.priority, request.zone, request.count)
        return decision

    def provision(self, tick: int, priority: str, zone: str | None, count: int) -> None:
        if priority == SPOT:
            refused = not self.spot_available(zone)
            self.spot_asks.append((tick, zone, refused))
            if refused:  # as provision_workers records a CapacityError
                self.failures.append(CapacityFailure(priority, zone, REFUSAL, self.now))
                return
        for _ in range(count):
            self.counter += 1
            wid = f"w{self.counter}"
            self.workers[wid] = WorkerSignal(
                wid, priority, zone, WorkerState.PROVISIONING, since=self.now
            )

    def whole(self) -> bool:
        """Every wanted worker ready, nothing still leaving."""
        ready = [w for w in self.workers.values() if w.state == WorkerState.READY]
        return len(ready) == len(self.workers) == 2

    def settle(self) -> None:
        for _ in range(SETTLE_TICKS):
            self.tick()
            if self.whole():
                return
        pytest.fail(f"pool not whole after {SETTLE_TICKS} ticks: {self.decisions[-1].reason}")

    def ready(self) -> dict[str, tuple[str, str | None]]:
        return {
            w.worker_id: (w.priority, w.zone)
            for w in self.workers.values()
            if w.state == WorkerState.READY
        }


@dataclass(frozen=True)
class Replay:
    """Faults applied in order, the pool settling (or not) after each, then what must follow."""

    events: list[tuple[str, str | None]]
    on_demand: bool
    codes: list[str]
    """Reason codes some decision after the last fault must give (capacity_mix.CODES)."""
    zones_used: set[str] = field(default_factory=set)


REPLAYS: dict[str, Replay] = {
    "reported: kill w1, evict w2, refuse spot everywhere, kill w3": Replay(
        [("kill", "w1"), ("evict", "w2"), ("refuse", None), ("kill", "w3")],
        on_demand=True,
        codes=["spot_refused", "spot_refused_all_zones"],
    ),
    "refuse spot everywhere, then kill a worker (nothing cooling)": Replay(
        [("refuse", None), ("kill", "w1")],
        on_demand=True,
        codes=["spot_refused_all_zones"],
    ),
    "two zones refuse after an eviction: the zone only cooling takes the spot": Replay(
        [("kill", "w1"), ("evict", "w2"), ("refuse", "1"), ("refuse", "3"), ("kill", "w3")],
        on_demand=False,
        codes=["spot_refused"],
        zones_used={"2", "3"},
    ),
    "one zone refuses: spot goes elsewhere, never back to it": Replay(
        [("refuse", "1"), ("kill", "w1")],
        on_demand=False,
        codes=["spot_refused"],
        zones_used={"2", "3"},
    ),
}


@pytest.mark.parametrize("name", list(REPLAYS))
def test_refused_spot_is_covered_within_one_try_per_zone(name: str) -> None:
    replay = REPLAYS[name]
    pool = SimPool()
    pool.settle()
    assert sorted(pool.ready()) == ["w1", "w2"]
    *setup, last = replay.events
    for action, target in setup:
        getattr(pool, action)(target)
        if action != "refuse":
            pool.settle()
    getattr(pool, last[0])(last[1])
    start = len(pool.decisions)

    pool.settle()

    after = pool.decisions[start:]
    reasons = " | ".join(d.reason for d in after)
    refused = [(tick, zone) for tick, zone, no in pool.spot_asks if no and tick > start]
    # each zone is asked for spot at most once while its refusal is recent
    assert len({zone for _, zone in refused}) == len(refused) <= len(ZONES), reasons
    asked_od = [d.tick for d in after if any(r.priority == ON_DEMAND for r in d.provision)]
    if replay.on_demand:
        assert asked_od, reasons
        # on-demand is asked for at most one tick per zone after the first refusal
        assert asked_od[0] - refused[0][0] <= len(ZONES), reasons
    else:
        assert asked_od == [], reasons
    given = {code for d in after for code in d.codes}
    assert set(replay.codes) <= given, reasons
    ready = pool.ready()
    if replay.zones_used:
        assert {zone for _, zone in ready.values()} == replay.zones_used, ready
    od_ready = [wid for wid, (priority, _) in ready.items() if priority == ON_DEMAND]
    assert len(od_ready) == int(replay.on_demand), ready
