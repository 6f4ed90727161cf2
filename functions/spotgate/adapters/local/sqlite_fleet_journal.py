"""The fleet journal in SQLite: evictions, refused capacity and decisions that outlive a restart.

The in-memory journal forgets everything when the local control plane
restarts, and the capacity mix would then happily ask for spot in a zone that
refused it a minute ago. This keeps the same `FleetJournal` contract on disk,
the local stand-in for the Cosmos DB container the Azure host uses.

One connection shared under a lock (the monitor's activities and the CLI's
status reads may come from different threads), WAL so readers do not block
the writer. Evictions are keyed by (pool, worker_id) because an agent that
retries its report must not count as a second eviction; worker spans by
worker_id, replaced on a second record, so a worker is billed once. Every
table is created if missing, so a journal file from before spans still opens.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from spotgate.adapters.local.private_files import private_database
from spotgate.fleet.journal import CapacityFailureRecord, EvictionRecord, ended_at
from spotgate.fleet.signals import CapacityFailure, EvictionSignal
from spotgate.fleet.worker_spans import WorkerSpan

DEFAULT_MAX_DECISIONS = 2000
DEFAULT_PRUNE_EVERY = 100

_IN_CAP = "seq > (SELECT COALESCE(MAX(seq), 0) FROM decisions) - ?"
"""At most the newest `max_decisions` rows: sequence numbers only ever grow."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evictions (
    pool TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    zone TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (pool, worker_id)
);
CREATE INDEX IF NOT EXISTS evictions_pool_at ON evictions (pool, at);
CREATE TABLE IF NOT EXISTS capacity_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    priority TEXT NOT NULL,
    zone TEXT,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS capacity_failures_pool_at ON capacity_failures (pool, at);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT,
    tick INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_pool_seq ON decisions (pool, seq);
