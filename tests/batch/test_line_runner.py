"""The batch line runner on a real gateway: lines run on spare slots, recorded exactly once.

The gateway is built as hosts build it (`build_gateway`, `assemble_runtime`,
`build_batch`) over memory batch stores, with a sim engine served on
loopback as its worker. The test drives the runner one round at a time
(`run_pool_once`) and moves a manual clock past retry delays, so nothing
sleeps. Batches are made through the Batch service and prepared, queued and
finalised by the orchestration's own activities.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotgate.api.app import create_app
from spotgate.batch.line_spans import line_spans
from spotgate.batch.memory_queue import InMemoryLineQueue, InMemoryLineResults
from spotgate.batch.memory_stores import InMemoryBatchStore, InMemoryFileStore
from spotgate.batch.objects import COMPLETED, IN_PROGRESS, BatchObject, LineResult, LineTask
from spotgate.batch.ports import LineQueue, QueuedLine
from spotgate.batch.requests import CreateBatch
from spotgate.batch.runner import BatchLineRunner, RunnerOptions
from spotgate.batch.service import BatchLimits, BatchService, BatchStarter
from spotgate.clock import ManualClock
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.tenancy.authority import static_key_id
from spotgate.hosts.batch import BatchParts, BatchStores, build_batch
from spotgate.hosts.gateway import GatewayParts, assemble_runtime, build_gateway
from spotgate.orchestrations.batch_activities import (
    ENQUEUE_LINES,
    FINALISE_BATCH,
    PREPARE_BATCH,
    batch_activity_table,
)
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.conftest import serve_asgi
from tests.gateway.tenancy.test_steps import records

KEY = "sk-batch-owner"
OTHER_KEY = "sk-batch-other"
MODEL = "m"
POOL = "default"
CHAT = "/v1/chat/completions"
PRICE_IN, PRICE_OUT = 2.0, 8.0  # USD per million tokens
CATALOGUE = [
    {"name": MODEL, "context_length": 2048, "price_in_per_1m": PRICE_IN,
     "price_out_per_1m": PRICE_OUT},
]  # fmt: skip
RETRY_DELAY_S = RunnerOptions().retry_delay_s
BATCH_CACHE_S = RunnerOptions().batch_cache_s


# the workers


@dataclass
class RecordingWorker:
    """An ASGI app in front of a worker that keeps the body of every /v1 request it got
    (uvicorn serves it on its own thread, hence the lock)."""

    app: ASGIApp
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    with self.lock:
                        self.bodies.append(orjson.loads(b"".join(parts)))
            return message

        await self.app(scope, recording, send)

    def contents(self) -> list[str]:
        """The user message of every request the worker got, in arrival order."""
        with self.lock:
            return [body["messages"][-1]["content"] for body in self.bodies]

    def clear(self) -> None:
        with self.lock:
            self.bodies.clear()


async def answers_500(scope: Scope, receive: Receive, send: Send) -> None:
    """A worker that is up but broken: every request is a 500 (vLLM's engine dead)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    body = orjson.dumps({"error": {"message": "engine dead", "type": "server_error"}})
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def sim_worker() -> Iterator[tuple[str, RecordingWorker]]:
    worker = RecordingWorker(
        create_sim_app(SimConfig(model=MODEL, ttft_ms=0, tokens_per_s=0, max_concurrency=64))
    )
    with serve_asgi(worker) as url:
        yield url, worker


@pytest.fixture(scope="module")
def broken_worker() -> Iterator[tuple[str, RecordingWorker]]:
    worker = RecordingWorker(answers_500)
    with serve_asgi(worker) as url:
        yield url, worker


# the stack


class NoRun:
    """A `BatchStarter` that starts nothing: these tests run the activities themselves."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def start(self, batch_id: str) -> None:
        self.started.append(batch_id)


def chat_body(text: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4,
            "ignore_eos": True}  # fmt: skip


def batch_input(*custom_ids: str) -> bytes:
    """One chat request per custom id, its message naming the id (so the worker's log says
    which lines it ran)."""
    lines = (
        orjson.dumps({"custom_id": c, "method": "POST", "url": CHAT, "body": chat_body(c)})
        for c in custom_ids
    )
    return b"\n".join(lines) + b"\n"


async def eventually(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if condition():
            return
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


@dataclass
class Stack:
    clock: ManualClock
    parts: GatewayParts
    runtime: Runtime
    batch: BatchParts
    service: BatchService
    worker: RecordingWorker
    owner: str = static_key_id(KEY)

    @property
    def runner(self) -> BatchLineRunner:
        return self.batch.runner

    @property
    def stores(self) -> BatchStores:
        return self.batch.stores

    def activity(self, name: str) -> Any:
        return batch_activity_table(self.batch.services)[name]

    async def create(self, content: bytes, owner: str | None = None) -> BatchObject:
        owner = owner or self.owner
        file = await self.service.create_file(owner, "in.jsonl", "batch", content)
        request = CreateBatch(file.id, CHAT, "24h", None)
        return await self.service.create_batch(owner, request)

    async def start(self, *custom_ids: str, owner: str | None = None) -> BatchObject:
        """A batch of these requests, validated and its lines queued, as its run does it."""
        batch = await self.create(batch_input(*custom_ids), owner)
        prepared = await self.activity(PREPARE_BATCH)({"batch_id": batch.id})
        assert prepared["view"]["status"] == IN_PROGRESS, prepared
        for chunk in prepared["chunks"]:
            await self.activity(ENQUEUE_LINES)({"batch_id": batch.id, **chunk})
        return await self.get(batch.id)

    async def get(self, batch_id: str) -> BatchObject:
        batch = await self.stores.batches.get(batch_id)
        assert batch is not None
        return batch

    async def depth(self) -> int:
        return await self.stores.queue.depth(POOL)

    async def drain(self, rounds: int = 20) -> None:
        """Runs rounds until the queue is empty, letting each retry delay pass in between."""
        for _ in range(rounds):
            if await self.depth() == 0:
                return
            await self.runner.run_pool_once(POOL)
            self.clock.advance(RETRY_DELAY_S)
        raise AssertionError(f"{await self.depth()} lines still queued after {rounds} rounds")

    async def results(self, batch_id: str) -> list[LineResult]:
        return [r async for r in self.stores.results.scan(batch_id)]

    async def finalise(self, batch_id: str, outcome: str = COMPLETED) -> BatchObject:
        await self.activity(FINALISE_BATCH)({"batch_id": batch_id, "outcome": outcome})
        return await self.get(batch_id)

    async def file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        content = await self.stores.files.read(file_id)
        return [orjson.loads(line) for line in content.splitlines() if line.strip()]


def memory_stores(clock: ManualClock, queue: LineQueue | None = None) -> BatchStores:
    return BatchStores(
        files=InMemoryFileStore(),
        batches=InMemoryBatchStore(),
        queue=queue or InMemoryLineQueue(clock),
        results=InMemoryLineResults(),
    )


class RemoteQueue:
    """The memory queue behind a network round-trip (a Storage queue on Azure): `receive`
    answers only once the test opens `reply`."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = InMemoryLineQueue(clock)
        self.reply = asyncio.Event()
        self.asked = asyncio.Event()

    async def send(self, pool: str, tasks: list[LineTask]) -> None:
        await self.inner.send(pool, tasks)

    async def receive(self, pool: str, max_lines: int, visibility_s: float) -> list[QueuedLine]:
        self.asked.set()
        await self.reply.wait()
        return await self.inner.receive(pool, max_lines, visibility_s)

    async def delete(self, pool: str, line: QueuedLine) -> None:
        await self.inner.delete(pool, line)

    async def release(self, pool: str, line: QueuedLine, delay_s: float) -> None:
        await self.inner.release(pool, line, delay_s)

    async def depth(self, pool: str) -> int:
        return await self.inner.depth(pool)

    async def close(self) -> None:
        await self.inner.close()


@contextlib.asynccontextmanager
async def batch_stack(
    worker: tuple[str, RecordingWorker],
    starter: BatchStarter | None = None,
    queue: Callable[[ManualClock], LineQueue] | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """A gateway with one sim worker, its Batch API on memory stores, on a manual clock."""
    url, recorder = worker
    recorder.clear()
    clock = ManualClock()
    options: dict[str, Any] = {
        "api_keys": [KEY, OTHER_KEY],
        "cache_backend": "off",
        "capacity_wait_s": 0,
        "upstream_max_attempts": 1,
        "model_catalogue": CATALOGUE,
        **settings,
    }
    parts = build_gateway(Settings(**options), InMemoryWorkerStore(), clock=clock)
    parts.registry.register("w1", pool=POOL, model=MODEL, engine="sim", url=url)
    batch = build_batch(parts, memory_stores(clock, queue(clock) if queue else None))
    limits = BatchLimits(input=batch.limits)
    service = BatchService(
        batch.stores.files, batch.stores.batches, starter or NoRun(), clock, limits
    )
    runtime = assemble_runtime(parts, lifecycles=batch.lifecycles, batches=service)
    await parts.tenancy.start()
    try:
        yield Stack(clock, parts, runtime, batch, service, recorder)
    finally:
        await batch.runner.close()
        await runtime.close()


@pytest.fixture
async def stack(sim_worker: tuple[str, RecordingWorker]) -> AsyncIterator[Stack]:
    async with batch_stack(sim_worker) as built:
        yield built


# (a) at least once, recorded exactly once


async def test_every_line_runs_and_a_line_delivered_twice_is_in_the_output_once(
    stack: Stack,
) -> None:
    batch = await stack.start("a", "b", "c", "d")
    content = await stack.stores.files.read(batch.input_file_id)
    offset, length = next(line_spans(content))
    again = LineTask(batch.id, 0, offset, length)
    await stack.stores.queue.send(POOL, [again, again])  # the queue delivers "a" three times

    await stack.drain()

    results = await stack.results(batch.id)
    assert [(r.index, r.custom_id) for r in results] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    assert all(r.succeeded for r in results)
    assert {"a", "b", "c", "d"} <= set(stack.worker.contents())
    assert await stack.stores.results.counts(batch.id) == (4, 0)

    # delivered once more after it was answered: dropped without asking the worker
    ran = len(stack.worker.contents())
    await stack.stores.queue.send(POOL, [again])
    assert await stack.runner.run_pool_once(POOL) == 1
    assert len(stack.worker.contents()) == ran and await stack.depth() == 0

    done = await stack.finalise(batch.id)
    output = await stack.file_lines(done.output_file_id)
    assert [line["custom_id"] for line in output] == ["a", "b", "c", "d"]
    assert len({line["id"] for line in output}) == 4
    assert done.error_file_id is None
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 0)


# (b) interactive traffic first


async def test_lines_wait_while_the_pool_is_full_or_an_interactive_request_waits(
    sim_worker: tuple[str, RecordingWorker],
) -> None:
    async with batch_stack(sim_worker, worker_max_concurrency=2, capacity_wait_s=5) as stack:
        batch = await stack.start("a", "b", "c")
        admission = stack.parts.router.admission
        held = [await admission.acquire(POOL, 0) for _ in range(2)]  # two chats in flight

        assert await stack.runner.run_pool_once(POOL) == 0  # full: no line taken
        assert await stack.depth() == 3 and stack.worker.contents() == []

        transport = httpx.ASGITransport(app=create_app(stack.runtime, local=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            client.headers["Authorization"] = f"Bearer {KEY}"
            interactive = asyncio.create_task(client.post(CHAT, json=chat_body("interactive")))
            await eventually(lambda: admission.depth(POOL) == 1)
            assert await stack.runner.run_pool_once(POOL) == 0  # a chat waits: no line taken
            held[0].release()
            # the freed slot went to the waiting request, not to a batch line
            assert await stack.runner.run_pool_once(POOL) == 0
            reply = await interactive
        assert reply.status_code == 200, reply.text
        assert stack.worker.contents() == ["interactive"]
        assert await stack.depth() == 3

        # one slot free now (the interactive request is over, one is still held): one line
        assert await stack.runner.run_pool_once(POOL) == 1
        held[1].release()
        assert await stack.runner.run_pool_once(POOL) == 2
        assert await stack.depth() == 0
        assert [r.custom_id for r in await stack.results(batch.id)] == ["a", "b", "c"]
        assert admission.in_use(POOL) == 0  # every line gave its slot back


async def test_an_interactive_request_does_not_wait_while_the_runner_polls_the_queue(
    sim_worker: tuple[str, RecordingWorker],
) -> None:
    """No batch at all: the runner asks the (remote) queue for lines every poll. A chat
    request that arrives meanwhile must find the pool's free slots free."""
    queues: list[RemoteQueue] = []

    def remote(clock: ManualClock) -> RemoteQueue:
        queues.append(RemoteQueue(clock))
        return queues[-1]

    settings = {"worker_max_concurrency": 2, "capacity_wait_s": 5}
    async with batch_stack(sim_worker, queue=remote, **settings) as stack:
        [queue] = queues
        polling = asyncio.create_task(stack.runner.run_pool_once(POOL))
        try:
            asked = asyncio.create_task(queue.asked.wait())
            await asyncio.wait({asked, polling}, timeout=2, return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            transport = httpx.ASGITransport(app=create_app(stack.runtime, local=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
                chat = c.post(
                    CHAT, json=chat_body("hi"), headers={"Authorization": f"Bearer {KEY}"}
                )
                try:
                    reply = await asyncio.wait_for(chat, 1)
                except TimeoutError:
                    pytest.fail(
                        "BUG (batch/runner.py run_pool_once): the runner holds every free slot "
                        "of the pool while it waits for the queue's answer, even when the "
                        "queue is empty, so an interactive request waited in admission behind "
                        f"a batch poll ({stack.parts.router.admission.in_use(POOL)} of 2 slots "
                        "held by the runner)"
                    )
            assert reply.status_code == 200, reply.text
        finally:
            queue.reply.set()
            assert await polling == 0
        assert stack.parts.router.admission.in_use(POOL) == 0


# (c) a failing worker costs a retry, not a failed line


async def test_a_line_a_broken_worker_failed_comes_back_and_succeeds_on_a_healthy_one(
    stack: Stack, broken_worker: tuple[str, RecordingWorker]
) -> None:
    broken_url, broken = broken_worker
    broken.clear()
    stack.parts.registry.register("w0", pool=POOL, model=MODEL, engine="sim", url=broken_url)
    batch = await stack.start("a", "b", "c", "d")

    assert await stack.runner.run_pool_once(POOL) == 4
    answered = len(await stack.results(batch.id))
    assert broken.contents(), "no line was sent to the broken worker"
    assert answered < 4
    assert await stack.depth() == 4 - answered  # released, not dropped, not failed

    await stack.drain()

    results = await stack.results(batch.id)
    assert [r.custom_id for r in results] == ["a", "b", "c", "d"]
    assert all(r.succeeded for r in results), [r.error or r.response for r in results]
    assert await stack.stores.results.counts(batch.id) == (4, 0)
    done = await stack.finalise(batch.id)
    assert done.error_file_id is None and done.request_counts.failed == 0


# (d) the owner's key is gone


@pytest.mark.parametrize("gone", ["revoked", "removed"])
async def test_a_line_whose_owner_key_is_gone_is_recorded_as_invalid_api_key(
    stack: Stack, gone: str
) -> None:
    if gone == "revoked":
        directory = stack.parts.tenancy.directory
        assert directory is not None
        key, _ = await directory.create("alice")
        owner = key.id
    else:
        owner = static_key_id(OTHER_KEY)
    batch = await stack.start("a", "b", owner=owner)
    if gone == "revoked":
        assert directory is not None
        await directory.revoke(owner)
    else:
        stack.parts.settings.api_keys = [KEY]  # the deployment no longer accepts that key

    await stack.drain()

    results = await stack.results(batch.id)
    assert [r.custom_id for r in results] == ["a", "b"]
    assert all(r.response is None for r in results)
    assert {r.error["code"] for r in results if r.error} == {"invalid_api_key"}
    assert len([r for r in results if r.error]) == 2
    assert stack.worker.contents() == []  # nothing ran on the owner's behalf
    done = await stack.finalise(batch.id)
    errors = await stack.file_lines(done.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("a", "invalid_api_key"),
        ("b", "invalid_api_key"),
    ]
    assert done.output_file_id is None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 2)


# (e) cancelled lines never run


async def test_a_cancelled_batchs_queued_lines_are_dropped_without_running(
    stack: Stack,
) -> None:
    batch = await stack.start("a", "b", "c")
    other = await stack.start("x")
    cancelling = await stack.service.cancel_batch(stack.owner, batch.id)
    assert cancelling.status == "cancelling"

    assert await stack.runner.run_pool_once(POOL) == 4

    assert await stack.depth() == 0
    assert stack.worker.contents() == ["x"]  # the other batch's line still ran
    assert await stack.results(batch.id) == []
    assert [r.custom_id for r in await stack.results(other.id)] == ["x"]


async def test_a_cancel_stops_a_running_batchs_lines_within_the_status_cache(
    sim_worker: tuple[str, RecordingWorker],
) -> None:
    async with batch_stack(sim_worker, worker_max_concurrency=1) as stack:
        batch = await stack.start("a", "b", "c")
        assert await stack.runner.run_pool_once(POOL) == 1  # "a" ran; the runner saw in_progress
        await stack.service.cancel_batch(stack.owner, batch.id)
        stack.clock.advance(BATCH_CACHE_S)
        await stack.drain()
        assert stack.worker.contents() == ["a"]
        assert [r.custom_id for r in await stack.results(batch.id)] == ["a"]


# (f) metered as batch lines


async def test_a_lines_usage_names_its_batch_and_costs_half_the_interactive_request(
    stack: Stack,
) -> None:
    batch = await stack.start("same question")
    await stack.drain()
    transport = httpx.ASGITransport(app=create_app(stack.runtime, local=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        reply = await client.post(
            CHAT, json=chat_body("same question"), headers={"Authorization": f"Bearer {KEY}"}
        )
    assert reply.status_code == 200, reply.text

    got = await records(stack.parts)
    [result] = await stack.results(batch.id)
    assert result.response is not None
    line = got[result.response["request_id"]]
    interactive = got[reply.headers["x-request-id"]]
    assert (line.batch_id, interactive.batch_id) == (batch.id, None)
    assert line.key_id == interactive.key_id == stack.owner
    assert line.status == 200
    tokens = (interactive.prompt_tokens, interactive.completion_tokens)
    assert (line.prompt_tokens, line.completion_tokens) == tokens
    full = (tokens[0] * PRICE_IN + tokens[1] * PRICE_OUT) / 1_000_000
    assert interactive.revenue_usd == pytest.approx(full) and full > 0
    assert line.revenue_usd == pytest.approx(full / 2)
    usage = result.response["body"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == tokens
