"""The fleet journal as files: every table, its columns, GPU-hours; one path for CLI and stack."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import orjson
import pytest

from spotgate.clock import ManualClock
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.journal_export import (
    DECISION_COLUMNS,
    SPAN_COLUMNS,
    WORKER_HOUR_COLUMNS,
    JournalSnapshot,
    export_journal,
    journal_snapshot,
    write_snapshot,
)
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker_span_recorder import WorkerSpanRecorder

HOUR0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z
HOUR = 3600.0
FILES = (
    "evictions",
    "capacity_failures",
    "decisions",
    "worker_spans",
    "worker_hours",
)


def sku_for(pool: str) -> str:
    return {"big": "Standard_ND96"}.get(pool, "local-cpu")


def a_day_of_fleet() -> tuple[InMemoryFleetJournal, WorkerRegistry, float]:
    """Two spot workers from 22:30 UTC, one evicted at midnight, one still running at
    00:15 ("now", returned), and what the monitor wrote meanwhile."""
    clock = ManualClock(HOUR0 + 1800)
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    journal = InMemoryFleetJournal()
    WorkerSpanRecorder(registry, journal, sku_for, clock=clock)
    for worker_id, pool in (("w1", "big"), ("w2", "small")):
        registry.register(worker_id, pool=pool, model="m", engine="sim", url=f"http://{worker_id}")
    journal.append({"pool": "big", "tick": 1, "observed_at": HOUR0 - 60, "reason": "too old"})
    clock.advance(HOUR)
    journal.record_eviction("big", "w1", "1", at=clock.now())
    journal.record_capacity_failure("small", "spot", "2", "SkuNotAvailable", at=clock.now())
    journal.append(
        {
            "pool": "big",
            "tick": 7,
            "observed_at": clock.now(),
            "action": "provision",
            "reason": "replacing an evicted worker",
            "desired": 2,
            "actual": 1,
            "load": 1.5,
            "codes": ["steady", "spot_evicted"],
            "per_zone": {"1": 1},
        }
    )
    clock.advance(HOUR / 2)
    registry.mark_gone("w1", "evicted")
    return journal, registry, HOUR0 + 2 * HOUR + 900


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_csv_export_writes_every_table_with_its_rows(tmp_path: Path) -> None:
    journal, registry, now = a_day_of_fleet()
    out = tmp_path / "journal"
    counts = export_journal(journal, registry, sku_for, out, "csv", since=HOUR0, now=now)
    assert counts == {
        "evictions.csv": 1,
        "capacity_failures.csv": 1,
        "decisions.csv": 1,  # the one before `since` is left out
        "worker_spans.csv": 2,
        "worker_hours.csv": 5,
    }
    _, evictions = read_csv(out / "evictions.csv")
    assert evictions == [
        {"pool": "big", "worker_id": "w1", "zone": "1", "at": str(HOUR0 + 1800 + HOUR)}
    ]
    header, [decision] = read_csv(out / "decisions.csv")
    assert header == list(DECISION_COLUMNS)
    assert (decision["at"], decision["pool"], decision["tick"]) == (
        str(HOUR0 + 1800 + HOUR),
        "big",
        "7",
    )
    assert (decision["desired"], decision["why"], decision["codes"]) == (
        "2",
        "replacing an evicted worker",
        "steady spot_evicted",
    )
    assert json.loads(decision["json"])["per_zone"] == {"1": 1}


def test_worker_hours_split_spans_at_utc_hours_and_match_their_seconds(tmp_path: Path) -> None:
    journal, registry, now = a_day_of_fleet()
    export_journal(journal, registry, sku_for, tmp_path, "csv", since=HOUR0, now=now)
    header, hours = read_csv(tmp_path / "worker_hours.csv")
    assert header == list(WORKER_HOUR_COLUMNS)
    assert [(h["hour"], h["pool"], h["sku"], float(h["gpu_hours"])) for h in hours] == [
        ("2023-11-14T22:00:00Z", "big", "Standard_ND96", 0.5),
        ("2023-11-14T22:00:00Z", "small", "local-cpu", 0.5),
        ("2023-11-14T23:00:00Z", "big", "Standard_ND96", 1.0),
        ("2023-11-14T23:00:00Z", "small", "local-cpu", 1.0),
        ("2023-11-15T00:00:00Z", "small", "local-cpu", 0.25),  # w2 still runs
    ]
    assert {h["priority"] for h in hours} == {"spot"}
    span_header, spans = read_csv(tmp_path / "worker_spans.csv")
    assert span_header == list(SPAN_COLUMNS)
    assert {s["worker_id"]: (s["end"], s["end_reason"], float(s["seconds"])) for s in spans} == {
        "w1": (str(HOUR0 + 2 * HOUR), "evicted", 1.5 * HOUR),
        "w2": ("", "", 1.75 * HOUR),  # running: counted up to now
    }
    total_hours = sum(float(h["gpu_hours"]) for h in hours)
    assert total_hours * HOUR == pytest.approx(sum(float(s["seconds"]) for s in spans))


def test_parquet_export_keeps_types_and_nulls(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    journal, registry, now = a_day_of_fleet()
    counts = export_journal(journal, registry, sku_for, tmp_path, "parquet", since=HOUR0, now=now)
    assert sorted(counts) == sorted(f"{name}.parquet" for name in FILES)
    spans = pq.read_table(tmp_path / "worker_spans.parquet").to_pylist()
    assert [(s["worker_id"], s["end"], s["seconds"]) for s in spans] == [
        ("w1", HOUR0 + 2 * HOUR, 1.5 * HOUR),
        ("w2", None, 1.75 * HOUR),
    ]
    [decision] = pq.read_table(tmp_path / "decisions.parquet").to_pylist()
    assert (decision["tick"], decision["desired"], decision["load"]) == (7, 2, 1.5)
    hours = pq.read_table(tmp_path / "worker_hours.parquet")
    assert str(hours.schema.field("gpu_hours").type) == "double"


def test_the_cli_path_through_json_writes_the_same_files(tmp_path: Path) -> None:
    """`spotgate fleet export` rebuilds the snapshot from /fleet/journal's JSON."""
    journal, registry, now = a_day_of_fleet()
    export_journal(journal, registry, sku_for, tmp_path / "stack", "csv", since=HOUR0, now=now)
    snapshot = journal_snapshot(journal, registry, sku_for, since=HOUR0, now=now)
    wire = orjson.loads(orjson.dumps(snapshot.to_json()))
    written: list[str] = []
    write_snapshot(JournalSnapshot.from_json(wire), tmp_path / "cli", "csv", written.append)
    assert written == [f"{name}.csv" for name in FILES]
    for name in written:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "stack" / name).read_bytes()


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    journal, registry, now = a_day_of_fleet()
    with pytest.raises(ValueError, match="parquet or csv"):
        export_journal(journal, registry, sku_for, tmp_path / "out", "xlsx", HOUR0, now)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
