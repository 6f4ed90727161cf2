"""Drivers for orchestration tests: a fake context, a scripted replay host, a local fleet.

Three levels, each closer to production: FakeContext steps the raw generator
(no SDK), ReplayHost feeds hand-made history to the SDK's real replay engine
(no asyncio), and the `fleet` fixture runs the registered orchestrator on the
LocalOrchestrationRunner against a real registry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as Ev

from spotgate.adapters.local.durable_protocol import (
    context_json,
    event,
    execution_started,
    flatten_actions,
    invoke,
    parse_timestamp,
)
from spotgate.adapters.local.durable_runner import (
    LocalOrchestrationRunner,
    orchestrators_from_blueprint,
)
from spotgate.clock import ManualClock, SystemClock
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import PoolSignals, WorkerSignal
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.services import SimpleFleetServices

# FakeContext: the generator on its own


@dataclass
class FakeTask:
    kind: str
    name: str | None = None
    payload: Any = None
    value: Any = None
    is_completed: bool = False
    cancelled: bool = False

    @property
    def result(self) -> Any:
        """Like a failed Task: orchestrator_generator_wrapper throws what reading it raises."""
        if isinstance(self.value, Exception):
            raise self.value
        return self.value

    def cancel(self) -> None:
        self.cancelled = True


class FakeContext:
    """Records every call the orchestrator makes; observe_pool answers from `observations`."""

    def __init__(
        self,
        input: dict[str, Any],
        observations: Sequence[dict[str, Any] | Exception],
        *,
        wake_at_ticks: frozenset[int] = frozenset(),
    ) -> None:
        self._input = input
        self._observations = list(observations)
        self._wake_at_ticks = wake_at_ticks
        self.current_utc_datetime = datetime(2024, 1, 1, tzinfo=UTC)
        self.is_replaying = False  # every step is new: the orchestrator reports each tick
        self.calls: list[tuple[str, Any]] = []
        self.tasks: list[FakeTask] = []
        self.custom_status: Any = None
        self._waits = 0

    def get_input(self) -> Any:
        return self._input

    def call_activity(self, name: str, input_: Any = None) -> FakeTask:
        self.calls.append(("activity", name))
        result = self._observations.pop(0) if name == "observe_pool" else None
        task = FakeTask("activity", name, input_, result)
        self.tasks.append(task)
        return task

    def create_timer(self, fire_at: datetime) -> FakeTask:
        self.calls.append(("timer", fire_at))
        return FakeTask("timer", payload=fire_at)

    def wait_for_external_event(self, name: str) -> FakeTask:
        self.calls.append(("wait", name))
        return FakeTask("event", name)

    def task_any(self, tasks: list[FakeTask]) -> FakeTask:
        self._waits += 1
        timer, wake = tasks
        winner = wake if self._waits in self._wake_at_ticks else timer
        self.calls.append(("any", winner.kind))
        return FakeTask("any", value=winner)

    def task_all(self, tasks: list[FakeTask]) -> FakeTask:
        self.calls.append(("all", [t.name for t in tasks]))
        return FakeTask("all", value=[t.value for t in tasks])

    def set_custom_status(self, status: Any) -> None:
        self.calls.append(("status", status))
        self.custom_status = status

    def continue_as_new(self, input_: Any) -> None:
        self.calls.append(("continue_as_new", input_))


def observation(
    pool: str = "default",
    *,
    ready: int = 0,
    provisioning: int = 0,
    draining: int = 0,
    evicting: Sequence[str] = (),
    expired: Sequence[str] = (),
    gone: int = 0,
    queue: int = 0,
    now: float = 1_700_000_000.0,
) -> dict[str, Any]:
    """An observe_pool result in its wire shape: workers w1.. ready, then provisioning, draining."""
    workers = [WorkerSignal(f"w{i + 1}", zone=str(i % 3 + 1)) for i in range(ready)]
    workers += [
        WorkerSignal(f"p{i + 1}", state="provisioning", since=now) for i in range(provisioning)
    ]
    workers += [
        WorkerSignal(f"d{i + 1}", state="draining", running=1.0, since=now) for i in range(draining)
    ]
    workers += [
        WorkerSignal(w, state="draining", evicting=True, deadline=now + 30, since=now)
        for w in evicting
    ]
    signals = PoolSignals.build(pool, now, admission_queue_depth=queue, workers=workers)
    return PoolObservation(signals, gone=gone, expired=tuple(expired)).to_dict()


# ReplayHost: the real replay engine, history written by hand


@dataclass
class ReplayHost:
    """Plays the Functions host synchronously: the test decides when work completes."""

    handle: Callable[[str], str]
    input: Any
    name: str = "fleet_monitor"
    now: datetime = field(default_factory=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    history: list[dict[str, Any]] = field(default_factory=list)
    known: int = 0
    outstanding: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.history = [
            event(Ev.ORCHESTRATOR_STARTED, self.now),
            execution_started(self.name, json.dumps(self.input), self.now),
        ]

    def replay(self, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        payload = context_json("test-instance", json.dumps(self.input), history or self.history)
        state, error = invoke(self.handle, payload)
        assert error is None, error
        return state

    def step(self) -> dict[str, Any]:
        """Replay, then record the new actions in history as the host would."""
        state = self.replay()
        seq = 0
        for index, action in enumerate(flatten_actions(state["actions"])):
            kind = ActionType(action["actionType"])
            task_id = seq
            if kind in (ActionType.CALL_ACTIVITY, ActionType.CREATE_TIMER):
                seq += 1
            if index < self.known:
                continue
            if kind == ActionType.CALL_ACTIVITY:
                self.history.append(
                    event(Ev.TASK_SCHEDULED, self.now, task_id, Name=action["functionName"])
                )
                self.outstanding[task_id] = action
            elif kind == ActionType.CREATE_TIMER and not action["isCanceled"]:
                self.history.append(
                    event(Ev.TIMER_CREATED, self.now, task_id, FireAt=action["fireAt"])
                )
                self.outstanding[task_id] = action
        self.known = len(flatten_actions(state["actions"]))
        for played in self.history:
            played["IsPlayed"] = True
        self.history.append(event(Ev.ORCHESTRATOR_COMPLETED, self.now))
        return state

    def _new_episode(self) -> None:
        if self.history[-1]["EventType"] == Ev.ORCHESTRATOR_COMPLETED:
            self.history.append(event(Ev.ORCHESTRATOR_STARTED, self.now))

    def complete(self, name: str, result: Any) -> None:
        task_id = next(i for i, a in self.outstanding.items() if a.get("functionName") == name)
        del self.outstanding[task_id]
        self._new_episode()
        done = event(
            Ev.TASK_COMPLETED, self.now, TaskScheduledId=task_id, Result=json.dumps(result)
        )
        self.history.append(done)

    def fire_timer(self) -> None:
        task_id = next(i for i, a in self.outstanding.items() if "fireAt" in a)
        action = self.outstanding.pop(task_id)
        self.now = max(self.now, parse_timestamp(action["fireAt"]))
        self._new_episode()
        self.history.append(
            event(Ev.TIMER_FIRED, self.now, TimerId=task_id, FireAt=action["fireAt"])
        )

    def raise_event(self, name: str, data: Any = None) -> None:
        self._new_episode()
        self.history.append(event(Ev.EVENT_RAISED, self.now, Name=name, Input=json.dumps(data)))

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def monitor_handle() -> Callable[[str], str]:
    """The replay handle exactly as the blueprint registered it."""
    return blueprint.fleet_monitor.build().get_user_function()  # type: ignore[no-any-return]


# the local fleet: registry + services + runner


@dataclass
class Fleet:
    clock: ManualClock
    registry: WorkerRegistry
    services: SimpleFleetServices
    runner: LocalOrchestrationRunner

    def register(self, worker_id: str, pool: str = "default") -> None:
        self.registry.register(
            worker_id, pool=pool, model="m", engine="sim", url=f"http://w/{worker_id}"
        )

    async def wait_for(
        self,
        instance_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        within: float = 3.0,
        runner: LocalOrchestrationRunner | None = None,
    ) -> dict[str, Any]:
        """Poll the status until the predicate holds; returns that status."""
        runner = runner or self.runner
        deadline = asyncio.get_running_loop().time() + within
        while True:
            status = runner.status(instance_id)
            if status is not None and predicate(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; last status: {status}")
            await asyncio.sleep(0.01)


def tick_of(status: dict[str, Any]) -> int:
    return int((status.get("customStatus") or {}).get("tick", 0))


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    """Registry time is manual (heartbeats age when the test says); runner time is real."""
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    services = SimpleFleetServices(registry, clock, heartbeat_timeout_s=6.0)
    runner = LocalOrchestrationRunner(
        orchestrators_from_blueprint(blueprint.bp), activity_table(services), SystemClock()
    )
    yield Fleet(clock, registry, services, runner)
    await runner.stop()


@pytest.fixture
def services_provider() -> Iterator[Callable[[SimpleFleetServices], None]]:
    """Installs a provider for the blueprint's activity wrappers and removes it afterwards."""

    def install(services: SimpleFleetServices) -> None:
        blueprint.set_services_provider(lambda: services)

    yield install
    blueprint.set_services_provider(None)
