"""A write-behind queue for Cosmos DB: callers change memory now, Cosmos hears of it soon.

The worker registry and the fleet journal are called synchronously on the
event loop (every heartbeat, every decision), so they never wait for Cosmos:
they queue the change here. Changes to one item coalesce (only its newest
body is written), a failed write is queued again unless something newer for
that item arrived meanwhile, retries back off exponentially and honour
`x-ms-retry-after-ms`, and `close()` flushes what is pending within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from azure.cosmos.aio import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

log = logging.getLogger(__name__)

_PERMANENT_STATUS = frozenset({400, 413})
"""Cosmos will never accept this request as it is: retrying cannot help."""

Action = Literal["upsert", "create", "delete"]
Key = tuple[str, str]
"""(partition key value, item id): what one queued change is about."""


# --- the write queue ---------------------------------------------------------------------


@dataclass(frozen=True)
class WriteBehindOptions:
    """How the background writer batches and retries; tests shrink every interval."""

    flush_interval_s: float = 0.25
    """How long the writer waits after a change for more to coalesce with it."""
    max_concurrency: int = 16
    """Writes in flight at once within one round."""
    retry_base_s: float = 0.2
    retry_max_s: float = 5.0
    op_timeout_s: float = 10.0
    """One write that takes longer counts as failed (and is retried)."""
    close_timeout_s: float = 10.0
    """How long `close()` keeps trying to flush before it gives up (and logs it)."""


@dataclass(frozen=True)
class WriteOp:
    action: Action
    partition: str
    item_id: str
    body: dict[str, Any] | None = None

    @property
    def key(self) -> Key:
        return (self.partition, self.item_id)


@dataclass
class WriteStats:
    written: int = 0
    """Changes Cosmos acknowledged."""
    failed: int = 0
    """Attempts that failed and were queued again (unless something newer was)."""
    dropped: int = 0
    """Changes Cosmos rejected for good (400, 413): logged and forgotten."""
    rounds: int = 0


class HybridClock:
    """Versions: wall-clock microseconds, but always past the newest version seen."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return self._last

    def observe(self, version: int) -> None:
        with self._lock:
            self._last = max(self._last, version)


