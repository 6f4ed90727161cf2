"""The Cosmos DB worker store and fleet journal against a real emulator.

@vercel/cosmosdb-server runs once per session (the `cosmos_server` fixture
of tests/adapters/conftest.py); every test gets its own database, created
with the production container specs (`ensure_database`). Write-behind
intervals are shrunk so nothing here waits long. `FlakyContainer` stands
between a store and the emulator to count writes and to make them fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from spotgate.adapters.azure.cosmos_fleet_journal import JOURNAL_CONTAINER, CosmosFleetJournal
from spotgate.adapters.azure.cosmos_worker_store import (
    WORKERS_CONTAINER,
    CosmosWorkerStore,
    merge,
)
from spotgate.adapters.azure.stores import azure_stores, build_azure_stores, ensure_database
from spotgate.adapters.azure.write_behind import WriteBehindOptions
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.clock import ManualClock
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import EvictionSignal
from spotgate.fleet.store import InMemoryWorkerStore, WorkerStore
from spotgate.fleet.worker import EngineMetrics, Eviction, Worker, WorkerState
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.settings import Settings
from tests.adapters.conftest import CosmosServer
from tests.fleet import test_fleet_journal_contract as journal_contract

FAST = WriteBehindOptions(
    flush_interval_s=0.01,
    retry_base_s=0.01,
    retry_max_s=0.05,
    op_timeout_s=5.0,
    close_timeout_s=5.0,
)


# --- the emulator, one database per test ---


@dataclass
class Cosmos:
    server: CosmosServer
    client: CosmosClient
    db: DatabaseProxy
    name: str

    @property
    def workers(self) -> ContainerProxy:
        return self.db.get_container_client(WORKERS_CONTAINER)

    @property
    def journal(self) -> ContainerProxy:
        return self.db.get_container_client(JOURNAL_CONTAINER)

    async def item(self, worker_id: str, pool: str = "gpu") -> dict[str, Any] | None:
        try:
            return await self.workers.read_item(item=worker_id, partition_key=pool)
        except CosmosResourceNotFoundError:
            return None


@contextlib.asynccontextmanager
async def fresh_database(server: CosmosServer) -> AsyncIterator[Cosmos]:
    client = CosmosClient(server.url, credential=server.key, connection_verify=False)
    name = f"fleet-{uuid.uuid4().hex[:12]}"
    try:
        db = await ensure_database(client, name)
        yield Cosmos(server, client, db, name)
        await client.delete_database(name)
    finally:
        await client.close()


@pytest.fixture
async def cosmos(cosmos_server: CosmosServer) -> AsyncIterator[Cosmos]:
    async with fresh_database(cosmos_server) as database:
        yield database


def http_error(status_code: int, message: str) -> Exception:
    return CosmosHttpResponseError(status_code=status_code, message=message)  # type: ignore[no-untyped-call]


class FlakyContainer:
    """A real container proxy that records every write and fails the next `fail_times`."""

    def __init__(self, inner: ContainerProxy) -> None:
        self.inner = inner
        self.writes: list[tuple[str, str, dict[str, Any] | None]] = []
        self.fail_times = 0
        self.error: Exception = http_error(429, "throttled")
        self.gate: asyncio.Event | None = None  # writes wait here while it is set up
        self.blocked = asyncio.Event()

    async def _before(self, action: str, item_id: str, body: dict[str, Any] | None) -> None:
        if self.gate is not None:
            self.blocked.set()
            await self.gate.wait()
        if self.fail_times > 0:
            self.fail_times -= 1
            raise self.error
        self.writes.append((action, item_id, body))

    async def upsert_item(self, body: dict[str, Any], **kwargs: Any) -> Any:
        await self._before("upsert", body["id"], body)
        return await self.inner.upsert_item(body, **kwargs)

    async def create_item(self, body: dict[str, Any], **kwargs: Any) -> Any:
        await self._before("create", body["id"], body)
        return await self.inner.create_item(body, **kwargs)

    async def delete_item(self, item: str, partition_key: Any, **kwargs: Any) -> None:
        await self._before("delete", item, None)
        await self.inner.delete_item(item=item, partition_key=partition_key, **kwargs)

    def read_all_items(self, **kwargs: Any) -> Any:
        return self.inner.read_all_items(**kwargs)

    def query_items(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.query_items(*args, **kwargs)

    def upserts_of(self, item_id: str) -> list[dict[str, Any]]:
        return [b for a, i, b in self.writes if a == "upsert" and i == item_id and b is not None]


def worker_store(container: Any, **kwargs: Any) -> CosmosWorkerStore:
    kwargs.setdefault("options", FAST)
    return CosmosWorkerStore(container, **kwargs)


def make_worker(worker_id: str = "w1", pool: str = "gpu", **fields: Any) -> Worker:
    values: dict[str, Any] = {
        "id": worker_id,
        "pool": pool,
        "model": "smollm2",
        "engine": "vllm",
        "url": f"http://{worker_id}:8000",
        "state": WorkerState.READY,
        "registered_at": 100.0,
        "last_heartbeat": 100.0,
        "state_changed_at": 100.0,
    }
    values.update(fields)
    return Worker(**values)


# --- the WorkerStore contract: in memory, SQLite and Cosmos ---


@dataclass
class StoreUnderTest:
    name: str
    store: WorkerStore
    reopen: Callable[[], Any] | None  # async: the same data through a fresh store instance
    opened: list[Any] = field(default_factory=list)


@pytest.fixture(params=["memory", "sqlite", "cosmos"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    if request.param == "memory":
        yield StoreUnderTest("memory", InMemoryWorkerStore(), None)
        return
    if request.param == "sqlite":
        path = tmp_path / "workers.sqlite3"
        sqlite = StoreUnderTest("sqlite", SqliteWorkerStore(path), None)

        async def reopen_sqlite() -> WorkerStore:
            store = SqliteWorkerStore(path)
            sqlite.opened.append(store)
            return store

        sqlite.reopen = reopen_sqlite
        sqlite.opened.append(sqlite.store)
        yield sqlite
        for store in sqlite.opened:
            store.close()
        return
    async with fresh_database(request.getfixturevalue("cosmos_server")) as cosmos:
        first = worker_store(cosmos.workers)
        await first.start()
        subject = StoreUnderTest("cosmos", first, None, [first])

        async def reopen_cosmos() -> WorkerStore:
            await first.close()  # flushes; a new instance reads what reached Cosmos
            store = worker_store(cosmos.workers)
            await store.load()
            subject.opened.append(store)
            return store

        subject.reopen = reopen_cosmos
        yield subject
        for store in subject.opened:
            await store.close()


async def test_put_then_get_returns_every_field(subject: StoreUnderTest) -> None:
    worker = make_worker(
        state=WorkerState.DRAINING,
        priority="on-demand",
        zone="2",
        reason="spot eviction",
        metrics=EngineMetrics(3.0, 1.0, 0.42),
        eviction=Eviction("evt-1", 1_700_000_030.0, 1_700_000_000.0, "Reboot"),
    )
    subject.store.put(worker)
    assert subject.store.get("w1") == worker
    assert subject.store.all() == [worker]
    if subject.reopen is not None:
        reopened = await subject.reopen()
        assert reopened.get("w1") == worker
        assert reopened.all() == [worker]


async def test_missing_worker_is_none_and_delete_tolerates_it(subject: StoreUnderTest) -> None:
    assert subject.store.get("nobody") is None
    assert subject.store.all() == []
    subject.store.delete("nobody")
    assert subject.store.all() == []


async def test_put_overwrites_and_delete_removes(subject: StoreUnderTest) -> None:
    subject.store.put(make_worker("w1"))
    subject.store.put(make_worker("w2"))
    newer = make_worker("w1", state=WorkerState.DRAINING, state_changed_at=150.0)
    subject.store.put(newer)
    subject.store.delete("w2")
    assert subject.store.get("w1") == newer
    assert subject.store.get("w2") is None
    assert [w.id for w in subject.store.all()] == ["w1"]
    if subject.reopen is not None:
        reopened = await subject.reopen()
        assert reopened.all() == [newer]


async def test_all_lists_every_worker(subject: StoreUnderTest) -> None:
    for worker_id, pool in (("w3", "gpu"), ("w1", "cpu"), ("w2", "gpu")):
        subject.store.put(make_worker(worker_id, pool))
    assert sorted((w.id, w.pool) for w in subject.store.all()) == [
        ("w1", "cpu"),
        ("w2", "gpu"),
        ("w3", "gpu"),
    ]


async def test_the_store_keeps_a_copy(subject: StoreUnderTest) -> None:
    """The registry mutates its workers in place and puts them again: the store must snapshot."""
    worker = make_worker()
    subject.store.put(worker)
    worker.last_heartbeat = 999.0
    worker.metrics.num_requests_running = 7.0
    read = subject.store.get("w1")
    assert read is not None
    assert read.last_heartbeat == 100.0
    assert read.metrics.num_requests_running == 0.0
    read.state = WorkerState.GONE
    assert subject.store.all()[0].state == WorkerState.READY


async def test_a_registry_on_the_store_survives_a_restart(subject: StoreUnderTest) -> None:
    if subject.reopen is None:
        pytest.skip("the in-memory store forgets by design")
    clock = ManualClock()
    registry = WorkerRegistry(subject.store, clock)
    registry.register("w1", pool="gpu", model="smollm2", engine="vllm", url="http://w1")
    registry.register("w2", pool="gpu", model="smollm2", engine="vllm", url="http://w2")
    clock.advance(2)
    registry.heartbeat("w1", {"num_requests_running": 2})
    registry.drain("w2", "spot eviction", event_id="evt", not_before=clock.now() + 30)
    before = registry.all()
    again = WorkerRegistry(await subject.reopen(), clock)
    assert again.all() == before
    assert [w.id for w in again.ready_for_model("smollm2")] == ["w1"]


# --- write-behind ---


async def test_a_hundred_puts_of_one_worker_are_a_few_writes_of_the_newest(
    cosmos: Cosmos,
) -> None:
    flaky = FlakyContainer(cosmos.workers)
    store = worker_store(flaky, options=WriteBehindOptions(flush_interval_s=0.05))
    await store.start()
    try:
        for beat in range(100):
            store.put(make_worker(last_heartbeat=1000.0 + beat, metrics=EngineMetrics(beat)))
            await asyncio.sleep(0.001)  # a heartbeat every millisecond: far faster than real
        assert await store.flush(5.0)
        written = len(flaky.upserts_of("w1"))
        assert 1 <= written <= 30, written
        item = await cosmos.item("w1")
        assert item is not None
        assert item["last_heartbeat"] == 1099.0
        assert item["metrics"]["num_requests_running"] == 99.0
        # without a pause in between they are one write
        for beat in range(100):
            store.put(make_worker(last_heartbeat=2000.0 + beat))
        assert await store.flush(5.0)
        assert len(flaky.upserts_of("w1")) == written + 1
        assert (await cosmos.item("w1") or {})["last_heartbeat"] == 2099.0
    finally:
        await store.close()


async def test_nothing_is_written_before_start_and_close_flushes(cosmos: Cosmos) -> None:
    flaky = FlakyContainer(cosmos.workers)
    store = worker_store(flaky)
    store.put(make_worker("w1"))
    await asyncio.sleep(0.05)
    assert flaky.writes == []
    assert store.pending_writes == 1
    await store.close()
    assert store.pending_writes == 0
    assert (await cosmos.item("w1") or {}).get("state") == "ready"


async def test_writes_reach_cosmos_in_the_background(cosmos: Cosmos) -> None:
    store = worker_store(cosmos.workers)
    await store.start()
    try:
        await asyncio.to_thread(store.put, make_worker("w1"))  # from another thread, too
        store.put(make_worker("w2"))
        for _ in range(200):
            if await cosmos.item("w1") and await cosmos.item("w2"):
                break
            await asyncio.sleep(0.01)
        assert await cosmos.item("w1") is not None
        assert await cosmos.item("w2") is not None
    finally:
        await store.close()


@pytest.mark.parametrize(
    "error",
    [
        http_error(429, "throttled"),
        http_error(503, "unavailable"),
        ServiceRequestError("connection refused"),
        TimeoutError(),
    ],
    ids=["429", "503", "connection", "timeout"],
)
async def test_a_failing_flush_loses_nothing(cosmos: Cosmos, error: Exception) -> None:
    flaky = FlakyContainer(cosmos.workers)
    flaky.error = error
    flaky.fail_times = 10**9
    store = worker_store(flaky)
    await store.start()
    try:
        for beat in range(5):
            store.put(make_worker(last_heartbeat=100.0 + beat))
            await asyncio.sleep(0.02)
        assert not await store.flush(0.1)
        assert store.stats.failed >= 2
        assert await cosmos.item("w1") is None
        assert (store.get("w1") or make_worker()).last_heartbeat == 104.0
        store.put(make_worker(last_heartbeat=105.0, state=WorkerState.DRAINING))
        store.put(make_worker("w2"))
        flaky.fail_times = 0  # the outage ends
        assert await store.flush(5.0)
        item = await cosmos.item("w1")
        assert item is not None
        assert (item["state"], item["last_heartbeat"]) == ("draining", 105.0)
        assert await cosmos.item("w2") is not None
        assert store.pending_writes == 0
    finally:
        await store.close()


async def test_an_older_write_failing_late_never_overwrites_a_newer_one(cosmos: Cosmos) -> None:
    flaky = FlakyContainer(cosmos.workers)
    flaky.gate = asyncio.Event()
    flaky.fail_times = 1
    store = worker_store(flaky)
    await store.start()
    try:
        store.put(make_worker(last_heartbeat=101.0))
        await asyncio.wait_for(flaky.blocked.wait(), 5.0)  # the write of 101 is in flight
        store.put(make_worker(last_heartbeat=102.0))
        flaky.gate.set()  # ... and now fails
        assert await store.flush(5.0)
        assert [b["last_heartbeat"] for b in flaky.upserts_of("w1")] == [102.0]
        assert (await cosmos.item("w1") or {})["last_heartbeat"] == 102.0
    finally:
        await store.close()


async def test_a_write_cosmos_rejects_for_good_is_dropped_not_retried(cosmos: Cosmos) -> None:
    flaky = FlakyContainer(cosmos.workers)
    flaky.error = http_error(400, "bad request")
    flaky.fail_times = 1
    store = worker_store(flaky)
    store.put(make_worker("w1"))
    assert await store.flush(5.0)
    assert store.stats.dropped == 1
    store.put(make_worker("w2"))
    await store.close()
    assert await cosmos.item("w1") is None
    assert await cosmos.item("w2") is not None


# --- durability and several instances ---


async def test_a_new_store_loads_what_the_first_wrote(cosmos: Cosmos) -> None:
    first = worker_store(cosmos.workers)
    await first.start()
    workers = [make_worker("w1"), make_worker("w2", "cpu"), make_worker("w3")]
    for worker in workers:
        first.put(worker)
    first.delete("w3")
    await first.close()
    second = worker_store(cosmos.workers)
    try:
        assert await second.load() == workers[:2]
        assert second.get("w3") is None
    finally:
        await second.close()


async def test_two_stores_see_each_others_workers_through_pull(cosmos: Cosmos) -> None:
    a, b = worker_store(cosmos.workers), worker_store(cosmos.workers)
    try:
        a.put(make_worker("w1"))
        b.put(make_worker("w2", "cpu"))
        assert await a.flush() and await b.flush()
        assert [w.id for w in await a.pull()] == ["w2"]
        assert [w.id for w in await b.pull()] == ["w1"]
        assert [w.id for w in a.all()] == [w.id for w in b.all()] == ["w1", "w2"]
        assert await a.pull() == []  # nothing new since
        b.put(make_worker("w1", last_heartbeat=200.0, metrics=EngineMetrics(5.0)))
        assert await b.flush()
        pulled = await a.pull()
        assert [(w.id, w.last_heartbeat) for w in pulled] == [("w1", 200.0)]
        assert a.get("w1") == b.get("w1")
        assert await b.pull() == []  # its own write
    finally:
        await a.close()
        await b.close()


async def test_pull_never_moves_a_worker_backwards(cosmos: Cosmos) -> None:
    a, b = worker_store(cosmos.workers), worker_store(cosmos.workers)
    try:
        a.put(make_worker("w1"))
        assert await a.flush()
        await b.load()
        a.put(make_worker("w1", state=WorkerState.DRAINING, state_changed_at=150.0))
        assert await a.flush()
        # b has not pulled yet: a heartbeat arriving there writes its stale READY record last
        b.put(make_worker("w1", last_heartbeat=160.0, metrics=EngineMetrics(4.0)))
        assert await b.flush()
        assert (await cosmos.item("w1") or {})["state"] == "ready"
        pulled = await a.pull()
        merged = a.get("w1")
        assert merged is not None
        assert (merged.state, merged.state_changed_at) == (WorkerState.DRAINING, 150.0)
        assert merged.last_heartbeat == 160.0  # the newer heartbeat is kept all the same
        assert merged.metrics.num_requests_running == 4.0
        assert pulled == [merged]
        assert await a.flush()  # a writes its record back over the stale one
        assert (await cosmos.item("w1") or {})["state"] == "draining"
        assert [w.state for w in await b.pull()] == [WorkerState.DRAINING]
        assert b.get("w1") == merged
        assert await a.pull() == [] and await b.pull() == []  # converged
    finally:
        await a.close()
        await b.close()


async def test_a_later_registration_wins_over_gone_but_a_retirement_is_final(
    cosmos: Cosmos,
) -> None:
    a, b = worker_store(cosmos.workers), worker_store(cosmos.workers)
    try:
        gone: dict[str, Any] = {"state": WorkerState.GONE, "state_changed_at": 200.0}
        a.put(make_worker("lost", reason="heartbeat timeout", **gone))
        a.put(make_worker("retired", reason="deleted: drained", **gone))
        assert await a.flush()
        back: dict[str, Any] = {
            "state": WorkerState.READY,
            "state_changed_at": 250.0,
            "last_heartbeat": 250.0,
        }
        b.put(make_worker("lost", **back))  # its agent registered again, on the other instance
        b.put(make_worker("retired", **back))  # an agent that missed its retirement
        assert await b.flush()
        pulled = {w.id: w.state for w in await a.pull()}
        assert pulled == {"lost": WorkerState.READY, "retired": WorkerState.GONE}
        assert (a.get("lost") or make_worker()).state == WorkerState.READY
        assert (a.get("retired") or make_worker()).state == WorkerState.GONE
        assert await a.flush()
        assert (await cosmos.item("retired") or {})["state"] == "gone"
        await b.pull()
        assert (b.get("retired") or make_worker()).retired
    finally:
        await a.close()
        await b.close()


async def test_pull_reports_workers_deleted_elsewhere_and_keeps_unwritten_ones(
    cosmos: Cosmos,
) -> None:
    a, b = worker_store(cosmos.workers), worker_store(cosmos.workers)
    try:
        a.put(make_worker("w1", state=WorkerState.GONE, state_changed_at=150.0))
        assert await a.flush()
        await b.load()
        a.delete("w1")
        assert await a.flush()
        b.put(make_worker("w2"))  # queued on b, not yet written
        changes = await b.pull_changes()
        assert changes.removed == ["w1"]
        assert changes.updated == []
        assert [w.id for w in b.all()] == ["w2"]
        assert await a.pull() == []  # w2 is not in Cosmos yet; w1 stays deleted
        assert a.get("w1") is None
    finally:
        await a.close()
        await b.close()


# --- the FleetJournal contract (tests/fleet/test_fleet_journal_contract.py), then durability ---

JOURNAL_CONTRACT = [
    "test_a_retried_eviction_report_is_one_eviction",
    "test_pools_do_not_mix",
    "test_since_filters_inclusively",
    "test_prune_drops_entries_older_than_the_cutoff",
    "test_decisions_come_back_in_order",
    "test_decisions_keep_only_the_newest",
    "test_every_pools_evictions_and_refusals_come_back_with_their_pool",
    "test_a_worker_seen_going_twice_is_one_span",
    "test_worker_spans_are_those_overlapping_the_window_by_start",
    "test_prune_drops_spans_that_ended_before_the_cutoff",
    "test_a_running_workers_span_is_refused",
]
POOLS = ("gpu", "a", "b", "c")


def journal_view(journal: CosmosFleetJournal) -> dict[str, Any]:
    return {
        "evictions": {p: journal.evictions(p, since=0.0) for p in POOLS},
        "failures": {p: journal.capacity_failures(p, since=0.0) for p in POOLS},
        "decisions": list(journal),
        "all_evictions": journal.all_evictions(since=0.0),
        "all_failures": journal.all_capacity_failures(since=0.0),
        "spans": journal.worker_spans(since=0.0),
    }


@pytest.mark.parametrize("check", JOURNAL_CONTRACT)
async def test_the_cosmos_journal_keeps_the_journal_contract(cosmos: Cosmos, check: str) -> None:
    made: list[tuple[CosmosFleetJournal, int]] = []

    def make(cap: int = 500) -> FleetJournal:
        journal = CosmosFleetJournal(cosmos.journal, max_decisions=cap, options=FAST)
        made.append((journal, cap))
        return journal

    getattr(journal_contract, check)(make)
    for journal, cap in made:  # ... and a fresh instance pulls the same journal back
        await journal.close()
        reopened = CosmosFleetJournal(cosmos.journal, max_decisions=cap, options=FAST)
        await reopened.load()
        assert journal_view(reopened) == journal_view(journal)
        await reopened.close()


async def test_journals_on_two_instances_share_entries_through_pull(cosmos: Cosmos) -> None:
    one = CosmosFleetJournal(cosmos.journal, options=FAST)
    two = CosmosFleetJournal(cosmos.journal, options=FAST)
    try:
        one.record_eviction("gpu", "w1", "1", at=100.0)
        one.record_capacity_failure("gpu", "spot", "1", "SkuNotAvailable", at=100.5)
        assert await one.flush()
        two.record_eviction("gpu", "w1", "1", at=101.0)  # the agent retried on the other instance
        two.record_eviction("gpu", "w2", "2", at=102.0)
        two.record_eviction("cpu", "w9", None, at=103.0)
        assert await two.flush()
        await one.pull("gpu")
        await two.pull("gpu")
        expected = [EvictionSignal("1", 100.0), EvictionSignal("2", 102.0)]
        assert one.evictions("gpu", since=0.0) == two.evictions("gpu", since=0.0) == expected
        assert [f.reason for f in two.capacity_failures("gpu", since=0.0)] == ["SkuNotAvailable"]
        assert one.evictions("cpu", since=0.0) == []  # only the pool it pulled
        await one.pull("cpu")
        assert one.evictions("cpu", since=0.0) == [EvictionSignal(None, 103.0)]
        assert one.evictions("gpu", since=0.0) == expected  # pulling cpu left gpu alone
    finally:
        await one.close()
        await two.close()


async def test_decisions_from_two_instances_come_back_in_order(cosmos: Cosmos) -> None:
    one = CosmosFleetJournal(cosmos.journal, options=FAST)
    two = CosmosFleetJournal(cosmos.journal, options=FAST)
    try:
        one.append({"pool": "gpu", "tick": 1})
        two.append({"pool": "gpu", "tick": 2})
        one.append({"pool": "cpu", "tick": 3})
        one.append({"tick": 4})  # no pool
        assert await one.flush() and await two.flush()
        await one.pull()
        assert [d["tick"] for d in one.recent(10)] == [1, 2, 3, 4]
        assert [d["tick"] for d in one.recent_for_pool("gpu", 10)] == [1, 2]
        await two.pull("gpu")
        assert [d["tick"] for d in two.recent(10)] == [1, 2]
        third = CosmosFleetJournal(cosmos.journal, max_decisions=3, options=FAST)
        await third.load()
        assert [d["tick"] for d in third] == [2, 3, 4]
        await third.close()
    finally:
        await one.close()
        await two.close()


async def test_pull_keeps_entries_not_yet_written(cosmos: Cosmos) -> None:
    flaky = FlakyContainer(cosmos.journal)
    flaky.fail_times = 10**9
    journal = CosmosFleetJournal(flaky, options=FAST)  # type: ignore[arg-type]
    await journal.start()
    try:
        journal.record_eviction("gpu", "w1", "1", at=100.0)
        journal.append({"pool": "gpu", "tick": 1})
        assert not await journal.flush(0.05)
        await journal.pull("gpu")
        await journal.pull()
        assert journal.evictions("gpu", since=0.0) == [EvictionSignal("1", 100.0)]
        assert [d["tick"] for d in journal] == [1]
        flaky.fail_times = 0
        assert await journal.flush(5.0)
        other = CosmosFleetJournal(cosmos.journal, options=FAST)
        await other.pull("gpu")
        assert other.evictions("gpu", since=0.0) == [EvictionSignal("1", 100.0)]
        await other.close()
    finally:
        await journal.close()


async def test_prune_deletes_from_cosmos_too(cosmos: Cosmos) -> None:
    journal = CosmosFleetJournal(cosmos.journal, options=FAST)
    journal.record_eviction("gpu", "old", "1", at=10.0)
    journal.record_capacity_failure("gpu", "spot", "1", "old", at=10.0)
    journal.record_eviction("gpu", "new", "2", at=50.0)
    assert await journal.flush()
    journal.prune(before=30.0)
    await journal.close()
    count = [i async for i in cosmos.journal.query_items("SELECT * FROM c WHERE c.at < 30")]
    assert count == []
    reopened = CosmosFleetJournal(cosmos.journal, options=FAST)
    await reopened.load()
    assert reopened.evictions("gpu", since=0.0) == [EvictionSignal("2", 50.0)]
    assert reopened.capacity_failures("gpu", since=0.0) == []
    await reopened.close()


async def test_instances_that_saw_one_worker_go_write_one_span_item(cosmos: Cosmos) -> None:
    span = WorkerSpan("pool/w#1", "gpu", "spot", "NC4", "1", 100.0, 200.0, "evicted")
    ttls = {"event_ttl_s": 60, "span_ttl_s": 3600}
    one = CosmosFleetJournal(cosmos.journal, options=FAST, **ttls)
    two = CosmosFleetJournal(cosmos.journal, options=FAST, **ttls)
    three = CosmosFleetJournal(cosmos.journal, options=FAST)
    try:
        one.record_worker_span(span)
        two.record_worker_span(span)
        assert await one.flush() and await two.flush()
        query = "SELECT * FROM c WHERE c.kind = 'worker_span'"
        items = [i async for i in cosmos.journal.query_items(query)]
        assert len(items) == 1
        assert items[0]["ttl"] == 3600  # a month's cost report outlives the events' TTL
        await three.pull("gpu", decisions=False)
        assert three.worker_spans(since=0.0) == []  # only the rounds that read decisions
        await three.pull("gpu")
        assert three.worker_spans(since=0.0) == [span]
    finally:
        for journal in (one, two, three):
            await journal.close()


# --- azure_stores ---


def cosmos_settings(server: CosmosServer, database: str) -> Settings:
    return Settings(
        store_backend="cosmos",
        cache_backend="cosmos",
        cosmos_endpoint=server.url,
        cosmos_database=database,
    )


def where(settings: Settings) -> dict[str, Any]:
    """The stores' own arguments, as the Azure host takes them from its settings."""
    return {
        "endpoint": settings.azure.cosmos_endpoint,
        "database": settings.azure.cosmos_database,
        "cache": settings.cache.backend == "cosmos",
    }


