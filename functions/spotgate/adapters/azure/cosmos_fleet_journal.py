"""The fleet journal in a Cosmos DB container: evictions, refused capacity and decisions on Azure.

Same contract as the SQLite journal (`FleetJournal` and the decision log),
same write-behind pattern as the worker store: the monitor's activities and
the fleet routes call it synchronously, so writes go into an in-memory
window at once and reach Cosmos from a background task (coalesced, retried
with backoff, flushed by `close()`); reads are served from the window.
`pull(pool)` refreshes the window from Cosmos, which is how one instance
learns what another recorded: the host's registry sync (store_sync.py)
calls it for every pool, with `decisions=False` on most rounds since only
the fleet routes read the decisions and events are what the monitor needs.

Container `journal`, partition key `/pool`, one item per entry, typed by
`kind`:
  - `eviction`: id `eviction:{pool}:{worker_id}`, deterministic, and written
    with create (a 409 means "already there"), so an agent retrying its
    report on any instance is still one eviction and the first report's
    time stands;
  - `capacity_failure`: a unique id per refusal;
  - `decision`: id `decision:{seq}:{writer}`, the decision itself under
    `decision`; the pool is the partition (`_` for a decision without one);
  - `worker_span`: id `worker_span:{worker_id}`, upserted, so every instance
    that saw the worker go writes the same one item; `at` is its end, the
    span under `span`. Only exports read spans, so like decisions they are
    pulled only when `decisions=True`, and they live `span_ttl_s` (a month's
    cost report needs more than the events' two days).
Every item carries `seq` (a hybrid logical clock in microseconds: entries
come back in the order they were recorded, across instances up to clock
skew) and `writer`.

Retention: `prune(before)` drops evictions and failures from the window and
deletes them from Cosmos; decisions are capped at `max_decisions` in the
window, and `pull` reads only the newest ones. In Cosmos both also carry a
`ttl` (`event_ttl_s`, `decision_ttl_s`) so the container never grows without
bound; that needs TTL on for the container (`defaultTtl` -1, as
`ensure_database` creates it, or a number of seconds, as Bicep deploys it:
an item's own `ttl` overrides it), and is ignored, harmlessly, where TTL is
off.

Queries filter on the pool rather than passing a partition key: Cosmos
routes a `c.pool = @pool` filter to that one partition all the same, and the
local emulator does not accept partition-scoped queries.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
from azure.cosmos.aio import ContainerProxy

from spotgate.adapters.azure.cosmos_journal_items import (
    Window,
    capacity_failure,
    capacity_failure_record,
    clean,
    eviction_record,
    eviction_signal,
    item_order,
    newest,
    time_order,
    worker_span,
)
from spotgate.adapters.azure.write_behind import WriteBehindOptions, WriteBehindStore, WriteOp
from spotgate.fleet.journal import CapacityFailureRecord, EvictionRecord, ended_at, spans_in
from spotgate.fleet.signals import CapacityFailure, EvictionSignal
from spotgate.fleet.worker_spans import WorkerSpan

JOURNAL_CONTAINER = "journal"
JOURNAL_PARTITION_KEY = "/pool"
JOURNAL_DEFAULT_TTL = -1
JOURNAL_INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [
        {"path": "/kind/?"},
        {"path": "/pool/?"},
        {"path": "/at/?"},
        {"path": "/seq/?"},
    ],
    "excludedPaths": [{"path": "/*"}],
}
"""Only what `pull` filters and orders on; decisions' bodies are never indexed."""

EVICTION = "eviction"
CAPACITY_FAILURE = "capacity_failure"
DECISION = "decision"
WORKER_SPAN = "worker_span"
NO_POOL = "_"
"""The partition of a decision that names no pool."""

DEFAULT_MAX_DECISIONS = 2000
DEFAULT_MAX_EVENTS_PER_POOL = 2000
DEFAULT_EVENT_TTL_S = 2 * 86400
DEFAULT_DECISION_TTL_S = 7 * 86400
DEFAULT_MAX_SPANS_PER_POOL = 5000
DEFAULT_SPAN_TTL_S = 35 * 86400


