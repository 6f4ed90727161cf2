"""The tick planner: how big a pool should be this tick, and the exact steps that get it there.

Pure, so it runs inside the replaying orchestrator: the autoscaler turns load
into a size, the capacity mix splits the size into spot and on-demand by
zone and names workers to retire, and this module turns that into three
lists of actions the activities carry out (observation.py is what reconciles
the registry with the cloud before this runs):

- provision: `ProvisionRequest`s (priority, zone, count), one per scale set touched;
- drain: ready workers to stop routing to (their streams finish);
- delete: `DeleteRequest`s, each worker to remove now with its reason. Only
  drained workers (nothing in flight, or past the drain deadline), unneeded
  provisioning ones, instances that never came up, and failed instances are
  deleted. An evicted worker is the platform's to remove; it is deleted here
  only if it outlives its eviction deadline by the grace period. A lost worker
  (its agent went quiet, its VM still listed and billing) is deleted once its
  grace period is over, or at once in a tick that provisions capacity: the
  replacement is coming, and the lost one could only come back to be retired.

Scale-down is therefore always drain-then-delete, across ticks, never a
capacity decrease that lets the cloud pick a busy VM.

Each kind of deletion has a stable code, added to `Decision.codes` once per
tick in which it happens (the `why` text beside each worker is for people):

- `delete_drained`: draining and nothing left in flight.
- `delete_drain_deadline`: draining past `drain_timeout_s`, still busy.
- `delete_provision_timeout`: not ready after `provision_timeout_s`.
- `delete_not_needed`: still provisioning, and the pool no longer needs it.
- `delete_instance_failed`: the cloud reports the instance failed.
- `delete_evicted_overdue`: evicted, but still listed past its deadline and grace.
- `delete_lost`: its agent went quiet while its VM still runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from spotgate.fleet.autoscaler import Autoscaler
from spotgate.fleet.capacity_mix import CapacityMix
from spotgate.fleet.capacity_plan import CapacityPlan
from spotgate.fleet.compute import ProvisionRequest
from spotgate.fleet.decision import Decision, DeleteRequest, describe_changes
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.signals import ON_DEMAND, SPOT, PoolSignals, WorkerSignal
from spotgate.fleet.worker import WorkerState

DELETE_DRAINED = "delete_drained"
DELETE_DRAIN_DEADLINE = "delete_drain_deadline"
DELETE_PROVISION_TIMEOUT = "delete_provision_timeout"
DELETE_NOT_NEEDED = "delete_not_needed"
DELETE_INSTANCE_FAILED = "delete_instance_failed"
DELETE_EVICTED_OVERDUE = "delete_evicted_overdue"
DELETE_LOST = "delete_lost"
DELETE_CODES = (
    DELETE_DRAINED,
    DELETE_DRAIN_DEADLINE,
    DELETE_PROVISION_TIMEOUT,
    DELETE_NOT_NEEDED,
    DELETE_INSTANCE_FAILED,
    DELETE_EVICTED_OVERDUE,
    DELETE_LOST,
)
"""Every deletion code the planner gives (see the module docstring)."""


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


class _Deletion(NamedTuple):
    worker_id: str
    code: str
    why: str


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
    target, size_code, size_reason, size_state = autoscaler.decide(
        signals, autoscaler.load_state(state.autoscaler)
    )
    capacity, mix_state = mix.decide(target, signals, mix.load_state(state.mix))

    by_id = {w.worker_id: w for w in signals.workers}
    drain = [w for w in capacity.drain if by_id[w].state == WorkerState.READY]
    delete = _deletions(signals, config)
    deleted = {d.worker_id for d in delete}
    delete += [
        _Deletion(w, DELETE_NOT_NEEDED, "not needed (still provisioning)")
        for w in capacity.drain
        if by_id[w].state == WorkerState.PROVISIONING and w not in deleted
    ]
    deleted = {d.worker_id for d in delete}
    delete += [
        _Deletion(w, DELETE_INSTANCE_FAILED, "instance failed")
        for w in observation.failed_instances
        if w not in deleted
    ]
    leaving = {d.worker_id for d in delete} | set(drain)
    provision = _provisions(signals, capacity, leaving)
    for worker_id, since in observation.lost:
        silent = signals.now - since
        if provision or silent >= config.lost_worker_grace_s:
            replaced = "replaced" if provision else "not back"
            why = f"lost ({replaced}, silent {silent:.0f}s)"
            delete.append(_Deletion(worker_id, DELETE_LOST, why))

    new_evictions, changes = describe_changes(observation, previous)
    acted = [f"provision {_provision_text(p)}" for p in provision]
    acted += [f"drain {w}" for w in drain]
    acted += [f"delete {d.worker_id} ({d.why})" for d in delete]
    parts = [size_reason, capacity.reason, *acted, *changes]
    codes = [size_code, *capacity.codes, *dict.fromkeys(d.code for d in delete)]
    decision = Decision(
        pool=signals.pool,
        tick=tick,
        action=capacity.op,
        reason="; ".join(p for p in parts if p),
        observed_at=signals.now,
        desired=capacity.total,
        actual=signals.live_total,
        ready=observation.count(WorkerState.READY),
        draining=observation.count(WorkerState.DRAINING),
        provisioning=observation.count(WorkerState.PROVISIONING),
        gone=observation.gone,
        load=autoscaler.demand(signals),
        spot_target=capacity.spot_target,
        on_demand_target=capacity.on_demand_target,
        per_zone=dict(capacity.per_zone),
        provision=provision,
        drain=sorted(drain),
        delete=[
            DeleteRequest(d.worker_id, d.why) for d in sorted(delete, key=lambda d: d.worker_id)
        ],
        dry_run=config.dry_run,
        expired=list(observation.expired),
        evicting=observation.evicting,
        new_evictions=new_evictions,
        changes=changes,
        codes=codes,
    )
    return TickPlan(
        decision, PolicyState(autoscaler.dump_state(size_state), mix.dump_state(mix_state))
    )


def _deletions(signals: PoolSignals, config: FleetPolicyConfig) -> list[_Deletion]:
    now = signals.now
    out: list[_Deletion] = []
    for w in signals.workers:
        reason = _deletion_reason(w, now, config)
        if reason:
            out.append(_Deletion(w.worker_id, *reason))
    return out


def _deletion_reason(
    w: WorkerSignal, now: float, config: FleetPolicyConfig
) -> tuple[str, str] | None:
    """(code, why) if the worker should be deleted now."""
    if w.state == WorkerState.PROVISIONING and now - w.since >= config.provision_timeout_s:
        return DELETE_PROVISION_TIMEOUT, f"not ready after {config.provision_timeout_s:g}s"
    if w.state != WorkerState.DRAINING:
        return None
    if w.evicting:
        deadline = w.deadline if w.deadline is not None else w.since
        if now >= deadline + config.eviction_grace_s:
            return DELETE_EVICTED_OVERDUE, "evicted but still listed past its deadline"
        return None
    if w.in_flight <= 0:
        return DELETE_DRAINED, "drained"
    if now - w.since >= config.drain_timeout_s:
        return DELETE_DRAIN_DEADLINE, f"drain deadline ({w.in_flight:g} still in flight)"
    return None


def _provisions(
    signals: PoolSignals, capacity: CapacityPlan, leaving: set[str]
) -> list[ProvisionRequest]:
    """Requests that close the gap between the targets and the live workers that stay."""
    staying = [w for w in signals.workers if w.live and w.worker_id not in leaving]
    spot = [w for w in staying if w.priority == SPOT]
    on_demand = sum(1 for w in staying if w.priority == ON_DEMAND)
    pool = signals.pool
    requests: list[ProvisionRequest] = []
    spot_gap = capacity.spot_target - len(spot)
    if spot_gap > 0:
        have = {z: sum(1 for w in spot if w.zone == z) for z in capacity.per_zone}
        for zone, want in sorted(capacity.per_zone.items()):
            count = min(spot_gap, max(0, want - have.get(zone, 0)))
            if count:
                requests.append(ProvisionRequest(pool, SPOT, zone, count))
                spot_gap -= count
        if spot_gap > 0:  # no zones configured, or workers outside them: unzoned spot
            requests.append(ProvisionRequest(pool, SPOT, None, spot_gap))
    if capacity.on_demand_target > on_demand:
        count = capacity.on_demand_target - on_demand
        requests.append(ProvisionRequest(pool, ON_DEMAND, None, count))
    return requests


def _provision_text(request: ProvisionRequest) -> str:
    where = f" zone {request.zone}" if request.zone else ""
    return f"{request.count} {request.priority}{where}"
