"""From a requested model to an answer: resolve, admit, forward to a worker, or spill over.

The order matters for cost: a pool that has no ready worker (cold, scaled to
zero, evicted) spills to its managed endpoint at once rather than making the
client wait; a pool that is merely busy queues the request, and spills only
when the queue is full or the wait runs out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

import orjson

from spotgate.errors import ModelNotFound, NoCapacity, UpstreamError
from spotgate.gateway.admission import (
    Admission,
    AdmissionTimeout,
    Admitted,
    PoolCapacity,
    QueueFull,
)
from spotgate.gateway.auto_model import AutoModelChooser
from spotgate.gateway.catalog import ModelCatalog, ResolvedModel, rewrite_model, wrong_endpoint
from spotgate.gateway.forwarding import Forwarder, Reply, StreamReply
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.relay import Relay
from spotgate.gateway.spillover import SpilloverClient, should_spill


def _holding(ticket: Admitted, chunks: Relay) -> Relay:
    """`chunks` holding the pool's admission slot until they end or are closed."""

    async def relayed() -> AsyncGenerator[bytes, None]:
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        finally:
            ticket.release()

    async def release() -> None:
        try:
            await chunks.aclose()
        finally:
            ticket.release()

    return Relay(relayed(), release)


class Router:
    def __init__(
        self,
        catalog: ModelCatalog,
        forwarder: Forwarder,
        admission: Admission,
        capacity: PoolCapacity,
        *,
        auto: AutoModelChooser | None = None,
        spillover: SpilloverClient | None = None,
        admission_wait_s: float = 30.0,
    ) -> None:
        self.catalog = catalog
        self.admission = admission
        self.capacity = capacity
        self._forwarder = forwarder
        self._auto = auto
        self._spillover = spillover
        self._admission_wait_s = admission_wait_s

    async def close(self) -> None:
        if self._spillover is not None:
            await self._spillover.close()

    async def resolve(
        self,
        model: str,
        body: dict[str, Any],
        allowed: Callable[[ModelEntry], bool] | None = None,
    ) -> ResolvedModel:
        """`allowed` narrows what `auto` may choose; a named model is checked by the caller."""
        if self._auto is not None and self.catalog.is_auto(model):
            return ResolvedModel.of(await self._auto.choose(body, allowed), model)
        resolved = self.catalog.resolve(model)
        if resolved is None:
            raise ModelNotFound(model)
        return resolved

    async def forward(
        self,
        path: str,
        resolved: ResolvedModel,
        raw: bytes,
        body: dict[str, Any],
        headers: dict[str, str],
        *,
        stream: bool,
        holds_slot: bool = False,
    ) -> Reply | StreamReply:
        """`holds_slot`: the caller took the pool's admission slot itself (a batch line, on
        spare capacity): no wait, no spillover, which would pay for what can wait."""
        resolved.check_endpoint(path)
        result = await self._forward(
            path, resolved, raw, body, headers, stream=stream, holds_slot=holds_slot
        )
        if isinstance(result, Reply) and _is_missing_route(result):
            refusal = wrong_endpoint(resolved.name, path, None)
            return replace(result, status=refusal.status_code, body=orjson.dumps(refusal.body()))
        return result

    async def _forward(
        self,
        path: str,
        resolved: ResolvedModel,
        raw: bytes,
        body: dict[str, Any],
        headers: dict[str, str],
        *,
        stream: bool,
        holds_slot: bool,
    ) -> Reply | StreamReply:
        served = resolved.served_name
        raw = rewrite_model(raw, body, served)
        if holds_slot:
            if stream:
                return await self._forwarder.forward_stream(path, served, raw, body, headers)
            return await self._forwarder.forward(path, served, raw, body, headers)
        can_spill = self._spillover is not None and resolved.spillover is not None
        pool = resolved.pool
        if can_spill and should_spill(
            self.admission.state(pool, self.capacity.ready_workers(pool))
        ):
            return await self._spill(path, resolved, body, headers, stream)
        try:
            ticket = await self.admission.acquire(pool, self._admission_wait_s)
        except (QueueFull, AdmissionTimeout):
            if can_spill:
                return await self._spill(path, resolved, body, headers, stream)
            raise
        released_by_stream = False
        try:
            if stream:
                result = await self._forwarder.forward_stream(path, served, raw, body, headers)
                if isinstance(result, StreamReply):
                    released_by_stream = True
                    return replace(result, chunks=_holding(ticket, result.chunks))
                return result
            return await self._forwarder.forward(path, served, raw, body, headers)
        except (NoCapacity, UpstreamError):
            if can_spill:
                return await self._spill(path, resolved, body, headers, stream)
            raise
        finally:
            if not released_by_stream:
                ticket.release()

    async def _spill(
        self,
        path: str,
        resolved: ResolvedModel,
        body: dict[str, Any],
        headers: dict[str, str],
        stream: bool,
    ) -> Reply | StreamReply:
        assert self._spillover is not None and resolved.entry is not None
        if stream:
            return await self._spillover.forward_stream(resolved.entry, path, body, headers)
        return await self._spillover.forward(resolved.entry, path, body, headers)


def _is_missing_route(reply: Reply) -> bool:
    """A worker's 404 that carries no OpenAI error: vLLM registers only the routes its
    model serves, so asking a chat model for embeddings gets FastAPI's `{"detail": "Not
    Found"}`; a 404 with a message (an unknown model name) is passed on as it is."""
    if reply.status != 404:
        return False
    try:
        parsed = orjson.loads(reply.body) if reply.body else None
    except orjson.JSONDecodeError:
        return True
    if not isinstance(parsed, dict):
        return True
    error = parsed.get("error")
    return not (isinstance(error, dict) and error.get("message")) and not parsed.get("message")
