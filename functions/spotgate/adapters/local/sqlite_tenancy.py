"""The tenancy stores in one SQLite file: keys, usage records and shared counters, locally.

The local host keeps them in `<data_dir>/tenancy.sqlite3` (0600, see
private_files.py: keys are digests, but usage says who called what). Three
tables, one per port:
  - `api_keys`: one row per key id, the record as JSON (`put` replaces by id);
  - `usage`: one row per request id (the PRIMARY KEY, so `INSERT OR IGNORE`
    makes a retried batch harmless), `at` and `key_id` as columns, `at`
    indexed for `query`, the whole record as JSON so that a field added to
    `UsageRecord` needs no migration (exports go through `USAGE_COLUMNS`);
  - `counters`: one row per counter, its fields as JSON and `expires_at`
    (indexed: expired rows are pruned by range).

Each store class opens its own connection on its own thread: sqlite3 blocks,
so the event loop never waits on the disk, and a connection is only ever
touched by the one thread that made it. Separate stores also mean a long
usage query (an export) never queues a counter `add`, which the request
path waits on, behind it on one thread. WAL lets readers run beside the
writer, and lets several processes (gateway workers, the CLI) share the file.

Counter atomicity: `add` is one `BEGIN IMMEDIATE` transaction (read the row,
add, write, commit). IMMEDIATE takes the file's write lock before the read,
so no other connection, in this process or another, can read the same old
value in between; a second writer waits (busy_timeout) rather than failing.
A counter past `expires_at` is treated as absent (it restarts from 0), and
every `add` deletes the expired rows in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from spotgate.adapters.local.sqlite_on_thread import SqliteOnThread, in_transaction
from spotgate.clock import Clock, SystemClock
from spotgate.gateway.tenancy.keys import ApiKey
from spotgate.gateway.tenancy.memory_stores import apply_change, check_ttl
from spotgate.gateway.tenancy.usage import UsageRecord

T = TypeVar("T")

TENANCY_FILE = "tenancy.sqlite3"
"""The file's name in the local data folder."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    key_id TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at);
CREATE TABLE IF NOT EXISTS counters (
    id TEXT PRIMARY KEY,
    fields TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS counters_expires_at ON counters (expires_at);
"""


class _SqliteTenancyTable(SqliteOnThread):
    """One connection to the tenancy file, on one thread of its own (see the module docstring).

    Every store creates all three tables: whichever opens the file first makes
    it whole, and `CREATE ... IF NOT EXISTS` makes the others' attempts no-ops.
    """

    schema = _SCHEMA
    name = "tenancy"


class SqliteKeyStore(_SqliteTenancyTable):
    """A `KeyStore`: keys by id, revoked ones kept (a revocation is a field, not a delete)."""

    name = "keys"

    async def put(self, key: ApiKey) -> None:
        doc = orjson.dumps(key.to_dict()).decode()
        await self._run(
            lambda db: db.execute(
                "INSERT INTO api_keys (id, doc) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                (key.id, doc),
            )
        )

    async def get(self, key_id: str) -> ApiKey | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT doc FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else str(row[0])

        doc = await self._run(read)
        return None if doc is None else ApiKey.from_dict(orjson.loads(doc))

    async def all(self) -> list[ApiKey]:
        def read(db: sqlite3.Connection) -> list[str]:
            return [str(doc) for (doc,) in db.execute("SELECT doc FROM api_keys ORDER BY id")]

        return [ApiKey.from_dict(orjson.loads(doc)) for doc in await self._run(read)]


class SqliteUsageStore(_SqliteTenancyTable):
    """A `UsageStore`: one row per request id, the first one written stands."""

    name = "usage"

    async def append(self, records: list[UsageRecord]) -> None:
        if not records:
            return
        rows = [(r.request_id, float(r.at), r.key_id, orjson.dumps(r).decode()) for r in records]

        def write(db: sqlite3.Connection) -> None:
            in_transaction(
                db,
                lambda: db.executemany(
                    "INSERT OR IGNORE INTO usage (request_id, at, key_id, doc) VALUES (?, ?, ?, ?)",
                    rows,
                ),
            )

        await self._run(write)

    async def query(self, since: float, until: float | None = None) -> list[UsageRecord]:
        """`since <= at < until` on the `at` index, ordered by (at, request_id) like every store."""
        sql = "SELECT doc FROM usage WHERE at >= ?"
        params: list[Any] = [float(since)]
        if until is not None:
            sql += " AND at < ?"
            params.append(float(until))
        sql += " ORDER BY at, request_id"

        def read(db: sqlite3.Connection) -> list[str]:
            return [str(doc) for (doc,) in db.execute(sql, params)]

        return [UsageRecord.from_dict(orjson.loads(doc)) for doc in await self._run(read)]


class SqliteCounterStore(_SqliteTenancyTable):
    """A `CounterStore` whose `add` is atomic across connections and processes on the file."""

    name = "counters"

    def __init__(self, path: Path | str, *, clock: Clock | None = None) -> None:
        super().__init__(path)
        self._clock = clock or SystemClock()

    async def add(
        self,
        counter_id: str,
        deltas: Mapping[str, float],
        *,
        ttl_s: float,
        stamps: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        check_ttl(ttl_s)
        now = self._clock.now()
        deltas, stamps = dict(deltas), dict(stamps or {})

        def change(db: sqlite3.Connection) -> dict[str, float]:
            def work() -> dict[str, float]:
                db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                row = db.execute("SELECT fields FROM counters WHERE id = ?", (counter_id,))
                found = row.fetchone()
                fields = orjson.loads(found[0]) if found is not None else {}
                changed = apply_change(fields, deltas, stamps)
                db.execute(
                    "INSERT INTO counters (id, fields, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET "
                    "fields = excluded.fields, expires_at = excluded.expires_at",
                    (counter_id, orjson.dumps(changed).decode(), now + ttl_s),
                )
                return changed

            return in_transaction(db, work)

        return await self._run(change)

    async def count(self) -> int:
        """Rows in the table, expired ones not yet pruned included (for tests of the pruning)."""

        def read(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT COUNT(*) FROM counters").fetchone()[0])

        return await self._run(read)
