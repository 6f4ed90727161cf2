"""File and batch stores in a dict, for tests and a single-process stack without disk.

They copy what goes in and what comes out, as a real store does by
serialising: a caller that changes an object it got back changes nothing
stored. Lists are newest first, ties (the same second) by id, as every
store orders them, so pages of a listing are stable.
"""

from __future__ import annotations

from spotgate.batch.objects import TERMINAL, BatchObject, FileObject


def _newest_first(item: FileObject | BatchObject) -> tuple[int, str]:
    return item.created_at, item.id


class InMemoryFileStore:
    def __init__(self) -> None:
        self._files: dict[str, tuple[FileObject, bytes]] = {}

    async def create(self, file: FileObject, content: bytes) -> None:
        """Replaces a file of the same id (a retried writer of an output file)."""
        self._files[file.id] = (FileObject.from_dict(file.to_dict()), bytes(content))

    async def get(self, file_id: str) -> FileObject | None:
        found = self._files.get(file_id)
        return None if found is None else FileObject.from_dict(found[0].to_dict())

    async def read(self, file_id: str) -> bytes:
        return self._files[file_id][1]

    async def read_range(self, file_id: str, offset: int, length: int) -> bytes:
        content = self._files[file_id][1]
        if offset < 0 or length <= 0:
            return b""
        return content[offset : offset + length]

    async def delete(self, file_id: str) -> bool:
        return self._files.pop(file_id, None) is not None

    async def list(self, owner: str, *, purpose: str | None = None) -> list[FileObject]:
        found = [
            FileObject.from_dict(file.to_dict())
            for file, _ in self._files.values()
            if file.owner == owner and (purpose is None or file.purpose == purpose)
        ]
        return sorted(found, key=_newest_first, reverse=True)

    async def close(self) -> None:
        pass


class InMemoryBatchStore:
    def __init__(self) -> None:
        self._batches: dict[str, BatchObject] = {}

    async def put(self, batch: BatchObject) -> None:
        self._batches[batch.id] = BatchObject.from_dict(batch.to_dict())

    async def get(self, batch_id: str) -> BatchObject | None:
        found = self._batches.get(batch_id)
        return None if found is None else BatchObject.from_dict(found.to_dict())

    async def active(self) -> list[BatchObject]:
        running = [b for b in self._batches.values() if b.status not in TERMINAL]
        return [BatchObject.from_dict(b.to_dict()) for b in sorted(running, key=_newest_first)]

    async def list(self, owner: str, *, after: str | None, limit: int) -> list[BatchObject]:
        """Newest first; `after` an unknown batch or another owner's: an empty page."""
        owned = [b for b in self._batches.values() if b.owner == owner]
        owned.sort(key=_newest_first, reverse=True)
        if after is not None:
            anchor = self._batches.get(after)
            if anchor is None or anchor.owner != owner:
                return []
            owned = [b for b in owned if _newest_first(b) < _newest_first(anchor)]
        return [BatchObject.from_dict(b.to_dict()) for b in owned[: max(limit, 0)]]

    async def close(self) -> None:
        pass
