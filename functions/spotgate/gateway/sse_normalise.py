"""Chat stream chunks made valid under OpenAI's schema, for the streams that need it.

vLLM's chunks validate as they are, except when logprobs were requested:
each choice's `logprobs` then lacks the `refusal` the schema requires, and
strict clients reject the chunk. Rewriting means parsing every chunk, so it
is done only for those streams; everything else is relayed byte for byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from spotgate.gateway.normalise import normalise_chunk
from spotgate.gateway.relay import Relay

_DATA = b"data: {"


def needs_normalising(path: str, body: dict[str, Any]) -> bool:
    return path.endswith("/chat/completions") and bool(body.get("logprobs"))


def normalised(chunks: Relay) -> Relay:
    """`chunks` with each `data: {...}` line rewritten by `normalise_chunk`; lines split
    across chunks are joined first, so a rewrite never sees half an event."""
    return Relay(_normalising(chunks), chunks.aclose)


async def _normalising(chunks: Relay) -> AsyncGenerator[bytes, None]:
    pending = b""
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            whole, newline, pending = (pending + chunk).rpartition(b"\n")
            if newline:
                yield _rewrite(whole + newline)
    if pending:
        yield _rewrite(pending)


def _rewrite(block: bytes) -> bytes:
    lines = block.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(_DATA):
            try:
                event = orjson.loads(line[6:])
            except orjson.JSONDecodeError:
                continue  # not ours to judge: relayed as sent
            if isinstance(event, dict):
                lines[i] = b"data: " + orjson.dumps(normalise_chunk(event))
    return b"\n".join(lines)
