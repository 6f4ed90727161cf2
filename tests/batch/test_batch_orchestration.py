"""A whole batch through its orchestration on the in-process Durable replay engine.

`batch_job` runs on the LocalOrchestrationRunner with the real activities
over memory stores, on the gateway the line runner tests build (a sim worker
on loopback). The test plays the line runner's loop itself, one round at a
time, so it decides how far a batch has got when it is cancelled or expires;
the orchestration polls every few hundredths of a second (`poll_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from spotgate.adapters.local.durable_runner import LocalOrchestrationRunner
from spotgate.batch.objects import (
    BATCH_OUTPUT_PURPOSE,
    CANCELLED,
    COMPLETED,
    COMPLETION_WINDOW_S,
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    BatchObject,
)
from spotgate.orchestrations import batch_activities
from spotgate.orchestrations.batch_activities import (
    ENQUEUE_LINES,
    FINALISE_BATCH,
    PREPARE_BATCH,
    batch_activity_table,
)
from spotgate.orchestrations.batch_job import BATCH_ORCHESTRATOR, batch_instance_id, batch_job
from tests.batch.test_line_runner import (
    BATCH_CACHE_S,
    CHAT,
    POOL,
    RecordingWorker,
    Stack,
    batch_input,
    batch_stack,
    chat_body,
    eventually,
    sim_worker,
)

__all__ = ["sim_worker"]

POLL_S = 0.02


class OrchestrationStarter:
    """Starts each batch's `batch_job` as the host does, with a short poll for the test."""

    def __init__(self) -> None:
        self.runner: LocalOrchestrationRunner | None = None

    async def start(self, batch_id: str) -> None:
        assert self.runner is not None
        payload = {"batch_id": batch_id, "poll_s": POLL_S, "retry_pause_s": POLL_S}
        await self.runner.start(BATCH_ORCHESTRATOR, batch_instance_id(batch_id), payload)


