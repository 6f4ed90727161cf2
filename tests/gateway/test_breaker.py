"""The per-worker circuit breaker, the health view built on it, and the active probe."""

from __future__ import annotations

import asyncio

import pytest

from spotgate.clock import ManualClock
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.breaker import BreakerState, CircuitBreaker, is_connection_refused
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.health_probe import HealthProbe, get_status
from spotgate.gateway.upstream import WorkerUnreachable
from tests.conftest import free_port

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=5)
    breaker.failed(0)
    breaker.failed(0)
    breaker.succeeded()  # the streak is broken
    breaker.failed(0)
    breaker.failed(0)
    assert breaker.current(0) is CLOSED and breaker.allows(0)
    breaker.failed(0)
    assert breaker.current(0) is OPEN and not breaker.allows(4.9)


def test_a_fatal_failure_opens_at_once() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=5)
    breaker.failed(10, fatal=True)
    assert breaker.current(10) is OPEN


def test_half_open_lets_exactly_one_trial_through_and_success_closes() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5)
    breaker.failed(0)
    assert breaker.current(5) is HALF_OPEN and breaker.allows(5)
    breaker.attempt(5)
    assert not breaker.allows(5.1), "a second request waits for the trial's outcome"
    breaker.succeeded()
    assert breaker.current(5.2) is CLOSED and breaker.allows(5.2)


def test_a_failed_trial_reopens_for_twice_as_long_up_to_the_cap() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, max_cooldown_s=12)
    breaker.failed(0)
    breaker.attempt(5)
    breaker.failed(5)
    assert breaker.current(14.9) is OPEN and breaker.current(15) is HALF_OPEN
    breaker.attempt(15)
    breaker.failed(15)
    assert breaker.current(26.9) is OPEN and breaker.current(27) is HALF_OPEN  # capped at 12
    breaker.succeeded()
    breaker.failed(30)
    assert breaker.current(35) is HALF_OPEN, "after a success the cooldown starts over"


def test_a_lost_trial_frees_the_slot_after_the_trial_timeout() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, trial_timeout_s=2)
    breaker.failed(0)
    breaker.attempt(5)
    assert not breaker.allows(6.9) and breaker.allows(7)


def test_failures_while_open_extend_the_rest() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5)
    breaker.failed(0)
    breaker.failed(4)  # a probe, or a straggling request, failed again
    assert breaker.current(8.9) is OPEN and breaker.current(9) is HALF_OPEN


def test_connection_refused_is_recognised_through_the_wrapping() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as exc:
            raise WorkerUnreachable("cannot connect") from exc
    except WorkerUnreachable as wrapped:
        assert is_connection_refused(wrapped)

    class ClientConnectorError(Exception):  # aiohttp's shape: the OS error as an attribute
        os_error = ConnectionRefusedError()

    assert not is_connection_refused(WorkerUnreachable("connection lost mid-response"))
    outer = WorkerUnreachable("aiohttp")
    outer.__cause__ = ClientConnectorError()
    assert is_connection_refused(outer)


def test_passive_health_keeps_its_api_over_breakers() -> None:
    clock = ManualClock()
    health = PassiveHealth(clock, cooldown_s=5, failure_threshold=2)
    assert health.available("w") and health.state("w") is CLOSED
    health.failed("w")
    assert health.available("w")
    health.failed("w")
    assert not health.available("w") and health.state("w") is OPEN
    clock.advance(5)
    assert health.available("w")
    health.attempt("w")
    assert not health.available("w")
    health.succeeded("w")
    assert health.available("w") and health.state("w") is CLOSED


def test_a_probe_success_ends_half_open_but_never_a_cooldown() -> None:
    clock = ManualClock()
    health = PassiveHealth(clock, cooldown_s=5)
    health.failed("w", fatal=True)
    health.probe_succeeded("w")
    assert health.state("w") is OPEN
    clock.advance(5)
    health.probe_succeeded("w")
    assert health.state("w") is CLOSED


def _probe_setup() -> tuple[ManualClock, WorkerRegistry, PassiveHealth]:
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    for name in ("up", "refusing", "sick", "leaving"):
        registry.register(name, pool="p", model="m", engine="sim", url=f"http://{name}")
    registry.drain("leaving", "eviction notice")
    return clock, registry, PassiveHealth(clock, cooldown_s=5, failure_threshold=2)


async def test_a_probe_round_feeds_the_breakers_and_skips_draining_workers() -> None:
    _, registry, health = _probe_setup()
    asked: list[str] = []

    async def get(url: str, timeout_s: float) -> int:
        asked.append(url)
        host = url.split("/")[2]
        if host == "refusing":
            raise ConnectionRefusedError(111, "refused")
        return 503 if host == "sick" else 200

    probe = HealthProbe(registry, health, get=get)
    await probe.probe_once()
    assert sorted(asked) == ["http://refusing/health", "http://sick/health", "http://up/health"]
    assert health.state("refusing") is OPEN, "nothing listens: out at once"
    assert health.state("sick") is CLOSED and health.available("sick")
    await probe.probe_once()
    assert health.state("sick") is OPEN, "a second bad answer in a row"
    assert health.available("up")


async def test_a_probe_timeout_counts_and_gone_workers_are_forgotten() -> None:
    _, registry, health = _probe_setup()

    async def get(url: str, timeout_s: float) -> int:
        raise TimeoutError

    probe = HealthProbe(registry, health, get=get)
    await probe.probe_once()
    await probe.probe_once()
    assert health.state("up") is OPEN
    registry.mark_gone("up", "heartbeat timeout")
    await probe.probe_once()
    assert health.state("up") is CLOSED, "a worker that left has no breaker to keep"


async def test_the_probe_runs_in_the_background_until_stopped() -> None:
    _, registry, health = _probe_setup()
    rounds = 0

    async def get(url: str, timeout_s: float) -> int:
        nonlocal rounds
        rounds += 1
        return 200

    probe = HealthProbe(registry, health, interval_s=0.01, get=get)
    await probe.start()
    await asyncio.sleep(0.1)
    await probe.stop()
    counted = rounds
    await asyncio.sleep(0.05)
    assert counted >= 6 and rounds == counted


async def test_get_status_reads_a_real_status_and_reports_refusal() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await get_status(f"http://127.0.0.1:{port}/health", 1.0) == 200
    with pytest.raises(ConnectionRefusedError):
        await get_status(f"http://127.0.0.1:{free_port()}/health", 1.0)


async def test_a_worker_url_nothing_can_be_sent_to_is_a_dead_worker_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    registry.register("odd", pool="p", model="m", engine="sim", url="gopher://127.0.0.1:70")
    health = PassiveHealth(clock, cooldown_s=5)
    probe = HealthProbe(registry, health)  # the real get_status
    await probe.probe_once()
    await probe.probe_once()
    assert health.state("odd") is OPEN
    assert "Traceback" not in caplog.text and "probe round failed" not in caplog.text
