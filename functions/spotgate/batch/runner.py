"""Runs batch lines on the pool's spare capacity, at least once, recorded exactly once.

Each pool's queue holds pointers to lines (`LineTask`). The runner takes only
as many as the pool has free slots that interactive traffic is not waiting
for, so a batch never delays a chat request: it fills what is left and backs
off when the admission queue is non-empty. A taken line is invisible to other
runners (other gateway instances) for `visibility_s`; if this process dies,
or the worker is evicted mid-line and the retry budget runs out, the line is
taken again elsewhere. A result is written once per line (`LineResults.put`
loses for the second writer), so a line that ran twice still appears once in
the output file.

Lines run through the same serving pipeline as interactive requests, as the
batch's owner (limits, budgets and model access still apply) and with the
batch id, so metering records them at the batch price.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from spotgate.batch.input_file import UTF8_BOM
from spotgate.batch.objects import RUNNABLE, BatchObject, LineResult
from spotgate.batch.ports import BatchStore, FileStore, LineQueue, LineResults, QueuedLine
from spotgate.clock import Clock
from spotgate.errors import OpenAIError
from spotgate.gateway.admission import Admission
from spotgate.gateway.serving import InferenceRequest, Served
from spotgate.gateway.tenancy.authority import Caller

log = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 500, 502, 503, 504})
"""A worker lost or failing: the line runs again, up to `max_attempts` runs."""
THROTTLED = 429
"""The owner's rate limit or budget: the line waits, until the batch expires if need be."""


class LineServing(Protocol):
    async def serve(self, request: InferenceRequest) -> Served: ...


class Slot(Protocol):
    def release(self) -> None: ...


class SpareSlots(Protocol):
    """The pool's admission slots, taken only when free and nobody waits (gateway/admission.py)."""

    def free(self, pool: str) -> int:
        """Slots that could be taken now, without taking them."""
        ...

    def take(self, pool: str) -> Slot | None: ...


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    visibility_s: float = 600.0
    """How long a taken line stays hidden: longer than a line's longest generation."""
    max_attempts: int = 6
    """Runs of one line that say "not now" before it is failed for good."""
    retry_delay_s: float = 2.0
    max_in_flight: int = 256
    """Lines one runner has open at once, over every pool."""
    poll_s: float = 0.5
    """Pause when a pool has no spare slot or no line."""
    batch_cache_s: float = 2.0
    """How stale a batch's status may be (a cancel stops its lines within this)."""


