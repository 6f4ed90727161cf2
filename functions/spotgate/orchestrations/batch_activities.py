"""The batch orchestration's activities: all of its I/O, each safe to run twice.

A Durable activity runs at least once, so each one is idempotent: preparing
a batch that is already past `validating` only reports it; enqueueing a
chunk again only adds lines the runner will find answered and drop;
finalising a batch that is already terminal returns it; output files have
ids derived from the batch, so a second write replaces the first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import orjson

from spotgate.batch.input_file import UTF8_BOM
from spotgate.batch.line_spans import line_spans
from spotgate.batch.objects import (
    BATCH_OUTPUT_PURPOSE,
    CANCELLED,
    CANCELLING,
    COMPLETED,
    EXPIRED,
    FAILED,
    FINALIZING,
    IN_PROGRESS,
    TERMINAL,
    VALIDATING,
    BatchObject,
    FileObject,
    LineTask,
)
from spotgate.batch.ports import BatchStore, FileStore, LineQueue, LineResults
from spotgate.batch.validation_step import BatchValidator
from spotgate.clock import Clock

PREPARE_BATCH = "prepare_batch"
ENQUEUE_LINES = "enqueue_lines"
BATCH_PROGRESS = "batch_progress"
FINALISE_BATCH = "finalise_batch"
FAIL_BATCH = "fail_batch"
WAIT = "wait"
CHUNK_LINES = 500
"""Lines one enqueue activity sends: 100 activities for OpenAI's 50,000-line maximum."""
_UNANSWERED = {
    EXPIRED: ("batch_expired", "This line was not executed before the batch expired."),
    CANCELLED: ("batch_cancelled", "This line was not executed before the batch was cancelled."),
    COMPLETED: ("batch_incomplete", "This line has no result."),
}


class BatchServices(Protocol):
    files: FileStore
    batches: BatchStore
    queue: LineQueue
    results: LineResults
    clock: Clock
    validator: BatchValidator


@dataclass
class SimpleBatchServices:
    files: FileStore
    batches: BatchStore
    queue: LineQueue
    results: LineResults
    clock: Clock
    validator: BatchValidator


def progress_view(batch: BatchObject) -> dict[str, Any]:
    """The custom status: what `GET /v1/batches/{id}` says, in a few fields."""
    counts = batch.request_counts
    return {
        "batch_id": batch.id,
        "status": batch.status,
        "model": batch.model,
        "pool": batch.pool,
        "request_counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
        },
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
    }


async def _batch(services: BatchServices, batch_id: str) -> BatchObject:
    batch = await services.batches.get(batch_id)
    if batch is None:
        raise LookupError(f"no batch {batch_id}")
    return batch


