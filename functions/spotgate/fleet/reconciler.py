"""One tick's plan for a pool: how big it should be, and the exact steps that get it there.

Pure, so it runs inside the replaying orchestrator: the autoscaler turns load
into a size, the capacity mix splits the size into spot and on-demand by
zone and names workers to retire, and this module turns that into three
lists of actions the activities carry out:

- provision: (priority, zone, count) requests, one per scale set touched;
- drain: ready workers to stop routing to (their streams finish);
- delete: workers to remove now, each with its reason. Only drained workers
  (nothing in flight, or past the drain deadline), unneeded provisioning
  ones, instances that never came up, and failed instances are deleted.
  An evicted worker is the platform's to remove; it is deleted here only if
  it outlives its eviction deadline by the grace period. A lost worker (its
  agent went quiet, its VM still listed and billing) is deleted once its
  grace period is over, or at once in a tick that provisions capacity: the
  replacement is coming, and the lost one could only come back to be retired.

Scale-down is therefore always drain-then-delete, across ticks, never a
capacity decrease that lets the cloud pick a busy VM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from spotgate.fleet.autoscaler import Autoscaler
from spotgate.fleet.capacity_mix import CapacityMix
from spotgate.fleet.decision import Decision, describe_changes
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.scaling_decision import ScalingDecision
from spotgate.fleet.signals import ON_DEMAND, SPOT, PoolSignals, WorkerSignal
from spotgate.fleet.worker import WorkerState


@dataclass(frozen=True)
class PolicyState:
    """The policies' memory between ticks, as plain dicts (it rides in continue_as_new)."""

    autoscaler: dict[str, Any]
    mix: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"autoscaler": dict(self.autoscaler), "mix": dict(self.mix)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PolicyState:
        data = data or {}
        return cls(autoscaler=dict(data.get("autoscaler") or {}), mix=dict(data.get("mix") or {}))


class TickPlan(NamedTuple):
    decision: Decision
    state: PolicyState


def plan_tick(
    observation: PoolObservation,
    config: FleetPolicyConfig,
    state: PolicyState,
    previous: Decision | None,
    tick: int,
) -> TickPlan:
    signals = observation.signals
    autoscaler = Autoscaler.make(config.autoscaler, config.autoscaling)
    mix = CapacityMix.make(config.capacity_mix, config.mix)
    target, size_reason, size_state = autoscaler.decide(
        signals, autoscaler.load_state(state.autoscaler)
    )
    scaling, mix_state = mix.decide(target, signals, mix.load_state(state.mix))

    by_id = {w.worker_id: w for w in signals.workers}
    drain = [w for w in scaling.drain if by_id[w].state == WorkerState.READY]
    delete = _deletions(signals, config)
    deleted = {d["worker_id"] for d in delete}
    delete += [
        {"worker_id": w, "why": "not needed (still provisioning)"}
        for w in scaling.drain
        if by_id[w].state == WorkerState.PROVISIONING and w not in deleted
    ]
    deleted = {d["worker_id"] for d in delete}
    delete += [
        {"worker_id": w, "why": "instance failed"}
        for w in observation.failed_instances
        if w not in deleted
    ]
    leaving = {d["worker_id"] for d in delete} | set(drain)
    provision = _provisions(signals, scaling, leaving)
    for worker_id, since in observation.lost:
        silent = signals.now - since
        if provision or silent >= config.lost_worker_grace_s:
            replaced = "replaced" if provision else "not back"
            delete.append(
                {"worker_id": worker_id, "why": f"lost ({replaced}, silent {silent:.0f}s)"}
            )

    new_evictions, changes = describe_changes(observation, previous)
    acted = [f"provision {_provision_text(p)}" for p in provision]
    acted += [f"drain {w}" for w in drain]
    acted += [f"delete {d['worker_id']} ({d['why']})" for d in delete]
    parts = [size_reason, scaling.reason, *acted, *changes]
    decision = Decision(
        pool=signals.pool,
        tick=tick,
        action=scaling.op,
        reason="; ".join(p for p in parts if p),
        observed_at=signals.now,
        desired=scaling.total,
        actual=signals.live_total,
        ready=observation.count(WorkerState.READY),
        draining=observation.count(WorkerState.DRAINING),
        provisioning=observation.count(WorkerState.PROVISIONING),
        gone=observation.gone,
        load=autoscaler.load(signals),
        spot_target=scaling.spot_target,
        on_demand_target=scaling.on_demand_target,
        per_zone=dict(scaling.per_zone),
        provision=provision,
        drain=sorted(drain),
        delete=sorted(delete, key=lambda d: d["worker_id"]),
        dry_run=config.dry_run,
        expired=list(observation.expired),
        evicting=observation.evicting,
        new_evictions=new_evictions,
        changes=changes,
    )
    return TickPlan(
        decision, PolicyState(autoscaler.dump_state(size_state), mix.dump_state(mix_state))
    )


def _deletions(signals: PoolSignals, config: FleetPolicyConfig) -> list[dict[str, str]]:
    now = signals.now
    out: list[dict[str, str]] = []
    for w in signals.workers:
        why = _deletion_reason(w, now, config)
        if why:
            out.append({"worker_id": w.worker_id, "why": why})
    return out


def _deletion_reason(w: WorkerSignal, now: float, config: FleetPolicyConfig) -> str | None:
    if w.state == WorkerState.PROVISIONING and now - w.since >= config.provision_timeout_s:
        return f"not ready after {config.provision_timeout_s:g}s"
    if w.state != WorkerState.DRAINING:
        return None
    if w.evicting:
        deadline = w.deadline if w.deadline is not None else w.since
        if now >= deadline + config.eviction_grace_s:
            return "evicted but still listed past its deadline"
        return None
    if w.in_flight <= 0:
        return "drained"
    if now - w.since >= config.drain_timeout_s:
        return f"drain deadline ({w.in_flight:g} still in flight)"
    return None


def _provisions(
    signals: PoolSignals, scaling: ScalingDecision, leaving: set[str]
) -> list[dict[str, Any]]:
    """Requests that close the gap between the targets and the live workers that stay."""
    staying = [w for w in signals.workers if w.live and w.worker_id not in leaving]
    spot = [w for w in staying if w.priority == SPOT]
    on_demand = sum(1 for w in staying if w.priority == ON_DEMAND)
    requests: list[dict[str, Any]] = []
    spot_gap = scaling.spot_target - len(spot)
    if spot_gap > 0:
        have = {z: sum(1 for w in spot if w.zone == z) for z in scaling.per_zone}
        for zone, want in sorted(scaling.per_zone.items()):
            count = min(spot_gap, max(0, want - have.get(zone, 0)))
            if count:
                requests.append({"priority": SPOT, "zone": zone, "count": count})
                spot_gap -= count
        if spot_gap > 0:  # no zones configured, or workers outside them: unzoned spot
            requests.append({"priority": SPOT, "zone": None, "count": spot_gap})
    if scaling.on_demand_target > on_demand:
        count = scaling.on_demand_target - on_demand
        requests.append({"priority": ON_DEMAND, "zone": None, "count": count})
    return [r | {"pool": signals.pool} for r in requests]


def _provision_text(request: Mapping[str, Any]) -> str:
    where = f" zone {request['zone']}" if request.get("zone") else ""
    return f"{request['count']} {request['priority']}{where}"