async def test_azure_stores_share_one_client_and_survive_a_restart(
    cosmos_server: CosmosServer,
) -> None:
    settings = cosmos_settings(cosmos_server, f"stores-{uuid.uuid4().hex[:12]}")
    options: dict[str, Any] = {
        "credential": cosmos_server.key,
        "connection_verify": False,
        "options": FAST,
        "clock": ManualClock(),
    }
    stores = await azure_stores(**where(settings), create_if_missing=True, **options)
    try:
        assert stores.cache_store is not None
        stores.worker_store.put(make_worker("w1"))
        stores.journal.record_eviction("gpu", "w0", "3", at=90.0)
        stores.journal.append({"pool": "gpu", "tick": 7})
        await stores.cache_store.put("k" * 64, b"cached", 60)
    finally:
        await stores.close()
    again = await azure_stores(
        **where(settings), **options
    )  # creation off: the containers exist now
    try:
        assert [w.id for w in again.worker_store.all()] == ["w1"]
        assert again.journal.evictions("gpu", since=0.0) == [EvictionSignal("3", 90.0)]
        assert [d["tick"] for d in again.journal.recent(5)] == [7]
        assert again.cache_store is not None
        assert await again.cache_store.get("k" * 64) == b"cached"
        again.worker_store.put(make_worker("w2"))  # started: written in the background
        assert await again.worker_store.flush()
    finally:
        await again.close()
        async with CosmosClient(
            cosmos_server.url, credential=cosmos_server.key, connection_verify=False
        ) as client:
            await client.delete_database(settings.azure.cosmos_database)


