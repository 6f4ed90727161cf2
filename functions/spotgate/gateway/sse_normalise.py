"""Chat stream chunks made valid under OpenAI's schema, and a usage chunk taken back out.

vLLM's chunks validate as they are, except when logprobs were requested:
each choice's `logprobs` then lacks the `refusal` the schema requires, and
strict clients reject the chunk. Rewriting means parsing every chunk, so it
is done only for those streams; everything else is relayed byte for byte.

The gateway asks every stream for its usage (`include_usage`), since that is
what metering counts; a client that did not ask for it does not get the
usage chunk, as from OpenAI.
"""

from __future__ import annotations

from typing import Any

import orjson

from spotgate.gateway.normalise import normalise_chunk
from spotgate.gateway.relay import Relay
from spotgate.gateway.sse_lines import rewritten

_DATA = b"data: {"


def needs_normalising(path: str, body: dict[str, Any]) -> bool:
    return path.endswith("/chat/completions") and bool(body.get("logprobs"))


def asks_for_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def with_usage(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the gateway sends it when it counts tokens: usage asked for."""
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    return {**body, "stream_options": {**options, "include_usage": True}}


def normalised(chunks: Relay) -> Relay:
    """`chunks` with each `data: {...}` line rewritten by `normalise_chunk`."""
    return rewritten(chunks, _normalise_line)


def without_usage_chunk(chunks: Relay) -> Relay:
    """`chunks` without the final usage-only chunk (empty `choices`, a `usage`)."""
    return rewritten(chunks, _drop_usage_line)


def _normalise_line(line: bytes) -> bytes:
    if not line.startswith(_DATA):
        return line
    try:
        event = orjson.loads(line[6:])
    except orjson.JSONDecodeError:
        return line  # not ours to judge: relayed as sent
    if not isinstance(event, dict):
        return line
    return b"data: " + orjson.dumps(normalise_chunk(event))


def _drop_usage_line(line: bytes) -> bytes | None:
    if line.startswith(_DATA) and b'"usage"' in line:
        try:
            event = orjson.loads(line[6:])
        except orjson.JSONDecodeError:
            return line
        if isinstance(event, dict) and event.get("choices") == [] and event.get("usage"):
            return None
    return line
