"""The fleet monitor through the SDK's real replay engine, with history written by hand."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.orchestrator import Orchestrator

from spotgate.adapters.local.durable_protocol import context_json, flatten_actions
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.monitor_contract import initial_state

from .conftest import ReplayHost, observation

Handle = Callable[[str], str]


def action_types(state: dict[str, Any]) -> list[int]:
    return [a["actionType"] for a in flatten_actions(state["actions"])]


def run_ticks(handle: Handle, ticks: int) -> ReplayHost:
    host = ReplayHost(handle, initial_state("default", tick_seconds=5.0, ticks_per_run=ticks))
    for _ in range(ticks):
        host.step()
        host.complete("observe_pool", observation(ready=1))
        host.step()
        host.complete("record_decision", None)
        host.step()
        host.fire_timer()
    return host


def test_first_replay_asks_for_observe_pool_only(monitor_handle: Handle) -> None:
    host = ReplayHost(monitor_handle, initial_state("default"))
    state = host.step()
    assert state["isDone"] is False
    (action,) = flatten_actions(state["actions"])
    assert action["functionName"] == "observe_pool"
    assert json.loads(action["input"]) == {"pool": "default", "lookback_s": 900.0}


def test_a_tick_ends_waiting_on_timer_or_wake_with_status_set(monitor_handle: Handle) -> None:
    host = ReplayHost(monitor_handle, initial_state("default", tick_seconds=5.0))
    host.step()
    host.complete("observe_pool", observation(ready=2))
    host.step()
    host.complete("record_decision", None)
    state = host.step()

    assert state["actions"][0][-1]["actionType"] == ActionType.WHEN_ANY
    timer, wake = state["actions"][0][-1]["compoundActions"]
    assert timer["fireAt"] == "2024-01-01T00:00:05.000000Z" and not timer["isCanceled"]
    assert wake["externalEventName"] == "wake"
    assert state["customStatus"]["ready"] == 2 and state["customStatus"]["tick"] == 1


def test_the_same_history_replays_to_the_same_actions(monitor_handle: Handle) -> None:
    host = run_ticks(monitor_handle, 3)
    final = host.step()
    assert final["isDone"] is True
    assert action_types(final)[-1] == ActionType.CONTINUE_AS_NEW

    again = host.replay()
    raw = blueprint.fleet_monitor.build().get_user_function().orchestrator_function
    payload = context_json("test-instance", json.dumps(host.input), host.history)
    fresh = json.loads(Orchestrator.create(raw)(payload))
    assert again == final
    assert fresh == final


def test_replays_of_history_prefixes_only_ever_append_actions(monitor_handle: Handle) -> None:
    host = run_ticks(monitor_handle, 2)
    final = flatten_actions(host.step()["actions"])
    ends = [i + 1 for i, e in enumerate(host.history) if e["EventType"] == 13]  # completed
    for end in ends:
        prefix = flatten_actions(host.replay(host.history[:end])["actions"])
        assert prefix == final[: len(prefix)]


@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion")
def test_a_buffered_wake_cannot_make_later_waits_fire_by_themselves(
    monitor_handle: Handle,
) -> None:
    """A wake raised while observe_pool runs is parked by the SDK and, in 1.7.0, would
    resolve every later wait of the execution; the monitor must continue as new instead."""
    host = ReplayHost(monitor_handle, initial_state("default", ticks_per_run=10))
    host.step()
    host.raise_event("wake")
    host.complete("observe_pool", observation())
    host.step()
    host.complete("record_decision", None)
    state = host.step()

    actions = flatten_actions(state["actions"])
    assert state["isDone"] is True
    assert actions[-1]["actionType"] == ActionType.CONTINUE_AS_NEW
    assert json.loads(actions[-1]["input"])["tick"] == 1
    timer = next(a for a in actions if a["actionType"] == ActionType.CREATE_TIMER)
    assert timer["isCanceled"] is True
    assert [a["functionName"] for a in actions if "functionName" in a] == [
        "observe_pool",
        "record_decision",
    ]


def test_a_scale_out_fans_out_and_replays_deterministically(monitor_handle: Handle) -> None:
    """Provisions run in parallel (task_all); replay must reproduce the same fan-out."""
    policy = FleetPolicyConfig().fixed_size(3)
    host = ReplayHost(monitor_handle, initial_state("default", ticks_per_run=1, policy=policy))
    host.step()
    host.complete("observe_pool", observation())
    state = host.step()
    fan_out = state["actions"][-1][-1]
    assert fan_out["actionType"] == ActionType.WHEN_ALL
    provisions = [json.loads(a["input"]) for a in fan_out["compoundActions"]]
    assert sum(p["count"] for p in provisions) == 3
    assert len({p["zone"] for p in provisions}) == 3  # spread over the zones
    for _ in provisions:
        host.complete("provision_workers", {"provisioned": ["x"], "failure": None})
    host.step()
    host.complete("record_decision", None)
    host.step()
    host.fire_timer()
    final = host.step()

    assert final["isDone"] is True
    assert host.replay() == final
    carried = json.loads(flatten_actions(final["actions"])[-1]["input"])
    assert carried["history"][-1]["provision"] == provisions