def test_stores_built_without_a_loop_start_inside_one(cosmos_server: CosmosServer) -> None:
    """The Functions app is built at import, before any event loop: building must do no I/O."""
    settings = cosmos_settings(cosmos_server, f"lazy-{uuid.uuid4().hex[:12]}")
    stores = build_azure_stores(
        **where(settings),
        credential=cosmos_server.key,
        create_if_missing=True,
        connection_verify=False,
        options=FAST,
    )
    stores.worker_store.put(make_worker("w1"))  # queued before start: written once it runs

    async def lifespan() -> list[str]:
        await stores.start()  # what Runtime.start does with its lifecycles
        await stores.start()  # twice is once
        assert await stores.worker_store.flush()
        await stores.close()
        again = await azure_stores(
            **where(settings), credential=cosmos_server.key, connection_verify=False, options=FAST
        )
        try:
            return [w.id for w in again.worker_store.all()]
        finally:
            await again.close()
            async with CosmosClient(
                cosmos_server.url, credential=cosmos_server.key, connection_verify=False
            ) as client:
                await client.delete_database(settings.azure.cosmos_database)

    assert asyncio.run(lifespan()) == ["w1"]


async def test_azure_stores_create_nothing_unless_asked(cosmos_server: CosmosServer) -> None:
    settings = cosmos_settings(cosmos_server, f"absent-{uuid.uuid4().hex[:12]}")
    with pytest.raises(CosmosResourceNotFoundError):
        await azure_stores(
            **where(settings), credential=cosmos_server.key, connection_verify=False, options=FAST
        )
    settings.cache.backend = "off"
    stores = await azure_stores(
        **where(settings), credential=cosmos_server.key, connection_verify=False, start=False
    )
    assert stores.cache_store is None
    await stores.close()


async def test_azure_stores_need_an_endpoint() -> None:
    with pytest.raises(ValueError, match="cosmos_endpoint"):
        await azure_stores(**where(Settings(store_backend="cosmos", cosmos_endpoint=None)))


def test_what_only_ever_gets_known_survives_a_conflict_between_instances() -> None:
    """The monitor's instance learns a provisioning worker's address while an API instance
    holds the same record without it; a distrust seen on one instance must not be undone by
    the other's tie-breaking either."""
    plain = make_worker(state=WorkerState.PROVISIONING)
    located = make_worker(state=WorkerState.PROVISIONING, address="127.0.0.1:9000")
    distrusted = make_worker(state=WorkerState.PROVISIONING, distrusted="registration refused")
    for a, b in ((plain, located), (located, plain)):
        assert merge(a, b).address == "127.0.0.1:9000"
    for a, b in ((located, distrusted), (distrusted, located)):
        merged = merge(a, b)
        assert merged.distrusted == "registration refused" and merged.address
