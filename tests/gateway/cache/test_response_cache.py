"""ResponseCache: hits, freshness, and a store that fails or hangs without hurting requests."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from spotgate.clock import ManualClock
from spotgate.gateway.cache.policy import CacheDecision, CachePolicy, CacheRule
from spotgate.gateway.cache.response_cache import ResponseCache
from spotgate.gateway.cache.store import CachedResponse, InMemoryCacheStore

CHAT = "/v1/chat/completions"
GREEDY: dict[str, Any] = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}
BODY = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": []})
LOGGER = "tests.response_cache"


class BrokenStore:
    """Every call fails, as when the database is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        raise ConnectionError("cosmos unreachable")

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.calls += 1
        raise ConnectionError("cosmos unreachable")

    async def delete(self, key: str) -> None:
        raise ConnectionError("cosmos unreachable")

    async def close(self) -> None:
        pass


class HangingStore(BrokenStore):
    """Every call takes far longer than the cache waits."""

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(30)
        return None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        await asyncio.sleep(30)


def make(
    store: Any = None, clock: ManualClock | None = None, **kwargs: Any
) -> tuple[ResponseCache, ManualClock]:
    clock = clock or ManualClock()
    store = store if store is not None else InMemoryCacheStore(clock)
    policy = CachePolicy({}, CacheRule(ttl_s=600, max_entry_bytes=10_000))
    return ResponseCache(store, policy, clock, logger=logging.getLogger(LOGGER), **kwargs), clock


def answer(clock: ManualClock, body: bytes = BODY, status: int = 200) -> CachedResponse:
    return CachedResponse(status, body, "smollm2", clock.now(), "w-1")


def decision(cache: ResponseCache, headers: dict[str, str] | None = None) -> CacheDecision:
    return cache.decide(CHAT, GREEDY, headers or {})


async def test_miss_then_hit_returns_the_stored_answer() -> None:
    cache, clock = make()
    d = decision(cache)
    assert await cache.get(d) is None
    await cache.put(d, answer(clock))
    hit = await cache.get(d)
    assert hit == answer(clock)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stored) == (1, 1, 1)


async def test_expired_entry_is_never_served_even_if_the_store_returns_it() -> None:
    clock = ManualClock()
    store = InMemoryCacheStore(clock)
    cache, _ = make(store, clock)
    d = decision(cache)
    await store.put(d.key or "", answer(clock).to_bytes(), 10_000)  # the store would keep it
    clock.advance(600)
    assert await cache.get(d) is None
    assert cache.stats.expired == 1


async def test_entry_is_fresh_until_its_ttl() -> None:
    cache, clock = make()
    d = decision(cache)
    await cache.put(d, answer(clock))
    clock.advance(599)
    assert await cache.get(d) is not None


async def test_no_cache_request_does_not_read_but_refreshes() -> None:
    cache, clock = make()
    stale = decision(cache)
    await cache.put(stale, answer(clock, b'{"old":1}'))
    fresh = decision(cache, {"Cache-Control": "no-cache"})
    assert await cache.get(fresh) is None
    await cache.put(fresh, answer(clock, b'{"new":1}'))
    hit = await cache.get(stale)
    assert hit is not None and hit.body == b'{"new":1}'


async def test_bypass_decisions_touch_nothing() -> None:
    store = BrokenStore()
    cache, clock = make(store)
    d = cache.decide(CHAT, {**GREEDY, "temperature": 1}, {})
    assert await cache.get(d) is None
    await cache.put(d, answer(clock))
    assert store.calls == 0 and cache.healthy


@pytest.mark.parametrize(("status", "size"), [(500, 10), (400, 10), (200, 10_001)])
async def test_errors_and_oversized_answers_are_not_stored(status: int, size: int) -> None:
    cache, clock = make()
    d = decision(cache)
    await cache.put(d, answer(clock, b"x" * size, status))
    assert await cache.get(d) is None
    assert cache.stats.skipped == 1


async def test_store_down_is_a_miss_and_the_request_still_gets_served() -> None:
    cache, clock = make(BrokenStore())

    async def handle() -> bytes:
        """What the route does: look up, else forward and store."""
        d = decision(cache)
        cached = await cache.get(d)
        if cached is not None:
            return cached.body
        fresh = answer(clock)
        await cache.put(d, fresh)
        return fresh.body

    assert await handle() == BODY
    assert not cache.healthy
    assert cache.stats.failures == 2


async def test_slow_store_times_out_fast() -> None:
    cache, clock = make(HangingStore(), timeout_s=0.05)
    d = decision(cache)
    started = time.monotonic()
    assert await cache.get(d) is None
    await cache.put(d, answer(clock))
    assert time.monotonic() - started < 1.0
    assert not cache.healthy and cache.stats.failures == 2


async def test_failures_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    cache, clock = make(BrokenStore(), failure_log_interval_s=60)
    d = decision(cache)
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(50):
        await cache.get(d)
        clock.advance(1)  # 50 s: still inside the first interval
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()
    clock.advance(10)  # past 60 s since the first report
    await cache.get(d)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "49 more failure(s)" in warnings[1].getMessage()


async def test_recovery_is_reported_once_and_flapping_does_not_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    healthy = InMemoryCacheStore(clock)
    broken = BrokenStore()

    class Flapping(BrokenStore):
        def __init__(self) -> None:
            super().__init__()
            self.up = False

        async def get(self, key: str) -> bytes | None:
            return await (healthy.get(key) if self.up else broken.get(key))

    store = Flapping()
    cache, _ = make(store, clock, failure_log_interval_s=60)
    d = decision(cache)
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(21):  # up, down, up, ... up
        store.up = not store.up
        await cache.get(d)
    assert cache.healthy
    assert len(caplog.records) == 2  # one failure report, one recovery report


async def test_corrupt_entry_is_a_miss_not_an_outage() -> None:
    clock = ManualClock()
    store = InMemoryCacheStore(clock)
    cache, _ = make(store, clock)
    d = decision(cache)
    await store.put(d.key or "", b"not an entry", 60)
    assert await cache.get(d) is None
    assert cache.healthy


async def test_scheduled_put_lands_in_the_background_and_close_waits_for_it() -> None:
    clock = ManualClock()
    store = InMemoryCacheStore(clock)
    cache, _ = make(store, clock)
    d = decision(cache)
    cache.schedule_put(d, answer(clock))
    await cache.close()
    assert store.closed
    assert await store.get(d.key or "") == answer(clock).to_bytes()


async def test_scheduled_put_to_a_hanging_store_is_dropped() -> None:
    cache, clock = make(HangingStore(), timeout_s=0.05)
    cache.schedule_put(decision(cache), answer(clock))
    started = time.monotonic()
    await cache.close()
    assert time.monotonic() - started < 1.0
    assert cache.stats.failures == 1


def test_cached_response_roundtrips_through_bytes() -> None:
    original = CachedResponse(200, b'{"a":"line\\nbreak"}\n\x00', "m", 1.5, "w-9")
    assert CachedResponse.from_bytes(original.to_bytes()) == original


@pytest.mark.parametrize("raw", [b"", b"no header", b'{"v":99}\n{}', b'{"v":1}\n{}', b"[1]\n"])
def test_cached_response_rejects_foreign_bytes(raw: bytes) -> None:
    with pytest.raises(ValueError):
        CachedResponse.from_bytes(raw)
