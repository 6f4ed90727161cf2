"""Workers in a Cosmos DB container, shared by every gateway instance on Azure.

The registry calls its store synchronously on the event loop, on every
change and every heartbeat (each worker every 2 s), so this store never
waits for Cosmos there: it is a write-behind mirror.

- `put`/`delete` change an in-memory mirror at once and queue the change;
  `get`/`all` read the mirror. Nothing on the request path does I/O.
- A background task (`await start()`) writes the queue to Cosmos. Changes of one
  worker coalesce: only its newest state is written, so a burst of
  heartbeats is one upsert. A failed write (429, timeouts, 5xx, a lost
  connection, anything but a request Cosmos rejects for good) is queued
  again unless something newer for that worker was queued meanwhile, and
  retried with exponential backoff (honouring `x-ms-retry-after-ms`): the
  newest state is never lost, and an older one never overwrites it.
- `close()` stops the task and flushes what is pending (bounded by
  `close_timeout_s`).
- `load()` reads every item into the mirror (once at startup, before the
  registry is built); `pull()` reads every item again so that an instance
  sees workers registered, drained or heartbeating on another one.

Item layout (container `workers`, partition key `/pool`, id = worker id):
the worker's own fields (`Worker.to_dict()`), plus
  - `version`: a hybrid logical clock in microseconds, always greater than
    wall-clock time and than any version this store has seen, so one
    store's writes of a worker strictly increase;
  - `writer`: the instance that wrote it.
`(version, writer)` identifies one write: `pull()` skips the items whose
write the mirror already holds and merges the others.

Conflicting writers (two instances changing one worker between pulls) are
resolved by the worker's own timestamps, never by `version`, so clock skew
between instances cannot make an old state win:
  - same state: the record with the later `state_changed_at`, then the later
    `last_heartbeat`, wins (last writer wins by the worker's own clock);
  - different states: the record further along wins (state never moves
    backwards: `worker.can_move`), with the one exception the registry
    itself makes: a *registration* (READY) later than the other record's
    state change wins over draining or gone, unless that worker was retired
    by the monitor (a retired worker never comes back);
  - the newest heartbeat (and its metrics) is kept whichever record wins.
The rule is symmetric, so every instance converges on the same record;
when the local record wins over what Cosmos holds, the store writes it
back, and when Cosmos wins, a pending write of the older local state is
dropped.

The mirror and the registry are separate: `pull()` returns what changed so
the host can apply it to the registry (without calling `put` again).

`WriteBehind` is the write queue itself; the fleet journal reuses it.
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
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from azure.core.credentials_async import AsyncTokenCredential
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import (
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from spotgate.fleet.worker import Worker, WorkerState, can_move

log = logging.getLogger(__name__)

WORKERS_CONTAINER = "workers"
WORKERS_PARTITION_KEY = "/pool"
WORKERS_INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [],
    "excludedPaths": [{"path": "/*"}],
}
"""Nothing indexed: workers are only read whole (`load`/`pull`) or by id, and
every heartbeat is an upsert, so indexing would cost request units for nothing."""

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


# --- conflict resolution -----------------------------------------------------------------


def supersedes(a: Worker, b: Worker) -> bool:
    """Whether record `a` replaces record `b` of the same worker (see the module docstring).

    Antisymmetric for records that differ, so every instance picks the same one.
    """
    if a.state == b.state:
        return _recency(a) > _recency(b)
    if can_move(b.state, a.state):  # a is further along
        return not _registered_after(b, a)
    return _registered_after(a, b)


def _registered_after(a: Worker, b: Worker) -> bool:
    """`a` is a registration later than `b`'s last state change, and `b` was not retired."""
    return (
        a.state == WorkerState.READY and not b.retired and a.state_changed_at > b.state_changed_at
    )


def _recency(worker: Worker) -> tuple[float, float, bytes]:
    canonical = orjson.dumps(worker.to_dict(), option=orjson.OPT_SORT_KEYS)
    return (worker.state_changed_at, worker.last_heartbeat, canonical)


