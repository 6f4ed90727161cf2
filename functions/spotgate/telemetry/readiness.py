"""What `/health/ready` checks, and why a pool at zero workers is still ready.

Ready means this instance can accept a request and something will see it
through: startup finished, and every pool has a fleet monitor that decided
recently (read from the shared journal, so it holds on instances that do not
run the monitor or hold no Durable client). A pool scaled to zero by policy is
ready: a request waits in the admission queue and wakes the monitor. Workers
are reported, never a reason for 503, or a load balancer would stop sending
the very requests that make the pool scale up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import WorkerState

MONITOR_SILENT_TICKS = 12
"""A monitor that has not decided for this many ticks (and at least two minutes) is down."""
MIN_SILENCE_S = 120.0


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ready else "unavailable",
            "problems": self.problems,
            **self.checks,
        }


def readiness(
    *,
    started: bool,
    pools: list[str],
    registry: WorkerRegistry,
    journal: FleetJournal,
    now: float,
    tick_s: float,
) -> Readiness:
    problems: list[str] = []
    if not started:
        problems.append("startup has not finished")
    latest: dict[str, dict[str, Any]] = {}
    for decision in journal.recent(200):
        pool = decision.get("pool")
        if isinstance(pool, str):
            latest[pool] = decision
    silence_limit = max(MIN_SILENCE_S, MONITOR_SILENT_TICKS * tick_s)
    report: dict[str, Any] = {}
    workers = registry.all()
    for pool in pools:
        mine = [w for w in workers if w.pool == pool and w.state != WorkerState.GONE]
        ready = sum(1 for w in mine if w.state == WorkerState.READY)
        last = latest.get(pool)
        at = None if last is None else last.get("observed_at", last.get("at"))
        age = now - at if isinstance(at, int | float) else None
        if age is None:
            problems.append(f"pool {pool}: no fleet monitor decision yet")
        elif age > silence_limit:
            problems.append(f"pool {pool}: fleet monitor silent for {age:.0f}s")
        report[pool] = {
            "ready_workers": ready,
            "workers": len(mine),
            "desired": None if last is None else last.get("desired"),
            "monitor_last_decision_s_ago": None if age is None else round(age, 1),
        }
    return Readiness(not problems, {"pools": report}, problems)
