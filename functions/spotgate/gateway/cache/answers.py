"""The cache's two moments in a request: a stored answer served, and a fresh one kept.

A hit comes back in the form the client asked for (JSON, or a replayed SSE
stream); a miss is forwarded, and its answer stored once it is whole: a
non-streamed body at once (in the background), a stream only after it
ended cleanly (`watched`), assembled into the body a non-streamed request
would get.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from spotgate.clock import Clock
from spotgate.gateway.cache.policy import CacheDecision
from spotgate.gateway.cache.response_cache import ResponseCache
from spotgate.gateway.cache.sse_assemble import assemble_stream
from spotgate.gateway.cache.sse_replay import NotReplayable, replay_as_stream
from spotgate.gateway.cache.store import CachedResponse
from spotgate.gateway.relay import Relay, Release, once


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored answer in the client's form: `body` for JSON, `events` for a stream."""

    body: bytes | None = None
    events: list[bytes] | None = None


def replay(hit: CachedResponse, body: dict[str, Any], wants_stream: bool) -> Replay | None:
    """The hit as the client asked for it; None when it cannot be replayed as a stream."""
    if not wants_stream:
        return Replay(body=hit.body)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    try:
        return Replay(events=replay_as_stream(orjson.loads(hit.body), include_usage=include_usage))
    except NotReplayable:
        return None


class AnswerKeeper:
    """Stores fresh answers the cache decided it may keep."""

    def __init__(self, cache: ResponseCache, clock: Clock) -> None:
        self._cache = cache
        self._clock = clock

    def keep(self, decision: CacheDecision, body: bytes, model: str, worker_id: str) -> None:
        """A whole 200 body, stored in the background."""
        stored = CachedResponse(200, body, model, self._clock.now(), worker_id)
        self._cache.schedule_put(decision, stored)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a watched stream ended: `answer` assembled from what passed (None if it could not
    be), `whole` False when it was cut short, `events` the data events relayed."""

    answer: dict[str, Any] | None
    whole: bool
    events: int
    first_event_at: float | None


def watched(
    chunks: Relay,
    on_end: Callable[[StreamEnd], None],
    clock: Clock,
    max_bytes: int = 4_000_000,
) -> Relay:
    """`chunks` relayed untouched; `on_end` is called exactly once, when they ended whole or
    were closed early (a client gone), with what was relayed up to then."""
    watcher = _Watcher(on_end, clock, max_bytes)
    return Relay(watcher.relay(chunks), once(watcher.close_with(chunks)))


class _Watcher:
    def __init__(self, on_end: Callable[[StreamEnd], None], clock: Clock, max_bytes: int):
        self._on_end = on_end
        self._clock = clock
        self._max_bytes = max_bytes
        self._copied: list[bytes] | None = []
        self._size = 0
        self._events = 0
        self._first_at: float | None = None
        self._reported = False

    async def relay(self, chunks: Relay) -> AsyncGenerator[bytes, None]:
        completed = False
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if self._first_at is None:
                        self._first_at = self._clock.now()
                    self._events += chunk.count(b"data: {")
                    if self._copied is not None:
                        self._size += len(chunk)
                        self._copied = self._copied if self._size <= self._max_bytes else None
                        if self._copied is not None:
                            self._copied.append(chunk)
                    yield chunk
            completed = True
        finally:
            self._report(completed)

    def close_with(self, chunks: Relay) -> Release:
        async def close() -> None:
            try:
                await chunks.aclose()
            finally:
                self._report(False)

        return close

    def _report(self, whole: bool) -> None:
        if self._reported:
            return
        self._reported = True
        answer = assemble_stream(self._copied) if self._copied else None
        self._on_end(StreamEnd(answer, whole, self._events, self._first_at))
