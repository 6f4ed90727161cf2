"""Failover behaviour of the forwarder, against a hand-written upstream fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from spotgate.clock import ManualClock, SystemClock
from spotgate.errors import NoCapacity, UpstreamError
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.breaker import BreakerState
from spotgate.gateway.forwarding import Forwarder, Reply, StreamReply
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.selection import LeastOutstanding
from spotgate.gateway.upstream import UpstreamReply, WorkerUnreachable


class FakeStream:
    def __init__(self, status: int, chunks: list[bytes], break_after: int | None = None):
        self.status = status
        self._chunks = chunks
        self._break_after = break_after
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self._chunks):
            if self._break_after is not None and i >= self._break_after:
                raise WorkerUnreachable("connection reset")
            yield chunk

    async def read_all(self) -> bytes:
        return b"".join(self._chunks)

    async def close(self) -> None:
        self.closed = True


class FakeUpstream:
    """Each worker URL behaves as told: 'ok', 'down' (nothing listens), 'busy' (503),
    'slow-busy', 'bad' (400), 'breaks' (mid-stream), 'died' (the request was sent, the
    connection lost) or 'silent' (accepts the request, never answers)."""

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour
        self.calls: list[str] = []

    def _host(self, url: str) -> str:
        return url.split("/")[2]

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        host = self._host(url)
        self.calls.append(host)
        mode = self.behaviour[host]
        if mode == "silent":
            await asyncio.sleep(3600)
        if mode == "down":
            raise WorkerUnreachable("connection refused", sent=False) from ConnectionRefusedError()
        if mode == "died":
            raise WorkerUnreachable("connection lost before any response")
        if mode == "slow-busy":
            await asyncio.sleep(0.05)
            mode = "busy"
        if mode == "busy":
            return UpstreamReply(503, b'{"error": {"message": "overloaded"}}', "application/json")
        if mode == "bad":
            return UpstreamReply(400, b'{"error": {"message": "bad", "code": 400}}', "a/json")
        return UpstreamReply(200, f'{{"from": "{host}"}}'.encode(), "application/json")

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> FakeStream:
        host = self._host(url)
        self.calls.append(host)
        mode = self.behaviour[host]
        if mode == "silent":
            await asyncio.sleep(3600)
        if mode == "down":
            raise WorkerUnreachable("connection refused", sent=False) from ConnectionRefusedError()
        if mode == "died":
            raise WorkerUnreachable("connection lost before any response")
        if mode == "busy":
            return FakeStream(503, [b"{}"])
        chunks = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
        return FakeStream(200, chunks, break_after=1 if mode == "breaks" else None)

    async def close(self) -> None:
        pass


def make_forwarder(
    behaviour: dict[str, str], capacity_wait_s: float = 0.0, **options: Any
) -> tuple[Forwarder, WorkerRegistry, FakeUpstream, InFlight, PassiveHealth]:
    clock = SystemClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    for host in behaviour:
        registry.register(host, pool="p", model="m", engine="sim", url=f"http://{host}")
    upstream = FakeUpstream(behaviour)
    load = InFlight()
    health = PassiveHealth(clock, cooldown_s=60)
    forwarder = Forwarder(
        registry,
        upstream,
        LeastOutstanding(load),
        load,
        health,
        clock,
        max_attempts=3,
        capacity_wait_s=capacity_wait_s,
        **options,
    )
    return forwarder, registry, upstream, load, health


async def forward(forwarder: Forwarder) -> Reply:
    return await forwarder.forward("/v1/chat/completions", "m", b"{}", {}, {})


async def test_request_to_a_dead_worker_is_served_by_another() -> None:
    forwarder, _, upstream, load, health = make_forwarder({"dead": "down", "live": "ok"})
    replies = [await forward(forwarder) for _ in range(4)]
    assert all(r.status == 200 and r.worker_id == "live" for r in replies)
    assert upstream.calls.count("dead") == 1, "a failed worker sits out its cooldown"
    assert not health.available("dead")
    assert load.total() == 0


async def test_overloaded_worker_answer_is_retried_elsewhere() -> None:
    forwarder, _, _, _, _ = make_forwarder({"busy": "busy", "live": "ok"})
    for _ in range(3):
        assert (await forward(forwarder)).worker_id == "live"


async def test_client_errors_are_not_retried() -> None:
    forwarder, _, upstream, _, _ = make_forwarder({"a": "bad", "b": "bad"})
    reply = await forward(forwarder)
    assert reply.status == 400
    assert len(upstream.calls) == 1


async def test_all_workers_failing_is_a_502_whose_details_go_to_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forwarder, _, _, _, _ = make_forwarder({"worker-a": "down", "worker-b": "busy"})
    with pytest.raises(UpstreamError) as caught:
        await forward(forwarder)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unavailable"
    assert "2 tried" in caught.value.message
    assert "worker-" not in caught.value.message and "refused" not in caught.value.message
    assert "worker-b answered 503" in caplog.text


async def test_no_worker_for_the_model_is_a_503_with_retry_after() -> None:
    forwarder, _, _, _, _ = make_forwarder({})
    with pytest.raises(NoCapacity) as caught:
        await forward(forwarder)
    assert caught.value.status_code == 503
    assert caught.value.headers["Retry-After"]


async def test_request_waits_for_capacity_that_arrives() -> None:
    forwarder, registry, upstream, _, _ = make_forwarder({}, capacity_wait_s=5)
    upstream.behaviour["late"] = "ok"

    async def arrive() -> None:
        await asyncio.sleep(0.2)
        registry.register("late", pool="p", model="m", engine="sim", url="http://late")

    _, reply = await asyncio.gather(arrive(), forward(forwarder))
    assert reply.worker_id == "late"


async def test_stream_that_fails_before_the_first_byte_is_retried() -> None:
    forwarder, _, _, load, _ = make_forwarder({"dead": "down", "busy": "busy", "live": "ok"})
    for _ in range(3):
        result = await forwarder.forward_stream("/v1/chat/completions", "m", b"{}", {}, {})
        assert isinstance(result, StreamReply) and result.worker_id == "live"
        body = b"".join([chunk async for chunk in result.chunks])
        assert body.endswith(b"data: [DONE]\n\n")
    assert load.total() == 0


async def test_stream_broken_mid_way_ends_with_an_sse_error_not_a_hang() -> None:
    forwarder, _, _, load, health = make_forwarder({"flaky": "breaks"})
    result = await forwarder.forward_stream("/v1/chat/completions", "m", b"{}", {}, {})
    assert isinstance(result, StreamReply)
    body = b"".join([chunk async for chunk in result.chunks])
    assert b'"error"' in body and body.endswith(b"data: [DONE]\n\n")
    assert not health.available("flaky")
    assert load.total() == 0


async def test_a_worker_silent_past_the_first_byte_timeout_is_not_resent_elsewhere() -> None:
    forwarder, _, upstream, load, health = make_forwarder(
        {"silent": "silent"}, first_byte_timeout_s=0.05
    )
    with pytest.raises(UpstreamError) as caught:
        await forward(forwarder)
    assert caught.value.code == "worker_failed"
    assert upstream.calls == ["silent"]
    assert health.available("silent"), "a timeout is one failure, not proof of death"
    assert load.total() == 0


@pytest.mark.parametrize("path", ["post", "stream"])
async def test_a_worker_that_died_with_the_request_is_not_followed_by_another(path: str) -> None:
    forwarder, _, upstream, load, health = make_forwarder({"dies": "died", "live": "ok"})
    with pytest.raises(UpstreamError) as caught:  # the first pick of the rotation is "dies"
        if path == "post":
            await forward(forwarder)
        else:
            await forwarder.forward_stream("/v1/chat/completions", "m", b"{}", {}, {})
    assert caught.value.code == "worker_failed"
    assert upstream.calls == ["dies"], "the live worker never got the request"
    assert not health.available("dies")
    assert load.total() == 0


async def test_retries_stop_at_the_retry_deadline(caplog: pytest.LogCaptureFixture) -> None:
    forwarder, _, upstream, _, _ = make_forwarder(
        {"s1": "slow-busy", "s2": "slow-busy", "live": "ok"}, retry_deadline_s=0.01
    )
    with pytest.raises(UpstreamError):
        await forward(forwarder)
    assert "retry deadline" in caplog.text
    assert upstream.calls in (["s1"], ["s2"])


async def test_a_stream_whose_headers_never_come_is_not_resent_elsewhere() -> None:
    forwarder, _, upstream, load, _ = make_forwarder(
        {"silent": "silent"}, stream_first_byte_timeout_s=0.05
    )
    with pytest.raises(UpstreamError) as caught:
        await forwarder.forward_stream("/v1/chat/completions", "m", b"{}", {}, {})
    assert caught.value.code == "worker_failed" and upstream.calls == ["silent"]
    assert load.total() == 0


async def test_a_draining_worker_finishes_its_stream_and_gets_no_new_requests() -> None:
    forwarder, registry, _, load, _ = make_forwarder({"leaving": "ok", "staying": "ok"})
    streams = []
    for _ in range(2):
        result = await forwarder.forward_stream("/v1/chat/completions", "m", b"{}", {}, {})
        assert isinstance(result, StreamReply)
        streams.append(result)
    leaving = next(s for s in streams if s.worker_id == "leaving")
    first = await anext(leaving.chunks)
    registry.drain("leaving", "eviction notice")
    rest = b"".join([chunk async for chunk in leaving.chunks])
    assert (first + rest).endswith(b"data: [DONE]\n\n") and b"error" not in rest
    assert {(await forward(forwarder)).worker_id for _ in range(4)} == {"staying"}
    for stream in streams:
        if stream is not leaving:
            _ = [chunk async for chunk in stream.chunks]
    assert load.total() == 0


async def test_an_open_breaker_lets_one_trial_through_after_its_cooldown() -> None:
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    for host in ("flaky", "live"):
        registry.register(host, pool="p", model="m", engine="sim", url=f"http://{host}")
    upstream = FakeUpstream({"flaky": "down", "live": "ok"})
    load = InFlight()
    health = PassiveHealth(clock, cooldown_s=5)
    forwarder = Forwarder(registry, upstream, LeastOutstanding(load), load, health, clock)
    for _ in range(4):
        await forward(forwarder)
    assert upstream.calls.count("flaky") == 1
    clock.advance(5)
    upstream.behaviour["flaky"] = "ok"
    served = [(await forward(forwarder)).worker_id for _ in range(6)]
    assert upstream.calls.count("flaky") >= 2 and "flaky" in served
    assert health.state("flaky") is BreakerState.CLOSED
