"""Workers persisted in SQLite: the local stand-in for the Cosmos DB workers container."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson

from spotgate.adapters.local.private_files import private_database
from spotgate.fleet.worker import Worker


class SqliteWorkerStore:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(
            private_database(path), check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, doc BLOB)")
        self._lock = threading.Lock()

    def put(self, worker: Worker) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO workers (id, doc) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                (worker.id, orjson.dumps(worker.to_dict())),
            )

    def get(self, worker_id: str) -> Worker | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM workers WHERE id = ?", (worker_id,)).fetchone()
        return Worker.from_dict(orjson.loads(row[0])) if row else None

    def all(self) -> list[Worker]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM workers ORDER BY id").fetchall()
        return [Worker.from_dict(orjson.loads(doc)) for (doc,) in rows]

    def delete(self, worker_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def close(self) -> None:
        self._db.close()