class BatchLineRunner:
    """A lifecycle: one loop per pool while the app runs; `run_pool_once` for tests."""

    def __init__(
        self,
        *,
        queue: LineQueue,
        results: LineResults,
        files: FileStore,
        batches: BatchStore,
        serving: LineServing,
        slots: SpareSlots,
        pools: Callable[[], Iterable[str]],
        owner: Callable[[str], Caller | None],
        clock: Clock,
        options: RunnerOptions | None = None,
    ) -> None:
        self._queue = queue
        self._results = results
        self._files = files
        self._batches = batches
        self._serving = serving
        self._slots = slots
        self._pools = pools
        self._owner = owner
        self._clock = clock
        self._options = options or RunnerOptions()
        self._open: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._cached: dict[str, tuple[float, BatchObject | None]] = {}
        self._line_seconds: dict[str, float] = {}
        self._slot_freed = asyncio.Event()

    def open_lines(self, pool: str) -> int:
        return self._open.get(pool, 0)

    def line_seconds(self, pool: str) -> float | None:
        """Measured seconds a line holds a slot (moving average), None until one ran."""
        return self._line_seconds.get(pool)

    async def start(self) -> None:
        self._loops = [asyncio.create_task(self._loop(pool)) for pool in self._pools()]

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # open lines are abandoned, not failed: their visibility runs out and they run again
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self, pool: str) -> None:
        while True:
            try:
                taken = await self.run_pool_once(pool, wait=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch runner for pool %s failed; retrying", pool)
                taken = 0
            if taken == 0:
                # a line that ends frees a slot: refill at once, not at the next poll
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), self._options.poll_s)

    async def run_pool_once(self, pool: str, *, wait: bool = True) -> int:
        """Takes as many lines as the pool has spare slots and starts them; with `wait`,
        runs them to the end. Returns how many it started.

        Slots are counted, not held, while the queue answers (that may take a round
        trip): a chat request arriving meanwhile gets its slot. Each line then takes
        one; a line left without (interactive traffic came first) goes straight back.
        """
        room = min(self._slots.free(pool), self._options.max_in_flight - sum(self._open.values()))
        if room <= 0:
            return 0
        lines = await self._queue.receive(pool, room, self._options.visibility_s)
        started = []
        for line in lines:
            slot = self._slots.take(pool)
            if slot is None:
                await self._queue.release(pool, line, 0.0)
                continue
            self._open[pool] = self._open.get(pool, 0) + 1
            task = asyncio.create_task(self._run(pool, line, slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        if wait:
            await asyncio.gather(*started)
        return len(started)

    async def _run(self, pool: str, line: QueuedLine, slot: Slot) -> None:
        try:
            await self._run_line(pool, line)
        except asyncio.CancelledError:
            raise
        except Exception:
            # the line stays taken and comes back after its visibility: nothing is lost
            log.exception("batch line %s/%d failed in the runner", line.task.batch_id,
                          line.task.index)  # fmt: skip
        finally:
            slot.release()
            self._open[pool] -= 1
            self._slot_freed.set()

    async def _run_line(self, pool: str, line: QueuedLine) -> None:
        task = line.task
        batch = await self._batch(task.batch_id)
        if batch is None or batch.status not in RUNNABLE:
            await self._queue.delete(pool, line)  # cancelled or over: finalising accounts for it
            return
        if await self._results.has(task.batch_id, task.index):
            await self._queue.delete(pool, line)  # it ran before and its receipt was lost
            return
        raw = await self._files.read_range(batch.input_file_id, task.offset, task.length)
        request_line: dict[str, Any] = orjson.loads(raw.removeprefix(UTF8_BOM))
        custom_id = str(request_line["custom_id"])
        caller = self._owner(batch.owner)
        if caller is None:
            error = {
                "code": "invalid_api_key",
                "message": "The batch's API key is no longer valid.",
            }
            await self._record(pool, line, LineResult(batch.id, task.index, custom_id, None, error))
            return
        body = {
            k: v for k, v in request_line["body"].items() if k not in ("stream", "stream_options")
        }
        request_id = f"{batch.id}-{task.index}"
        request = InferenceRequest(
            path=batch.endpoint,
            raw=orjson.dumps(body),
            body=body,
            model=str(body.get("model", "")),
            request_id=request_id,
            caller=caller,
            batch_id=batch.id,
            holds_slot=True,
        )
        started = time.monotonic()
        status, answer = await self._answer(request)
        self._measured(pool, time.monotonic() - started)
        again = status in RETRYABLE and line.dequeue_count < self._options.max_attempts
        if again or status == THROTTLED:
            await self._queue.release(pool, line, self._options.retry_delay_s)
            return
        response = {"status_code": status, "request_id": request_id, "body": answer}
        await self._record(pool, line, LineResult(batch.id, task.index, custom_id, response))

    async def _answer(self, request: InferenceRequest) -> tuple[int, Any]:
        try:
            served = await self._serving.serve(request)
        except OpenAIError as error:
            return error.status_code, error.body()
        if served.body is None:  # never a stream: batch bodies drop `stream`
            return 502, {"error": {"message": "The worker sent no answer.", "type": "server_error",
                                   "param": None, "code": "upstream_error"}}  # fmt: skip
        return served.status, orjson.loads(served.body)

    async def _record(self, pool: str, line: QueuedLine, result: LineResult) -> None:
        try:
            await self._results.put(result)  # False: another run recorded it first
        except ValueError:  # too large for the store (Cosmos DB: 2 MB an item)
            error = {"code": "response_too_large", "message": "The response was too large "
                     "to store; ask for fewer tokens or split the request."}  # fmt: skip
            await self._results.put(
                LineResult(result.batch_id, result.index, result.custom_id, None, error)
            )
        await self._queue.delete(pool, line)

    def _measured(self, pool: str, seconds: float) -> None:
        previous = self._line_seconds.get(pool)
        self._line_seconds[pool] = seconds if previous is None else 0.9 * previous + 0.1 * seconds

    async def _batch(self, batch_id: str) -> BatchObject | None:
        now = self._clock.now()
        cached = self._cached.get(batch_id)
        if cached is not None and now - cached[0] < self._options.batch_cache_s:
            return cached[1]
        batch = await self._batches.get(batch_id)
        self._cached[batch_id] = (now, batch)
        if len(self._cached) > 1024:
            oldest = min(self._cached, key=lambda k: self._cached[k][0])
            del self._cached[oldest]
        return batch


class AdmissionSlots:
    """`SpareSlots` over the gateway's admission: a slot only when one is free at once and no
    interactive request is waiting (batch lines never wait in line, never jump it)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def free(self, pool: str) -> int:
        if self._admission.depth(pool) > 0:
            return 0
        return max(0, self._admission.capacity(pool) - self._admission.in_use(pool))

    def take(self, pool: str) -> Slot | None:
        if self._admission.depth(pool) > 0:
            return None
        return self._admission.try_acquire_background(pool)
