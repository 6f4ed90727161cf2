"""vLLM's API key on every call to a worker, so a worker's port alone serves nobody.

Workers start vLLM with `--api-key` from the `vllm-api-key` secret (Key Vault on
Azure, `VLLM_API_KEY` locally), which guards `/v1/*`. The gateway is the one
caller that knows it: this wrapper around the worker client adds it as a bearer
token, read from the secret store on each call so a rotated key is sent as soon
as the store has it. Spillover endpoints get their own client and their own
key, never this one. Without the secret nothing is added, which is what a
worker started without `--api-key` expects.
"""

from __future__ import annotations

from collections.abc import Callable

from spotgate.gateway.upstream import UpstreamClient, UpstreamReply, UpstreamStream
from spotgate.secret_store import WORKER_API_KEY


class WorkerKeyUpstream:
    """An `UpstreamClient` that sends `Authorization: Bearer <vllm-api-key>` to workers."""

    def __init__(self, inner: UpstreamClient, secrets: Callable[[str], str | None]) -> None:
        self._inner = inner
        self._secrets = secrets

    def _with_key(self, headers: dict[str, str]) -> dict[str, str]:
        key = self._secrets(WORKER_API_KEY)
        if not key:
            return headers
        # the client's own Authorization never reaches a worker: it is the gateway's key
        kept = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return {**kept, "Authorization": f"Bearer {key}"}

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        return await self._inner.post(url, body, self._with_key(headers))

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamStream:
        return await self._inner.open_stream(url, body, self._with_key(headers))

    async def close(self) -> None:
        await self._inner.close()