def id_part(value: str) -> str:
    """Cosmos ids may not hold / \\ ? #: escape them (ordinary names are unchanged)."""
    return quote(value, safe="-_.~:@")


def eviction_id(pool: str, worker_id: str) -> str:
    return f"{EVICTION}:{id_part(pool)}:{id_part(worker_id)}"


def worker_span_id(worker_id: str) -> str:
    return f"{WORKER_SPAN}:{id_part(worker_id)}"


class CosmosFleetJournal(WriteBehindStore):
    """A `FleetJournal` (and `DecisionLog`) over a Cosmos container, read from memory.

    Host calls, all on the event loop: `await load()` and `await start()` at
    startup, `await pull(pool)` periodically (the registry sync), `await
    close()` on shutdown.
    """

    def __init__(
        self,
        container: ContainerProxy,
        *,
        max_decisions: int = DEFAULT_MAX_DECISIONS,
        max_events_per_pool: int = DEFAULT_MAX_EVENTS_PER_POOL,
        event_ttl_s: int | None = DEFAULT_EVENT_TTL_S,
        decision_ttl_s: int | None = DEFAULT_DECISION_TTL_S,
        max_spans_per_pool: int = DEFAULT_MAX_SPANS_PER_POOL,
        span_ttl_s: int | None = DEFAULT_SPAN_TTL_S,
        options: WriteBehindOptions | None = None,
        instance_id: str | None = None,
    ) -> None:
        if min(max_decisions, max_events_per_pool, max_spans_per_pool) <= 0:
            raise ValueError(
                "max_decisions, max_events_per_pool and max_spans_per_pool must be > 0"
            )
        super().__init__(container, name="journal", options=options, instance_id=instance_id)
        self._max_decisions = max_decisions
        self._max_events = max_events_per_pool
        self._event_ttl_s = event_ttl_s
        self._decision_ttl_s = decision_ttl_s
        self._max_spans = max_spans_per_pool
        self._span_ttl_s = span_ttl_s
        self._events: Window = {}
        self._spans: Window = {}
        self._decisions: dict[str, dict[str, Any]] = {}  # id -> item
        self._ordered: list[dict[str, Any]] | None = None  # decisions by seq, cached
        self._horizon = -math.inf
        self._lock = threading.RLock()

    # --- evictions and capacity failures (sync; no I/O) ---

    def record_eviction(self, pool: str, worker_id: str, zone: str | None, at: float) -> None:
        item_id = eviction_id(pool, worker_id)
        with self._lock:
            if item_id in self._events.get(pool, {}):
                return  # an agent retrying its report is one eviction
            item = self._event(EVICTION, item_id, pool, at, self._event_ttl_s)
            item.update(worker_id=worker_id, zone=zone)
            self._add_event_locked(item)

    def record_capacity_failure(
        self, pool: str, priority: str, zone: str | None, reason: str, at: float
    ) -> None:
        item_id = f"{CAPACITY_FAILURE}:{id_part(pool)}:{uuid.uuid4().hex}"
        with self._lock:
            item = self._event(CAPACITY_FAILURE, item_id, pool, at, self._event_ttl_s)
            item.update(priority=priority, zone=zone, reason=reason)
            self._add_event_locked(item)

    def evictions(self, pool: str, since: float) -> list[EvictionSignal]:
        items = self._events_of(pool, EVICTION)
        return [eviction_signal(item) for item in items if float(item["at"]) >= since]

    def capacity_failures(self, pool: str, since: float) -> list[CapacityFailure]:
        items = self._events_of(pool, CAPACITY_FAILURE)
        return [capacity_failure(item) for item in items if float(item["at"]) >= since]

    def all_evictions(self, since: float) -> list[EvictionRecord]:
        return [eviction_record(i) for i in self._all_of(self._events, EVICTION, since)]

    def all_capacity_failures(self, since: float) -> list[CapacityFailureRecord]:
        items = self._all_of(self._events, CAPACITY_FAILURE, since)
        return [capacity_failure_record(item) for item in items]

    def record_worker_span(self, span: WorkerSpan) -> None:
        end = ended_at(span)
        with self._lock:
            item_id = worker_span_id(span.worker_id)
            item = self._event(WORKER_SPAN, item_id, span.pool, end, self._span_ttl_s)
            item["span"] = span.to_dict()
            spans = self._spans.setdefault(span.pool, {})
            spans[item["id"]] = item
            self._writes.enqueue(WriteOp("upsert", span.pool, item["id"], item))
            if len(spans) > self._max_spans:
                self._spans[span.pool] = newest(spans.values(), self._max_spans)

    def worker_spans(self, since: float, until: float | None = None) -> list[WorkerSpan]:
        items = self._all_of(self._spans, WORKER_SPAN, since)
        return spans_in(map(worker_span, items), since, until)

    def prune(self, before: float) -> None:
        """Drop evictions, failures and spans older than `before`, here and (behind) in Cosmos."""
        with self._lock:
            self._horizon = max(self._horizon, float(before))
            for window in (self._events, self._spans):
                for pool, items in window.items():
                    for item_id in [i for i, item in items.items() if float(item["at"]) < before]:
                        del items[item_id]
                        self._writes.enqueue(WriteOp("delete", pool, item_id))

    def _all_of(self, window: Window, kind: str, since: float) -> list[dict[str, Any]]:
        """Every pool's items of `kind` at or after `since`, by time, then as recorded."""
        with self._lock:
            items = [
                item
                for pool_items in window.values()
                for item in pool_items.values()
                if item.get("kind") == kind and float(item["at"]) >= since
            ]
        return sorted(items, key=time_order)

    def _event(
        self, kind: str, item_id: str, pool: str, at: float, ttl_s: int | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": item_id,
            "pool": pool,
            "kind": kind,
            "at": float(at),
            "seq": self._clock.next(),
            "writer": self._writer,
        }
        if ttl_s is not None:
            item["ttl"] = int(ttl_s)
        return item

    def _add_event_locked(self, item: dict[str, Any]) -> None:
        pool = str(item["pool"])
        events = self._events.setdefault(pool, {})
        events[str(item["id"])] = item
        self._writes.enqueue(WriteOp("create", pool, str(item["id"]), item))
        if len(events) > self._max_events:
            self._events[pool] = newest(events.values(), self._max_events)

    def _events_of(self, pool: str, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            items = [i for i in self._events.get(pool, {}).values() if i.get("kind") == kind]
        return sorted(items, key=item_order)

    # --- the decision log (sync; no I/O) ---

    def append(self, decision: dict[str, Any]) -> None:
        doc = orjson.loads(orjson.dumps(decision))  # a JSON copy; fails here if it is not JSON
        pool = decision.get("pool")
        partition = NO_POOL if pool is None else str(pool)
        with self._lock:
            seq = self._clock.next()
            item: dict[str, Any] = {
                "id": f"{DECISION}:{seq}:{self._writer}",
                "pool": partition,
                "kind": DECISION,
                "seq": seq,
                "writer": self._writer,
                "decision": doc,
            }
            if self._decision_ttl_s is not None:
                item["ttl"] = int(self._decision_ttl_s)
            self._decisions[item["id"]] = item
            self._trim_decisions_locked()
            self._writes.enqueue(WriteOp("create", partition, item["id"], item))

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The newest `n` decisions, oldest first, like the in-memory log."""
        return self._docs(self._window()[-n:]) if n > 0 else []

    def recent_for_pool(self, pool: str, n: int) -> list[dict[str, Any]]:
        """The newest `n` decisions of one pool, oldest first."""
        if n <= 0:
            return []
        return self._docs([i for i in self._window() if i["pool"] == pool][-n:])

    def __len__(self) -> int:
        return len(self._window())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._docs(self._window()))

    def _window(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._ordered is None:
                self._ordered = sorted(self._decisions.values(), key=item_order)
            return self._ordered

    @staticmethod
    def _docs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = orjson.loads(orjson.dumps([i["decision"] for i in items]))
        return docs

    def _trim_decisions_locked(self) -> None:
        self._ordered = None
        if len(self._decisions) > self._max_decisions:
            self._decisions = newest(self._decisions.values(), self._max_decisions)

    # --- sync with Cosmos (async; start, flush and close are WriteBehindStore's) ---

    async def load(self) -> None:
        """Read every pool's window, events and decisions, from Cosmos (at startup)."""
        await self.pull(None)

    async def pull(self, pool: str | None = None, *, decisions: bool = True) -> None:
        """Refresh the window of `pool` (every pool if None) from Cosmos.

        What Cosmos holds replaces the window, except entries this instance
        has queued and not yet written (kept) or deleted and not yet
        deleted there (left out). Reads while no write is in flight, so an
        entry missing from the answer and not queued here is gone.
        `decisions=False` refreshes only evictions and capacity failures
        (the decisions query reads up to `max_decisions` documents, the spans
        one every span of the pool).
        """
        where = " AND c.pool = @pool" if pool is not None else ""
        params: list[dict[str, Any]] = [] if pool is None else [{"name": "@pool", "value": pool}]
        async with self._writes.paused():
            with self._lock:
                horizon = self._horizon
            recent, recent_params = where, list(params)
            if math.isfinite(horizon):
                recent += " AND c.at >= @horizon"
                recent_params.append({"name": "@horizon", "value": horizon})
            events = await self._query(
                f"SELECT * FROM c WHERE c.kind IN ('{EVICTION}', '{CAPACITY_FAILURE}'){recent}",
                recent_params,
            )
            recorded = spans = None
            if decisions:
                recorded = await self._query(
                    f"SELECT TOP {self._max_decisions} * FROM c WHERE c.kind = '{DECISION}'{where}"
                    " ORDER BY c.seq DESC",
                    params,
                )
                spans = await self._query(
                    f"SELECT * FROM c WHERE c.kind = '{WORKER_SPAN}'{recent}", recent_params
                )
            with self._lock:
                self._merge_window_locked(self._events, self._max_events, pool, events)
                if recorded is not None and spans is not None:
                    self._merge_decisions_locked(pool, recorded)
                    self._merge_window_locked(self._spans, self._max_spans, pool, spans)

    async def _query(self, query: str, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            item async for item in self._container.query_items(query, parameters=params or None)
        ]

    def _kept_locally(self, pool: str, item_id: str) -> bool:
        queued = self._writes.pending((pool, item_id))
        return queued is not None and queued.action != "delete"

    def _deleted_locally(self, pool: str, item_id: str) -> bool:
        queued = self._writes.pending((pool, item_id))
        return queued is not None and queued.action == "delete"

    def _merge_window_locked(
        self, windows: Window, cap: int, pool: str | None, items: list[dict[str, Any]]
    ) -> None:
        fresh: dict[str, dict[str, dict[str, Any]]] = {}
        for item in items:
            p, item_id = str(item.get("pool")), str(item.get("id"))
            if "at" not in item or self._deleted_locally(p, item_id):
                continue
            if float(item["at"]) < self._horizon:
                self._writes.enqueue(WriteOp("delete", p, item_id))  # pruned here meanwhile
                continue
            self._clock.observe(int(item.get("seq") or 0))
            fresh.setdefault(p, {})[item_id] = clean(item)
        pools = [pool] if pool is not None else sorted(set(windows) | set(fresh))
        for p in pools:
            window = fresh.get(p, {})
            for item_id, item in windows.get(p, {}).items():
                if item_id not in window and self._kept_locally(p, item_id):
                    window[item_id] = item
            windows[p] = newest(window.values(), cap)

    def _merge_decisions_locked(self, pool: str | None, items: list[dict[str, Any]]) -> None:
        window: dict[str, dict[str, Any]] = {}
        for item in items:
            if "decision" in item and not self._deleted_locally(str(item["pool"]), item["id"]):
                self._clock.observe(int(item.get("seq") or 0))
                window[str(item["id"])] = clean(item)
        for item_id, item in self._decisions.items():
            in_scope = pool is None or item["pool"] == pool
            if not in_scope or (
                item_id not in window and self._kept_locally(item["pool"], item_id)
            ):
                window.setdefault(item_id, item)
        self._decisions = window
        self._trim_decisions_locked()
