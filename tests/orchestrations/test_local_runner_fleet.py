"""The registered fleet monitor on the local runner, against a real registry."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from spotgate.adapters.local.durable_runner import (
    LocalOrchestrationRunner,
    orchestrators_from_blueprint,
)
from spotgate.clock import SystemClock
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.monitor_contract import initial_state, monitor_instance_id

from .conftest import Fleet, tick_of

ID = monitor_instance_id("default")


async def start(fleet: Fleet, tick_seconds: float = 0.2, ticks_per_run: int = 50) -> None:
    state = initial_state("default", tick_seconds=tick_seconds, ticks_per_run=ticks_per_run)
    assert await fleet.runner.start("fleet_monitor", ID, state) == ID


async def test_monitor_runs_and_publishes_counts(fleet: Fleet) -> None:
    fleet.register("w1")
    fleet.register("w2")
    fleet.registry.expect("w3", pool="default", model="m", engine="sim")
    await start(fleet)

    status = await fleet.wait_for(ID, lambda s: tick_of(s) >= 1)
    assert status["runtimeStatus"] == "Running"
    assert status["name"] == "fleet_monitor" and status["instanceId"] == ID
    custom = status["customStatus"]
    assert (custom["ready"], custom["provisioning"], custom["draining"]) == (2, 1, 0)
    assert custom["actual"] == custom["desired"] == 3
    assert custom["decision"]["codes"][0] == "scale_down_pending"
    assert status["input"]["pool"] == "default"
    for key in ("createdTime", "lastUpdatedTime"):
        assert datetime.strptime(status[key], "%Y-%m-%dT%H:%M:%SZ")
    assert fleet.services.journal.recent(1)[0]["tick"] == custom["tick"]


async def test_silent_worker_is_expired_and_named_in_the_decision(fleet: Fleet) -> None:
    fleet.register("w1")
    fleet.register("w2")
    await start(fleet, tick_seconds=0.05)
    await fleet.wait_for(ID, lambda s: tick_of(s) >= 1)

    fleet.clock.advance(10.0)  # past the 6 s heartbeat timeout
    fleet.registry.heartbeat("w2")
    status = await fleet.wait_for(ID, lambda s: s["customStatus"]["decision"]["expired"] == ["w1"])
    assert status["customStatus"]["ready"] == 1
    assert any(d["expired"] == ["w1"] for d in fleet.services.journal.recent(10))


async def test_wake_makes_a_tick_happen_long_before_the_timer(fleet: Fleet) -> None:
    fleet.register("w1")
    await start(fleet, tick_seconds=60.0)
    await fleet.wait_for(ID, lambda s: tick_of(s) == 1)

    fleet.registry.drain("w1", "spot eviction notice", event_id="ev-1")
    await fleet.runner.raise_event(ID, "wake")
    status = await fleet.wait_for(ID, lambda s: tick_of(s) == 2, within=2.0)
    decision = status["customStatus"]["decision"]
    assert decision["new_evictions"] == ["w1"]
    assert status["customStatus"]["draining"] == 1


async def test_continue_as_new_after_ticks_per_run_carries_the_tick_counter(
    fleet: Fleet,
) -> None:
    await start(fleet, tick_seconds=0.02, ticks_per_run=3)
    status = await fleet.wait_for(ID, lambda s: s["continuedAsNew"] >= 2)

    assert status["runtimeStatus"] == "Running"
    assert status["input"]["tick"] == 3 * status["continuedAsNew"]
    assert len(status["input"]["history"]) == 3 * status["continuedAsNew"]
    status = await fleet.wait_for(ID, lambda s: tick_of(s) >= 7)
    # a run holds at most ticks_per_run ticks of events, however long the monitor lives
    assert status["historyEvents"] <= 3 * 12


async def test_terminate_stops_the_monitor(fleet: Fleet) -> None:
    await start(fleet, tick_seconds=0.02)
    await fleet.wait_for(ID, lambda s: tick_of(s) >= 2)

    await fleet.runner.terminate(ID, "operator said so")
    status = fleet.runner.status(ID)
    assert status is not None
    assert status["runtimeStatus"] == "Terminated"
    assert status["output"] == "operator said so"
    recorded = len(fleet.services.journal.recent(10_000))
    await asyncio.sleep(0.1)  # five tick lengths
    assert len(fleet.services.journal.recent(10_000)) == recorded
    await fleet.runner.raise_event(ID, "wake")  # dropped, not an error
    assert fleet.runner.list_instances()[0]["runtimeStatus"] == "Terminated"


async def test_monitor_survives_a_failing_activity(fleet: Fleet) -> None:
    failures = {"left": 1}
    activities = activity_table(fleet.services)
    observe = activities["observe_pool"]

    def flaky_observe(payload: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("store unreachable")
        return observe(payload)

    runner = LocalOrchestrationRunner(
        orchestrators_from_blueprint(blueprint.bp),
        activities | {"observe_pool": flaky_observe},
        SystemClock(),
    )
    fleet.register("w1")
    try:
        state = initial_state("default", tick_seconds=0.05)
        await runner.start("fleet_monitor", ID, state)
        failed = await fleet.wait_for(
            ID, lambda s: "error" in (s["customStatus"] or {}), runner=runner
        )
        assert "store unreachable" in failed["customStatus"]["error"]
        assert failed["runtimeStatus"] == "Running"
        recovered = await fleet.wait_for(ID, lambda s: tick_of(s) >= 1, runner=runner)
        assert recovered["customStatus"]["ready"] == 1
        assert "error" not in recovered["customStatus"]
    finally:
        await runner.stop()
