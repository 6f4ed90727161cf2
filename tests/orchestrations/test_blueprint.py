"""The blueprint as the Functions host indexes it, and its activity wrappers."""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func
import pytest

from spotgate.adapters.local.durable_runner import orchestrators_from_blueprint
from spotgate.clock import ManualClock
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.services import SimpleFleetServices


def test_function_app_indexes_orchestrator_activities_and_watchdog() -> None:
    app = func.FunctionApp()
    app.register_functions(blueprint.bp)
    functions = {f.get_function_name(): f for f in app.get_functions()}

    triggers = {name: f.get_trigger().type for name, f in functions.items()}  # type: ignore[union-attr]
    assert triggers == {
        "fleet_monitor": "orchestrationTrigger",
        "observe_pool": "activityTrigger",
        "provision_workers": "activityTrigger",
        "drain_workers": "activityTrigger",
        "delete_workers": "activityTrigger",
        "record_decision": "activityTrigger",
        "fleet_watchdog": "timerTrigger",
        "batch_job": "orchestrationTrigger",
        "prepare_batch": "activityTrigger",
        "enqueue_lines": "activityTrigger",
        "batch_progress": "activityTrigger",
        "finalise_batch": "activityTrigger",
        "fail_batch": "activityTrigger",
    }
    bindings = {b["type"]: b for b in functions["fleet_watchdog"].get_bindings_dict()["bindings"]}
    assert bindings["timerTrigger"]["schedule"] == "0 */1 * * * *"
    assert bindings["timerTrigger"]["runOnStartup"] is True
    assert "durableClient" in bindings


def test_local_runner_gets_the_same_orchestrator_handle() -> None:
    handles = orchestrators_from_blueprint(blueprint.bp)
    assert list(handles) == ["fleet_monitor", "batch_job"]
    registered = blueprint.fleet_monitor.build().get_user_function()
    assert handles["fleet_monitor"] is registered
    assert handles["batch_job"] is blueprint.batch_job.build().get_user_function()


async def test_activity_wrappers_use_the_services_provider(
    services_provider: Callable[[SimpleFleetServices], None],
) -> None:
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    registry.register("w1", pool="default", model="m", engine="sim", url="http://w1")
    services = SimpleFleetServices(registry, clock, heartbeat_timeout_s=6.0)
    services_provider(services)

    observe = blueprint.observe_pool.build().get_user_function()
    record = blueprint.record_decision.build().get_user_function()
    seen = await observe({"pool": "default"})
    await record({"pool": "default", "decision": {"tick": 1, "reason": "no change"}})

    assert seen["signals"]["ready"]["spot"] == 1 and seen["signals"]["now"] == clock.now()
    assert services.journal.recent(5) == [{"tick": 1, "reason": "no change", "pool": "default"}]


async def test_activity_wrappers_without_services_say_what_is_missing() -> None:
    blueprint.set_services_provider(None)
    with pytest.raises(RuntimeError, match="set_services_provider"):
        await blueprint.observe_pool.build().get_user_function()({"pool": "default"})


def test_decision_log_is_bounded() -> None:
    log = InMemoryFleetJournal(maxlen=3)
    for tick in range(5):
        log.append({"tick": tick})
    assert len(log) == 3
    assert log.recent(2) == [{"tick": 3}, {"tick": 4}]
    assert log.recent(20) == [{"tick": 2}, {"tick": 3}, {"tick": 4}]
    assert log.recent(0) == []
