"""The fleet monitor's generator stepped on its own: order of work, state and status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from azure.durable_functions.testing import orchestrator_generator_wrapper

from spotgate.fleet.decision import Decision, decide
from spotgate.fleet.observation import PoolObservation
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.fleet_monitor import (
    HISTORY_LIMIT,
    MonitorState,
    initial_state,
    monitor_instance_id,
)

from .conftest import FakeContext, observation

RAW = blueprint.fleet_monitor.build().get_user_function().orchestrator_function


def run(context: FakeContext) -> list[Any]:
    return list(orchestrator_generator_wrapper(RAW(context)))


def kinds(context: FakeContext) -> list[str]:
    return [kind for kind, _ in context.calls]


def test_a_tick_observes_records_publishes_then_waits() -> None:
    context = FakeContext(
        initial_state("default", tick_seconds=7.0, ticks_per_run=1),
        [observation(ready=2, provisioning=1, total=3)],
    )
    yielded = run(context)

    assert kinds(context) == [
        "activity",
        "activity",
        "status",
        "timer",
        "wait",
        "any",
        "continue_as_new",
    ]
    assert [c[1] for c in context.calls[:2]] == ["observe_pool", "record_decision"]
    assert yielded[0].payload == {"pool": "default"}
    recorded = yielded[1].payload
    assert recorded["pool"] == "default" and recorded["decision"]["action"] == "observe"
    assert context.calls[3][1] == context.current_utc_datetime + timedelta(seconds=7.0)
    assert context.calls[4][1] == "wake"


def test_custom_status_carries_counts_and_the_reason() -> None:
    context = FakeContext(
        initial_state("gpu", ticks_per_run=1),
        [observation("gpu", ready=2, provisioning=1, draining=1, total=4)],
    )
    run(context)
    status = context.custom_status
    assert {k: status[k] for k in ("pool", "tick", "desired", "actual", "ready")} == {
        "pool": "gpu",
        "tick": 1,
        "desired": 3,
        "actual": 3,
        "ready": 2,
    }
    assert status["draining"] == 1 and status["provisioning"] == 1
    assert status["observed_at"] == 1_700_000_000.0
    assert "ready 0->2" in status["last_decision"]["reason"]


def test_run_loops_ticks_per_run_times_then_continues_as_new_with_the_state() -> None:
    observations = [observation(ready=1, total=1) for _ in range(3)]
    start = initial_state("default", ticks_per_run=3) | {"tick": 40}
    context = FakeContext(start, observations)
    run(context)

    assert kinds(context).count("any") == 3
    assert kinds(context)[-1] == "continue_as_new"
    carried = context.calls[-1][1]
    assert carried["tick"] == 43
    assert [d["tick"] for d in carried["history"]] == [41, 42, 43]
    assert carried["ticks_per_run"] == 3 and carried["pool"] == "default"


def test_a_wake_cancels_the_timer_and_ends_the_run_so_the_next_tick_is_immediate() -> None:
    context = FakeContext(
        initial_state("default", ticks_per_run=5),
        [observation(), observation()],
        wake_at_ticks=frozenset({2}),
    )
    yielded = run(context)

    assert kinds(context).count("any") == 2
    assert kinds(context)[-1] == "continue_as_new"
    assert context.calls[-1][1]["tick"] == 2
    timers = [t for t in yielded if getattr(t, "kind", None) == "any"]
    assert [t.result.kind for t in timers] == ["timer", "event"]


def test_state_history_is_trimmed_across_runs() -> None:
    history = [{"tick": i} for i in range(25)]
    state = MonitorState.from_input({"pool": "p", "history": history})
    assert len(state.history) == HISTORY_LIMIT
    for i in range(5):
        state.record(decide(PoolObservation.from_dict(observation("p")), None, 100 + i))
    assert len(state.history) == HISTORY_LIMIT
    assert state.history[-1]["tick"] == 104 and state.tick == 104


def test_decision_reports_expiries_and_only_new_evictions() -> None:
    first = decide(
        PoolObservation.from_dict(observation(ready=1, draining=1, evicting=["w2"])), None, 1
    )
    second = decide(
        PoolObservation.from_dict(observation(draining=1, evicting=["w2"], expired=["w1"])),
        first,
        2,
    )
    assert first.new_evictions == ["w2"]
    assert second.new_evictions == []
    assert second.expired == ["w1"]
    assert second.reason == "expired w1; ready 1->0"
    assert Decision.from_dict(second.to_dict()) == second


def test_monitor_instance_id_is_one_per_pool() -> None:
    assert monitor_instance_id("gpu-a100") == "fleet-monitor-gpu-a100"


def test_a_failed_activity_costs_one_tick_not_the_monitor() -> None:
    context = FakeContext(
        initial_state("default", ticks_per_run=2),
        [RuntimeError("store unreachable"), observation(ready=1, total=1)],
    )
    run(context)

    statuses = [c[1] for c in context.calls if c[0] == "status"]
    assert statuses[0] == {"pool": "default", "tick": 0, "error": "store unreachable"}
    assert statuses[1]["tick"] == 1 and "error" not in statuses[1]
    assert kinds(context).count("any") == 2
    assert context.calls[-1][1]["tick"] == 1
