"""The fleet monitor in simulated time: the orchestrator's own tick, its own activities.

`orchestrations.fleet_monitor.tick` is a generator that yields activity
calls; on Azure and locally the Durable replay engine runs them. Here a
context that answers each call at once drives the same generator, with the
same activity functions bound to simulated services, on the same timer:
every `tick_seconds`, or at once when woken (an eviction report, a request
waiting on a pool at zero), as the real monitor's wake ends its wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleetsim.events import EventQueue, _Event
from spotgate.orchestrations.activities import Activity, activity_table
from spotgate.orchestrations.fleet_monitor import tick
from spotgate.orchestrations.monitor_contract import MonitorState
from spotgate.orchestrations.services import FleetServices

log = logging.getLogger("spotgate.fleetsim")


@dataclass(frozen=True)
class _Call:
    name: str
    payload: Any


@dataclass(frozen=True)
class _All:
    calls: list[_Call]


class DirectContext:
    """Answers the tick's calls itself; the driver runs them (see `run_tick`)."""

    def __init__(self) -> None:
        self.status: Any = None

    def call_activity(self, name: str, input_: Any = None) -> _Call:
        return _Call(name, input_)

    def task_all(self, activities: list[Any]) -> _All:
        return _All(list(activities))

    def set_custom_status(self, status: Any) -> None:
        self.status = status


async def run_tick(state: MonitorState, activities: dict[str, Activity]) -> Any:
    """One tick of the real orchestrator code; returns its custom status."""
    context = DirectContext()
    steps = tick(context, state)
    result: Any = None
    while True:
        try:
            task = steps.send(result)
        except StopIteration:
            return context.status
        if isinstance(task, _All):
            result = [await activities[c.name](c.payload) for c in task.calls]
        else:
            result = await activities[task.name](task.payload)


class MonitorDriver:
    def __init__(
        self,
        events: EventQueue,
        pool: str,
        policy: FleetPolicyConfig,
        services: FleetServices,
        *,
        tick_seconds: float,
        before_tick: Callable[[], None],
    ) -> None:
        self._events = events
        self.state = MonitorState(pool, tick_seconds=tick_seconds, policy=policy)
        self._activities = activity_table(services)
        self._before = before_tick
        self._next: _Event | None = None
        self.ticks = 0
        self.failures = 0
        self.timeline: list[tuple[float, int, int, int]] = []
        """(time, desired, spot target, on-demand target) after each tick."""

    def start(self) -> None:
        self._schedule(0.0)

    async def wake(self, pool: str) -> None:
        """An eviction report or a cold wait: tick now, not at the timer."""
        if pool == self.state.pool:
            self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        due = self._events.now() + delay
        if self._next is not None and not self._next.cancelled and self._next.at <= due:
            return
        if self._next is not None:
            EventQueue.cancel(self._next)
        self._next = self._events.at(due, self._tick)

    async def _tick(self) -> None:
        self._next = None
        self._before()
        try:
            status = await run_tick(self.state, self._activities) or {}
            self.timeline.append(
                (
                    self._events.now(),
                    int(status.get("desired") or 0),
                    int(status.get("spot_target") or 0),
                    int(status.get("on_demand_target") or 0),
                )
            )
        except Exception:  # as the orchestrator: a failed tick costs one tick
            self.failures += 1
            log.exception("simulated monitor tick failed")
        self.ticks += 1
        self._schedule(self.state.tick_seconds)
