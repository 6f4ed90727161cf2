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
from spotgate.gateway.relay import Relay

StreamEnd = Callable[[dict[str, Any] | None], None]
"""Called once a relayed stream ended whole, with the answer assembled (None if it could not
be): where a stream's usage becomes known."""


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


def watched(chunks: Relay, on_end: StreamEnd, max_bytes: int = 4_000_000) -> Relay:
    """`chunks` relayed untouched; once they ended whole, `on_end` gets the answer assembled
    from them (None if it could not be, or it grew past `max_bytes`). A broken or abandoned
    stream never calls it: nothing whole came of it."""
    return Relay(_watching(chunks, on_end, max_bytes), chunks.aclose)


async def _watching(
    chunks: Relay, on_end: StreamEnd, max_bytes: int
) -> AsyncGenerator[bytes, None]:
    copied: list[bytes] | None = []
    size = 0
    completed = False
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if copied is not None:
                    size += len(chunk)
                    copied = copied if size <= max_bytes else None
                    if copied is not None:
                        copied.append(chunk)
                yield chunk
        completed = True
    finally:
        if completed:
            on_end(assemble_stream(copied) if copied else None)
