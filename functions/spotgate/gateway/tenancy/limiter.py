"""Requests and tokens per minute, requests at once, and budgets, per key: checked together.

The counts live in a shared `CounterStore`, changed atomically, so every
gateway instance sees one count and a limit holds across instances exactly
(the cost: one store round trip per request of a limited key; none for a key
without limits).

- Per minute: a sliding window approximated from two fixed minutes (the
  current one, plus the previous one weighted by how much of it is still in
  the window), as Cloudflare's and LiteLLM's limiters do. A request is
  counted first and taken back if it overshoots, so 50 concurrent requests
  against RPM 10 admit exactly 10.
- Tokens: the prompt is estimated before the call (characters / 4, as
  OpenAI's own estimate) plus the completion budget asked for (`max_tokens`,
  else `DEFAULT_COMPLETION_RESERVE`), then settled with the worker's real
  usage when the answer ends.
- At once: each instance keeps its own count of a key's requests in flight
  in one shared counter (a field per instance, with a heartbeat stamp); the
  limit applies to the sum over instances whose stamp is fresh, so a crashed
  instance's requests stop counting after `STALE_S`.
- Budget: spend per period (UTC day, month, or ever) is added when a
  request finishes; a key whose spend reached its budget gets
  `insufficient_quota`. Requests already running when the budget runs out
  finish, so spend can pass the budget by what they cost.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spotgate.errors import RateLimited
from spotgate.gateway.tenancy.keys import ApiKey
from spotgate.gateway.tenancy.ports import CounterStore

WINDOW_S = 60.0
STALE_S = 30.0
DEFAULT_COMPLETION_RESERVE = 256


class QuotaExhausted(RateLimited):
    def __init__(self, key: ApiKey, spent: float) -> None:
        super().__init__(
            f"This key has used its budget of ${key.budget_usd:g} for this "
            f"{key.budget_period} (${spent:.4f} spent).",
            code="insufficient_quota",
        )


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Characters / 4 of everything the model reads, and a few tokens per message."""
    chars = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                chars += len(str(message.get("content") or "")) + 16
    for name in ("prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            chars += sum(len(str(v)) for v in value)
    return max(1, math.ceil(chars / 4))


def completion_reserve(body: dict[str, Any], path: str) -> int:
    if path.endswith("/embeddings"):
        return 0
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * choices
    return DEFAULT_COMPLETION_RESERVE * choices


def too_large(key: ApiKey, model: str, tokens: int) -> None:
    """A request that alone needs more tokens than a minute allows never fits: say so,
    without a Retry-After (waiting would not help)."""
    limits = [key.tpm, (key.model_limits.get(model) or {}).get("tpm")]
    smallest = min((limit for limit in limits if limit), default=None)
    if smallest is not None and tokens > smallest:
        raise RateLimited(
            f"Request too large: it may use {tokens} tokens (the prompt, estimated, plus "
            f"max_tokens, {DEFAULT_COMPLETION_RESERVE} when not given), more than this "
            f"key's {smallest} tokens per minute. Set a lower max_tokens or shorten the prompt.",
            param="max_tokens",
            code="rate_limit_exceeded",
        )


def period_id(period: str, now: float) -> str:
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        return moment.strftime("%Y-%m-%d")
    if period == "month":
        return moment.strftime("%Y-%m")
    return "all"


def period_ttl_s(period: str) -> float:
    return {"day": 2 * 86_400.0, "month": 40 * 86_400.0}.get(period, 10 * 365 * 86_400.0)


def reset_text(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: "1s", "6m0s", "250ms"."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass
class Admission:
    """What one admitted request holds, to settle when it ends."""

    key: ApiKey
    model: str
    minute: int
    reserved_tokens: int
    parallel: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Window:
    limit: int
    previous: float
    current: float
    """This minute's count, the request being judged included."""
    weight: float  # of the previous minute still in the window
    own: float
    """What the request being judged adds (1 request, or its reserved tokens)."""

    @property
    def used(self) -> float:
        return self.previous * self.weight + self.current

    def retry_after_s(self, elapsed: float) -> float:
        """Until the window has room for this request, if nothing else arrives."""
        others = self.current - self.own
        room = self.limit - self.own
        if others <= room and self.previous > 0:
            needed = 1 - (room - others) / self.previous  # the previous minute's weight then
            return max(0.0, needed * WINDOW_S - elapsed)
        end_of_minute = WINDOW_S - elapsed
        if others <= 0:
            return end_of_minute
        return end_of_minute + max(0.0, 1 - room / others) * WINDOW_S


class Limiter:
    def __init__(self, counters: CounterStore, instance_id: str) -> None:
        self._counters = counters
        self._instance = instance_id
        self._previous: dict[str, dict[str, float]] = {}
        self.in_flight: dict[str, int] = {}
        """This instance's requests in flight per limited key (the heartbeat reads it)."""

    async def admit(
        self, key: ApiKey, model: str, tokens: int, spent_today: float | None, now: float
    ) -> Admission:
        """Counts the request against every limit of `key`; raises 429 if one is over.

        The budget, the minute and the parallel count are asked at once (one round trip
        of latency, not three); whatever was counted is given back if any refuses."""
        too_large(key, model, tokens)
        admission = Admission(key, model, int(now // WINDOW_S), tokens, parallel=False)
        checks: dict[str, Coroutine[Any, Any, None]] = {}
        if key.budget_usd is not None:
            checks["budget"] = self._check_budget(key, spent_today, now)
        if key.limited():
            checks["minute"] = self._count_minute(admission, now)
        if key.max_parallel:
            checks["parallel"] = self._take_parallel(admission, now)
        results = dict(
            zip(checks, await asyncio.gather(*checks.values(), return_exceptions=True), strict=True)
        )
        failures = [r for r in results.values() if isinstance(r, BaseException)]
        if not failures:
            return admission
        if "minute" in results and not isinstance(results["minute"], BaseException):
            await self._uncount_minute(admission)
        if admission.parallel:
            await self._release_parallel(key)
        raise failures[0]

    async def settle(self, admission: Admission, actual_tokens: int | None, spend: float) -> None:
        """The request ended: tokens as counted, a parallel slot back, its price spent."""
        key = admission.key
        if actual_tokens is not None and key.limited():
            delta = float(actual_tokens - admission.reserved_tokens)
            if delta:
                counter = self._minute_id(key, admission.minute)
                settled = await self._counters.add(
                    counter,
                    {"tok": delta, f"tok:{admission.model}": delta},
                    ttl_s=3 * WINDOW_S,
                )
                cached = f"{key.id}:{admission.minute}"
                if cached in self._previous:  # settled after its minute ended
                    self._previous[cached] = settled
        if admission.parallel:
            await self._release_parallel(key)
        if key.budget_usd is not None and spend:
            now_period = period_id(key.budget_period, admission.minute * WINDOW_S)
            await self._counters.add(
                f"spend:{key.id}:{now_period}",
                {"usd": spend},
                ttl_s=period_ttl_s(key.budget_period),
            )

    async def _check_budget(self, key: ApiKey, spent_today: float | None, now: float) -> None:
        assert key.budget_usd is not None
        spent = spent_today if spent_today is not None else await self.spent(key, now)
        if spent >= key.budget_usd:
            raise QuotaExhausted(key, spent)

    async def spent(self, key: ApiKey, now: float) -> float:
        counter = f"spend:{key.id}:{period_id(key.budget_period, now)}"
        fields = await self._counters.add(counter, {}, ttl_s=period_ttl_s(key.budget_period))
        return fields.get("usd", 0.0)

    async def heartbeat(self, now: float) -> None:
        """Keeps this instance's in-flight counts fresh for the other instances."""
        for key_id, count in list(self.in_flight.items()):
            if count > 0:
                await self._counters.add(
                    f"par:{key_id}", {}, stamps={f"t:{self._instance}": now}, ttl_s=STALE_S * 4
                )

    # internals

    def _minute_id(self, key: ApiKey, minute: int) -> str:
        return f"rl:{key.id}:{minute}"

    @staticmethod
    def _minute_deltas(admission: Admission) -> dict[str, float]:
        model, tokens = admission.model, float(admission.reserved_tokens)
        return {"req": 1.0, "tok": tokens, f"req:{model}": 1.0, f"tok:{model}": tokens}

    async def _uncount_minute(self, admission: Admission) -> None:
        deltas = {name: -value for name, value in self._minute_deltas(admission).items()}
        counter = self._minute_id(admission.key, admission.minute)
        await self._counters.add(counter, deltas, ttl_s=3 * WINDOW_S)

    async def _count_minute(self, admission: Admission, now: float) -> None:
        key, model, minute = admission.key, admission.model, admission.minute
        deltas = self._minute_deltas(admission)
        counter = self._minute_id(key, minute)
        current = await self._counters.add(counter, deltas, ttl_s=3 * WINDOW_S)
        previous = await self._previous_minute(key, minute)
        elapsed = now - minute * WINDOW_S
        weight = max(0.0, 1.0 - elapsed / WINDOW_S)
        windows: list[tuple[str, _Window]] = []
        per_model = key.model_limits.get(model) or {}
        for name, field_name, limit in (
            ("requests", "req", key.rpm),
            ("tokens", "tok", key.tpm),
            (f"requests for {model}", f"req:{model}", per_model.get("rpm")),
            (f"tokens for {model}", f"tok:{model}", per_model.get("tpm")),
        ):
            if limit:
                got = previous.get(field_name, 0.0), current.get(field_name, 0.0)
                windows.append((name, _Window(limit, *got, weight, deltas[field_name])))
        over = [(name, w) for name, w in windows if w.used > w.limit]
        if over:
            await self._uncount_minute(admission)
            name, window = over[0]
            wait = max(1, math.ceil(window.retry_after_s(elapsed)))
            headers = self._headers(windows, elapsed) | {"Retry-After": str(wait)}
            raise RateLimited(
                f"Rate limit reached: {window.limit} {name} per minute for this key. "
                f"Retry in {wait} s.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        admission.headers = self._headers(windows, elapsed)

    async def _previous_minute(self, key: ApiKey, minute: int) -> dict[str, float]:
        """The last minute's final counts, read once per key and minute (nobody adds to a
        minute that ended but token settlements: this instance's own update the copy, other
        instances' count from this instance's next minute on)."""
        cache_key = f"{key.id}:{minute - 1}"
        cached = self._previous.get(cache_key)
        if cached is None:
            cached = await self._counters.add(
                self._minute_id(key, minute - 1), {}, ttl_s=3 * WINDOW_S
            )
            self._previous = {
                k: v for k, v in self._previous.items() if k.endswith(f":{minute - 1}")
            }
            self._previous[cache_key] = cached
        return cached

    @staticmethod
    def _headers(windows: list[tuple[str, _Window]], elapsed: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, window in windows:
            if " " in name:  # per-model windows: OpenAI's headers describe the key's own
                continue
            remaining = max(0, math.floor(window.limit - window.used))
            headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
            headers[f"x-ratelimit-reset-{name}"] = reset_text(WINDOW_S - elapsed)
        return headers

    async def _take_parallel(self, admission: Admission, now: float) -> None:
        key = admission.key
        limit = key.max_parallel or 0
        counter = f"par:{key.id}"
        fields = await self._counters.add(
            counter,
            {f"i:{self._instance}": 1.0},
            stamps={f"t:{self._instance}": now},
            ttl_s=STALE_S * 4,
        )
        if _running(fields, now) > limit:
            await self._counters.add(counter, {f"i:{self._instance}": -1.0}, ttl_s=STALE_S * 4)
            raise RateLimited(
                f"Too many requests at once: this key may run {limit} in parallel.",
                code="rate_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        admission.parallel = True
        self.in_flight[key.id] = self.in_flight.get(key.id, 0) + 1

    async def _release_parallel(self, key: ApiKey) -> None:
        left = self.in_flight.get(key.id, 1) - 1
        if left > 0:
            self.in_flight[key.id] = left
        else:
            self.in_flight.pop(key.id, None)
        await self._counters.add(f"par:{key.id}", {f"i:{self._instance}": -1.0}, ttl_s=STALE_S * 4)


def _running(fields: dict[str, float], now: float) -> float:
    """Requests in flight over every instance whose heartbeat stamp is fresh."""
    total = 0.0
    for name, value in fields.items():
        if name.startswith("i:"):
            stamp = fields.get("t:" + name[2:], 0.0)
            if now - stamp <= STALE_S:
                total += max(0.0, value)
    return total
