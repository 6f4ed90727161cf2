"""Spillover: serve a request from a paid OpenAI-compatible endpoint when the fleet cannot.

Spot capacity comes and goes; a model whose pool has no ready worker, or
whose admission line is full, can still answer from a configured endpoint
(Azure AI Foundry / Azure OpenAI, or anything OpenAI-compatible). The reply
has the Forwarder's shapes, so routes relay it the same way, tagged with the
worker id `spillover:<name>` for headers and usage accounting.

It goes through the UpstreamClient port like worker traffic; the client
given must speak https for cloud targets (AiohttpUpstream does;
PooledHttpUpstream is http-only).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from spotgate.errors import UpstreamError
from spotgate.gateway.admission import PoolState
from spotgate.gateway.model_catalogue import ModelEntry, SpilloverTarget
from spotgate.gateway.relay import Relay, Release, once
from spotgate.gateway.sse_progress import SseRelay
from spotgate.gateway.upstream import UpstreamClient, UpstreamStream, WorkerUnreachable

if TYPE_CHECKING:
    from spotgate.gateway.forwarding import Reply, StreamReply

# Reply and StreamReply are imported where used: the Forwarder that wires
# spillover in imports this module, and a top-level import back would be circular.

WORKER_PREFIX = "spillover:"
_AZURE_SUFFIXES = (".azure.com", ".azure.us", ".azure.cn")


def should_spill(state: PoolState) -> bool:
    """Spill when waiting cannot help soon: no ready worker (a cold start takes minutes)
    or a full admission line (a 429 otherwise). A merely busy pool queues instead,
    because a slot usually frees within one generation and costs nothing extra."""
    return state.ready_workers == 0 or state.queue_full


def spillover_worker_id(target: SpilloverTarget) -> str:
    return WORKER_PREFIX + target.name


def is_azure(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host.endswith(_AZURE_SUFFIXES)


def target_url(target: SpilloverTarget, path: str) -> str:
    """`/v1/chat/completions` against base `.../openai/v1` is `.../openai/v1/chat/completions`:
    base_url carries the version, as the OpenAI SDK's does."""
    route = path.removeprefix("/v1") if path.startswith("/v1/") else path
    return target.base_url.rstrip("/") + route


class SpilloverClient:
    def __init__(self, upstream: UpstreamClient, secrets: Callable[[str], str | None]) -> None:
        """`secrets(name)` returns the key stored under a name (env var, Key Vault), or None."""
        self._upstream = upstream
        self._secrets = secrets

    async def close(self) -> None:
        await self._upstream.close()

    async def forward(
        self, entry: ModelEntry, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Reply:
        from spotgate.gateway.forwarding import Reply

        target, url, raw, sent = self._prepare(entry, path, body, headers)
        try:
            reply = await self._upstream.post(url, raw, sent)
        except WorkerUnreachable as exc:
            raise self._unreachable(target, exc) from exc
        return Reply(spillover_worker_id(target), reply.status, reply.body, reply.content_type)

    async def forward_stream(
        self, entry: ModelEntry, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> StreamReply | Reply:
        """A stream, or the endpoint's error answer as a Reply (nothing was streamed yet)."""
        from spotgate.gateway.forwarding import Reply, StreamReply

        target, url, raw, sent = self._prepare(entry, path, body, headers)
        worker_id = spillover_worker_id(target)
        try:
            stream = await self._upstream.open_stream(url, raw, sent)
        except WorkerUnreachable as exc:
            raise self._unreachable(target, exc) from exc
        if stream.status != 200:
            try:
                payload = await stream.read_all()
            except WorkerUnreachable:
                payload = b""
            finally:
                await stream.close()
            return Reply(worker_id, stream.status, payload, "application/json")
        close = once(stream.close)
        return StreamReply(worker_id, Relay(self._relay(worker_id, stream, close), close))

    def headers_for(self, target: SpilloverTarget) -> dict[str, str]:
        """Auth for the target: Bearer everywhere, plus `api-key`, which Azure OpenAI reads."""
        sent = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if target.api_key_env:
            key = self._secrets(target.api_key_env)
            if not key:
                raise UpstreamError(
                    f"Spillover target '{target.name}' has no key: the secret "
                    f"'{target.api_key_env}' is not set.",
                    code="spillover_misconfigured",
                )
            sent["Authorization"] = f"Bearer {key}"
            if is_azure(target.base_url):
                sent["api-key"] = key
        sent.update(target.extra_headers)
        return sent

    def _prepare(
        self, entry: ModelEntry, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[SpilloverTarget, str, bytes, dict[str, str]]:
        target = entry.spillover
        if target is None:
            raise ValueError(f"model {entry.name!r} has no spillover target")
        outgoing = {**body, "model": target.deployment or entry.name}
        sent = {**headers, **self.headers_for(target)}
        return target, target_url(target, path), orjson.dumps(outgoing), sent

    @staticmethod
    def _unreachable(target: SpilloverTarget, exc: WorkerUnreachable) -> UpstreamError:
        return UpstreamError(
            f"Spillover target '{target.name}' could not be reached: {exc}.",
            code="upstream_unavailable",
        )

    @staticmethod
    async def _relay(
        worker_id: str, stream: UpstreamStream, close: Release
    ) -> AsyncGenerator[bytes, None]:
        """Whole lines relayed, so a break never glues the error event onto half a line."""
        relay = SseRelay()
        try:
            async for chunk in stream.chunks():
                if out := relay.feed(chunk):
                    yield out
            if out := relay.flush():
                yield out
        except WorkerUnreachable:
            yield relay.fail(f"{worker_id} failed mid-stream")
        finally:
            await close()
