"""The watchdog restarts missing or finished monitors and never replaces a live one."""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock, MagicMock

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.functions.timer import TimerRequest

from spotgate.hosts.gateway import monitor_plan
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.monitor_contract import MonitorPlan, initial_state
from spotgate.orchestrations.watchdog import ensure_monitors
from spotgate.settings import Settings, parse_pools

NOT_FOUND = DurableOrchestrationStatus.from_json("")  # what get_status returns on a 404


def status(runtime_status: str) -> DurableOrchestrationStatus:
    return DurableOrchestrationStatus(
        name="fleet_monitor",
        instanceId="fleet-monitor-default",
        createdTime="2024-01-01T00:00:00Z",
        runtimeStatus=runtime_status,
    )


def pools(*names: str, tick_seconds: float = 5.0, ticks_per_run: int = 12) -> MonitorPlan:
    return MonitorPlan(names, {}, tick_seconds=tick_seconds, ticks_per_run=ticks_per_run)


@pytest.fixture
def host_plan() -> Any:
    """Installs the monitor plan the Azure host builds from its settings, as at startup."""

    def install() -> None:
        blueprint.set_monitor_plan(monitor_plan(Settings()))

    yield install
    blueprint.set_monitor_plan(None)


def client(*statuses: Any) -> MagicMock:
    mock = MagicMock(spec=df.DurableOrchestrationClient)
    mock.get_status = AsyncMock(side_effect=list(statuses))
    mock.start_new = AsyncMock(side_effect=lambda name, instance_id, input_: instance_id)
    return mock


@pytest.mark.parametrize(
    "found", [NOT_FOUND, None, status("Terminated"), status("Failed"), status("Completed")]
)
async def test_starts_the_monitor_when_none_is_alive(found: Any) -> None:
    mock = client(found)
    started = await ensure_monitors(mock, pools("default", tick_seconds=2.0, ticks_per_run=4))
    assert started == ["fleet-monitor-default"]
    mock.get_status.assert_awaited_once_with("fleet-monitor-default")
    mock.start_new.assert_awaited_once_with(
        "fleet_monitor",
        "fleet-monitor-default",
        initial_state("default", tick_seconds=2.0, ticks_per_run=4),
    )


@pytest.mark.parametrize("alive", ["Running", "Pending"])
async def test_leaves_a_live_monitor_alone(alive: str) -> None:
    mock = client(status(alive))
    assert await ensure_monitors(mock, pools("default")) == []
    mock.start_new.assert_not_awaited()


async def test_an_unreadable_status_is_not_taken_for_a_dead_monitor() -> None:
    mock = client(RuntimeError("storage timeout"), NOT_FOUND)
    assert await ensure_monitors(mock, pools("a", "b")) == ["fleet-monitor-b"]
    assert mock.start_new.await_count == 1


def test_pools_come_from_env_as_json_or_comma_list() -> None:
    assert parse_pools("") == ["default"]
    assert parse_pools("a, b,") == ["a", "b"]
    assert parse_pools('["x", "y"]') == ["x", "y"]


async def test_timer_function_checks_every_configured_pool(
    monkeypatch: pytest.MonkeyPatch, host_plan: Any
) -> None:
    monkeypatch.setenv("SPOTGATE_POOLS", "a,b")
    monkeypatch.setenv("SPOTGATE_MONITOR_TICK_S", "3")
    host_plan()
    mock = client(status("Running"), status("Terminated"))
    watchdog = blueprint.fleet_watchdog.build().get_user_function().client_function

    await watchdog(TimerRequest(past_due=False), mock)

    assert [c.args[0] for c in mock.get_status.await_args_list] == [
        "fleet-monitor-a",
        "fleet-monitor-b",
    ]
    (call,) = mock.start_new.await_args_list
    assert call.args[1] == "fleet-monitor-b" and call.args[2]["tick_seconds"] == 3.0


async def test_the_started_monitor_gets_the_pools_policy_from_settings(
    monkeypatch: pytest.MonkeyPatch, host_plan: Any
) -> None:
    monkeypatch.setenv("SPOTGATE_POOLS", "gpu")
    monkeypatch.setenv("SPOTGATE_MAX_WORKERS", "12")
    monkeypatch.setenv("SPOTGATE_POOL_POLICIES", '{"gpu": {"mix": {"base_on_demand": 1}}}')
    host_plan()
    mock = client(NOT_FOUND)
    watchdog = blueprint.fleet_watchdog.build().get_user_function().client_function

    await watchdog(TimerRequest(past_due=False), mock)

    policy = mock.start_new.await_args.args[2]["policy"]
    assert policy["autoscaling"]["max_workers"] == 12
    assert policy["mix"]["base_on_demand"] == 1 and policy["mix"]["zones"] == ["1", "2", "3"]
