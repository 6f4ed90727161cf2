"""Where files, batches, queued lines and line results live: SQLite and disk locally,
Blob Storage, a Storage queue and Cosmos DB on Azure. One contract suite runs on each.

Every method is async: the Azure adapters do network I/O; the local ones may
run SQLite on a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from spotgate.batch.objects import BatchObject, FileObject, LineResult, LineTask


class FileStore(Protocol):
    """Uploaded inputs and written outputs. Content is immutable once written."""

    async def create(self, file: FileObject, content: bytes) -> None: ...

    async def get(self, file_id: str) -> FileObject | None: ...

    async def read(self, file_id: str) -> bytes:
        """The whole content; KeyError when there is no such file."""
        ...

    async def read_range(self, file_id: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (one batch line), without reading the rest."""
        ...

    async def delete(self, file_id: str) -> bool: ...

    async def list(self, owner: str, *, purpose: str | None = None) -> list[FileObject]:
        """The owner's files, newest first."""
        ...

    async def close(self) -> None: ...


class BatchStore(Protocol):
    async def put(self, batch: BatchObject) -> None:
        """Create or replace (the orchestration is the one writer after creation)."""
        ...

    async def get(self, batch_id: str) -> BatchObject | None: ...

    async def active(self) -> list[BatchObject]:
        """Every batch not yet terminal, for the autoscaler's backlog deadline."""
        ...

    async def list(self, owner: str, *, after: str | None, limit: int) -> list[BatchObject]:
        """The owner's batches, newest first, those after the batch `after` (pagination)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class QueuedLine:
    """A line taken off the queue: invisible to others until `receipt` is deleted or
    released, or the visibility timeout passes (then it is taken again: at least once)."""

    message_id: str
    receipt: str
    task: LineTask
    dequeue_count: int


class LineQueue(Protocol):
    """One queue per pool (`spotgate-batch-{pool}` on Azure)."""

    async def send(self, pool: str, tasks: list[LineTask]) -> None: ...

    async def receive(self, pool: str, max_lines: int, visibility_s: float) -> list[QueuedLine]: ...

    async def delete(self, pool: str, line: QueuedLine) -> None:
        """Done with it. A receipt that is stale (the line was taken again) is ignored."""
        ...

    async def release(self, pool: str, line: QueuedLine, delay_s: float) -> None:
        """Not done: visible again after `delay_s` (a retry), not after the whole timeout."""
        ...

    async def depth(self, pool: str) -> int:
        """Lines waiting or being run (approximate on Azure, as the scaler wants)."""
        ...

    async def close(self) -> None: ...


class LineResults(Protocol):
    """Each line's outcome, written once: the second writer of a (batch, index) loses."""

    async def put(self, result: LineResult) -> bool:
        """True if this call stored it; False if the line already had a result."""
        ...

    async def has(self, batch_id: str, index: int) -> bool: ...

    async def counts(self, batch_id: str) -> tuple[int, int]:
        """(succeeded, failed) so far."""
        ...

    def scan(self, batch_id: str) -> AsyncIterator[LineResult]:
        """Every result of the batch, by line index (finalisation streams them to files)."""
        ...

    async def close(self) -> None: ...
