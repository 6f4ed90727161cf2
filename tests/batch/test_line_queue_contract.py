"""One contract for the batch line queue: in memory, SQLite and Azure Storage (Azurite).

A batch never loses a line and runs each at least once, however runners
die or race, only if every queue keeps these promises: a taken line stays
hidden from every other runner until its visibility timeout passes, then
comes back; a released line comes back after its delay; a runner whose
receipt went stale (its line timed out and was taken again) can neither
delete nor release the new holder's line.

Memory and SQLite read a ManualClock, moved by the test; on Azurite real
time must pass, in whole seconds, so `later` sleeps there. "Another
runner" is a second queue object on the same data: the same object in
memory, a second connection to the file for SQLite, a second client for
Azure. Each Azure test gets a pool (a queue) of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spotgate.adapters.azure.storage_line_queue import StorageLineQueue
from spotgate.adapters.local.sqlite_line_queue import SqliteLineQueue
from spotgate.batch.memory_queue import InMemoryLineQueue
from spotgate.batch.objects import LineTask
from spotgate.batch.ports import LineQueue, QueuedLine
from spotgate.clock import ManualClock
from tests.adapters.azure.conftest import AzuriteQueue

REPO = Path(__file__).resolve().parents[2]
AZURE_SLACK_S = 0.6
"""Azure counts visibility in whole seconds; past a deadline by this much, it has passed."""
LONG_S = 60.0


@dataclass
class Queue:
    name: str
    queue: LineQueue
    pool: str
    later: Callable[[float], Awaitable[None]]
    """Let this many seconds pass (on the queue's clock)."""
    another_runner: Callable[[], Awaitable[LineQueue]]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def tasks(n: int, batch_id: str = "batch_1") -> list[LineTask]:
    return [LineTask(batch_id, i, offset=100 * i, length=90 + i) for i in range(n)]


@pytest.fixture(params=["memory", "sqlite", "azure"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    clock = ManualClock()

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    if request.param == "memory":
        memory = InMemoryLineQueue(clock)

        async def same() -> LineQueue:
            return memory

        yield Queue("memory", memory, "default", advance, same)
        return
    closers: list[Callable[[], Awaitable[None]]] = []
    if request.param == "sqlite":
        path = tmp_path / "batch_lines.sqlite3"

        async def second_connection() -> LineQueue:
            other = SqliteLineQueue(path, clock=clock)
            closers.append(other.close)
            return other

        sqlite = SqliteLineQueue(path, clock=clock)
        subject = Queue("sqlite", sqlite, "default", advance, second_connection, closers)
        async with _closing(subject):
            yield subject
        return
    azurite: AzuriteQueue = request.getfixturevalue("azurite_queue")

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds + AZURE_SLACK_S)

    async def second_client() -> LineQueue:
        other = StorageLineQueue.from_connection_string(azurite.connection_string)
        closers.append(other.close)
        return other

    azure = StorageLineQueue.from_connection_string(azurite.connection_string)
    pool = f"contract-{uuid.uuid4().hex[:12]}"
    subject = Queue("azure", azure, pool, sleep, second_client, closers)
    async with _closing(subject):
        yield subject


@contextlib.asynccontextmanager
async def _closing(subject: Queue) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await subject.queue.close()
        for close in subject.closers:
            await close()


async def take_all(queue: LineQueue, pool: str, visibility_s: float = LONG_S) -> list[QueuedLine]:
    taken: list[QueuedLine] = []
    while batch := await queue.receive(pool, 32, visibility_s):
        taken.extend(batch)
    return taken


# --- sending and taking ---


async def test_a_sent_line_comes_back_whole_once(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(3))
    taken = await take_all(q, pool)
    assert sorted((line.task for line in taken), key=lambda t: t.index) == tasks(3)
    assert all(line.dequeue_count == 1 for line in taken)
    assert len({line.message_id for line in taken}) == 3
    assert await q.receive(pool, 10, LONG_S) == []


async def test_receive_takes_at_most_max_lines(subject: Queue) -> None:
    await subject.queue.send(subject.pool, tasks(7))
    first = await subject.queue.receive(subject.pool, 5, LONG_S)
    rest = await subject.queue.receive(subject.pool, 5, LONG_S)
    assert (len(first), len(rest)) == (5, 2)


async def test_an_unknown_pool_is_empty_and_pools_are_separate(subject: Queue) -> None:
    other_pool = subject.pool + "-other"
    assert await subject.queue.receive(other_pool, 10, LONG_S) == []
    assert await subject.queue.depth(other_pool) == 0
    await subject.queue.send(subject.pool, tasks(2))
    assert await subject.queue.receive(other_pool, 10, LONG_S) == []
    assert await subject.queue.depth(other_pool) == 0
    assert await subject.queue.depth(subject.pool) == 2


async def test_a_visibility_timeout_must_be_positive(subject: Queue) -> None:
    with pytest.raises(ValueError):
        await subject.queue.receive(subject.pool, 1, 0)


# --- visibility ---


async def test_a_taken_line_is_hidden_from_another_runner_until_its_timeout(
    subject: Queue,
) -> None:
    q, pool = subject.queue, subject.pool
    other = await subject.another_runner()
    await q.send(pool, tasks(1))
    [mine] = await q.receive(pool, 10, 2)
    assert await other.receive(pool, 10, 2) == []
    await subject.later(2)
    [again] = await other.receive(pool, 10, LONG_S)
    assert again.task == mine.task
    assert again.message_id == mine.message_id
    assert again.receipt != mine.receipt
    assert again.dequeue_count == mine.dequeue_count + 1


async def test_a_released_line_comes_back_after_its_delay(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(1))
    [line] = await q.receive(pool, 10, LONG_S)
    await q.release(pool, line, 2)
    assert await q.receive(pool, 10, LONG_S) == [], "not before the delay"
    await subject.later(2)
    [back] = await q.receive(pool, 10, LONG_S)
    assert back.task == line.task
    assert back.dequeue_count == line.dequeue_count + 1


async def test_a_release_without_delay_is_visible_at_once(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(1))
    [line] = await q.receive(pool, 10, LONG_S)
    await q.release(pool, line, 0)
    [back] = await (await subject.another_runner()).receive(pool, 10, LONG_S)
    assert back.task == line.task


# --- done and stale receipts ---


async def test_a_deleted_line_never_comes_back(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(2))
    lines = await take_all(q, pool, visibility_s=1)
    await q.delete(pool, lines[0])
    await subject.later(1)
    [left] = await q.receive(pool, 10, LONG_S)
    assert left.task == lines[1].task
    assert await q.depth(pool) == 1


async def test_a_stale_receipt_does_not_delete_the_line_taken_again(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    other = await subject.another_runner()
    await q.send(pool, tasks(1))
    [slow] = await q.receive(pool, 10, 1)
    await subject.later(1)
    [retaken] = await other.receive(pool, 10, LONG_S)
    await q.delete(pool, slow)  # the slow runner finishes late: ignored
    assert await q.depth(pool) == 1
    assert await q.receive(pool, 10, LONG_S) == [], "still held by the second runner"
    await other.delete(pool, retaken)
    assert await q.depth(pool) == 0


async def test_a_stale_receipt_does_not_release_the_line_taken_again(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    other = await subject.another_runner()
    await q.send(pool, tasks(1))
    [slow] = await q.receive(pool, 10, 1)
    await subject.later(1)
    [retaken] = await other.receive(pool, 10, LONG_S)
    await q.release(pool, slow, 0)
    assert await q.receive(pool, 10, LONG_S) == [], "still held by the second runner"
    await other.delete(pool, retaken)
    assert await q.depth(pool) == 0


async def test_a_released_receipt_is_spent(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(1))
    [line] = await q.receive(pool, 10, LONG_S)
    await q.release(pool, line, 0)
    [back] = await q.receive(pool, 10, LONG_S)
    await q.delete(pool, line)
    assert await q.depth(pool) == 1, "the receipt released the line: it no longer deletes it"
    await q.delete(pool, back)
    assert await q.depth(pool) == 0


async def test_deleting_twice_is_harmless(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(1))
    [line] = await q.receive(pool, 10, LONG_S)
    await q.delete(pool, line)
    await q.delete(pool, line)
    assert await q.depth(pool) == 0


# --- depth ---


async def test_depth_counts_waiting_and_in_flight_lines(subject: Queue) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(5))
    assert await q.depth(pool) == 5
    taken = await q.receive(pool, 2, LONG_S)
    assert await q.depth(pool) == 5, "a line being run still needs its worker"
    await q.delete(pool, taken[0])
    assert await q.depth(pool) == 4


# --- runners racing ---


async def test_two_runners_never_hold_one_line_and_together_run_every_line(
    subject: Queue,
) -> None:
    q, pool = subject.queue, subject.pool
    await q.send(pool, tasks(200))
    runners = [q, await subject.another_runner()]
    held: set[int] = set()
    seen: list[list[int]] = [[], []]

    async def run(n: int) -> None:
        queue = runners[n]
        while lines := await queue.receive(pool, 8, LONG_S):
            for line in lines:
                assert line.task.index not in held, f"line {line.task.index} held twice"
                held.add(line.task.index)
                seen[n].append(line.task.index)
            await asyncio.sleep(0)
            for line in lines:
                held.discard(line.task.index)
                await queue.delete(pool, line)

    await asyncio.gather(run(0), run(1))
    assert sorted(seen[0] + seen[1]) == list(range(200)), "every line exactly once"
    assert await q.depth(pool) == 0


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from spotgate.adapters.local.sqlite_line_queue import SqliteLineQueue

    async def main(path):
        queue = SqliteLineQueue(path)
        print("ready", flush=True)
        sys.stdin.readline()
        taken = []
        while lines := await queue.receive("default", 2, 60):
            taken.extend(str(line.task.index) for line in lines)
            for line in lines:
                await queue.delete("default", line)
        await queue.close()
        print(" ".join(taken), flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_two_processes_on_one_sqlite_file_never_take_the_same_line(tmp_path: Path) -> None:
    path = tmp_path / "batch_lines.sqlite3"
    queue = SqliteLineQueue(path)
    try:
        await queue.send("default", tasks(400))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            str(path),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"ready"
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            mine: list[int] = []
            while lines := await queue.receive("default", 2, 60):
                mine.extend(line.task.index for line in lines)
                for line in lines:
                    await queue.delete("default", line)
            out, _ = await asyncio.wait_for(child.communicate(), 60)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        theirs = [int(i) for i in out.split()]
        assert child.returncode == 0
        assert not set(mine) & set(theirs), "a line was taken by both processes"
        assert sorted(mine + theirs) == list(range(400))
    finally:
        await queue.close()