CREATE TABLE IF NOT EXISTS worker_spans (
    worker_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    priority TEXT NOT NULL,
    sku TEXT,
    zone TEXT,
    start_at REAL NOT NULL,
    end_at REAL NOT NULL,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS worker_spans_end ON worker_spans (end_at);
"""
_SPAN_COLUMNS = "worker_id, pool, priority, sku, zone, start_at, end_at, end_reason"


class SqliteFleetJournal:
    """A `FleetJournal` (and `DecisionLog`) backed by one SQLite file.

    Decisions are capped at the newest `max_decisions`. Deleting on every
    insert would cost a write per tick for nothing, so old rows are deleted
    every `prune_every` appends; reads only ever look at the newest
    `max_decisions` sequence numbers, so callers see an exact cap regardless.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_decisions: int = DEFAULT_MAX_DECISIONS,
        prune_every: int = DEFAULT_PRUNE_EVERY,
    ) -> None:
        if max_decisions <= 0:
            raise ValueError("max_decisions must be positive")
        self._db = sqlite3.connect(
            private_database(path), check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._max_decisions = max_decisions
        self._prune_every = max(1, prune_every)
        self._appends_since_prune = 0

    # evictions and capacity failures

    def record_eviction(self, pool: str, worker_id: str, zone: str | None, at: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO evictions (pool, worker_id, zone, at) VALUES (?, ?, ?, ?)",
                (pool, worker_id, zone, float(at)),
            )

    def record_capacity_failure(
        self, pool: str, priority: str, zone: str | None, reason: str, at: float
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO capacity_failures (pool, priority, zone, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (pool, priority, zone, reason, float(at)),
            )

    def evictions(self, pool: str, since: float) -> list[EvictionSignal]:
        with self._lock:
            rows = self._db.execute(
                "SELECT zone, at FROM evictions WHERE pool = ? AND at >= ? ORDER BY rowid",
                (pool, float(since)),
            ).fetchall()
        return [EvictionSignal(zone=zone, at=at) for zone, at in rows]

    def capacity_failures(self, pool: str, since: float) -> list[CapacityFailure]:
        with self._lock:
            rows = self._db.execute(
                "SELECT priority, zone, reason, at FROM capacity_failures "
                "WHERE pool = ? AND at >= ? ORDER BY id",
                (pool, float(since)),
            ).fetchall()
        return [CapacityFailure(p, zone, reason, at) for p, zone, reason, at in rows]

    def all_evictions(self, since: float) -> list[EvictionRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pool, worker_id, zone, at FROM evictions WHERE at >= ? ORDER BY at, rowid",
                (float(since),),
            ).fetchall()
        return [EvictionRecord(*row) for row in rows]

    def all_capacity_failures(self, since: float) -> list[CapacityFailureRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pool, priority, zone, reason, at FROM capacity_failures "
                "WHERE at >= ? ORDER BY at, id",
                (float(since),),
            ).fetchall()
        return [CapacityFailureRecord(*row) for row in rows]

    def record_worker_span(self, span: WorkerSpan) -> None:
        end = ended_at(span)
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO worker_spans ({_SPAN_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    span.worker_id,
                    span.pool,
                    span.priority,
                    span.sku,
                    span.zone,
                    float(span.start),
                    float(end),
                    span.end_reason,
                ),
            )

    def worker_spans(self, since: float, until: float | None = None) -> list[WorkerSpan]:
        sql = f"SELECT {_SPAN_COLUMNS} FROM worker_spans WHERE end_at >= ?"
        params: list[float] = [float(since)]
        if until is not None:
            sql += " AND start_at < ?"
            params.append(float(until))
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY start_at, worker_id", params).fetchall()
        return [WorkerSpan(*row) for row in rows]

    def prune(self, before: float) -> None:
        """Drop evictions, failures and spans older than `before`; decisions are capped by count."""
        with self._lock:
            self._db.execute("DELETE FROM evictions WHERE at < ?", (float(before),))
            self._db.execute("DELETE FROM capacity_failures WHERE at < ?", (float(before),))
            self._db.execute("DELETE FROM worker_spans WHERE end_at < ?", (float(before),))

    def clear(self) -> None:
        """Forget every eviction, refusal, decision and span, as if the file were new.

        For a local stack starting over: refusals injected into an earlier
        `spotgate dev` run would otherwise push the new one onto on-demand.
        It is not part of `FleetJournal`, because no monitor ever needs to
        forget, and a production journal should not offer a wipe to every host.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for table in ("evictions", "capacity_failures", "decisions", "worker_spans"):
                    self._db.execute(f"DELETE FROM {table}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._appends_since_prune = 0

    # the decision log

    def append(self, decision: dict[str, Any]) -> None:
        pool = decision.get("pool")
        tick = decision.get("tick")
        doc = orjson.dumps(decision).decode()
        with self._lock:
            self._db.execute(
                "INSERT INTO decisions (pool, tick, doc) VALUES (?, ?, ?)",
                (
                    None if pool is None else str(pool),
                    tick if isinstance(tick, int) else None,
                    doc,
                ),
            )
            self._appends_since_prune += 1
            if self._appends_since_prune >= self._prune_every:
                self._appends_since_prune = 0
                self._db.execute(
                    "DELETE FROM decisions WHERE seq <= (SELECT MAX(seq) FROM decisions) - ?",
                    (self._max_decisions,),
                )

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The newest `n` decisions, oldest first, like the in-memory log."""
        if n <= 0:
            return []
        return self._window(limit=min(n, self._max_decisions))

    def recent_for_pool(self, pool: str, n: int) -> list[dict[str, Any]]:
        """The newest `n` decisions of one pool, oldest first (what a per-pool status shows)."""
        if n <= 0:
            return []
        return self._window(limit=min(n, self._max_decisions), pool=pool)

    def _window(self, *, limit: int | None = None, pool: str | None = None) -> list[dict[str, Any]]:
        """Decisions within the cap, oldest first; rows past the cap may await pruning."""
        sql = f"SELECT doc FROM decisions WHERE {_IN_CAP}"
        params: list[Any] = [self._max_decisions]
        if pool is not None:
            sql += " AND pool = ?"
            params.append(pool)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [orjson.loads(doc) for (doc,) in reversed(rows)]

    def __len__(self) -> int:
        with self._lock:
            row = self._db.execute(
                f"SELECT COUNT(*) FROM decisions WHERE {_IN_CAP}",
                (self._max_decisions,),
            ).fetchone()
        return int(row[0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._window())

    # lifecycle

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteFleetJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
