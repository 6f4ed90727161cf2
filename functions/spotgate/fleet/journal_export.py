"""The fleet journal as tables for analysis: evictions, refusals, decisions, spans, GPU-hours.

One snapshot (`JournalSnapshot`) is built from the journal and the registry
where they live, or from `/fleet/journal`'s JSON by a CLI far from them, and
the same code turns it into files either way, so a file written on the
stack and one written by `spotgate fleet export` cannot differ.

Seconds and GPU-hours count only the time inside the window [since, now):
the spans' `seconds` add up to 3600 times the `gpu_hours`.
A worker is one GPU VM here; `gpu_hours` are worker-hours, priced per SKU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker_span_recorder import SkuFor, spans_between
from spotgate.fleet.worker_spans import HOUR_S, WORKER_SPAN_COLUMNS, WorkerSpan
from spotgate.table_export import write_table

Format = Literal["parquet", "csv"]
MAX_DECISIONS = 100_000
"""More than any journal keeps: the window, not this, limits what is read."""

EVICTION_COLUMNS = ("pool", "worker_id", "zone", "at")
CAPACITY_FAILURE_COLUMNS = ("pool", "priority", "zone", "reason", "at")
DECISION_COLUMNS = (
    "at", "pool", "tick", "action", "desired", "actual", "ready", "draining", "provisioning",
    "gone", "load", "spot_target", "on_demand_target", "why", "codes", "json",
)  # fmt: skip
SPAN_COLUMNS = (*WORKER_SPAN_COLUMNS, "seconds")
WORKER_HOUR_COLUMNS = ("hour", "pool", "priority", "sku", "gpu_hours")
_NUMBERS = frozenset({"at", "load"})
_COUNTS = frozenset(
    ("tick", "desired", "actual", "ready", "draining", "provisioning", "gone", "spot_target",
     "on_demand_target")
)  # fmt: skip


@dataclass(frozen=True)
class JournalSnapshot:
    """What the journal held for [since, now), as plain rows; spans include running workers."""

    since: float
    now: float
    evictions: list[dict[str, Any]]
    capacity_failures: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    worker_spans: list[WorkerSpan]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "now": self.now,
            "evictions": self.evictions,
            "capacity_failures": self.capacity_failures,
            "decisions": self.decisions,
            "worker_spans": [span.to_dict() for span in self.worker_spans],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JournalSnapshot:
        return cls(
            since=float(data["since"]),
            now=float(data["now"]),
            evictions=[dict(row) for row in data.get("evictions") or []],
            capacity_failures=[dict(row) for row in data.get("capacity_failures") or []],
            decisions=[dict(row) for row in data.get("decisions") or []],
            worker_spans=[WorkerSpan.from_dict(row) for row in data.get("worker_spans") or []],
        )


def journal_snapshot(
    journal: FleetJournal, registry: WorkerRegistry, sku_for: SkuFor, since: float, now: float
) -> JournalSnapshot:
    decisions = [d for d in journal.recent(MAX_DECISIONS) if _decision_at(d) >= since]
    return JournalSnapshot(
        since=since,
        now=now,
        evictions=[e.to_dict() for e in journal.all_evictions(since)],
        capacity_failures=[f.to_dict() for f in journal.all_capacity_failures(since)],
        decisions=decisions,
        worker_spans=spans_between(journal, registry, sku_for, since, now),
    )


def export_journal(
    journal: FleetJournal,
    registry: WorkerRegistry,
    sku_for: SkuFor,
    out_dir: Path,
    fmt: Format,
    since: float,
    now: float,
) -> dict[str, int]:
    """Write the five tables of [since, now) into `out_dir`; rows per file name."""
    snapshot = journal_snapshot(journal, registry, sku_for, since, now)
    return write_snapshot(snapshot, out_dir, fmt)


def write_snapshot(
    snapshot: JournalSnapshot,
    out_dir: Path,
    fmt: Format,
    on_file: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write `snapshot`'s tables as `<name>.<fmt>`; `on_file(name)` is told before each."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown format {fmt!r}: use parquet or csv")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, columns, rows in tables(snapshot):
        file_name = f"{name}.{fmt}"
        if on_file is not None:
            on_file(file_name)
        counts[file_name] = write_table(out_dir / file_name, columns, rows)
    return counts


def tables(
    snapshot: JournalSnapshot,
) -> list[tuple[str, Sequence[str], Iterable[Mapping[str, Any]]]]:
    """(name, columns, rows) of every table an export writes, in the order it writes them."""
    return [
        ("evictions", EVICTION_COLUMNS, snapshot.evictions),
        ("capacity_failures", CAPACITY_FAILURE_COLUMNS, snapshot.capacity_failures),
        ("decisions", DECISION_COLUMNS, map(decision_row, snapshot.decisions)),
        ("worker_spans", SPAN_COLUMNS, span_rows(snapshot)),
        ("worker_hours", WORKER_HOUR_COLUMNS, worker_hours(snapshot)),
    ]


def decision_row(decision: Mapping[str, Any]) -> dict[str, Any]:
    """Stable columns of a decision (the monitor adds fields over time); all of it in `json`."""
    row: dict[str, Any] = {name: decision.get(name) for name in DECISION_COLUMNS}
    row["at"] = decision.get("observed_at", decision.get("at"))
    row["why"] = decision.get("reason", decision.get("why"))
    for name in _NUMBERS | _COUNTS:
        row[name] = _number(row[name], int if name in _COUNTS else float)
    codes = decision.get("codes")
    row["codes"] = " ".join(map(str, codes)) if isinstance(codes, list) else None
    for name in ("pool", "action", "why"):
        row[name] = None if row[name] is None else str(row[name])
    row["json"] = orjson.dumps(decision, option=orjson.OPT_SORT_KEYS).decode()
    return row


def span_rows(snapshot: JournalSnapshot) -> list[dict[str, Any]]:
    return [
        {**span.to_dict(), "seconds": span.seconds_in(snapshot.since, snapshot.now, snapshot.now)}
        for span in snapshot.worker_spans
    ]


def worker_hours(snapshot: JournalSnapshot) -> list[dict[str, Any]]:
    """Worker-hours per UTC hour, pool, priority and SKU, spans split at hour boundaries."""
    seconds: dict[tuple[float, str, str, str], float] = {}
    for span in snapshot.worker_spans:
        for hour, inside in span.hours(snapshot.since, snapshot.now, snapshot.now):
            key = (hour, span.pool, span.priority, span.sku or "")
            seconds[key] = seconds.get(key, 0.0) + inside
    return [
        {
            "hour": datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pool": pool,
            "priority": priority,
            "sku": sku or None,
            "gpu_hours": round(total / HOUR_S, 9),
        }
        for (hour, pool, priority, sku), total in sorted(seconds.items())
    ]


def _decision_at(decision: Mapping[str, Any]) -> float:
    """When it was decided; one without a time is kept (it cannot be placed outside)."""
    at = _number(decision.get("observed_at", decision.get("at")), float)
    return float("inf") if at is None else at


def _number(value: Any, kind: type[int] | type[float]) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)
