"""The batch line queue and line results in process memory: tests, and a one-process local run.

They keep the contract the SQLite and Azure adapters keep (the same suite
runs on all of them), with the visibility timeout read from an injected
clock so that a test can let a timeout pass without sleeping.

Lines wait in a heap by `visible_at`. Taking, releasing or deleting a line
only marks its entry; stale heap items (an older `version` of the entry, or
a deleted one) are dropped when they reach the top. That keeps `receive`
O(log n) a line however many tens of thousands of lines wait, where a scan
of every waiting line at every poll would make a large local batch crawl.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from spotgate.batch.objects import LineResult, LineTask
from spotgate.batch.ports import QueuedLine
from spotgate.clock import Clock, SystemClock


def check_visibility(visibility_s: float) -> None:
    if not visibility_s > 0:
        raise ValueError(f"visibility_s must be > 0, not {visibility_s!r}")


def check_delay(delay_s: float) -> None:
    if not delay_s >= 0:
        raise ValueError(f"delay_s must be >= 0, not {delay_s!r}")


@dataclass(slots=True)
class _Entry:
    task: LineTask
    visible_at: float
    receipt: str | None = None
    dequeue_count: int = 0
    version: int = 0


class _Pool:
    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.heap: list[tuple[float, int, str, int]] = []
        self.order = itertools.count()
        """Ties on `visible_at` go to the line sent first."""

    def schedule(self, message_id: str, entry: _Entry, visible_at: float) -> None:
        entry.visible_at = visible_at
        entry.version += 1
        heapq.heappush(self.heap, (visible_at, next(self.order), message_id, entry.version))

    def take(self, now: float) -> tuple[str, _Entry] | None:
        while self.heap and self.heap[0][0] <= now:
            _, _, message_id, version = heapq.heappop(self.heap)
            entry = self.entries.get(message_id)
            if entry is not None and entry.version == version:
                return message_id, entry
        return None


class InMemoryLineQueue:
    """A `LineQueue` in one process; safe for any number of coroutines on one event loop."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._pools: dict[str, _Pool] = {}
        self._ids = itertools.count(1)

    def _pool(self, pool: str) -> _Pool:
        return self._pools.setdefault(pool, _Pool())

    async def send(self, pool: str, tasks: list[LineTask]) -> None:
        lines, now = self._pool(pool), self._clock.now()
        for task in tasks:
            message_id = f"m{next(self._ids)}"
            entry = _Entry(task, now)
            lines.entries[message_id] = entry
            lines.schedule(message_id, entry, now)

    async def receive(self, pool: str, max_lines: int, visibility_s: float) -> list[QueuedLine]:
        check_visibility(visibility_s)
        lines, now = self._pool(pool), self._clock.now()
        taken: list[QueuedLine] = []
        while len(taken) < max_lines:
            found = lines.take(now)
            if found is None:
                break
            message_id, entry = found
            entry.receipt = secrets.token_hex(8)
            entry.dequeue_count += 1
            lines.schedule(message_id, entry, now + visibility_s)
            taken.append(QueuedLine(message_id, entry.receipt, entry.task, entry.dequeue_count))
        return taken

    def _held(self, pool: str, line: QueuedLine) -> _Entry | None:
        """The line's entry if `line.receipt` still holds it, else None (stale: ignored)."""
        entry = self._pool(pool).entries.get(line.message_id)
        if entry is None or entry.receipt != line.receipt:
            return None
        return entry

    async def delete(self, pool: str, line: QueuedLine) -> None:
        if self._held(pool, line) is not None:
            del self._pool(pool).entries[line.message_id]

    async def release(self, pool: str, line: QueuedLine, delay_s: float) -> None:
        check_delay(delay_s)
        entry = self._held(pool, line)
        if entry is not None:
            entry.receipt = None
            self._pool(pool).schedule(line.message_id, entry, self._clock.now() + delay_s)

    async def depth(self, pool: str) -> int:
        return len(self._pool(pool).entries)

    async def close(self) -> None:
        return None


class InMemoryLineResults:
    """`LineResults` in one process: the first result stored for a line stands."""

    def __init__(self) -> None:
        self._batches: dict[str, dict[int, LineResult]] = {}

    async def put(self, result: LineResult) -> bool:
        lines = self._batches.setdefault(result.batch_id, {})
        if result.index in lines:
            return False
        lines[result.index] = result
        return True

    async def has(self, batch_id: str, index: int) -> bool:
        return index in self._batches.get(batch_id, {})

    async def counts(self, batch_id: str) -> tuple[int, int]:
        lines = self._batches.get(batch_id, {})
        succeeded = sum(1 for result in lines.values() if result.succeeded)
        return succeeded, len(lines) - succeeded

    async def scan(self, batch_id: str) -> AsyncIterator[LineResult]:
        lines = self._batches.get(batch_id, {})
        for index in sorted(lines):
            yield lines[index]

    async def close(self) -> None:
        return None
