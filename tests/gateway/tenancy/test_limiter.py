"""Per-key limits as a client meets them: requests and tokens per minute, requests at once, budgets.

Every expected count is worked out by hand from the sliding window's rule:
used = previous minute x (share of it still in the window) + this minute,
and a request is admitted while used <= limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from spotgate.clock import ManualClock
from spotgate.errors import RateLimited
from spotgate.gateway.tenancy.keys import ApiKey
from spotgate.gateway.tenancy.limiter import STALE_S, Admission, Limiter, QuotaExhausted
from spotgate.gateway.tenancy.memory_stores import InMemoryCounterStore

T0 = 1_700_000_040.0
"""The start of a minute (28_333_334 x 60): 2023-11-14T22:14:00Z."""
NEXT_DAY = 1_700_006_400.0
"""2023-11-15T00:00:00Z, the next UTC day after T0."""
MODEL = "m1"


def key(**limits: Any) -> ApiKey:
    return ApiKey(id="key_a", name="a", digest="d" * 64, prefix="sk-sg-abcd", **limits)


class YieldingCounters:
    """The memory store behind a round trip: other requests run while one waits on it."""

    def __init__(self, inner: InMemoryCounterStore) -> None:
        self.inner = inner
        self.calls = 0

    async def add(
        self,
        counter_id: str,
        deltas: Mapping[str, float],
        *,
        ttl_s: float,
        stamps: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        self.calls += 1
        await asyncio.sleep(0)
        fields = await self.inner.add(counter_id, deltas, ttl_s=ttl_s, stamps=stamps)
        await asyncio.sleep(0)
        return fields

    async def close(self) -> None:
        await self.inner.close()


def limiter(clock: ManualClock, instance: str = "i1") -> tuple[Limiter, YieldingCounters]:
    counters = YieldingCounters(InMemoryCounterStore(clock))
    return Limiter(counters, instance), counters


async def admit(lim: Limiter, k: ApiKey, clock: ManualClock, tokens: int = 1) -> Admission:
    return await lim.admit(k, MODEL, tokens, None, clock.now())


async def admitted(lim: Limiter, k: ApiKey, clock: ManualClock, tries: int) -> int:
    """How many of `tries` requests, one after another, get in."""
    count = 0
    for _ in range(tries):
        try:
            await admit(lim, k, clock)
        except RateLimited:
            continue
        count += 1
    return count


# requests per minute


async def test_fifty_concurrent_requests_on_rpm_10_admit_exactly_10() -> None:
    clock = ManualClock(T0 + 5)
    lim, _ = limiter(clock)
    k = key(rpm=10)
    results = await asyncio.gather(
        *(admit(lim, k, clock) for _ in range(50)), return_exceptions=True
    )
    refusals = [r for r in results if isinstance(r, BaseException)]
    assert len([r for r in results if isinstance(r, Admission)]) == 10
    assert len(refusals) == 40 and all(isinstance(r, RateLimited) for r in refusals)
    for refusal in refusals:
        assert isinstance(refusal, RateLimited)
        assert (refusal.status_code, refusal.code) == (429, "rate_limit_exceeded")
        assert refusal.body()["error"]["type"] == "rate_limit_error"
        assert int(refusal.headers["Retry-After"]) >= 1
    assert await admitted(lim, k, clock, 5) == 0, "the refused ones took no quota back"


async def test_a_full_minute_tells_when_one_more_fits_and_that_is_when_it_does() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(rpm=10)
    assert await admitted(lim, k, clock, 10) == 10
    with pytest.raises(RateLimited) as refused:
        await admit(lim, k, clock)
    # 10 in minute 0; one more fits once 10 x (1 - e/60) + 1 <= 10, at e = 6 s of minute 1
    assert refused.value.headers["Retry-After"] == "66"
    clock.advance(65)
    with pytest.raises(RateLimited):
        await admit(lim, k, clock)
    clock.advance(1)
    await admit(lim, k, clock)


@pytest.mark.parametrize(
    ("into_next_minute", "more"),
    [(0, 0), (30, 5), (45, 7), (59, 9)],
)
async def test_the_previous_minute_weighs_in_by_the_share_still_in_the_window(
    into_next_minute: float, more: int
) -> None:
    # 10 used in minute 0; at e s into minute 1: 10 x (1 - e/60) + n <= 10
    # e=0: n <= 0; e=30: n <= 5; e=45: n <= 7.5 -> 7; e=59: n <= 9.83 -> 9
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(rpm=10)
    assert await admitted(lim, k, clock, 10) == 10
    clock.advance(60 + into_next_minute)
    assert await admitted(lim, k, clock, 12) == more


async def test_waiting_retry_after_is_enough_and_a_second_less_is_not() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(rpm=10)
    assert await admitted(lim, k, clock, 7) == 7
    clock.advance(90)  # 30 s into minute 1: 7 x 0.5 + n <= 10 -> n <= 6
    assert await admitted(lim, k, clock, 6) == 6
    with pytest.raises(RateLimited) as refused:
        await admit(lim, k, clock)
    # one more needs 7 x (1 - e/60) + 7 <= 10: e >= 34.29 s, 4.29 s from now -> 5
    assert refused.value.headers["Retry-After"] == "5"
    clock.advance(4)
    with pytest.raises(RateLimited):
        await admit(lim, k, clock)
    clock.advance(1)
    await admit(lim, k, clock)


async def test_two_minutes_later_the_old_count_is_gone() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(rpm=10)
    assert await admitted(lim, k, clock, 10) == 10
    clock.advance(120)
    assert await admitted(lim, k, clock, 12) == 10


async def test_rate_limit_headers_count_down_requests_and_tokens() -> None:
    clock = ManualClock(T0 + 15)
    lim, _ = limiter(clock)
    k = key(rpm=10, tpm=10_000)
    first = await admit(lim, k, clock, tokens=100)
    assert first.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "45s",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "9900",
        "x-ratelimit-reset-tokens": "45s",
    }
    second = await admit(lim, k, clock, tokens=250)
    assert second.headers["x-ratelimit-remaining-requests"] == "8"
    assert second.headers["x-ratelimit-remaining-tokens"] == "9650"
    clock.advance(44.5)  # 0.5 s left in the minute
    third = await admit(lim, k, clock, tokens=1)
    assert third.headers["x-ratelimit-reset-requests"] == "500ms"
    assert third.headers["x-ratelimit-remaining-tokens"] == "9649"


# tokens per minute


async def test_tokens_are_reserved_up_front_and_settlement_frees_what_was_not_used() -> None:
    clock = ManualClock(T0 + 1)
    lim, _ = limiter(clock)
    k = key(tpm=1000)
    big = await admit(lim, k, clock, tokens=1000)
    with pytest.raises(RateLimited) as refused:
        await admit(lim, k, clock, tokens=100)
    assert "tokens" in refused.value.message
    await lim.settle(big, actual_tokens=100, spend=0.0)  # used 100: 900 free again
    await admit(lim, k, clock, tokens=900)
    with pytest.raises(RateLimited):
        await admit(lim, k, clock, tokens=1)


async def test_a_request_larger_than_the_minute_allows_is_refused_without_retry_after() -> None:
    clock = ManualClock(T0)
    lim, counters = limiter(clock)
    with pytest.raises(RateLimited) as refused:
        await admit(lim, key(tpm=1000), clock, tokens=1001)
    assert refused.value.param == "max_tokens" and "Retry-After" not in refused.value.headers
    assert counters.calls == 0, "nothing was counted for it"


async def test_a_settlement_after_the_minute_rolled_over_frees_the_tokens_too() -> None:
    clock = ManualClock(T0 + 50)
    lim, counters = limiter(clock)
    k = key(tpm=1000)
    long_answer = await admit(lim, k, clock, tokens=1000)  # reserved in minute 0
    clock.advance(11)  # 1 s into minute 1: 1000 x 59/60 + 1 = 984.3 <= 1000
    await admit(lim, k, clock, tokens=1)
    await lim.settle(long_answer, actual_tokens=100, spend=0.0)
    clock.advance(1)  # 2 s in: 100 x 58/60 + 1 + 500 = 597.7 <= 1000
    other_instance = Limiter(counters, "i2")
    await other_instance.admit(k, MODEL, 500, None, clock.now())
    await lim.admit(k, MODEL, 200, None, clock.now())  # 797.7 <= 1000 as well


async def test_per_model_limits_count_each_model_on_its_own() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(model_limits={"m1": {"rpm": 2}, "m2": {"rpm": 3, "tpm": 500}})
    for _ in range(2):
        await lim.admit(k, "m1", 10, None, clock.now())
    with pytest.raises(RateLimited) as refused:
        await lim.admit(k, "m1", 10, None, clock.now())
    assert "m1" in refused.value.message
    for _ in range(3):
        await lim.admit(k, "m2", 100, None, clock.now())
    with pytest.raises(RateLimited):
        await lim.admit(k, "m2", 100, None, clock.now())
    for _ in range(20):
        await lim.admit(k, "m3", 1000, None, clock.now())  # no limit of its own


async def test_a_model_token_limit_applies_alongside_the_key_wide_one() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(tpm=1000, model_limits={"m1": {"tpm": 300}})
    await lim.admit(k, "m1", 300, None, clock.now())
    with pytest.raises(RateLimited, match="m1"):
        await lim.admit(k, "m1", 1, None, clock.now())
    await lim.admit(k, "m2", 700, None, clock.now())  # 300 + 700 = the key's 1000
    with pytest.raises(RateLimited):
        await lim.admit(k, "m2", 1, None, clock.now())


# requests at once


async def test_max_parallel_holds_across_instances_sharing_one_store() -> None:
    clock = ManualClock(T0)
    shared = YieldingCounters(InMemoryCounterStore(clock))
    first, second = Limiter(shared, "instance-a"), Limiter(shared, "instance-b")
    k = key(max_parallel=3)
    held = [await admit(first, k, clock), await admit(first, k, clock)]
    held.append(await admit(second, k, clock))
    for instance in (first, second):
        with pytest.raises(RateLimited) as refused:
            await admit(instance, k, clock)
        assert refused.value.headers["Retry-After"] == "1"
    await first.settle(held[0], None, 0.0)
    await admit(second, k, clock)
    with pytest.raises(RateLimited):
        await admit(first, k, clock)


async def test_a_silent_instance_stops_counting_once_its_stamp_is_stale() -> None:
    clock = ManualClock(T0)
    shared = YieldingCounters(InMemoryCounterStore(clock))
    crashed, survivor = Limiter(shared, "crashed"), Limiter(shared, "survivor")
    k = key(max_parallel=3)
    for _ in range(3):
        await admit(crashed, k, clock)
    clock.advance(STALE_S)
    with pytest.raises(RateLimited):
        await admit(survivor, k, clock)
    clock.advance(1)  # the crashed instance's stamp is now older than STALE_S
    for _ in range(3):
        await admit(survivor, k, clock)


async def test_a_heartbeat_keeps_a_live_instance_counted() -> None:
    clock = ManualClock(T0)
    shared = YieldingCounters(InMemoryCounterStore(clock))
    busy, other = Limiter(shared, "busy"), Limiter(shared, "other")
    k = key(max_parallel=3)
    for _ in range(2):
        await admit(busy, k, clock)
    clock.advance(20)
    await busy.heartbeat(clock.now())
    clock.advance(20)  # 40 s after its requests began, 20 s after its heartbeat
    await admit(other, k, clock)
    with pytest.raises(RateLimited):
        await admit(other, k, clock)


async def test_a_request_refused_for_parallelism_gives_back_its_minute_quota() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(rpm=2, max_parallel=1)
    running = await admit(lim, k, clock)
    with pytest.raises(RateLimited, match="at once"):
        await admit(lim, k, clock)
    await lim.settle(running, None, 0.0)
    await admit(lim, k, clock)  # the second of 2 per minute: the refused one took none
    with pytest.raises(RateLimited, match="per minute"):
        await admit(lim, k, clock)


# budgets


async def test_spend_reaching_the_budget_refuses_with_insufficient_quota() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(budget_usd=1.0, budget_period="day")
    await lim.settle(await admit(lim, k, clock), None, 0.25)
    await lim.settle(await admit(lim, k, clock), None, 0.5)
    assert await lim.spent(k, clock.now()) == 0.75
    await lim.settle(await admit(lim, k, clock), None, 0.25)  # 1.0: the budget, exactly
    with pytest.raises(QuotaExhausted) as refused:
        await admit(lim, k, clock)
    assert (refused.value.status_code, refused.value.code) == (429, "insufficient_quota")
    assert "$1" in refused.value.message and "day" in refused.value.message


async def test_a_daily_budget_is_available_again_the_next_utc_day() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(budget_usd=1.0, budget_period="day")
    await lim.settle(await admit(lim, k, clock), None, 1.5)
    clock.advance(NEXT_DAY - 1 - T0)  # 23:59:59 the same day
    with pytest.raises(QuotaExhausted):
        await admit(lim, k, clock)
    clock.advance(1)
    await admit(lim, k, clock)
    assert await lim.spent(k, clock.now()) == 0.0


async def test_a_total_budget_never_comes_back() -> None:
    clock = ManualClock(T0)
    lim, _ = limiter(clock)
    k = key(budget_usd=2.0, budget_period="total")
    await lim.settle(await admit(lim, k, clock), None, 2.0)
    clock.advance(400 * 86_400)
    with pytest.raises(QuotaExhausted):
        await admit(lim, k, clock)


# keys without limits


async def test_a_key_without_limits_never_touches_the_counter_store() -> None:
    clock = ManualClock(T0)
    lim, counters = limiter(clock)
    free = key()
    for _ in range(100):
        admission = await admit(lim, free, clock, tokens=10_000)
        assert admission.headers == {}
        await lim.settle(admission, 123, 0.5)
    assert counters.calls == 0
