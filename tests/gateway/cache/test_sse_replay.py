"""Stored body <-> SSE stream: replayed chunks validate, and assembling them gives it back."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from spotgate.engines.sim.generation import Completion
from spotgate.engines.sim.responses import ChatChunks, CompletionChunks
from spotgate.gateway.cache.sse_assemble import assemble_stream
from spotgate.gateway.cache.sse_replay import DONE, NotReplayable, replay_as_stream
from spotgate.gateway.normalise import normalise_chat_response, normalise_completion_response
from spotgate.gateway.sse_progress import sse_error
from tests.gateway.test_normalise import VLLM_CHAT, VLLM_COMPLETION, VLLM_LOGPROBS
from tests.openai_schema import validate

CONTENT = VLLM_CHAT["choices"][0]["message"]["content"]
USAGE = {"prompt_tokens": 37, "total_tokens": 45, "completion_tokens": 8}


def payloads(events: list[bytes]) -> list[dict[str, Any]]:
    """The JSON of each event, checking the SSE framing on the way."""
    out = []
    for event in events[:-1]:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        out.append(orjson.loads(event[len(b"data: ") : -2]))
    assert events[-1] == DONE
    return out


def resplit(events: list[bytes], size: int) -> list[bytes]:
    """The same bytes cut every `size` bytes, as a TCP relay may deliver them."""
    stream = b"".join(events)
    return [stream[i : i + size] for i in range(0, len(stream), size)]


@pytest.mark.parametrize("body", [VLLM_CHAT, normalise_chat_response(VLLM_CHAT)])
@pytest.mark.parametrize("include_usage", [True, False])
def test_replayed_chat_chunks_are_schema_valid(body: dict[str, Any], include_usage: bool) -> None:
    chunks = payloads(replay_as_stream(body, include_usage=include_usage))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["id"] == body["id"] and chunk["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == [] and usage_chunk["usage"] == USAGE
    assert all("usage" not in chunk for chunk in chunks)
    final = chunks[-1]["choices"][0]
    assert final["finish_reason"] == "stop" and final["delta"] == {}
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])
    pieces = [chunk["choices"][0]["delta"].get("content", "") for chunk in chunks]
    assert "".join(pieces) == CONTENT
    assert max(len(piece) for piece in pieces) <= 16


def test_chunk_size_is_respected() -> None:
    chunks = payloads(replay_as_stream(VLLM_CHAT, include_usage=False, chunk_chars=4))
    pieces = [chunk["choices"][0]["delta"].get("content", "") for chunk in chunks[1:-1]]
    assert pieces == [CONTENT[i : i + 4] for i in range(0, len(CONTENT), 4)]


@pytest.mark.parametrize("split", [None, 1, 7, 100])
def test_assemble_of_replay_round_trips_chat(split: int | None) -> None:
    events = replay_as_stream(VLLM_CHAT, include_usage=True)
    rebuilt = assemble_stream(events if split is None else resplit(events, split))
    assert rebuilt is not None
    validate("CreateChatCompletionResponse", rebuilt)
    expected = normalise_chat_response(VLLM_CHAT)
    for field in ("id", "object", "created", "model", "usage", "system_fingerprint"):
        assert rebuilt[field] == expected[field]
    choice = rebuilt["choices"][0]
    assert choice["message"]["content"] == CONTENT and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"


def test_assembled_chat_replays_identically() -> None:
    events = replay_as_stream(VLLM_CHAT, include_usage=True)
    rebuilt = assemble_stream(events)
    assert rebuilt is not None
    assert replay_as_stream(rebuilt, include_usage=True) == events


def test_without_usage_chunk_the_body_has_no_usage() -> None:
    rebuilt = assemble_stream(replay_as_stream(VLLM_CHAT, include_usage=False))
    assert rebuilt is not None and "usage" not in rebuilt
    validate("CreateChatCompletionResponse", rebuilt)


def test_several_choices_round_trip() -> None:
    body = copy.deepcopy(normalise_chat_response(VLLM_CHAT))
    second = copy.deepcopy(body["choices"][0])
    second["index"] = 1
    second["message"]["content"] = "Paris, of course, is the capital of France."
    second["finish_reason"] = "length"
    body["choices"].append(second)
    events = replay_as_stream(body, include_usage=True)
    for chunk in payloads(events):
        validate("CreateChatCompletionStreamResponse", chunk)
    rebuilt = assemble_stream(resplit(events, 5))
    assert rebuilt is not None
    assert [c["message"]["content"] for c in rebuilt["choices"]] == [
        CONTENT,
        "Paris, of course, is the capital of France.",
    ]
    assert [c["finish_reason"] for c in rebuilt["choices"]] == ["stop", "length"]


def test_tool_calls_round_trip() -> None:
    body = copy.deepcopy(normalise_chat_response(VLLM_CHAT))
    message = body["choices"][0]["message"]
    message["content"] = None
    message["tool_calls"] = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    events = replay_as_stream(body, include_usage=True, chunk_chars=8)
    for chunk in payloads(events):
        validate("CreateChatCompletionStreamResponse", chunk)
    rebuilt = assemble_stream(resplit(events, 3))
    assert rebuilt is not None
    validate("CreateChatCompletionResponse", rebuilt)
    assert rebuilt["choices"][0]["message"]["tool_calls"] == message["tool_calls"]
    assert rebuilt["choices"][0]["message"]["content"] is None
    assert rebuilt["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_round_trips_before_content() -> None:
    body = copy.deepcopy(normalise_chat_response(VLLM_CHAT))
    body["choices"][0]["message"]["reasoning"] = "The user asks for a capital. France: Paris."
    events = replay_as_stream(body, include_usage=False)
    deltas = [chunk["choices"][0]["delta"] for chunk in payloads(events)]
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning" not in d for d in deltas[first_content:])
    rebuilt = assemble_stream(events)
    assert rebuilt is not None
    assert (
        rebuilt["choices"][0]["message"]["reasoning"] == body["choices"][0]["message"]["reasoning"]
    )


@pytest.mark.parametrize("include_usage", [True, False])
def test_text_completion_round_trips(include_usage: bool) -> None:
    events = replay_as_stream(VLLM_COMPLETION, include_usage=include_usage, chunk_chars=5)
    chunks = payloads(events)
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    if include_usage:
        validate("CreateCompletionResponse", chunks[-1])  # choices [] with usage
        chunks = chunks[:-1]
    validate("CreateCompletionResponse", chunks[-1])  # the closing chunk, finish_reason set
    text = "".join(chunk["choices"][0]["text"] for chunk in chunks)
    assert text == VLLM_COMPLETION["choices"][0]["text"]
    rebuilt = assemble_stream(resplit(events, 9))
    assert rebuilt is not None
    validate("CreateCompletionResponse", rebuilt)
    expected = normalise_completion_response(VLLM_COMPLETION)
    assert rebuilt["choices"][0]["text"] == expected["choices"][0]["text"]
    assert rebuilt["choices"][0]["finish_reason"] == "length"
    assert rebuilt.get("usage") == (expected["usage"] if include_usage else None)


def _sim_stream(chunks: ChatChunks | CompletionChunks, choice: Completion) -> list[bytes]:
    """A stream shaped exactly as vLLM 0.32 sends it (the sim copies vLLM's chunks)."""
    events = [chunks.opening(1)]
    events += [chunks.token(0, piece) for piece in choice.pieces[:-1]]
    events += [chunks.token(0, choice.pieces[-1], choice), chunks.usage(5, [choice]), DONE]
    return events


def test_assembles_a_vllm_shaped_chat_stream() -> None:
    choice = Completion((" The", " capital", " is", " Paris", "."), "stop")
    rebuilt = assemble_stream(_sim_stream(ChatChunks("chatcmpl-x", 1795424241, "m"), choice))
    assert rebuilt is not None
    validate("CreateChatCompletionResponse", rebuilt)
    assert rebuilt["choices"][0]["message"]["content"] == " The capital is Paris."
    assert rebuilt["choices"][0]["stop_reason"] is None
    assert rebuilt["usage"] == {"prompt_tokens": 5, "total_tokens": 10, "completion_tokens": 5}


def test_assembles_a_vllm_shaped_completion_stream() -> None:
    choice = Completion((" Paris", ".", "\n"), "stop", stop_reason="\n")
    events = _sim_stream(CompletionChunks("cmpl-x", 1795424241, "m"), choice)
    rebuilt = assemble_stream(events)
    assert rebuilt is not None
    validate("CreateCompletionResponse", rebuilt)
    assert rebuilt["choices"][0]["text"] == " Paris.\n"
    assert rebuilt["choices"][0]["stop_reason"] == "\n"


def test_unfinished_or_failed_streams_are_not_assembled() -> None:
    events = replay_as_stream(VLLM_CHAT, include_usage=True)
    assert assemble_stream(events[:-1]) is None  # no [DONE]
    assert assemble_stream([]) is None
    assert assemble_stream([DONE]) is None
    worker_lost = [*events[:3], sse_error("worker w-1 failed mid-stream", "worker_lost"), DONE]
    assert assemble_stream(worker_lost) is None
    no_finish = [e for e in events if b'"finish_reason":"stop"' not in e]
    assert assemble_stream(no_finish) is None
    assert assemble_stream([*events[:-1], b"event: error\ndata: {}\n\n", DONE]) is None
    assert assemble_stream([*events[:2], b"data: {not json\n\n", DONE]) is None


def test_streams_with_what_a_body_cannot_hold_are_not_assembled() -> None:
    chunks = payloads(replay_as_stream(VLLM_CHAT, include_usage=False))

    def stream(mutate: Any) -> list[bytes]:
        changed = copy.deepcopy(chunks)
        mutate(changed[1]["choices"][0])
        return [b"data: " + orjson.dumps(c) + b"\n\n" for c in changed] + [DONE]

    assert assemble_stream(stream(lambda c: None)) is not None
    assert assemble_stream(stream(lambda c: c.update(logprobs=VLLM_LOGPROBS))) is None
    assert assemble_stream(stream(lambda c: c.update(token_ids=[1, 2]))) is None
    assert assemble_stream(stream(lambda c: c["delta"].update(audio={"id": "a"}))) is None
    assert assemble_stream(stream(lambda c: c["delta"].update(role="user"))) is None


def test_comments_and_crlf_framing_are_tolerated() -> None:
    events = replay_as_stream(VLLM_CHAT, include_usage=True)
    framed = [b": keep-alive\r\n\r\n"] + [e.replace(b"\n", b"\r\n") for e in events]
    rebuilt = assemble_stream(framed)
    assert rebuilt is not None
    assert rebuilt["choices"][0]["message"]["content"] == CONTENT


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["choices"][0].update(logprobs=VLLM_LOGPROBS),
        lambda b: b["choices"][0].update(token_ids=[1, 2, 3]),
        lambda b: b["choices"][0]["message"].update(annotations=[{"type": "url_citation"}]),
        lambda b: b["choices"][0].update(finish_reason=None),
        lambda b: b.update(object="embedding"),
        lambda b: b.update(prompt_logprobs=[None, {"1": {"logprob": -1.0}}]),
    ],
)
def test_bodies_a_stream_cannot_reproduce_are_not_replayed(mutate: Any) -> None:
    body = copy.deepcopy(VLLM_CHAT)
    mutate(body)
    with pytest.raises(NotReplayable):
        replay_as_stream(body, include_usage=True)
