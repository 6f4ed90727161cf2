"""The batch line queue on Azure Storage queues: one queue per pool, the autoscaler's queue.

Lines go on the queue `batch_queue_name(pool)`, the same one
`StorageQueueDepth` counts, so the backlog the fleet monitor scales on is
this queue's `approximate_message_count` (waiting and in-flight lines
both: a line being run still needs its worker). The queue is created on
first send if Bicep has not made it (pools added after deployment).

Messages are plain JSON text (`LineTask.to_dict()`), not base64: a task is
a few dozen ASCII bytes, far under the 64 KB limit, and this queue is read
only by `receive` here, never by a Functions queue trigger (which expects
base64 by default). Plain text also reads as it is in Storage Explorer and
matches what `StorageQueueDepth.enqueue` puts on the same queue.

Receipts: a message's pop receipt changes whenever it is received again or
updated. Deleting or updating with an old one answers 400
PopReceiptMismatch (the line was taken again), and a message already gone
answers 404; both mean "not yours any more" and are ignored, as the port
says. `release` is `update_message(visibility_timeout=delay)`.

Timeouts are whole seconds on Azure: `visibility_s` is rounded up (at
least 1 s), `delay_s` rounded up (0 allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import orjson
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import StorageErrorCode
from azure.storage.queue.aio import QueueClient

from spotgate.adapters.azure.queue_depth import StorageQueueDepth
from spotgate.batch.memory_queue import check_delay, check_visibility
from spotgate.batch.objects import LineTask
from spotgate.batch.ports import QueuedLine

log = logging.getLogger(__name__)

MAX_PER_REQUEST = 32
"""The most messages one Get Messages call returns."""
SEND_CONCURRENCY = 32
"""Messages put at once by one `send` (Storage has no batch put: one request a line)."""


class StorageLineQueue(StorageQueueDepth):
    """A `LineQueue` over one storage account's queues.

    Build it with an account URL and a credential (managed identity on
    Azure), or `from_connection_string` (Azurite). Queue clients are made
    lazily, one per pool, and all closed by `close()`; a credential passed in
    stays the caller's to close.
    """

    async def send(self, pool: str, tasks: list[LineTask]) -> None:
        if not tasks:
            return
        client = self._client(pool)
        bodies = [orjson.dumps(task.to_dict()).decode() for task in tasks]
        try:
            await client.send_message(bodies[0])
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):  # another instance made it meanwhile
                await client.create_queue()
            await client.send_message(bodies[0])
        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def put(body: str) -> None:
            async with gate:
                await client.send_message(body)

        await asyncio.gather(*(put(body) for body in bodies[1:]))

    async def receive(self, pool: str, max_lines: int, visibility_s: float) -> list[QueuedLine]:
        check_visibility(visibility_s)
        client = self._client(pool)
        timeout = max(1, math.ceil(visibility_s))
        taken: list[QueuedLine] = []
        try:
            while len(taken) < max_lines:
                want = min(MAX_PER_REQUEST, max_lines - len(taken))
                pager = client.receive_messages(
                    messages_per_page=want, max_messages=want, visibility_timeout=timeout
                )
                got = 0
                async for message in pager:
                    got += 1
                    line = await self._parse(client, message)
                    if line is not None:
                        taken.append(line)
                if got < want:
                    break
        except ResourceNotFoundError:  # no queue yet: nothing was ever sent to this pool
            pass
        return taken

    async def _parse(self, client: QueueClient, message: Any) -> QueuedLine | None:
        """The message as a line; one that is not a LineTask can never run, so it is dropped."""
        try:
            task = LineTask.from_dict(orjson.loads(message.content))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning(
                "dropping message %s from %s: not a batch line", message.id, client.queue_name
            )
            await self._delete(client, message.id, message.pop_receipt)
            return None
        return QueuedLine(
            str(message.id), str(message.pop_receipt), task, int(message.dequeue_count)
        )

    async def delete(self, pool: str, line: QueuedLine) -> None:
        await self._delete(self._client(pool), line.message_id, line.receipt)

    async def _delete(self, client: QueueClient, message_id: str, receipt: str) -> None:
        with _stale_ignored():
            await client.delete_message(message_id, receipt)

    async def release(self, pool: str, line: QueuedLine, delay_s: float) -> None:
        check_delay(delay_s)
        with _stale_ignored():
            await self._client(pool).update_message(
                line.message_id, line.receipt, visibility_timeout=math.ceil(delay_s)
            )


@contextlib.contextmanager
def _stale_ignored() -> Iterator[None]:
    """Swallows "the line is gone or was taken again"; every other failure raises."""
    try:
        yield
    except ResourceNotFoundError:
        pass
    except HttpResponseError as error:
        if getattr(error, "error_code", None) != StorageErrorCode.POP_RECEIPT_MISMATCH:
            raise
