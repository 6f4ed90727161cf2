"""Batch input and output files in a local folder: the `FileStore` on one machine.

Content lives in `<root>/<file id>`, one file each, 0600 in a 0700 folder
(they hold users' prompts and answers); the `FileObject`s in an SQLite index
beside them, `<root>/index.sqlite3`, so listing an owner's files reads no
content. A file id becomes a path only when it matches `file-` and letters,
digits, `_` or `-`: a crafted id (`../x`, an absolute path) names nothing.

Content is written to a temporary file and renamed into place, then indexed;
deleting goes the other way. So a crash half way never lists a file whose
content is missing or half written. Disk and SQLite both block, so content
is read and written on worker threads, the index on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
from pathlib import Path

import orjson

from spotgate.adapters.local.private_files import FILE_MODE, private_dir
from spotgate.adapters.local.sqlite_on_thread import SqliteOnThread
from spotgate.batch.objects import FileObject

FILES_DIR = "files"
"""The folder's name in the local data folder."""
INDEX_FILE = "index.sqlite3"
_FILE_ID = re.compile(r"file-[A-Za-z0-9_-]{1,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_owner ON files (owner, created_at, id);
"""


class _FileIndex(SqliteOnThread):
    schema = _SCHEMA
    name = "files"

    async def put(self, file: FileObject) -> None:
        doc = orjson.dumps(file.to_dict()).decode()
        row = (file.id, file.owner, file.purpose, file.created_at, doc)
        await self._run(
            lambda db: db.execute(
                "INSERT INTO files (id, owner, purpose, created_at, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, "
                "purpose = excluded.purpose, created_at = excluded.created_at, doc = excluded.doc",
                row,
            )
        )

    async def get(self, file_id: str) -> FileObject | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT doc FROM files WHERE id = ?", (file_id,)).fetchone()
            return None if row is None else str(row[0])

        doc = await self._run(read)
        return None if doc is None else FileObject.from_dict(orjson.loads(doc))

    async def delete(self, file_id: str) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

        return await self._run(write)

    async def list(self, owner: str, purpose: str | None) -> list[FileObject]:
        sql = "SELECT doc FROM files WHERE owner = ?"
        params = [owner]
        if purpose is not None:
            sql += " AND purpose = ?"
            params.append(purpose)
        sql += " ORDER BY created_at DESC, id DESC"

        def read(db: sqlite3.Connection) -> list[str]:
            return [str(doc) for (doc,) in db.execute(sql, params)]

        return [FileObject.from_dict(orjson.loads(doc)) for doc in await self._run(read)]


class DiskFileStore:
    """A `FileStore` under `root`; `create` on an existing id replaces it (a retried writer)."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)
        self._index = _FileIndex(self._root / INDEX_FILE)

    def _path(self, file_id: str) -> Path | None:
        return self._root / file_id if _FILE_ID.fullmatch(file_id) else None

    async def create(self, file: FileObject, content: bytes) -> None:
        path = self._path(file.id)
        if path is None:
            raise ValueError(f"not a file id: {file.id[:80]!r}")
        await asyncio.to_thread(_write_private, path, content)
        await self._index.put(file)

    async def get(self, file_id: str) -> FileObject | None:
        return await self._index.get(file_id) if self._path(file_id) else None

    async def read(self, file_id: str) -> bytes:
        path = self._path(file_id)
        if path is None:
            raise KeyError(file_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise KeyError(file_id) from None

    async def read_range(self, file_id: str, offset: int, length: int) -> bytes:
        """Past the end reads short (or empty), as slicing does."""
        path = self._path(file_id)
        if path is None:
            raise KeyError(file_id)
        try:
            return await asyncio.to_thread(_read_range, path, offset, length)
        except FileNotFoundError:
            raise KeyError(file_id) from None

    async def delete(self, file_id: str) -> bool:
        path = self._path(file_id)
        if path is None:
            return False
        indexed = await self._index.delete(file_id)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return indexed
        return True

    async def list(self, owner: str, *, purpose: str | None = None) -> list[FileObject]:
        """Newest first; ties (the same second) by id, so pages of a listing are stable."""
        return await self._index.list(owner, purpose)

    async def close(self) -> None:
        await self._index.close()


def _write_private(path: Path, content: bytes) -> None:
    """`content` at `path`, 0600, whole or not at all (a temporary file renamed into place)."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(content)
            out.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    os.close(fd)
    os.replace(temporary, path)


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as source:
        if offset < 0 or length <= 0:
            return b""
        source.seek(offset)
        return source.read(length)
