"""Logprobs streams are rewritten line by line, whatever the chunk boundaries."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator

import orjson

from spotgate.gateway.relay import Relay
from spotgate.gateway.sse_normalise import needs_normalising, normalised
from tests.gateway.test_normalise import VLLM_CHUNK, VLLM_LOGPROBS
from tests.openai_schema import errors, validate


def relay_of(parts: list[bytes]) -> Relay:
    async def gen() -> AsyncGenerator[bytes, None]:
        for part in parts:
            yield part

    async def release() -> None:
        return None

    return Relay(gen(), release)


async def test_chunks_split_anywhere_come_out_whole_and_valid() -> None:
    chunk = copy.deepcopy(VLLM_CHUNK)
    chunk["choices"][0]["logprobs"] = VLLM_LOGPROBS
    assert errors("CreateChatCompletionStreamResponse", chunk)
    stream = (b"data: " + orjson.dumps(chunk) + b"\n\n") * 3 + b"data: [DONE]\n\n"
    parts = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    out = b"".join([piece async for piece in normalised(relay_of(parts))])
    events = [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]" and len(events) == 4
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", orjson.loads(event))


def test_only_chat_streams_with_logprobs_pay_for_it() -> None:
    assert needs_normalising("/v1/chat/completions", {"logprobs": True})
    assert not needs_normalising("/v1/chat/completions", {"stream": True})
    assert not needs_normalising("/v1/completions", {"logprobs": 2})
