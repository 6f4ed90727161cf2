"""Fleet monitor ticks as the monitor-stalled and monitor-failing alerts count them.

The monitor runs as the local stack runs it: the real orchestrator on the
in-process Durable replay engine, its real activities on a real registry,
reporting to the stack's telemetry. A journal that refuses writes for a
while makes ticks fail the way a Cosmos DB outage does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from spotgate.adapters.local.durable_runner import LocalOrchestrationRunner
from spotgate.clock import SystemClock
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.fleet_monitor import reporting_to
from spotgate.orchestrations.monitor_contract import initial_state
from spotgate.orchestrations.services import SimpleFleetServices
from spotgate.telemetry.monitor_ticks import TICK_SPAN
from tests.telemetry.conftest import Otel

MONITOR = "fleet-monitor-default"


class FlakyJournal(InMemoryFleetJournal):
    """Refuses to record decisions while `down`, as a store that is unreachable."""

    down = True

    def append(self, decision: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionError("journal unreachable")
        super().append(decision)


async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def ticks(text: str, outcome: str) -> float:
    line = f'spotgate_monitor_ticks_total{{outcome="{outcome}",pool="default"}} '
    found = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


async def test_ticks_are_counted_once_each_by_outcome_with_a_span_per_tick(otel: Otel) -> None:
    telemetry = otel.telemetry()
    clock = SystemClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    registry.register("w1", pool="default", model="m", engine="sim", url="http://w/1")
    journal = FlakyJournal()
    services = SimpleFleetServices(registry, clock, journal=journal)
    runner = LocalOrchestrationRunner(
        {"fleet_monitor": reporting_to(telemetry.ticks)}, activity_table(services), clock
    )
    state = initial_state("default", tick_seconds=0.01, ticks_per_run=3)
    await runner.start("fleet_monitor", MONITOR, state)
    try:
        await until(lambda: ticks(telemetry.render().decode(), "failed") >= 3)
        failed_status = runner.status(MONITOR)
        assert failed_status is not None and "journal unreachable" in str(failed_status)
        journal.down = False
        await until(lambda: len(journal) >= 4)
    finally:
        await runner.stop()

    text = telemetry.render().decode()
    ok_ticks = ticks(text, "ok")
    # replays run the orchestrator's code again and again: each tick still counts once (the
    # last decision may have been recorded just before the stop, its tick not yet reported)
    assert len(journal) - 1 <= ok_ticks <= len(journal)
    assert ticks(text, "failed") >= 3
    assert otel.value("spotgate_monitor_ticks_total", pool="default", outcome="ok") == ok_ticks

    spans = [s for s in otel.spans() if s.name == TICK_SPAN]
    outcomes = Counter(dict(s.attributes or {})["spotgate.outcome"] for s in spans)
    assert outcomes == {"ok": ok_ticks, "failed": ticks(text, "failed")}
    ok = [dict(s.attributes or {}) for s in spans]
    ok = [a for a in ok if a["spotgate.outcome"] == "ok"]
    reported = [a["spotgate.tick"] for a in ok]
    assert len(set(reported)) == len(reported)
    assert set(reported) <= {d["tick"] for d in journal.recent(100)}
    assert all(a["spotgate.pool"] == "default" and a["spotgate.ready"] == 1 for a in ok)
    assert all(a["spotgate.action"] for a in ok)
    failed = [s for s in spans if dict(s.attributes or {})["spotgate.outcome"] == "failed"]
    assert all("journal unreachable" in (s.status.description or "") for s in failed)
