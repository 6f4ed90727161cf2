"""Batches in an SQLite file: the local stand-in for the Cosmos DB `batches` container.

One row a batch: the whole object as JSON (a field added to `BatchObject`
needs no migration), with `owner`, `status` and `created_at` as columns for
the two queries the API and the autoscaler make: an owner's batches newest
first (ties by id, as every store orders them, so list pages are stable)
and the batches not yet terminal. SQLite blocks, so the store runs on a
thread of its own (`SqliteOnThread`).
"""

from __future__ import annotations

import sqlite3

import orjson

from spotgate.adapters.local.sqlite_on_thread import SqliteOnThread
from spotgate.batch.objects import TERMINAL, BatchObject

BATCHES_FILE = "batches.sqlite3"
"""The file's name in the local data folder."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, created_at, id);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status);
"""
_TERMINAL = sorted(TERMINAL)
_NOT_TERMINAL = f"status NOT IN ({', '.join('?' for _ in _TERMINAL)})"


class SqliteBatchStore(SqliteOnThread):
    """A `BatchStore`; `put` replaces the row of the same id."""

    schema = _SCHEMA
    name = "batches"

    async def put(self, batch: BatchObject) -> None:
        doc = orjson.dumps(batch.to_dict()).decode()
        row = (batch.id, batch.owner, batch.status, batch.created_at, doc)
        await self._run(
            lambda db: db.execute(
                "INSERT INTO batches (id, owner, status, created_at, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, status = excluded.status, "
                "created_at = excluded.created_at, doc = excluded.doc",
                row,
            )
        )

    async def get(self, batch_id: str) -> BatchObject | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT doc FROM batches WHERE id = ?", (batch_id,)).fetchone()
            return None if row is None else str(row[0])

        doc = await self._run(read)
        return None if doc is None else BatchObject.from_dict(orjson.loads(doc))

    async def active(self) -> list[BatchObject]:
        def read(db: sqlite3.Connection) -> list[str]:
            sql = f"SELECT doc FROM batches WHERE {_NOT_TERMINAL} ORDER BY created_at, id"
            return [str(doc) for (doc,) in db.execute(sql, _TERMINAL)]

        return [BatchObject.from_dict(orjson.loads(doc)) for doc in await self._run(read)]

    async def list(self, owner: str, *, after: str | None, limit: int) -> list[BatchObject]:
        """Newest first; `after` an unknown batch or another owner's: an empty page."""

        def read(db: sqlite3.Connection) -> list[str]:
            sql = "SELECT doc FROM batches WHERE owner = ?"
            params: list[object] = [owner]
            if after is not None:
                anchor = db.execute(
                    "SELECT created_at, id FROM batches WHERE id = ? AND owner = ?",
                    (after, owner),
                ).fetchone()
                if anchor is None:
                    return []
                sql += " AND (created_at, id) < (?, ?)"
                params += [anchor[0], anchor[1]]
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            params.append(max(limit, 0))
            return [str(doc) for (doc,) in db.execute(sql, params)]

        return [BatchObject.from_dict(orjson.loads(doc)) for doc in await self._run(read)]
