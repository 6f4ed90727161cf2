"""The batch line queue in an SQLite file, shared by every local process that runs lines.

One table, `batch_lines`: a row per queued line with its pool, where the
line is (`LineTask`), `visible_at`, the `receipt` of whoever holds it now
and `dequeue_count`. A line is waiting when `visible_at <= now`; taking it
moves `visible_at` to the end of the visibility timeout and writes a fresh
receipt, so when a runner dies holding it, it comes back on its own.

Taking is one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING` inside
`BEGIN IMMEDIATE`: the file's write lock is held from the read of the
waiting lines to the write of their new receipts, so two runners, in this
process or in two, can never both take a line within its visibility (the
second waits on busy_timeout, then sees it taken). `delete` and `release`
match the receipt too, so a runner whose line timed out and was taken
again changes nothing with its stale receipt. Ids come from AUTOINCREMENT,
never reused, so a stale receipt cannot match a later line either.

SQLite blocks, so each store runs on a thread of its own (`SqliteOnThread`),
as the other local stores do: the event loop never waits on the disk.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TypeVar

from spotgate.adapters.local.sqlite_on_thread import SqliteOnThread, in_transaction
from spotgate.batch.memory_queue import check_delay, check_visibility
from spotgate.batch.objects import LineTask
from spotgate.batch.ports import QueuedLine
from spotgate.clock import Clock, SystemClock

T = TypeVar("T")

BATCH_LINES_FILE = "batch_lines.sqlite3"
"""A file in the local data folder both the queue and the results may share."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    line_offset INTEGER NOT NULL,
    line_length INTEGER NOT NULL,
    visible_at REAL NOT NULL,
    receipt TEXT,
    dequeue_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batch_lines_waiting ON batch_lines (pool, visible_at, id);
"""

_TAKE = """
UPDATE batch_lines
SET visible_at = ?, receipt = lower(hex(randomblob(16))), dequeue_count = dequeue_count + 1
WHERE id IN (
    SELECT id FROM batch_lines WHERE pool = ? AND visible_at <= ?
    ORDER BY visible_at, id LIMIT ?
)
RETURNING id, batch_id, idx, line_offset, line_length, receipt, dequeue_count
"""


class SqliteLineQueue(SqliteOnThread):
    """A `LineQueue` in one SQLite file, every pool in the one table."""

    schema = _SCHEMA
    name = "line-queue"

    def __init__(self, path: Path | str, *, clock: Clock | None = None) -> None:
        super().__init__(path)
        self._clock = clock or SystemClock()

    async def send(self, pool: str, tasks: list[LineTask]) -> None:
        if not tasks:
            return
        now = self._clock.now()
        rows = [(pool, t.batch_id, t.index, t.offset, t.length, now) for t in tasks]

        def write(db: sqlite3.Connection) -> None:
            in_transaction(
                db,
                lambda: db.executemany(
                    "INSERT INTO batch_lines "
                    "(pool, batch_id, idx, line_offset, line_length, visible_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                ),
            )

        await self._run(write)

    async def receive(self, pool: str, max_lines: int, visibility_s: float) -> list[QueuedLine]:
        check_visibility(visibility_s)
        if max_lines <= 0:
            return []
        now = self._clock.now()
        params = (now + visibility_s, pool, now, max_lines)

        def take(db: sqlite3.Connection) -> list[tuple[int, str, int, int, int, str, int]]:
            return in_transaction(db, lambda: db.execute(_TAKE, params).fetchall())

        rows = sorted(await self._run(take))
        return [
            QueuedLine(str(row_id), receipt, LineTask(batch_id, index, offset, length), count)
            for row_id, batch_id, index, offset, length, receipt, count in rows
        ]

    async def delete(self, pool: str, line: QueuedLine) -> None:
        row_id = _row_id(line)
        await self._run(
            lambda db: db.execute(
                "DELETE FROM batch_lines WHERE id = ? AND pool = ? AND receipt = ?",
                (row_id, pool, line.receipt),
            )
        )

    async def release(self, pool: str, line: QueuedLine, delay_s: float) -> None:
        """Visible again after `delay_s`; the receipt is void from now on, as on Azure."""
        check_delay(delay_s)
        row_id, visible_at = _row_id(line), self._clock.now() + delay_s
        await self._run(
            lambda db: db.execute(
                "UPDATE batch_lines SET visible_at = ?, receipt = NULL "
                "WHERE id = ? AND pool = ? AND receipt = ?",
                (visible_at, row_id, pool, line.receipt),
            )
        )

    async def depth(self, pool: str) -> int:
        def count(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT COUNT(*) FROM batch_lines WHERE pool = ?", (pool,))
            return int(row.fetchone()[0])

        return await self._run(count)


def _row_id(line: QueuedLine) -> int:
    try:
        return int(line.message_id)
    except ValueError:
        return -1  # not one of this queue's lines: matches no row