class Orchestrated:
    def __init__(self, stack: Stack, runner: LocalOrchestrationRunner) -> None:
        self.stack = stack
        self.runner = runner

    def status(self, batch_id: str) -> dict[str, Any]:
        status = self.runner.status(batch_instance_id(batch_id))
        assert status is not None
        return status

    def custom(self, batch_id: str) -> dict[str, Any]:
        return dict(self.status(batch_id)["customStatus"] or {})

    async def until_custom(
        self, batch_id: str, condition: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        await eventually(lambda: condition(self.custom(batch_id)), within_s=3.0)
        return self.custom(batch_id)

    async def finished(self, batch_id: str) -> dict[str, Any]:
        done = ("Completed", "Failed", "Terminated")
        await eventually(lambda: self.status(batch_id)["runtimeStatus"] in done, within_s=3.0)
        status = self.status(batch_id)
        assert status["runtimeStatus"] == "Completed", status
        return status

    async def create(self, content: bytes) -> BatchObject:
        return await self.stack.create(content)

    async def running(self, lines: int) -> BatchObject:
        """A batch of `lines` requests, once its run has validated it and queued them all."""
        batch = await self.create(batch_input(*(f"req-{i}" for i in range(lines))))
        await eventually(lambda: self.custom(batch.id).get("status") == IN_PROGRESS, within_s=3.0)
        await self.until_queued(lines)
        return batch

    async def until_queued(self, lines: int) -> None:
        for _ in range(300):
            if await self.stack.depth() == lines:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{await self.stack.depth()} lines queued, not {lines}")

    async def run_lines(self) -> int:
        """The line runner's loop until the queue is empty (the pool has room throughout)."""
        ran = 0
        while await self.stack.depth():
            ran += await self.stack.runner.run_pool_once(POOL)
        return ran

    async def output(self, batch: BatchObject) -> list[dict[str, Any]]:
        return await self.file(batch.output_file_id)

    async def errors(self, batch: BatchObject) -> list[dict[str, Any]]:
        return await self.file(batch.error_file_id)

    async def file(self, file_id: str | None) -> list[dict[str, Any]]:
        """A file's lines, read as its owner reads them (the Files API's content)."""
        if file_id is None:
            return []
        file, content = await self.stack.service.file_content(self.stack.owner, file_id)
        assert file.purpose == BATCH_OUTPUT_PURPOSE
        assert content.endswith(b"\n")
        return [orjson.loads(line) for line in content.splitlines()]

    async def batch(self, batch_id: str) -> BatchObject:
        return await self.stack.service.get_batch(self.stack.owner, batch_id)


@contextlib.asynccontextmanager
async def orchestrated(
    worker: tuple[str, RecordingWorker], **settings: Any
) -> AsyncIterator[Orchestrated]:
    starter = OrchestrationStarter()
    async with batch_stack(worker, starter, **settings) as stack:
        runner = LocalOrchestrationRunner(
            {BATCH_ORCHESTRATOR: batch_job},
            batch_activity_table(stack.batch.services),
            stack.clock,
        )
        starter.runner = runner
        try:
            yield Orchestrated(stack, runner)
        finally:
            await runner.stop()


def counts(view: dict[str, Any]) -> tuple[int, int, int]:
    c = view["request_counts"]
    return c["total"], c["completed"], c["failed"]


# (a) a batch from start to finish


async def test_a_300_line_batch_completes_with_every_answer_in_order(
    sim_worker: tuple[str, RecordingWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_activities, "CHUNK_LINES", 64)  # five enqueue activities
    async with orchestrated(sim_worker, worker_max_concurrency=32) as run:
        batch = await run.running(300)
        assert counts(run.custom(batch.id)) == (300, 0, 0)

        first = await run.stack.runner.run_pool_once(POOL)
        assert first == 32
        seen = await run.until_custom(batch.id, lambda view: counts(view)[1] == first)
        assert seen["status"] == IN_PROGRESS and counts(seen) == (300, first, 0)
        shown = await run.batch(batch.id)  # GET /v1/batches/{id} tells the same story
        assert shown.status == IN_PROGRESS and shown.request_counts.completed == first

        assert first + await run.run_lines() == 300
        status = await run.finished(batch.id)
        assert status["output"]["status"] == COMPLETED
        assert status["customStatus"] == status["output"]
        assert counts(status["output"]) == (300, 300, 0)

        done = await run.batch(batch.id)
        assert done.status == COMPLETED and done.error_file_id is None
        assert done.in_progress_at is not None and done.completed_at is not None
        assert done.finalizing_at is not None
        assert status["output"]["output_file_id"] == done.output_file_id
        output = await run.output(done)
        assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(300)]
        assert len({line["id"] for line in output}) == 300
        for line in output:
            assert set(line) == {"id", "custom_id", "response", "error"}
            assert line["id"].startswith("batch_req_") and line["error"] is None
            response = line["response"]
            assert set(response) == {"status_code", "request_id", "body"}
            assert response["status_code"] == 200
            assert response["body"]["object"] == "chat.completion"
        assert len({line["response"]["request_id"] for line in output}) == 300
        assert sorted(run.stack.worker.contents()) == sorted(f"req-{i}" for i in range(300))


# (b) a bad input fails before any line is queued


async def test_an_invalid_input_fails_the_batch_with_line_numbers_and_queues_nothing(
    sim_worker: tuple[str, RecordingWorker],
) -> None:
    good = orjson.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": chat_body("a")})
    content = b"\n".join([good, b'{"custom_id": "b", "method": ', good]) + b"\n"
    async with orchestrated(sim_worker) as run:
        batch = await run.create(content)
        status = await run.finished(batch.id)
        assert status["output"]["status"] == FAILED
        assert run.custom(batch.id)["status"] == FAILED

        failed = await run.batch(batch.id)
        assert failed.status == FAILED and failed.failed_at is not None
        errors = failed.to_openai()["errors"]
        assert errors["object"] == "list"
        assert [(e["code"], e["line"]) for e in errors["data"]] == [
            ("invalid_json_line", 2),
            ("duplicate_custom_id", 3),
        ]
        assert all(set(e) == {"code", "message", "param", "line"} for e in errors["data"])
        assert await run.stack.depth() == 0
        assert failed.output_file_id is None and failed.error_file_id is None
        assert run.stack.worker.contents() == []


# (c) cancelled part way


async def test_a_cancel_in_progress_keeps_the_answers_and_lists_the_rest_as_cancelled(
    sim_worker: tuple[str, RecordingWorker],
) -> None:
    async with orchestrated(sim_worker, worker_max_concurrency=8) as run:
        batch = await run.running(40)
        done = await run.stack.runner.run_pool_once(POOL)
        done += await run.stack.runner.run_pool_once(POOL)
        assert done == 16

        cancelling = await run.stack.service.cancel_batch(run.stack.owner, batch.id)
        assert cancelling.status == "cancelling"
        status = await run.finished(batch.id)
        assert status["output"]["status"] == CANCELLED

        # the rest are dropped once the runner's view of the batch is fresh
        run.stack.clock.advance(BATCH_CACHE_S)
        await run.run_lines()
        assert len(run.stack.worker.contents()) == 16

        cancelled = await run.batch(batch.id)
        assert cancelled.status == CANCELLED
        assert cancelled.cancelling_at is not None and cancelled.cancelled_at is not None
        output, errors = await run.output(cancelled), await run.errors(cancelled)
        ran = sorted(run.stack.worker.contents(), key=lambda c: int(c.split("-")[1]))
        assert [line["custom_id"] for line in output] == ran
        rest = [f"req-{i}" for i in range(40) if f"req-{i}" not in ran]
        assert [line["custom_id"] for line in errors] == rest
        assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
        assert all(line["response"] is None for line in errors)
        counted = cancelled.request_counts
        assert (counted.total, counted.completed, counted.failed) == (40, 16, 0)
        assert counts(status["output"]) == (40, 16, 0)


# (d) expired part way


async def test_an_expired_batch_lists_its_unanswered_lines_as_expired(
    sim_worker: tuple[str, RecordingWorker],
) -> None:
    async with orchestrated(sim_worker, worker_max_concurrency=8) as run:
        batch = await run.running(20)
        assert await run.stack.runner.run_pool_once(POOL) == 8

        run.stack.clock.advance(COMPLETION_WINDOW_S + 1)  # the 24 h window is over
        status = await run.finished(batch.id)
        assert status["output"]["status"] == EXPIRED
        await run.run_lines()
        assert len(run.stack.worker.contents()) == 8  # nothing ran after it expired

        expired = await run.batch(batch.id)
        assert expired.status == EXPIRED and expired.expired_at is not None
        output, errors = await run.output(expired), await run.errors(expired)
        assert len(output) == 8 and all(line["error"] is None for line in output)
        assert len(errors) == 12
        assert {line["error"]["code"] for line in errors} == {"batch_expired"}
        answered = {line["custom_id"] for line in output}
        assert answered | {line["custom_id"] for line in errors} == {f"req-{i}" for i in range(20)}
        assert answered == set(run.stack.worker.contents())
        assert (expired.request_counts.completed, expired.request_counts.failed) == (8, 0)


# (e) activities run twice change nothing


async def test_preparing_enqueueing_and_finalising_twice_duplicates_nothing(
    sim_worker: tuple[str, RecordingWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_activities, "CHUNK_LINES", 4)
    async with batch_stack(sim_worker) as stack:  # the activities alone, run by hand
        activity = batch_activity_table(stack.batch.services)
        batch = await stack.create(batch_input(*(f"req-{i}" for i in range(10))))
        prepared = await activity[PREPARE_BATCH]({"batch_id": batch.id})
        chunks = prepared["chunks"]
        assert [c["first_index"] for c in chunks] == [0, 4, 8]
        again = await activity[PREPARE_BATCH]({"batch_id": batch.id})
        assert again["view"] == prepared["view"] and again["chunks"] == []
        assert counts(again["view"]) == (10, 0, 0)

        for _ in range(2):  # every enqueue activity ran twice
            sent = [await activity[ENQUEUE_LINES]({"batch_id": batch.id, **c}) for c in chunks]
            assert sent == [4, 4, 2]
        assert await stack.depth() == 20
        while await stack.depth():
            await stack.runner.run_pool_once(POOL)
        assert sorted(set(stack.worker.contents())) == sorted(f"req-{i}" for i in range(10))
        # a third run of each finds every line answered and queues none
        sent = [await activity[ENQUEUE_LINES]({"batch_id": batch.id, **c}) for c in chunks]
        assert sent == [0, 0, 0] and await stack.depth() == 0

        final = {"batch_id": batch.id, "outcome": COMPLETED}
        first = await activity[FINALISE_BATCH](final)
        written = await stack.stores.files.read(first["output_file_id"])
        second = await activity[FINALISE_BATCH](final)
        assert second == first
        assert await stack.stores.files.read(first["output_file_id"]) == written
        done = await stack.get(batch.id)
        assert done.status == COMPLETED and done.error_file_id is None
        output = [orjson.loads(line) for line in written.splitlines()]
        assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(10)]
        assert len({line["id"] for line in output}) == 10
        assert (done.request_counts.completed, done.request_counts.failed) == (10, 0)
        # a late run that thought the batch had expired changes nothing any more
        late = await activity[FINALISE_BATCH]({"batch_id": batch.id, "outcome": EXPIRED})
        assert late == first and (await stack.get(batch.id)).status == COMPLETED
        assert (await stack.get(batch.id)).error_file_id is None


# (f) a store that fails: retried, and a batch that cannot run ends failed, never stuck


async def test_a_store_that_fails_once_is_retried_and_the_batch_completes(
    sim_worker: tuple[str, RecordingWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with orchestrated(sim_worker) as run:
        files = run.stack.service.files
        read = files.read
        failures = [RuntimeError("the blob store timed out")]

        async def flaky(file_id: str) -> bytes:
            if failures:
                raise failures.pop()
            return await read(file_id)

        monkeypatch.setattr(files, "read", flaky)
        batch = await run.create(batch_input("a", "b"))
        await eventually(lambda: run.custom(batch.id).get("status") == IN_PROGRESS, within_s=3.0)
        await run.until_queued(2)
        await run.run_lines()
        status = await run.finished(batch.id)
        assert status["output"]["status"] == "completed" and not failures


async def test_a_batch_whose_input_cannot_be_read_fails_with_the_reason(
    sim_worker: tuple[str, RecordingWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with orchestrated(sim_worker) as run:
        files = run.stack.service.files

        async def unreachable(file_id: str) -> bytes:
            raise RuntimeError("the blob store is unreachable")

        monkeypatch.setattr(files, "read", unreachable)
        batch = await run.create(batch_input("a", "b"))
        status = await run.finished(batch.id)
        assert status["output"]["status"] == FAILED
        failed = await run.batch(batch.id)
        assert failed.status == FAILED and failed.failed_at is not None
        [error] = failed.to_openai()["errors"]["data"]
        assert error["code"] == "batch_failed" and "unreachable" in error["message"]
        assert await run.stack.depth() == 0 and run.stack.worker.contents() == []
