"""Stream resumption: a worker dying mid-answer must not show in the client's stream.

The workers here are the real simulator app called in-process, so answers,
chunk shapes, usage and `continue_final_message` behave as on the sim stack;
only the transport is scripted: a stream is cut after N bytes (the client
side of a killed worker), or the worker sends an error event there instead.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from spotgate.clock import SystemClock
from spotgate.engines.sim import tokenizer
from spotgate.engines.sim.config import SimConfig
from spotgate.engines.sim.server import create_sim_app
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.breaker import BreakerState
from spotgate.gateway.forwarding import Forwarder, StreamReply
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.quarantine import RequestQuarantine
from spotgate.gateway.selection import LeastOutstanding
from spotgate.gateway.upstream import UpstreamReply, WorkerUnreachable

CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "tell me a long story about a fox"}]


@dataclass
class Cut:
    """Fail a stream once `at` bytes reached the gateway: drop the connection, or send
    an error event (at the next event boundary, as vLLM would)."""

    at: int
    error_event: bool = False
    fraction: bool = False  # `at` is a per-mille fraction of the stream's length


class ScriptedStream:
    def __init__(self, data: bytes, cut: Cut | None, sizes: list[int]) -> None:
        self.status = 200
        self._data = data
        self._cut = cut
        self._sizes = sizes
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        data, end, failure = self._data, len(self._data), b""
        if self._cut is not None:
            at = self._cut.at * len(data) // 1000 if self._cut.fraction else self._cut.at
            end = min(at, len(data))
            if self._cut.error_event:
                boundary = data.find(b"\n\n", end)
                end = len(data) if boundary < 0 else boundary + 2
                error = {"error": {"message": "engine died", "type": "InternalServerError"}}
                failure = b"data: " + orjson.dumps({**error, "code": 500}) + b"\n\n"
                failure += b"data: [DONE]\n\n"
        position = 0
        for size in itertools.cycle(self._sizes):
            if position >= end:
                break
            yield data[position : min(end, position + size)]
            position += size
        if failure:
            yield failure
        elif self._cut is not None and end < len(data):
            raise WorkerUnreachable("connection lost mid-response (closed by worker)")

    async def read_all(self) -> bytes:
        return self._data

    async def close(self) -> None:
        self.closed = True


class SimWorkers:
    """`UpstreamClient` over one in-process sim; the n-th stream opened, whichever worker
    it went to, fails as `plan[n]` says (the last entry repeats)."""

    def __init__(self, plan: list[Cut | None], sizes: list[int] | None = None):
        app = create_sim_app(SimConfig(ttft_ms=0, tokens_per_s=0))
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://w"
        )
        self.plan = plan
        self.sizes = sizes or [4096]
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.streams: list[ScriptedStream] = []

    async def _call(self, url: str, body: bytes) -> httpx.Response:
        host, path = url.split("/")[2], "/" + url.split("/", 3)[3]
        self.requests.append((host, orjson.loads(body)))
        return await self._client.post(path, content=body)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        reply = await self._call(url, body)
        return UpstreamReply(reply.status_code, reply.content, "application/json")

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> ScriptedStream:
        reply = await self._call(url, body)
        cut = self.plan.pop(0) if len(self.plan) > 1 else self.plan[0]
        stream = ScriptedStream(reply.content, cut, self.sizes)
        stream.status = reply.status_code
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        await self._client.aclose()


def make(
    workers: SimWorkers, hosts: list[str], **options: Any
) -> tuple[Forwarder, InFlight, PassiveHealth, WorkerRegistry]:
    clock = SystemClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    for host in hosts:
        registry.register(host, pool="p", model="sim-model", engine="sim", url=f"http://{host}")
    load = InFlight()
    health = PassiveHealth(clock, cooldown_s=60)
    forwarder = Forwarder(registry, workers, LeastOutstanding(load), load, health, clock, **options)
    return forwarder, load, health, registry


def chat_request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "sim-model",
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 40,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


async def stream_through(
    forwarder: Forwarder, body: dict[str, Any], path: str = CHAT
) -> tuple[StreamReply, list[Any]]:
    """The client's view: each SSE event's payload, parsed ('[DONE]' kept as a string)."""
    result = await forwarder.forward_stream(path, "sim-model", orjson.dumps(body), body, {})
    assert isinstance(result, StreamReply)
    raw = b"".join([chunk async for chunk in result.chunks])
    assert raw.endswith(b"\n\n"), raw[-200:]
    events: list[Any] = []
    for block in raw.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        assert all(line.startswith(b"data: ") for line in lines), block
        assert len(lines) == 1, f"an event with several data lines: {block!r}"
        payload = lines[0][6:]
        events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return result, events


async def reference(workers: SimWorkers, body: dict[str, Any]) -> dict[str, Any]:
    """The uninterrupted answer, asked non-streamed."""
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    reply = await workers._client.post(CHAT, json=plain)
    return dict(reply.json())


def read(events: list[Any]) -> dict[str, Any]:
    errors = [e for e in events if e != "[DONE]" and "error" in e]
    chunks = [e for e in events if e != "[DONE]" and "error" not in e]
    choices = [c for e in chunks for c in e.get("choices", [])]
    return {
        "errors": errors,
        "done": events.count("[DONE]"),
        "last_is_done": events[-1] == "[DONE]",
        "ids": {e.get("id") for e in chunks},
        "created": {e.get("created") for e in chunks},
        "models": {e.get("model") for e in chunks},
        "roles": sum(1 for c in choices if "role" in c.get("delta", {})),
        "text": "".join(c.get("delta", {}).get("content") or c.get("text") or "" for c in choices),
        "finish": [c["finish_reason"] for c in choices if c.get("finish_reason")],
        "usage": [e["usage"] for e in chunks if e.get("usage")],
    }


@pytest.mark.parametrize("sizes", [[4096], [1], [7, 64, 13]], ids=["whole", "bytes", "mixed"])
@pytest.mark.parametrize("per_mille", [0, 50, 230, 500, 810, 960, 985, 999])
async def test_a_cut_stream_reads_as_one_uninterrupted_answer(
    sizes: list[int], per_mille: int
) -> None:
    workers = SimWorkers([Cut(per_mille, fraction=True), None], sizes)
    forwarder, load, health, _ = make(workers, ["a", "b"])
    body = chat_request()
    result, events = await stream_through(forwarder, body)
    expected = await reference(workers, body)
    seen = read(events)
    assert result.worker_id == "a" and seen["errors"] == []
    assert len(workers.requests) == (1 if per_mille == 999 else 2)  # 999: only [DONE] was cut
    assert seen["done"] == 1 and seen["last_is_done"]
    assert len(seen["ids"]) == len(seen["created"]) == len(seen["models"]) == 1
    assert seen["roles"] == 1
    assert seen["text"] == expected["choices"][0]["message"]["content"]
    assert seen["finish"] == ["length"]
    assert len(seen["usage"]) == 1
    usage = seen["usage"][0]
    assert usage["prompt_tokens"] == expected["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == expected["usage"]["completion_tokens"] == 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + 40
    assert load.total() == 0 and all(s.closed for s in workers.streams)
    assert health.state("a") is BreakerState.OPEN
    await workers.close()


async def test_the_continuation_asks_only_for_the_missing_tail() -> None:
    workers = SimWorkers([Cut(1500), None])
    forwarder, _, _, _ = make(workers, ["a", "b"])
    body = chat_request(max_tokens=None, max_completion_tokens=30, stream_options=None)
    _, events = await stream_through(forwarder, body)
    seen = read(events)
    ((_, continuation),) = [(h, b) for h, b in workers.requests if h == "b"]
    prefix = continuation["messages"][-1]
    assert continuation["messages"][:-1] == QUESTION and prefix["role"] == "assistant"
    assert seen["text"].startswith(prefix["content"]) and prefix["content"]
    assert continuation["continue_final_message"] is True
    assert continuation["add_generation_prompt"] is False
    before = len(list(tokenizer.pieces(prefix["content"])))
    assert continuation["max_completion_tokens"] == 30 - before
    assert "max_tokens" not in continuation or continuation["max_tokens"] is None
    assert continuation["stream_options"] == {"include_usage": True}, "to count the tokens"
    assert seen["usage"] == [], "usage was not asked for, so none is sent"
    assert len(seen["text"]) > len(prefix["content"])
    await workers.close()


async def test_a_stream_resumes_after_an_error_event_and_a_second_death() -> None:
    workers = SimWorkers([Cut(900, error_event=True), Cut(2500), None], [33])
    forwarder, _, health, _ = make(workers, ["a", "b", "c"])
    body = chat_request(max_tokens=60)
    _, events = await stream_through(forwarder, body)
    expected = await reference(workers, body)
    seen = read(events)
    assert seen["errors"] == [] and seen["roles"] == 1 and len(seen["ids"]) == 1
    assert seen["text"] == expected["choices"][0]["message"]["content"]
    assert seen["usage"][0]["completion_tokens"] == 60
    assert seen["usage"][0]["prompt_tokens"] == expected["usage"]["prompt_tokens"]
    first, second, third = (host for host, _ in workers.requests)
    assert first == "a" and {second, third} == {"b", "c"}
    assert not health.available(second), "a connection lost mid-stream opens the breaker"
    assert health.available("a"), "an error event is one failure: the worker still answers"
    await workers.close()


async def test_a_text_completion_resumes_with_its_text_appended_to_the_prompt() -> None:
    workers = SimWorkers([Cut(1200), None], [50])
    forwarder, _, _, _ = make(workers, ["a", "b"])
    body = {
        "model": "sim-model",
        "prompt": "Once upon a time",
        "max_tokens": 30,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, events = await stream_through(forwarder, body, "/v1/completions")
    seen = read(events)
    (_, continuation) = workers.requests[1]
    sent_before = continuation["prompt"].removeprefix("Once upon a time")
    assert sent_before and seen["text"].startswith(sent_before)
    assert seen["errors"] == [] and len(seen["ids"]) == 1 and seen["finish"] == ["length"]
    assert {e["object"] for e in events[:-1]} == {"text_completion"}
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    original = await workers._client.post("/v1/completions", json=plain)
    usage = seen["usage"][0]
    assert usage["prompt_tokens"] == original.json()["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == 30
    await workers.close()


async def test_a_break_after_the_last_token_only_fetches_the_missing_usage() -> None:
    workers = SimWorkers([Cut(0), None])
    body = chat_request(max_tokens=5)
    full = (await workers._client.post(CHAT, json=body)).content
    workers.plan = [Cut(full.rindex(b"data: {")), None]  # cut just before the usage chunk
    forwarder, _, _, _ = make(workers, ["a", "b"])
    _, events = await stream_through(forwarder, body)
    seen = read(events)
    expected = await reference(workers, body)
    assert seen["text"] == expected["choices"][0]["message"]["content"]
    assert seen["finish"] == ["length"] and seen["errors"] == []
    (usage,) = seen["usage"]
    assert usage["completion_tokens"] == 5, "the usage-only continuation's token is not counted"
    assert usage["prompt_tokens"] == expected["usage"]["prompt_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5
    assert workers.requests[-1][1]["max_tokens"] == 1
    await workers.close()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"n": 2}, "more than one choice"),
        ({"response_format": {"type": "json_object"}}, "structured output"),
    ],
)
async def test_a_stream_that_cannot_be_resumed_ends_with_an_error_then_done(
    extra: dict[str, Any], why: str
) -> None:
    workers = SimWorkers([Cut(900), None])
    forwarder, load, health, _ = make(workers, ["a", "b"])
    _, events = await stream_through(forwarder, chat_request(**extra))
    seen = read(events)
    assert len(seen["errors"]) == 1 and seen["last_is_done"] and seen["done"] == 1
    assert seen["errors"][0]["error"]["code"] == "worker_lost"
    assert len(workers.requests) == 1, "no continuation is attempted"
    assert load.total() == 0 and not health.available("a")
    assert why in seen["errors"][0]["error"]["message"] and events[-2] == seen["errors"][0]


async def test_resumption_gives_up_after_its_budget() -> None:
    workers = SimWorkers([Cut(700)])
    lenient = RequestQuarantine(SystemClock(), deaths_to_quarantine=10)
    forwarder, load, _, _ = make(
        workers, ["a", "b", "c", "d"], stream_resumes=2, quarantine=lenient
    )
    _, events = await stream_through(forwarder, chat_request())
    seen = read(events)
    assert len(workers.requests) == 3
    assert len(seen["errors"]) == 1 and seen["last_is_done"]
    assert "resumed 2 time(s)" in seen["errors"][0]["error"]["message"]
    assert len(seen["ids"]) == 1 and seen["roles"] == 1
    assert load.total() == 0


async def test_no_other_worker_ends_the_stream_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    workers = SimWorkers([Cut(700)])
    forwarder, _, _, _ = make(workers, ["a"])
    _, events = await stream_through(forwarder, chat_request())
    seen = read(events)
    message = seen["errors"][0]["error"]["message"]
    assert "resuming it on another worker failed" in message and seen["last_is_done"]
    assert "worker a" not in message, "the client is not told worker names"
    assert "no other worker" in caplog.text, "the operator is"


async def test_no_other_worker_within_the_deadline_ends_the_stream_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    workers = SimWorkers([Cut(700)])
    forwarder, _, health, _ = make(workers, ["a", "b"], resume_wait_s=0.1)
    health.failed("b", fatal=True)  # b is there but its breaker is open
    forwarder_b_free = health.available("b")
    _, events = await stream_through(forwarder, chat_request())
    seen = read(events)
    assert not forwarder_b_free
    assert "resuming it on another worker failed" in seen["errors"][0]["error"]["message"]
    assert seen["last_is_done"] and "within 0.1 s" in caplog.text


async def test_a_worker_arriving_while_the_stream_waits_takes_it_over() -> None:
    workers = SimWorkers([Cut(700), None])
    forwarder, _, _, registry = make(workers, ["a"], resume_wait_s=5)
    body = chat_request()
    result = await forwarder.forward_stream(CHAT, "sim-model", orjson.dumps(body), body, {})
    assert isinstance(result, StreamReply)
    received = []
    async for chunk in result.chunks:
        received.append(chunk)
        if len(received) == 1:
            registry.register("late", pool="p", model="sim-model", engine="sim", url="http://late")
    assert b'"error"' not in b"".join(received)
    assert workers.requests[-1][0] == "late"


async def test_an_error_event_about_the_request_is_passed_on_not_resumed() -> None:
    class BadRequestStream(ScriptedStream):
        async def chunks(self) -> AsyncIterator[bytes]:
            yield b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
            yield b'data: {"error": {"message": "bad logits processor", "code": 400}}\n\n'
            yield b"data: [DONE]\n\n"

    workers = SimWorkers([None])
    forwarder, _, health, _ = make(workers, ["a", "b"])

    async def open_bad(url: str, body: bytes, headers: dict[str, str]) -> ScriptedStream:
        workers.requests.append((url, orjson.loads(body)))
        return BadRequestStream(b"", None, [1])

    workers.open_stream = open_bad  # type: ignore[method-assign]
    _, events = await stream_through(forwarder, chat_request())
    seen = read(events)
    assert seen["errors"][0]["error"]["message"] == "bad logits processor"
    assert seen["last_is_done"] and len(workers.requests) == 1
    assert health.available("a")


async def test_a_tool_call_stream_is_not_resumed() -> None:
    class ToolCallStream(ScriptedStream):
        async def chunks(self) -> AsyncIterator[bytes]:
            yield b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
            call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}
            delta = {"tool_calls": [call]}
            yield b"data: " + orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": delta}]})
            yield b'\n\ndata: {"id"'  # and dies mid-event
            raise WorkerUnreachable("connection lost mid-response")

    workers = SimWorkers([None])
    forwarder, _, _, _ = make(workers, ["a", "b"])

    async def open_tool(url: str, body: bytes, headers: dict[str, str]) -> ScriptedStream:
        workers.requests.append((url, orjson.loads(body)))
        return ToolCallStream(b"", None, [1])

    workers.open_stream = open_tool  # type: ignore[method-assign]
    _, events = await stream_through(forwarder, chat_request())
    seen = read(events)
    assert "tool call" in seen["errors"][0]["error"]["message"]
    assert seen["last_is_done"] and len(workers.requests) == 1


async def test_a_client_leaving_mid_resume_releases_everything() -> None:
    workers = SimWorkers([Cut(700), None], [40])
    forwarder, load, _, _ = make(workers, ["a", "b"])
    body = chat_request()
    result = await forwarder.forward_stream(CHAT, "sim-model", orjson.dumps(body), body, {})
    assert isinstance(result, StreamReply)
    chunks = result.chunks
    seen = 0
    async for _ in chunks:
        seen += 1
        if len(workers.streams) == 2:
            break
    await chunks.aclose()  # type: ignore[attr-defined]
    assert seen and load.total() == 0 and all(s.closed for s in workers.streams)


async def test_the_continuation_names_the_model_as_workers_do_not_as_the_client_did() -> None:
    workers = SimWorkers([Cut(700), None])
    forwarder, _, _, _ = make(workers, ["a", "b"])
    body = chat_request(model="my-alias")  # a catalogue alias the router resolved
    raw = orjson.dumps({**body, "model": "sim-model"})
    result = await forwarder.forward_stream(CHAT, "sim-model", raw, body, {})
    assert isinstance(result, StreamReply)
    text = b"".join([chunk async for chunk in result.chunks])
    assert b'"error"' not in text and workers.requests[1][1]["model"] == "sim-model"


async def test_a_break_between_the_last_token_and_its_finish_reason_is_closed_by_the_gateway() -> (
    None
):
    class NoFinishStream(ScriptedStream):
        async def chunks(self) -> AsyncIterator[bytes]:
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            yield b"data: " + orjson.dumps({"id": "x", "created": 1, "choices": [role]}) + b"\n\n"
            for word in ("one", " two"):
                token = {"index": 0, "delta": {"content": word}, "finish_reason": None}
                yield b"data: " + orjson.dumps({"id": "x", "choices": [token]}) + b"\n\n"
            raise WorkerUnreachable("connection lost mid-response")

    workers = SimWorkers([None])
    forwarder, _, _, _ = make(workers, ["a", "b"])

    async def open_cut(url: str, body: bytes, headers: dict[str, str]) -> ScriptedStream:
        workers.requests.append((url, orjson.loads(body)))
        return NoFinishStream(b"", None, [1])

    workers.open_stream = open_cut  # type: ignore[method-assign]
    _, events = await stream_through(forwarder, chat_request(max_tokens=2, stream_options=None))
    seen = read(events)
    assert seen["text"] == "one two" and seen["finish"] == ["length"] and seen["errors"] == []
    assert seen["ids"] == {"x"} and seen["last_is_done"]
    assert len(workers.requests) == 1, "nothing was missing but the finish and [DONE]"


async def test_a_client_continuing_its_own_assistant_message_is_resumed_after_it() -> None:
    workers = SimWorkers([Cut(1100), None], [29])
    forwarder, _, _, _ = make(workers, ["a", "b"])
    plain = await reference(workers, chat_request())  # the sim continues its own words
    opening = plain["choices"][0]["message"]["content"].split(" ")[0]
    messages = [*QUESTION, {"role": "assistant", "content": opening}]
    body = chat_request(messages=messages, continue_final_message=True, add_generation_prompt=False)
    _, events = await stream_through(forwarder, body)
    expected = await reference(workers, body)
    seen = read(events)
    continuation = workers.requests[1][1]
    assert continuation["messages"][:-1] == QUESTION
    assert continuation["messages"][-1]["content"].startswith(opening + seen["text"][:5])
    assert seen["text"] == expected["choices"][0]["message"]["content"]
    assert seen["usage"][0]["prompt_tokens"] == expected["usage"]["prompt_tokens"]
    await workers.close()
