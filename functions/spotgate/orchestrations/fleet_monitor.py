"""The fleet monitor: one eternal orchestration per pool that observes, decides and records.

It is level-triggered. Each tick reads the whole pool from the registry (the
store is the truth), so a lost tick or a lost event costs latency, never
correctness. The `wake` event only makes the next tick come sooner.

Replay rules shape the code: no clock, randomness or I/O here; time comes
from `context.current_utc_datetime` and everything else from activities.

Why a wake ends the run: in azure-functions-durable 1.7.0 an EventRaised
that arrives while no wait is open (for example during the observe_pool
activity) is parked in `deferred_tasks` and never cleared, so it resolves
every later `wait_for_external_event("wake")` of the same execution. A
monitor that kept looping after such a wake would tick back to back until
the run ended. Continuing as new right after a wake drops that history, and
the next run ticks at once, which is exactly what the wake asked for.

Each tick is reported to a tick listener (telemetry: a counter by outcome and
a span) from the orchestrator's non-replaying pass only, the replay-safe way
to have a side effect here: replays run the same code again with
`context.is_replaying` set, and report nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any, Protocol

import azure.durable_functions as df

from spotgate.fleet.decision import Decision
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.planner import plan_tick
from spotgate.orchestrations.activities import (
    DELETE_WORKERS,
    DRAIN_WORKERS,
    OBSERVE_POOL,
    PROVISION_WORKERS,
    RECORD_DECISION,
)
from spotgate.orchestrations.monitor_contract import WAKE_EVENT, MonitorState
from spotgate.telemetry.monitor_ticks import TickListener, TickReport, process_ticks

log = logging.getLogger("spotgate.fleet")
Orchestrator = Callable[[df.DurableOrchestrationContext], Generator[Any, Any, None]]


def status_view(state: MonitorState, decision: Decision) -> dict[str, Any]:
    """The custom status operators read: levels now, plus why the last decision was taken."""
    return {
        "pool": state.pool,
        "tick": state.tick,
        "desired": decision.desired,
        "actual": decision.actual,
        "ready": decision.ready,
        "draining": decision.draining,
        "provisioning": decision.provisioning,
        "spot_target": decision.spot_target,
        "on_demand_target": decision.on_demand_target,
        "load": decision.load,
        "last_decision": decision.action,
        "why": decision.reason,
        "decision": decision.to_dict(),
        "observed_at": decision.observed_at,
    }


def failure_view(state: MonitorState, error: str) -> dict[str, Any]:
    """Keep showing the last known levels, flagged, rather than blanking the status."""
    last = state.last_decision()
    view = status_view(state, last) if last else {"pool": state.pool, "tick": state.tick}
    return view | {"error": error}


def fleet_monitor(
    context: df.DurableOrchestrationContext,
) -> Generator[Any, Any, None]:
    """The orchestrator the Functions host registers: ticks go to the process's telemetry."""
    yield from run_monitor(context, process_ticks())


def reporting_to(ticks: TickListener) -> Orchestrator:
    """The same orchestrator, reporting its ticks to `ticks` (a local stack's own telemetry)."""

    def fleet_monitor(context: df.DurableOrchestrationContext) -> Generator[Any, Any, None]:
        yield from run_monitor(context, ticks)

    return fleet_monitor


def run_monitor(
    context: df.DurableOrchestrationContext, ticks: TickListener
) -> Generator[Any, Any, None]:
    state = MonitorState.from_input(context.get_input())
    for _ in range(state.ticks_per_run):
        started, error = context.current_utc_datetime, None
        try:
            yield from tick(context, state)
        except Exception as exc:
            # A failed activity costs one tick, not the monitor: the next tick re-reads the store.
            error = str(exc)
            context.set_custom_status(failure_view(state, error))
        if not context.is_replaying:
            _report(ticks, state, started, context.current_utc_datetime, error)

        deadline = context.current_utc_datetime + timedelta(seconds=state.tick_seconds)
        timer = context.create_timer(deadline)
        wake = context.wait_for_external_event(WAKE_EVENT)
        winner = yield context.task_any([timer, wake])
        if winner is wake:
            if not timer.is_completed:
                timer.cancel()
            break
    context.continue_as_new(state.to_dict())


def _report(
    ticks: TickListener, state: MonitorState, started: datetime, ended: datetime, error: str | None
) -> None:
    last = state.last_decision() if error is None else None
    report = TickReport(
        state.pool,
        state.tick,
        started,
        ended,
        error=error,
        action=last.action if last else None,
        desired=last.desired if last else None,
        actual=last.actual if last else None,
        ready=last.ready if last else None,
        why=last.reason if last else None,
    )
    try:
        ticks.tick_finished(report)
    except Exception:  # never a reason for the orchestration to fail
        log.exception("reporting tick %d of pool %s failed", state.tick, state.pool)


class TickContext(Protocol):
    """What one tick needs of the orchestration context: the Durable one, or the fleet
    simulator's, which runs the activities at once in simulated time."""

    def call_activity(self, name: str, input_: Any = None) -> Any: ...

    def task_all(self, activities: list[Any]) -> Any: ...

    def set_custom_status(self, status: Any) -> None: ...


def tick(context: TickContext, state: MonitorState) -> Generator[Any, Any, None]:
    """Observe, decide (pure, here), act: provision first so a replacement never waits.

    The fleet simulator (fleetsim/monitor_driver.py) drives this same generator."""
    observed = yield context.call_activity(
        OBSERVE_POOL, {"pool": state.pool, "lookback_s": state.policy.lookback_s}
    )
    decision, policy_state = plan_tick(
        PoolObservation.from_dict(observed),
        state.policy,
        state.policy_state,
        state.last_decision(),
        state.tick + 1,
    )
    if not decision.dry_run:
        if decision.provision:
            yield context.task_all(
                [context.call_activity(PROVISION_WORKERS, p.to_dict()) for p in decision.provision]
            )
        if decision.drain:
            yield context.call_activity(
                DRAIN_WORKERS, {"pool": state.pool, "workers": decision.drain}
            )
        if decision.delete:
            yield context.call_activity(
                DELETE_WORKERS,
                {"pool": state.pool, "workers": [d.to_dict() for d in decision.delete]},
            )
    yield context.call_activity(
        RECORD_DECISION, {"pool": state.pool, "decision": decision.to_dict()}
    )
    state.record(decision, policy_state)
    context.set_custom_status(status_view(state, decision))