class WriteBehind:
    """Queued changes to one container, coalesced by item and written by a background task.

    `enqueue` may be called from any thread; everything else from the event
    loop. Rounds never overlap (an asyncio lock), so two writes of one item
    are never in flight at once and cannot land out of order.
    """

    def __init__(
        self, container: ContainerProxy, *, name: str, options: WriteBehindOptions | None = None
    ) -> None:
        self._container = container
        self._name = name
        self._options = options or WriteBehindOptions()
        self._pending: dict[Key, WriteOp] = {}
        self._lock = threading.Lock()
        self._round_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.stats = WriteStats()

    # --- queueing (sync, any thread) ---

    def enqueue(self, op: WriteOp) -> None:
        with self._lock:
            previous = self._pending.get(op.key)
            if op.action == "create" and previous is not None and previous.action == "delete":
                op = replace(op, action="upsert")  # the delete never happened: create over it
            self._pending[op.key] = op
        self._signal()

    def discard(self, key: Key) -> None:
        """Forget a queued change (not one already in flight)."""
        with self._lock:
            self._pending.pop(key, None)

    def pending(self, key: Key) -> WriteOp | None:
        with self._lock:
            return self._pending.get(key)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _signal(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started: `flush()` or `close()` writes it
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # --- lifecycle ---

    def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-write-behind")
        if self.pending_count:
            self._wake.set()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Write everything queued now, retrying; False if some is unwritten at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._options.close_timeout_s if timeout_s is None else timeout_s)
        failures = 0
        while True:
            if not self.pending_count and not self._round_lock.locked():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                ok, hint = await asyncio.wait_for(self._round(), remaining)
            except TimeoutError:
                return False
            if ok:
                failures = 0
                continue
            failures += 1
            delay = min(max(hint, self._backoff(failures)), max(0.0, deadline - loop.time()))
            await asyncio.sleep(delay)

    async def close(self) -> bool:
        """Stop the background task, then flush; False (and an error logged) if changes remain."""
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        flushed = await self.flush(self._options.close_timeout_s)
        if not flushed:
            log.error(
                "%s: %d changes were not written to Cosmos DB before close",
                self._name,
                self.pending_count,
            )
        self._loop = None
        return flushed

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No write is in flight inside: reads there see every completed write or none."""
        async with self._round_lock:
            yield

    # --- the background task ---

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            await self._wake.wait()
            if self._stop.is_set():
                return
            if self._options.flush_interval_s > 0:
                await self._sleep(self._options.flush_interval_s)  # let changes coalesce
                if self._stop.is_set():
                    return  # close() flushes
            self._wake.clear()
            try:
                ok, hint = await self._round()
            except Exception:
                log.exception("%s: a write-behind round failed", self._name)
                ok, hint = False, 0.0
            if ok:
                failures = 0
                continue
            failures += 1
            await self._sleep(max(hint, self._backoff(failures)))
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _backoff(self, failures: int) -> float:
        ceiling = min(
            self._options.retry_max_s, self._options.retry_base_s * 2.0 ** min(failures - 1, 30)
        )
        return ceiling * random.uniform(0.5, 1.0)

    async def _round(self) -> tuple[bool, float]:
        """Write what is queued now; a failed change goes back unless a newer one is queued."""
        async with self._round_lock:
            with self._lock:
                batch = list(self._pending.values())
                self._pending.clear()
            if not batch:
                return True, 0.0
            self.stats.rounds += 1
            done: set[Key] = set()
            errors: list[BaseException] = []
            hint = 0.0
            gate = asyncio.Semaphore(max(1, self._options.max_concurrency))

            async def write(op: WriteOp) -> None:
                nonlocal hint
                async with gate:
                    try:
                        await asyncio.wait_for(self._apply(op), self._options.op_timeout_s)
                    except Exception as exc:
                        if _permanent(exc):
                            self.stats.dropped += 1
                            done.add(op.key)
                            log.error(
                                "%s: Cosmos DB rejected %s of %r for good: %s",
                                self._name,
                                op.action,
                                op.item_id,
                                exc,
                            )
                            return
                        self.stats.failed += 1
                        errors.append(exc)
                        hint = max(hint, _retry_after_s(exc))
                        return
                    self.stats.written += 1
                    done.add(op.key)

            try:
                await asyncio.gather(*(write(op) for op in batch))
            finally:
                self._requeue([op for op in batch if op.key not in done])
            if errors:
                log.warning(
                    "%s: %d of %d writes failed and will be retried (first: %r)",
                    self._name,
                    len(errors),
                    len(batch),
                    errors[0],
                )
            return not errors, hint

    def _requeue(self, failed: list[WriteOp]) -> None:
        with self._lock:
            for op in failed:
                newer = self._pending.get(op.key)
                if newer is None:
                    self._pending[op.key] = op
                elif op.action == "delete" and newer.action == "create":
                    # the delete did not happen, so the item may still be there
                    self._pending[op.key] = replace(newer, action="upsert")

    async def _apply(self, op: WriteOp) -> None:
        if op.action == "upsert":
            assert op.body is not None
            await self._container.upsert_item(op.body, no_response=True)
        elif op.action == "create":
            assert op.body is not None
            with contextlib.suppress(CosmosResourceExistsError):
                await self._container.create_item(op.body, no_response=True)
        else:
            with contextlib.suppress(CosmosResourceNotFoundError):
                await self._container.delete_item(item=op.item_id, partition_key=op.partition)


# --- what the write-behind stores share --------------------------------------------------


def new_instance_id() -> str:
    """A short id for this process: the `writer` of its items, its key in shared ones."""
    return uuid.uuid4().hex[:12]


class WriteBehindStore:
    """A store over one container whose writes go through a `WriteBehind` queue.

    Holds the writer id and version clock every item is stamped with, and the
    queue's lifecycle: `await start()` on the running loop (after loading),
    `await close()` to stop and flush.
    """

    def __init__(
        self,
        container: ContainerProxy,
        *,
        name: str,
        options: WriteBehindOptions | None = None,
        instance_id: str | None = None,
    ) -> None:
        self._container = container
        self._writes = WriteBehind(container, name=name, options=options)
        self._writer = instance_id or new_instance_id()
        self._clock = HybridClock()

    @property
    def stats(self) -> WriteStats:
        return self._writes.stats

    @property
    def pending_writes(self) -> int:
        return self._writes.pending_count

    async def start(self) -> None:
        """Start the background writer on the running event loop (after `load()`)."""
        self._writes.start()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Write what is pending now; True when nothing is left."""
        return await self._writes.flush(timeout_s)

    async def close(self) -> None:
        """Stop the writer and flush what is pending (bounded by close_timeout_s)."""
        await self._writes.close()


def _permanent(exc: BaseException) -> bool:
    if isinstance(exc, CosmosHttpResponseError):
        return exc.status_code in _PERMANENT_STATUS
    return isinstance(exc, TypeError)  # a body that is not JSON: it never will be


def _retry_after_s(exc: BaseException) -> float:
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(headers.get("x-ms-retry-after-ms", 0)) / 1000.0
    except (TypeError, ValueError):
        return 0.0
