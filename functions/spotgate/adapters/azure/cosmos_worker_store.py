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

The write queue itself is `write_behind.WriteBehind`, shared with the journal
(as is `WriteBehindStore`, its writer id, clock and lifecycle).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from azure.cosmos.aio import ContainerProxy

from spotgate.adapters.azure.cosmos_cache_store import NOT_INDEXED
from spotgate.adapters.azure.write_behind import WriteBehindOptions, WriteBehindStore, WriteOp
from spotgate.fleet.worker import Worker, WorkerState, can_move

log = logging.getLogger(__name__)

WORKERS_CONTAINER = "workers"
WORKERS_PARTITION_KEY = "/pool"
WORKERS_INDEXING_POLICY = NOT_INDEXED
"""Nothing indexed: workers are only read whole (`load`/`pull`) or by id, and
every heartbeat is an upsert, so indexing would cost request units for nothing."""

# --- conflict resolution -----------------------------------------------------------------


def supersedes(a: Worker, b: Worker) -> bool:
    """Whether record `a` replaces record `b` of the same worker (see the module docstring).

    Antisymmetric for records that differ, so every instance picks the same one.
    """
    if a.state == b.state:
        return _more_recent(a, b)
    if can_move(b.state, a.state):  # a is further along
        return not _registered_after(b, a)
    return _registered_after(a, b)


def _registered_after(a: Worker, b: Worker) -> bool:
    """`a` is a registration later than `b`'s last state change, and `b` was not retired."""
    return (
        a.state == WorkerState.READY and not b.retired and a.state_changed_at > b.state_changed_at
    )


def _more_recent(a: Worker, b: Worker) -> bool:
    """Later state change, then later heartbeat; on a tie, the canonical JSON decides."""
    recency_a = (a.state_changed_at, a.last_heartbeat)
    recency_b = (b.state_changed_at, b.last_heartbeat)
    if recency_a != recency_b:
        return recency_a > recency_b
    return _canonical(a) > _canonical(b)


def _canonical(worker: Worker) -> bytes:
    return orjson.dumps(worker.to_dict(), option=orjson.OPT_SORT_KEYS)


def merge(a: Worker, b: Worker) -> Worker:
    """The winning record, carrying the newest heartbeat (and its metrics) of the two, and
    what only ever gets known, never unknown: the address the cloud reported (written by
    the fleet monitor's instance) and a distrust (written by whichever instance saw it)."""
    winner, loser = (a, b) if supersedes(a, b) else (b, a)
    merged = Worker.from_dict(winner.to_dict())
    if loser.last_heartbeat > winner.last_heartbeat:
        merged.last_heartbeat = loser.last_heartbeat
        merged.metrics = replace(loser.metrics)
    merged.address = merged.address or loser.address
    merged.distrusted = merged.distrusted or loser.distrusted
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


class CosmosWorkerStore(WriteBehindStore):
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
    ) -> None:
        super().__init__(container, name="workers", options=options, instance_id=instance_id)
        self._mirror: dict[str, _Entry] = {}
        self._tombstones: dict[str, Worker] = {}
        self._lock = threading.RLock()

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

    # --- sync with Cosmos (async; start, flush and close are WriteBehindStore's) ---

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