def merge(a: Worker, b: Worker) -> Worker:
    """The winning record, carrying the newest heartbeat (and its metrics) of the two."""
    winner, loser = (a, b) if supersedes(a, b) else (b, a)
    merged = Worker.from_dict(winner.to_dict())
    if loser.last_heartbeat > winner.last_heartbeat:
        merged.last_heartbeat = loser.last_heartbeat
        merged.metrics = replace(loser.metrics)
    return merged


# --- the store ---------------------------------------------------------------------------


@dataclass
class _Entry:
    doc: dict[str, Any]
    version: int
    writer: str


@dataclass(frozen=True)
class WorkerChanges:
    """What a pull changed in the mirror, for the host to apply to its registry."""

    updated: list[Worker] = field(default_factory=list)
    """New to this instance, or changed by another one."""
    removed: list[str] = field(default_factory=list)
    """Deleted by another instance (gone workers past their retention)."""


class CosmosWorkerStore:
    """A `WorkerStore` whose reads and writes are in memory and whose writes reach Cosmos behind.

    Host calls, all on the event loop: `await load()` (the registry starts
    from `all()` or takes what it returns), `await start()`, then
    `await pull()` (or `pull_changes()`) periodically, `await close()` on
    shutdown. Built outside a loop it does no I/O until then.
    """

    def __init__(
        self,
        container: ContainerProxy,
        *,
        options: WriteBehindOptions | None = None,
        instance_id: str | None = None,
        owned_client: CosmosClient | None = None,
        owned_credential: AsyncTokenCredential | None = None,
    ) -> None:
        """`owned_client`/`owned_credential`, if given, are closed by `close()`."""
        self._container = container
        self._writes = WriteBehind(container, name="workers", options=options)
        self._writer = instance_id or uuid.uuid4().hex[:12]
        self._clock = HybridClock()
        self._mirror: dict[str, _Entry] = {}
        self._tombstones: dict[str, Worker] = {}
        self._lock = threading.RLock()
        self._client = owned_client
        self._credential = owned_credential

    @classmethod
    def from_settings(cls, endpoint: str, database: str, **kwargs: Any) -> CosmosWorkerStore:
        """As deployed: the managed identity (or a developer's login), through azure-identity.

        The database and the `workers` container must exist (Bicep creates them).
        """
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
        client = CosmosClient(endpoint, credential=credential)
        container = client.get_database_client(database).get_container_client(WORKERS_CONTAINER)
        return cls(container, owned_client=client, owned_credential=credential, **kwargs)

    @property
    def instance_id(self) -> str:
        return self._writer

    @property
    def stats(self) -> WriteStats:
        return self._writes.stats

    @property
    def pending_writes(self) -> int:
        return self._writes.pending_count

    # --- WorkerStore (sync; no I/O) ---

    def put(self, worker: Worker) -> None:
        with self._lock:
            previous = self._mirror.get(worker.id)
            self._tombstones.pop(worker.id, None)
            if previous is not None and previous.doc["pool"] != worker.pool:
                self._writes.enqueue(WriteOp("delete", str(previous.doc["pool"]), worker.id))
            self._put_locked(worker.to_dict())

    def get(self, worker_id: str) -> Worker | None:
        with self._lock:
            entry = self._mirror.get(worker_id)
            return Worker.from_dict(entry.doc) if entry else None

    def all(self) -> list[Worker]:
        with self._lock:
            return [Worker.from_dict(self._mirror[i].doc) for i in sorted(self._mirror)]

    def delete(self, worker_id: str) -> None:
        with self._lock:
            entry = self._mirror.pop(worker_id, None)
            if entry is None:
                return
            self._tombstones[worker_id] = Worker.from_dict(entry.doc)
            self._writes.enqueue(WriteOp("delete", str(entry.doc["pool"]), worker_id))

    def _put_locked(self, doc: dict[str, Any]) -> None:
        version = self._clock.next()
        self._mirror[doc["id"]] = _Entry(doc, version, self._writer)
        item = {**doc, "version": version, "writer": self._writer}
        self._writes.enqueue(WriteOp("upsert", str(doc["pool"]), str(doc["id"]), item))

    # --- lifecycle and sync with Cosmos (async) ---

    async def start(self) -> None:
        """Start the background writer on the running event loop (after `load()`)."""
        self._writes.start()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Write what is pending now; True when nothing is left."""
        return await self._writes.flush(timeout_s)

    async def load(self) -> list[Worker]:
        """Read every worker from Cosmos into the mirror; what the registry starts from."""
        await self.pull_changes()
        return self.all()

    async def pull(self) -> list[Worker]:
        """The workers another instance added or changed since this mirror last saw them."""
        return (await self.pull_changes()).updated

    async def pull_changes(self) -> WorkerChanges:
        """Read every item and merge it into the mirror; report what changed.

        Reads while no write is in flight, so an item missing from the answer
        and not queued here was deleted by another instance.
        """
        updated: list[Worker] = []
        removed: list[str] = []
        async with self._writes.paused():
            items = [item async for item in self._container.read_all_items()]
            with self._lock:
                seen: set[str] = set()
                for item in items:
                    changed = self._merge_item_locked(item, seen)
                    if changed is not None:
                        updated.append(changed)
                for worker_id in [i for i in self._mirror if i not in seen]:
                    entry = self._mirror[worker_id]
                    if self._writes.pending((str(entry.doc["pool"]), worker_id)) is None:
                        del self._mirror[worker_id]
                        removed.append(worker_id)
                for worker_id in [i for i in self._tombstones if i not in seen]:
                    tomb = self._tombstones[worker_id]
                    if self._writes.pending((tomb.pool, worker_id)) is None:
                        del self._tombstones[worker_id]
        return WorkerChanges(updated, removed)

    def _merge_item_locked(self, item: dict[str, Any], seen: set[str]) -> Worker | None:
        try:
            remote = Worker.from_dict(item)
            version = int(item.get("version") or 0)
            writer = str(item.get("writer") or "")
        except (KeyError, TypeError, ValueError):
            log.warning("workers: skipping a malformed item %r", item.get("id"))
            return None
        self._clock.observe(version)
        seen.add(remote.id)
        key = (remote.pool, remote.id)
        queued = self._writes.pending(key)
        if queued is not None and queued.action == "delete":
            return None  # deleted here; the delete is on its way
        remote_doc = remote.to_dict()
        local = self._mirror.get(remote.id)
        if local is None:
            tomb = self._tombstones.get(remote.id)
            if tomb is not None and not supersedes(remote, tomb):
                # a copy of what this instance deleted, written back by a slower one
                self._writes.enqueue(WriteOp("delete", remote.pool, remote.id))
                return None
            self._tombstones.pop(remote.id, None)
            self._mirror[remote.id] = _Entry(remote_doc, version, writer)
            return remote
        if (local.version, local.writer) == (version, writer):
            return None  # the write the mirror already holds
        merged = merge(Worker.from_dict(local.doc), remote)
        merged_doc = merged.to_dict()
        if merged_doc == remote_doc:
            self._mirror[remote.id] = _Entry(remote_doc, version, writer)
            if queued is not None:
                self._writes.discard(key)  # an older local state must not overwrite it
            return merged if merged_doc != local.doc else None
        if merged_doc == local.doc:
            if queued is None:
                self._put_locked(merged_doc)  # this instance's record is newer: write it back
            return None
        self._put_locked(merged_doc)
        return merged

    async def close(self) -> None:
        """Flush what is pending (bounded by close_timeout_s), then close what this store owns."""
        try:
            await self._writes.close()
        finally:
            if self._client is not None:
                await self._client.close()
                self._client = None
            if self._credential is not None:
                await self._credential.close()
                self._credential = None
