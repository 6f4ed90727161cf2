"""One contract for every FleetJournal: policies must not care which host stores their memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spotgate.adapters.local.sqlite_fleet_journal import SqliteFleetJournal
from spotgate.fleet.journal import (
    CapacityFailureRecord,
    EvictionRecord,
    FleetJournal,
    InMemoryFleetJournal,
)
from spotgate.fleet.signals import CapacityFailure, EvictionSignal
from spotgate.fleet.worker_spans import WorkerSpan

JournalFactory = Callable[[int], Any]


@pytest.fixture(params=["memory", "sqlite"])
def make_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalFactory]:
    """Builds journals that keep at most `cap` decisions."""
    opened: list[SqliteFleetJournal] = []

    def make(cap: int = 500) -> Any:
        if request.param == "memory":
            return InMemoryFleetJournal(maxlen=cap)
        journal = SqliteFleetJournal(
            tmp_path / f"journal-{len(opened)}.db", max_decisions=cap, prune_every=3
        )
        opened.append(journal)
        return journal

    yield make
    for journal in opened:
        journal.close()


def _satisfies_protocol(journal: FleetJournal) -> FleetJournal:
    return journal


def test_a_retried_eviction_report_is_one_eviction(make_journal: JournalFactory) -> None:
    journal = _satisfies_protocol(make_journal(500))
    journal.record_eviction("gpu", "w1", "1", at=100.0)
    journal.record_eviction("gpu", "w1", "1", at=101.0)
    journal.record_eviction("gpu", "w2", None, at=102.0)
    assert journal.evictions("gpu", since=0.0) == [
        EvictionSignal(zone="1", at=100.0),
        EvictionSignal(zone=None, at=102.0),
    ]


def test_pools_do_not_mix(make_journal: JournalFactory) -> None:
    journal = make_journal(500)
    journal.record_eviction("a", "w1", "1", at=10.0)
    journal.record_eviction("b", "w1", "2", at=11.0)
    journal.record_capacity_failure("a", "spot", "1", "SkuNotAvailable", at=12.0)
    assert journal.evictions("a", since=0.0) == [EvictionSignal(zone="1", at=10.0)]
    assert journal.evictions("b", since=0.0) == [EvictionSignal(zone="2", at=11.0)]
    assert journal.capacity_failures("a", since=0.0) == [
        CapacityFailure("spot", "1", "SkuNotAvailable", 12.0)
    ]
    assert journal.capacity_failures("b", since=0.0) == []
    assert journal.evictions("c", since=0.0) == []


def test_since_filters_inclusively(make_journal: JournalFactory) -> None:
    journal = make_journal(500)
    for i, at in enumerate((10.0, 20.0, 30.0)):
        journal.record_eviction("gpu", f"w{i}", None, at=at)
        journal.record_capacity_failure("gpu", "spot", None, f"r{i}", at=at)
    assert [e.at for e in journal.evictions("gpu", since=20.0)] == [20.0, 30.0]
    assert [f.reason for f in journal.capacity_failures("gpu", since=20.5)] == ["r2"]
    assert journal.evictions("gpu", since=31.0) == []


def test_prune_drops_entries_older_than_the_cutoff(make_journal: JournalFactory) -> None:
    journal = make_journal(500)
    journal.record_eviction("gpu", "old", "1", at=10.0)
    journal.record_eviction("gpu", "new", "2", at=50.0)
    journal.record_capacity_failure("gpu", "spot", "1", "old", at=10.0)
    journal.record_capacity_failure("gpu", "on-demand", "2", "new", at=50.0)
    journal.prune(before=30.0)
    assert journal.evictions("gpu", since=0.0) == [EvictionSignal(zone="2", at=50.0)]
    assert [f.reason for f in journal.capacity_failures("gpu", since=0.0)] == ["new"]
    # a worker pruned away and evicted again (a new VM reusing the name) counts once more
    journal.record_eviction("gpu", "old", "1", at=60.0)
    assert [e.at for e in journal.evictions("gpu", since=0.0)] == [50.0, 60.0]


def test_decisions_come_back_in_order(make_journal: JournalFactory) -> None:
    journal = make_journal(500)
    assert journal.recent(5) == []
    assert len(journal) == 0
    for tick in range(1, 6):
        journal.append({"pool": "gpu", "tick": tick, "reason": f"r{tick}", "changes": ["x"]})
    assert [d["tick"] for d in journal.recent(3)] == [3, 4, 5]
    assert [d["tick"] for d in journal.recent(50)] == [1, 2, 3, 4, 5]
    assert journal.recent(0) == []
    assert journal.recent(1)[0] == {"pool": "gpu", "tick": 5, "reason": "r5", "changes": ["x"]}
    assert len(journal) == 5
    assert [d["tick"] for d in journal] == [1, 2, 3, 4, 5]


def test_decisions_keep_only_the_newest(make_journal: JournalFactory) -> None:
    journal = make_journal(4)
    for tick in range(1, 11):
        journal.append({"pool": "gpu", "tick": tick})
        assert len(journal) == min(tick, 4)
    assert [d["tick"] for d in journal.recent(10)] == [7, 8, 9, 10]
    assert [d["tick"] for d in journal] == [7, 8, 9, 10]


def span(worker_id: str, start: float, end: float, pool: str = "gpu", **fields: Any) -> WorkerSpan:
    values: dict[str, Any] = {"priority": "spot", "sku": "NC4", "zone": "1", "end_reason": "gone"}
    values.update(fields)
    return WorkerSpan(worker_id, pool, start=start, end=end, **values)


def test_every_pools_evictions_and_refusals_come_back_with_their_pool(
    make_journal: JournalFactory,
) -> None:
    journal = _satisfies_protocol(make_journal(500))
    journal.record_eviction("b", "w2", None, at=30.0)
    journal.record_eviction("a", "w1", "1", at=20.0)
    journal.record_eviction("a", "w1", "1", at=35.0)  # a retried report
    journal.record_eviction("a", "old", "1", at=5.0)
    journal.record_capacity_failure("b", "spot", "2", "SkuNotAvailable", at=25.0)
    journal.record_capacity_failure("a", "on-demand", None, "QuotaExceeded", at=15.0)
    assert journal.all_evictions(since=10.0) == [
        EvictionRecord("a", "w1", "1", 20.0),
        EvictionRecord("b", "w2", None, 30.0),
    ]
    assert journal.all_capacity_failures(since=15.0) == [
        CapacityFailureRecord("a", "on-demand", None, "QuotaExceeded", 15.0),
        CapacityFailureRecord("b", "spot", "2", "SkuNotAvailable", 25.0),
    ]
    assert journal.all_evictions(since=31.0) == []


def test_a_worker_seen_going_twice_is_one_span(make_journal: JournalFactory) -> None:
    """Every gateway instance records the worker it saw go; the report must bill it once."""
    journal = _satisfies_protocol(make_journal(500))
    journal.record_worker_span(span("w1", 100.0, 200.0, end_reason="heartbeat timeout"))
    journal.record_worker_span(span("w2", 150.0, 160.0, pool="cpu", sku=None, zone=None))
    journal.record_worker_span(span("w1", 100.0, 260.0, end_reason="evicted"))
    assert journal.worker_spans(since=0.0) == [
        span("w1", 100.0, 260.0, end_reason="evicted"),
        span("w2", 150.0, 160.0, pool="cpu", sku=None, zone=None),
    ]


def test_worker_spans_are_those_overlapping_the_window_by_start(
    make_journal: JournalFactory,
) -> None:
    journal = make_journal(500)
    for s in (
        span("late", 50.0, 60.0),
        span("ends-at-since", 0.0, 10.0),
        span("before", 0.0, 9.0),
        span("across", 5.0, 20.0),
        span("inside", 30.0, 40.0),
    ):
        journal.record_worker_span(s)
    inside = journal.worker_spans(since=10.0, until=50.0)
    assert [s.worker_id for s in inside] == ["ends-at-since", "across", "inside"]
    assert [s.worker_id for s in journal.worker_spans(since=10.0)] == [
        "ends-at-since",
        "across",
        "inside",
        "late",
    ]


def test_prune_drops_spans_that_ended_before_the_cutoff(make_journal: JournalFactory) -> None:
    journal = make_journal(500)
    journal.record_worker_span(span("old", 0.0, 10.0))
    journal.record_worker_span(span("long", 0.0, 50.0))
    journal.prune(before=30.0)
    assert [s.worker_id for s in journal.worker_spans(since=0.0)] == ["long"]


def test_a_running_workers_span_is_refused(make_journal: JournalFactory) -> None:
    """Its end is not known yet: a report takes running workers from the registry."""
    journal = make_journal(500)
    with pytest.raises(ValueError, match="has not ended"):
        journal.record_worker_span(WorkerSpan("w1", "gpu", "spot", "NC4", None, start=1.0))
    assert journal.worker_spans(since=0.0) == []


def test_sqlite_journal_survives_a_control_plane_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.db"
    with SqliteFleetJournal(path) as journal:
        journal.record_eviction("gpu", "w1", "3", at=100.0)
        journal.record_capacity_failure("gpu", "spot", "3", "SkuNotAvailable", at=101.0)
        for tick in range(1, 4):
            journal.append({"pool": "gpu", "tick": tick, "reason": "no change"})
        journal.record_worker_span(span("w1", 50.0, 100.0))
    with SqliteFleetJournal(path) as reopened:
        assert reopened.worker_spans(since=0.0) == [span("w1", 50.0, 100.0)]
        assert reopened.evictions("gpu", since=0.0) == [EvictionSignal(zone="3", at=100.0)]
        assert reopened.capacity_failures("gpu", since=0.0) == [
            CapacityFailure("spot", "3", "SkuNotAvailable", 101.0)
        ]
        assert [d["tick"] for d in reopened.recent(10)] == [1, 2, 3]
        reopened.record_eviction("gpu", "w1", "3", at=200.0)  # still a duplicate after reopening
        assert len(reopened.evictions("gpu", since=0.0)) == 1


def test_sqlite_journal_deletes_rows_past_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    with SqliteFleetJournal(path, max_decisions=5, prune_every=2) as journal:
        for tick in range(20):
            journal.append({"pool": "gpu" if tick % 2 else "cpu", "tick": tick})
        assert [d["tick"] for d in journal.recent_for_pool("gpu", 2)] == [17, 19]
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT pool, tick FROM decisions ORDER BY seq").fetchall()
    finally:
        db.close()
    assert len(rows) <= 5 + 2
    assert rows[-1] == ("gpu", 19)


def test_a_journal_file_from_before_spans_opens_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE evictions (pool TEXT NOT NULL, worker_id TEXT NOT NULL, zone TEXT,"
        " at REAL NOT NULL, PRIMARY KEY (pool, worker_id));"
        "INSERT INTO evictions VALUES ('gpu', 'w1', '2', 100.0);"
    )
    db.close()
    with SqliteFleetJournal(path) as journal:
        assert journal.all_evictions(since=0.0) == [EvictionRecord("gpu", "w1", "2", 100.0)]
        journal.record_worker_span(span("w1", 10.0, 100.0))
        assert journal.worker_spans(since=0.0) == [span("w1", 10.0, 100.0)]


def test_clearing_the_sqlite_journal_forgets_spans_too(tmp_path: Path) -> None:
    with SqliteFleetJournal(tmp_path / "fleet.db") as journal:
        journal.record_worker_span(span("w1", 10.0, 100.0))
        journal.clear()
        assert journal.worker_spans(since=0.0) == []
