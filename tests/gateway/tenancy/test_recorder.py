"""Usage records leave the request path at once and reach the store in batches, none lost twice.

A slow or failing usage store must never slow a request, a failed batch is
retried without counting a record twice, a full buffer drops new records
with one warning per episode, and a clean shutdown writes what is left.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from spotgate.gateway.tenancy import recorder as recorder_module
from spotgate.gateway.tenancy.memory_stores import InMemoryUsageStore
from spotgate.gateway.tenancy.recorder import UsageRecorder
from spotgate.gateway.tenancy.usage import UsageRecord


def record(n: int) -> UsageRecord:
    return UsageRecord(
        at=1_700_000_000.0 + n,
        request_id=f"req-{n}",
        key_id="key_a",
        model="m",
        path="/v1/chat/completions",
        status=200,
        prompt_tokens=10,
        completion_tokens=n,
    )


class Store(InMemoryUsageStore):
    """The memory store, with knobs: fail the next appends (optionally after writing the
    batch, as a timeout after a commit would), block until released, count batches."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0
        self.fail_after_write = False
        self.gate: asyncio.Event | None = None
        self.batches: list[int] = []
        self.closed = False

    async def append(self, records: list[UsageRecord]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(len(records))
        if self.fail_next:
            self.fail_next -= 1
            if self.fail_after_write:
                await super().append(records)
            raise ConnectionError("usage store unavailable")
        await super().append(records)

    async def close(self) -> None:
        self.closed = True

    async def ids(self) -> list[str]:
        return [r.request_id for r in await self.query(0)]


async def written(store: Store, ids: list[str], within_s: float = 2.0) -> bool:
    """Whether the store holds exactly `ids` before `within_s` (polled, never flushed)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while await store.ids() != ids:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


async def test_recording_returns_at_once_while_the_store_is_stuck() -> None:
    store = Store()
    store.gate = asyncio.Event()  # every write hangs until released
    recorder = UsageRecorder(store)
    recorder.record(record(0))
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.01)
    assert not flushing.done(), "the write hangs"
    for n in range(1, 101):
        assert recorder.record(record(n)) is None  # not a coroutine: nothing to await
    assert recorder.pending == 101
    store.gate.set()
    assert await flushing is True
    assert sorted(await store.ids()) == sorted(f"req-{n}" for n in range(101))


async def test_flush_writes_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "BATCH", 3)
    store = Store()
    recorder = UsageRecorder(store)
    for n in range(7):
        recorder.record(record(n))
    assert await recorder.flush() is True
    assert store.batches == [3, 3, 1]
    assert recorder.pending == 0 and recorder.written == 7
    assert await store.ids() == [f"req-{n}" for n in range(7)], "in the order recorded"


async def test_a_failed_write_keeps_the_records_and_the_retry_counts_none_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    store.fail_next, store.fail_after_write = 3, True  # written, then the reply lost
    recorder = UsageRecorder(store)
    for n in range(5):
        recorder.record(record(n))
    with caplog.at_level(logging.INFO, logger="spotgate.usage"):
        for _ in range(3):
            assert await recorder.flush() is False
            assert recorder.pending == 5, "nothing is let go of until the store says so"
        assert await recorder.flush() is True
    assert recorder.pending == 0
    assert len(await store.query(0)) == 5
    assert len(warnings(caplog, "write failed")) == 1, "one warning for the outage"
    assert any("writable again" in r.getMessage() for r in caplog.records)


async def test_records_arriving_during_a_flush_are_written_too() -> None:
    store = Store()
    store.gate = asyncio.Event()
    recorder = UsageRecorder(store)
    recorder.record(record(0))
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.01)
    recorder.record(record(1))
    recorder.record(record(2))
    store.gate.set()
    assert await flushing is True
    assert await store.ids() == ["req-0", "req-1", "req-2"]
    assert recorder.pending == 0 and recorder.written == 3


async def test_a_full_buffer_drops_new_records_with_one_warning_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    recorder = UsageRecorder(store, max_buffer=5)
    with caplog.at_level(logging.WARNING, logger="spotgate.usage"):
        for n in range(8):
            recorder.record(record(n))
        assert recorder.pending == 5 and recorder.dropped_total == 3
        assert len(warnings(caplog, "buffer full")) == 1
        assert await recorder.flush() is True
        drained = warnings(caplog, "drained")
        assert len(drained) == 1 and "3 records were dropped" in drained[0].getMessage()
        assert await store.ids() == [f"req-{n}" for n in range(5)], "the first five kept"
        for n in range(10, 18):  # a second episode
            recorder.record(record(n))
    assert recorder.dropped_total == 6
    assert len(warnings(caplog, "buffer full")) == 2


async def test_a_buffer_full_while_the_store_is_down_drops_only_the_overflow() -> None:
    store = Store()
    store.fail_next = 1
    recorder = UsageRecorder(store, max_buffer=4)
    for n in range(4):
        recorder.record(record(n))
    assert await recorder.flush() is False
    recorder.record(record(4))
    assert recorder.dropped_total == 1
    assert await recorder.flush() is True
    assert await store.ids() == ["req-0", "req-1", "req-2", "req-3"]


async def test_close_writes_what_is_left_and_closes_the_store() -> None:
    store = Store()
    recorder = UsageRecorder(store, flush_s=3600)
    await recorder.start()
    for n in range(3):
        recorder.record(record(n))
    await recorder.close()
    assert await store.ids() == ["req-0", "req-1", "req-2"]
    assert store.closed


async def test_close_retries_a_store_that_fails_once_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    store.fail_next = 1
    recorder = UsageRecorder(store, flush_s=3600)
    for n in range(3):
        recorder.record(record(n))
    with caplog.at_level(logging.ERROR, logger="spotgate.usage"):
        await recorder.close()
    assert await store.ids() == ["req-0", "req-1", "req-2"]
    assert not any("lost" in r.getMessage() for r in caplog.records)


async def test_close_gives_up_on_a_hung_store_within_its_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recorder_module, "CLOSE_TIMEOUT_S", 0.1)
    store = Store()
    store.gate = asyncio.Event()  # never released
    recorder = UsageRecorder(store)
    recorder.record(record(0))
    with caplog.at_level(logging.ERROR, logger="spotgate.usage"):
        await asyncio.wait_for(recorder.close(), timeout=2)
    assert any("1 records lost" in r.getMessage() for r in caplog.records)
    assert store.closed


async def test_the_background_flush_writes_within_flush_s() -> None:
    store = Store()
    recorder = UsageRecorder(store, flush_s=0.05)
    await recorder.start()
    try:
        recorder.record(record(0))
        assert await written(store, ["req-0"]), "written without anyone calling flush"
        store.fail_next = 2
        recorder.record(record(1))
        assert await written(store, ["req-0", "req-1"]), "and retried until it got through"
        assert store.batches == [1, 1, 1, 1], "the failed batch was tried three times"
        assert recorder.pending == 0
    finally:
        await recorder.close()
