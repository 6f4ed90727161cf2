"""The fleet monitor's generator stepped on its own: order of work, state and status."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from azure.durable_functions.testing import orchestrator_generator_wrapper

from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.planner import PolicyState, plan_tick
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.monitor_contract import (
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


def activities(context: FakeContext) -> list[str]:
    return [name for kind, name in context.calls if kind == "activity"]


def fixed(n: int) -> FleetPolicyConfig:
    return FleetPolicyConfig().fixed_size(n)


def test_a_steady_tick_observes_records_publishes_then_waits() -> None:
    context = FakeContext(
        initial_state("default", tick_seconds=7.0, ticks_per_run=1, policy=fixed(2)),
        [observation(ready=2)],
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
    assert activities(context) == ["observe_pool", "record_decision"]
    assert yielded[0].payload["pool"] == "default"
    recorded = yielded[1].payload
    assert recorded["pool"] == "default" and recorded["decision"]["action"] == "noop"
    assert context.calls[3][1] == context.current_utc_datetime + timedelta(seconds=7.0)
    assert context.calls[4][1] == "wake"


def test_a_short_pool_is_provisioned_in_parallel_before_anything_else() -> None:
    context = FakeContext(
        initial_state("default", ticks_per_run=1, policy=fixed(3)), [observation(ready=1)]
    )
    run(context)

    assert activities(context)[0] == "observe_pool"
    fan_out = next(call for call in context.calls if call[0] == "all")
    assert set(fan_out[1]) == {"provision_workers"}
    requested = [t.payload for t in context.tasks if t.name == "provision_workers"]
    assert sum(r["count"] for r in requested) == 2
    assert all(r["priority"] == "spot" and r["pool"] == "default" for r in requested)
    assert activities(context)[-1] == "record_decision"


def test_drains_and_deletes_go_to_their_activities() -> None:
    policy = FleetPolicyConfig.from_dict(
        fixed(1).to_dict() | {"autoscaling": {"min_workers": 1, "max_workers": 1}}
    )
    state = initial_state("default", ticks_per_run=1, policy=policy)
    # two ready workers for a target of one, and an old drained worker with nothing in flight
    obs = observation(ready=2)
    obs["signals"]["workers"].append(
        {"worker_id": "old", "state": "draining", "running": 0, "since": 0}
    )
    context = FakeContext(state | {"policy_state": {"autoscaler": {"target": 1}}}, [obs])
    run(context)

    by_name = {t.name: t.payload for t in context.tasks}
    assert by_name["drain_workers"]["workers"] in (["w1"], ["w2"])
    assert by_name["delete_workers"]["workers"] == [{"worker_id": "old", "why": "drained"}]


def test_dry_run_decides_but_calls_no_action() -> None:
    policy = FleetPolicyConfig.from_dict(fixed(3).to_dict() | {"dry_run": True})
    context = FakeContext(initial_state("default", ticks_per_run=1, policy=policy), [observation()])
    run(context)
    assert activities(context) == ["observe_pool", "record_decision"]
    assert context.custom_status["desired"] == 3
    assert context.custom_status["decision"]["dry_run"] is True


def test_custom_status_carries_levels_and_explains_the_last_decision() -> None:
    context = FakeContext(
        initial_state("gpu", ticks_per_run=1, policy=fixed(4)),
        [observation("gpu", ready=2, provisioning=1, draining=1)],
    )
    run(context)
    status = context.custom_status
    assert {k: status[k] for k in ("pool", "tick", "desired", "actual", "ready")} == {
        "pool": "gpu",
        "tick": 1,
        "desired": 4,
        "actual": 3,
        "ready": 2,
    }
    assert status["draining"] == 1 and status["provisioning"] == 1
    assert status["observed_at"] == 1_700_000_000.0
    assert status["last_decision"] == "scale_up"
    assert {p["priority"] for p in status["decision"]["provision"]} == {"spot"}
    assert status["decision"]["codes"][0] == "raised_to_min"  # a fixed pool of 4


def test_run_loops_ticks_per_run_times_then_continues_as_new_with_the_state() -> None:
    observations = [observation(ready=1) for _ in range(3)]
    start = initial_state("default", ticks_per_run=3, policy=fixed(1)) | {"tick": 40}
    context = FakeContext(start, observations)
    run(context)

    assert kinds(context).count("any") == 3
    assert kinds(context)[-1] == "continue_as_new"
    carried = context.calls[-1][1]
    assert carried["tick"] == 43
    assert [d["tick"] for d in carried["history"]] == [41, 42, 43]
    assert carried["ticks_per_run"] == 3 and carried["pool"] == "default"
    assert carried["policy"] == fixed(1).to_dict()
    assert carried["policy_state"]["autoscaler"]["target"] == 1
    json.dumps(carried)  # it must survive the trip through the task hub


def test_policy_memory_survives_continue_as_new() -> None:
    """A scale-down window started in one run keeps counting in the next."""
    policy = FleetPolicyConfig.from_dict(
        {"autoscaling": {"min_workers": 0, "max_workers": 4, "scale_down_stabilisation_s": 60}}
    )
    busy = observation(ready=3, queue=0, now=1000.0)
    first = FakeContext(
        initial_state("default", ticks_per_run=1, policy=policy)
        | {"policy_state": {"autoscaler": {"target": 3}}},
        [busy],
    )
    run(first)
    carried = first.calls[-1][1]
    assert carried["policy_state"]["autoscaler"]["lower_since"] == 1000.0

    later = observation(ready=3, queue=0, now=1061.0)
    second = FakeContext(carried, [later])
    run(second)
    assert second.custom_status["desired"] < 3
    assert second.custom_status["decision"]["codes"][0] == "scale_down_after_window"


def test_a_wake_cancels_the_timer_and_ends_the_run_so_the_next_tick_is_immediate() -> None:
    context = FakeContext(
        initial_state("default", ticks_per_run=5, policy=fixed(0)),
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
        obs = PoolObservation.from_dict(observation("p"))
        decision, policy_state = plan_tick(obs, state.policy, state.policy_state, None, 100 + i)
        state.record(decision, policy_state)
    assert len(state.history) == HISTORY_LIMIT
    assert state.history[-1]["tick"] == 104 and state.tick == 104
    assert isinstance(state.policy_state, PolicyState)


def test_bad_policy_input_is_refused_with_the_field_named() -> None:
    bad = {"pool": "p", "policy": {"autoscaler": "no-such-scaler"}}
    try:
        MonitorState.from_input(bad)
    except ValueError as exc:
        assert "no-such-scaler" in str(exc) and "queue-depth" in str(exc)
    else:
        raise AssertionError("an unknown autoscaler must be refused")


def test_monitor_instance_id_is_one_per_pool() -> None:
    assert monitor_instance_id("gpu-a100") == "fleet-monitor-gpu-a100"


def test_a_failed_activity_costs_one_tick_not_the_monitor() -> None:
    context = FakeContext(
        initial_state("default", ticks_per_run=2, policy=fixed(1)),
        [RuntimeError("store unreachable"), observation(ready=1)],
    )
    run(context)

    statuses = [c[1] for c in context.calls if c[0] == "status"]
    assert statuses[0] == {"pool": "default", "tick": 0, "error": "store unreachable"}
    assert statuses[1]["tick"] == 1 and "error" not in statuses[1]
    assert kinds(context).count("any") == 2
    assert context.calls[-1][1]["tick"] == 1
