"""One contract for every FleetJournal: policies must not care which host stores their memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spotgate.adapters.local.sqlite_fleet_journal import SqliteFleetJournal
from spotgate.fleet.journal import FleetJournal, InMemoryFleetJournal
from spotgate.fleet.signals import CapacityFailure, EvictionSignal

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


def test_sqlite_journal_survives_a_control_plane_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.db"
    with SqliteFleetJournal(path) as journal:
        journal.record_eviction("gpu", "w1", "3", at=100.0)
        journal.record_capacity_failure("gpu", "spot", "3", "SkuNotAvailable", at=101.0)
        for tick in range(1, 4):
            journal.append({"pool": "gpu", "tick": tick, "reason": "no change"})
    with SqliteFleetJournal(path) as reopened:
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
