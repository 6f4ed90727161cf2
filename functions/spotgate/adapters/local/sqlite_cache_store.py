"""The response cache in one SQLite file: the local stand-in for the Cosmos DB cache container.

sqlite3 blocks, so every call runs on one dedicated thread: the event loop
never waits on the disk, and the connection is only ever touched by the
thread that uses it. WAL lets several gateway processes share the file.

The byte cap is enforced with a running total kept by triggers in the same
file (not in this process), so processes sharing the file agree on it, and
a put evicts the least recently read entries until the total fits.
Expired rows are never returned and are swept on the next put.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from spotgate.adapters.local.private_files import private_database
from spotgate.clock import Clock, SystemClock

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    last_access REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_entries_last_access ON cache_entries (last_access);
CREATE INDEX IF NOT EXISTS cache_entries_expires_at ON cache_entries (expires_at);
CREATE TABLE IF NOT EXISTS cache_meta (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER);
INSERT OR IGNORE INTO cache_meta (id, total)
    SELECT 1, COALESCE(SUM(size), 0) FROM cache_entries;
CREATE TRIGGER IF NOT EXISTS cache_entries_added AFTER INSERT ON cache_entries BEGIN
    UPDATE cache_meta SET total = total + new.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS cache_entries_removed AFTER DELETE ON cache_entries BEGIN
    UPDATE cache_meta SET total = total - old.size WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS cache_entries_resized AFTER UPDATE OF size ON cache_entries BEGIN
    UPDATE cache_meta SET total = total - old.size + new.size WHERE id = 1;
END;
"""

_EVICT_BATCH = 64


class SqliteCacheStore:
    def __init__(self, path: Path | str, *, max_bytes: int, clock: Clock | None = None) -> None:
        self._path = str(path)
        self._max_bytes = max_bytes
        self._clock = clock or SystemClock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-cache")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        """Opened lazily on the store's own thread, the only thread that ever uses it."""
        if self._db is None:
            db = sqlite3.connect(
                private_database(self._path), isolation_level=None, check_same_thread=True
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the SQLite cache store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    async def get(self, key: str) -> bytes | None:
        now = self._clock.now()

        def read(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(
                "SELECT value FROM cache_entries WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE cache_entries SET last_access = ? WHERE key = ?", (now, key))
            return bytes(row[0])

        return await self._run(read)

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        now = self._clock.now()
        size = len(value)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM cache_entries WHERE expires_at <= ?", (now,))
                if size > self._max_bytes or ttl_s <= 0:
                    db.execute("DELETE FROM cache_entries WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO cache_entries (key, value, size, expires_at, last_access) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = excluded.value, size = excluded.size, "
                        "expires_at = excluded.expires_at, last_access = excluded.last_access",
                        (key, value, size, now + ttl_s, now),
                    )
                    self._evict(db, keep=key)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        await self._run(write)

    def _evict(self, db: sqlite3.Connection, keep: str) -> None:
        """Drop the least recently read entries (never `keep`) until the total fits."""
        while True:
            (total,) = db.execute("SELECT total FROM cache_meta WHERE id = 1").fetchone()
            if total <= self._max_bytes:
                return
            victims = db.execute(
                "SELECT key, size FROM cache_entries WHERE key != ? "
                "ORDER BY last_access, rowid LIMIT ?",
                (keep, _EVICT_BATCH),
            ).fetchall()
            if not victims:
                return
            for victim, victim_size in victims:
                db.execute("DELETE FROM cache_entries WHERE key = ?", (victim,))
                total -= victim_size
                if total <= self._max_bytes:
                    return

    async def delete(self, key: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM cache_entries WHERE key = ?", (key,)))

    async def close(self) -> None:
        if self._closed:
            return

        def shut(db: sqlite3.Connection) -> None:
            db.close()

        if self._db is not None:
            await self._run(shut)
        self._closed = True
        self._executor.shutdown(wait=False)
