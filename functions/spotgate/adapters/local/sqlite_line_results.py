"""Each batch line's result in an SQLite file: written once, read back in line order.

One row per (batch_id, idx), the PRIMARY KEY, so `INSERT OR IGNORE` lets
exactly one of two runners that finished the same line (at-least-once
delivery makes that possible) store its result; the other learns it lost
from the row count. `succeeded` is a column so `counts` never parses a
response body; the result itself is JSON in `doc`.

`scan` reads a page of rows at a time by index (keyset, not OFFSET), so a
batch of 50,000 lines streams to its output file without being held whole.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import orjson

from spotgate.adapters.local.sqlite_on_thread import SqliteOnThread
from spotgate.batch.objects import LineResult

SCAN_PAGE = 500
"""Rows one `scan` step reads."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_line_results (
    batch_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
"""


class SqliteLineResults(SqliteOnThread):
    """`LineResults` in one SQLite file (it may be the line queue's file too)."""

    schema = _SCHEMA
    name = "line-results"

    async def put(self, result: LineResult) -> bool:
        row = (
            result.batch_id,
            result.index,
            int(result.succeeded),
            orjson.dumps(result.to_dict()).decode(),
        )

        def write(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO batch_line_results (batch_id, idx, succeeded, doc) "
                "VALUES (?, ?, ?, ?)",
                row,
            )
            return cursor.rowcount == 1

        return await self._run(write)

    async def has(self, batch_id: str, index: int) -> bool:
        def read(db: sqlite3.Connection) -> bool:
            found = db.execute(
                "SELECT 1 FROM batch_line_results WHERE batch_id = ? AND idx = ?",
                (batch_id, index),
            ).fetchone()
            return found is not None

        return await self._run(read)

    async def counts(self, batch_id: str) -> tuple[int, int]:
        def read(db: sqlite3.Connection) -> tuple[int, int]:
            succeeded, total = db.execute(
                "SELECT COALESCE(SUM(succeeded), 0), COUNT(*) FROM batch_line_results "
                "WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()
            return int(succeeded), int(total) - int(succeeded)

        return await self._run(read)

    async def scan(self, batch_id: str) -> AsyncIterator[LineResult]:
        after = -1
        while True:
            rows = await self._page(batch_id, after)
            for _, doc in rows:
                yield LineResult.from_dict(orjson.loads(doc))
            if len(rows) < SCAN_PAGE:
                return
            after = rows[-1][0]

    async def _page(self, batch_id: str, after: int) -> list[tuple[int, str]]:
        def read(db: sqlite3.Connection) -> list[tuple[int, str]]:
            return db.execute(
                "SELECT idx, doc FROM batch_line_results WHERE batch_id = ? AND idx > ? "
                "ORDER BY idx LIMIT ?",
                (batch_id, after, SCAN_PAGE),
            ).fetchall()

        return await self._run(read)
