"""One SQLite file, used from async code through one thread of its own.

Every local store that keeps its data in SQLite (tenancy, the batch stores)
needs the same three things: a connection that only its own thread touches,
WAL set up even while another process opens the same file, and write
transactions that take the lock before their first read.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from spotgate.adapters.local.private_files import private_database

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another connection's write lock before failing."""
SETUP_RETRY_S = 0.01


class SqliteOnThread:
    """One connection to an SQLite file, opened and used only on one thread of its own.

    WAL lets readers run beside the one writer and several processes share
    the file; subclasses give their schema in `schema`.
    """

    schema = ""
    name = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.name}")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(
                private_database(self._path), isolation_level=None, check_same_thread=True
            )
            try:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                set_up(db, self.schema)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError(f"the SQLite {self.name} store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    async def close(self) -> None:
        if self._closed:
            return
        if self._db is not None:
            await self._run(lambda db: db.close())
        self._closed = True
        self._executor.shutdown(wait=False)


def set_up(db: sqlite3.Connection, schema: str) -> None:
    """WAL and the schema, retried while another process opens the same file.

    Switching to WAL (or recovering another process's WAL index) can answer
    "database is locked" at once, without calling the busy handler.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(SETUP_RETRY_S)


def in_transaction(db: sqlite3.Connection, work: Callable[[], T]) -> T:
    """`work` inside BEGIN IMMEDIATE ... COMMIT: the write lock is held from the first read."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result