async def prepare_batch(services: BatchServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Validate the input; `in_progress` with the chunks to enqueue, or the batch as it ended."""
    batch = await _batch(services, str(payload["batch_id"]))
    now = services.clock.now()
    if batch.status == CANCELLING:
        batch = batch.moved_to(CANCELLED, now)
        await services.batches.put(batch)
    if batch.status != VALIDATING:
        return {"view": progress_view(batch), "chunks": []}
    content = await services.files.read(batch.input_file_id)
    batch, spans = services.validator.validate(batch, content, now)
    chunks = []
    for first in range(0, len(spans), CHUNK_LINES):
        part = spans[first : first + CHUNK_LINES]
        start, (last_offset, last_length) = part[0][0], part[-1]
        chunks.append({"first_index": first, "start": start, "end": last_offset + last_length})
    current = await services.batches.get(batch.id)
    if current is not None and current.status == CANCELLING:  # cancelled while validating
        batch = current.moved_to(CANCELLED, services.clock.now())
        chunks = []
    await services.batches.put(batch)
    return {"view": progress_view(batch), "chunks": chunks}


async def enqueue_lines(services: BatchServices, payload: dict[str, Any]) -> int:
    """Send one chunk's lines to the pool's queue; those already answered are skipped."""
    batch = await _batch(services, str(payload["batch_id"]))
    if batch.status != IN_PROGRESS or batch.pool is None:
        return 0
    start, end, first = int(payload["start"]), int(payload["end"]), int(payload["first_index"])
    content = await services.files.read_range(batch.input_file_id, start, end - start)
    tasks = []
    for index, (offset, length) in enumerate(line_spans(content, start), first):
        if not await services.results.has(batch.id, index):
            tasks.append(LineTask(batch.id, index, offset, length))
    if tasks:
        await services.queue.send(batch.pool, tasks)
    return len(tasks)


async def batch_progress(services: BatchServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Counts as they are now, stored on the batch, and what the orchestration does next."""
    batch = await _batch(services, str(payload["batch_id"]))
    succeeded, failed = await services.results.counts(batch.id)
    counts = batch.request_counts
    if (counts.completed, counts.failed) != (succeeded, failed) and batch.status == IN_PROGRESS:
        batch = await _batch(services, batch.id)  # as fresh as can be: a cancel may have landed
        if batch.status == IN_PROGRESS:
            batch.request_counts.completed, batch.request_counts.failed = succeeded, failed
            await services.batches.put(batch)
        counts = batch.request_counts
    if batch.status in TERMINAL:
        step = batch.status
    elif batch.status == CANCELLING:
        step = CANCELLED
    elif succeeded + failed >= counts.total:
        step = COMPLETED
    elif services.clock.now() >= batch.expires_at:
        step = EXPIRED
    else:
        step = WAIT
    return {"view": progress_view(batch), "next": step}


def _output_id(batch_id: str, kind: str) -> str:
    return "file-" + hashlib.sha256(f"{batch_id}/{kind}".encode()).hexdigest()[:24]


async def finalise_batch(services: BatchServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Write the output (status 200) and error files, then the batch's final status."""
    batch = await _batch(services, str(payload["batch_id"]))
    outcome = str(payload["outcome"])
    if batch.status in TERMINAL:
        return progress_view(batch)
    if outcome != CANCELLED:
        batch = batch.moved_to(FINALIZING, services.clock.now())
        await services.batches.put(batch)
    output, errors = bytearray(), bytearray()
    answered: set[int] = set()
    succeeded = failed = 0
    async for result in services.results.scan(batch.id):
        answered.add(result.index)
        line = orjson.dumps(result.output_line()) + b"\n"
        if result.succeeded:
            succeeded += 1
            output += line
        else:
            failed += 1
            errors += line
    if len(answered) < batch.request_counts.total:
        code, message = _UNANSWERED.get(outcome, _UNANSWERED[COMPLETED])
        errors += await _unanswered_lines(services, batch, answered, code, message)
    now = services.clock.now()
    if output:
        batch.output_file_id = await _write(services, batch, "output", bytes(output), now)
    if errors:
        batch.error_file_id = await _write(services, batch, "error", bytes(errors), now)
    batch.request_counts.completed = succeeded
    batch.request_counts.failed = failed
    final = batch.moved_to(outcome if outcome in TERMINAL else COMPLETED, now)
    await services.batches.put(final)
    return progress_view(final)


async def _unanswered_lines(
    services: BatchServices, batch: BatchObject, answered: set[int], code: str, message: str
) -> bytes:
    content = await services.files.read(batch.input_file_id)
    lines = bytearray()
    for index, (offset, length) in enumerate(line_spans(content)):
        if index in answered:
            continue
        record = orjson.loads(content[offset : offset + length].removeprefix(UTF8_BOM))
        custom_id = record.get("custom_id")
        entry = {
            "id": f"batch_req_{batch.id.removeprefix('batch_')}_{index}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        lines += orjson.dumps(entry) + b"\n"
    return bytes(lines)


async def _write(
    services: BatchServices, batch: BatchObject, kind: str, content: bytes, now: float
) -> str:
    file = FileObject(
        id=_output_id(batch.id, kind),
        owner=batch.owner,
        bytes=len(content),
        created_at=int(now),
        filename=f"{batch.id}_{kind}.jsonl",
        purpose=BATCH_OUTPUT_PURPOSE,
    )
    await services.files.create(file, content)
    return file.id


async def fail_batch(services: BatchServices, payload: dict[str, Any]) -> dict[str, Any]:
    """`failed`, with why, after an activity kept failing: its lines stop running (they are
    not `in_progress` any more) and the owner sees the reason rather than a stuck batch."""
    batch = await _batch(services, str(payload["batch_id"]))
    if batch.status in TERMINAL:
        return progress_view(batch)
    message = f"The batch could not be run: {payload.get('message') or 'an internal error'}."
    batch.errors = [{"code": "batch_failed", "message": message, "param": None, "line": None}]
    failed = batch.moved_to(FAILED, services.clock.now())
    await services.batches.put(failed)
    return progress_view(failed)


Activity = Callable[[dict[str, Any]], Any]


def batch_activity_table(services: BatchServices) -> dict[str, Activity]:
    """The activities by their registered names, bound to services, for the local runner."""
    return {
        PREPARE_BATCH: partial(prepare_batch, services),
        ENQUEUE_LINES: partial(enqueue_lines, services),
        BATCH_PROGRESS: partial(batch_progress, services),
        FINALISE_BATCH: partial(finalise_batch, services),
        FAIL_BATCH: partial(fail_batch, services),
    }
