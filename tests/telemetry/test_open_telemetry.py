"""What Application Insights receives from the gateway: metrics under their query names, and traces.

Real requests through the app and pipeline to a real sim worker on loopback
(uvicorn in a thread) and a worker address nobody listens on; the OpenTelemetry
SDK's in-memory reader and exporter stand where the Azure Monitor exporters
stand (conftest.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from spotgate.adapters.azure.monitor_signals import IN_FLIGHT_METRIC, QUEUE_METRIC, MonitorSignals
from spotgate.adapters.local.process_compute import free_port
from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import ADMIN_KEY, API_KEY, FLEET_TOKEN, auth
from tests.conftest import serve_asgi
from tests.telemetry.conftest import Otel
from tests.telemetry.test_monitor_ticks import until

WORKER_KEY = "vllm-key-never-in-telemetry"
MARKER = "the-prompt-text-never-in-telemetry"
QUESTION = {"model": "m", "messages": [{"role": "user", "content": f"{MARKER} hello"}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
POOL_DIMENSION = inspect.signature(MonitorSignals).parameters["pool_dimension"].default


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with serve_asgi(create_sim_app(SimConfig(model="m", ttft_ms=0, tokens_per_s=0))) as url:
        yield url


@pytest.fixture(scope="module")
def slow_worker() -> Iterator[str]:
    config = SimConfig(model="m", ttft_ms=400, tokens_per_s=0, default_max_tokens=4)
    with serve_asgi(create_sim_app(config)) as url:
        yield url


async def gateway(runtime: Runtime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(runtime))
    return httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30)


def settings(**extra: object) -> Settings:
    return Settings(
        api_keys=[API_KEY],
        admin_key=ADMIN_KEY,
        fleet_token=FLEET_TOKEN,
        cache_backend="off",
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def served(
    otel: Otel, worker: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A dead worker listed first (the first pick), the sim worker second."""
    monkeypatch.setenv("VLLM_API_KEY", WORKER_KEY)
    runtime = build_runtime(
        settings(capacity_wait_s=2), InMemoryWorkerStore(), telemetry=otel.telemetry()
    )
    dead = f"http://127.0.0.1:{free_port()}"
    runtime.registry.register("a-dead", pool="default", model="m", engine="sim", url=dead)
    runtime.registry.register("b-live", pool="default", model="m", engine="sim", url=worker)
    async with await gateway(runtime) as client:
        yield client, runtime
    await runtime.close()


async def test_a_failover_is_one_request_span_with_two_attempts_under_it(
    otel: Otel, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _ = served
    reply = await client.post("/v1/chat/completions", json=QUESTION, headers=auth())
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-worker"] == "b-live"

    [request] = [s for s in otel.spans() if s.kind == SpanKind.SERVER]
    assert request.name == "chat.completions"
    attributes = dict(request.attributes or {})
    assert attributes["spotgate.request_id"] == reply.headers["x-request-id"]
    assert attributes["spotgate.model"] == "m"
    assert attributes["spotgate.pool"] == "default"
    assert attributes["spotgate.worker"] == "b-live"
    assert attributes["spotgate.cache"] == "BYPASS"
    assert attributes["http.response.status_code"] == 200
    assert attributes["spotgate.attempts"] == 2
    usage = reply.json()["usage"]
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0

    assert request.context is not None
    attempts = sorted(
        (s for s in otel.spans() if s.parent and s.parent.span_id == request.context.span_id),
        key=lambda s: dict(s.attributes or {})["spotgate.attempt"],
    )
    assert [s.kind for s in attempts] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [dict(s.attributes or {})["spotgate.worker"] for s in attempts] == ["a-dead", "b-live"]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert dict(attempts[1].attributes or {})["http.response.status_code"] == 200
    for attempt in attempts:
        assert attempt.context is not None
        assert attempt.context.trace_id == request.context.trace_id
        request_id = dict(attempt.attributes or {})["spotgate.request_id"]
        assert request_id == reply.headers["x-request-id"]


async def test_request_metrics_carry_the_names_and_labels_the_queries_filter_on(
    otel: Otel, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _ = served
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=QUESTION, headers=auth())).is_success
    unknown = {**QUESTION, "model": "no-such-model"}
    refused = await client.post("/v1/chat/completions", json=unknown, headers=auth())
    assert refused.status_code == 404

    assert otel.value("spotgate_requests_total", model="m", status="200", worker="b-live") == 3
    assert otel.value("spotgate_requests_total", model="(unknown)", status="404") == 1
    assert otel.value("spotgate_cache_requests_total", result="BYPASS") == 4
    assert otel.value("spotgate_tokens_total", direction="prompt", model="m") > 0
    assert otel.value("spotgate_tokens_total", direction="completion", model="m") > 0
    assert otel.histogram("spotgate_request_duration_seconds", model="m").count == 3
    assert otel.histogram("spotgate_request_duration_seconds", model="(unknown)").count == 1
    assert otel.histogram("spotgate_ttft_seconds", model="m").count == 3
    assert otel.histogram("spotgate_admission_wait_seconds", pool="default").count == 3
    # the dead worker's breaker opened after it refused a connection
    assert otel.value("spotgate_breaker_open", worker="a-dead") == 1


async def test_a_clients_trace_continues_through_the_gateway(
    otel: Otel, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _ = served
    traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
    headers = {**auth(), "traceparent": traceparent, "X-Request-ID": "req-traced-1"}
    assert (await client.post("/v1/chat/completions", json=QUESTION, headers=headers)).is_success
    [request] = [s for s in otel.spans() if s.kind == SpanKind.SERVER]
    assert request.context is not None and request.parent is not None
    assert request.context.trace_id == int(TRACE_ID, 16)
    assert request.parent.span_id == int(CLIENT_SPAN_ID, 16)
    assert dict(request.attributes or {})["spotgate.request_id"] == "req-traced-1"


async def test_no_key_or_prompt_reaches_a_span_or_a_metric(
    otel: Otel, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _ = served
    await client.post("/v1/chat/completions", json=QUESTION, headers=auth())
    await client.post("/v1/chat/completions", json={**QUESTION, "stream": True}, headers=auth())
    await client.post("/v1/chat/completions", json=QUESTION, headers=auth("sk-wrong-guess"))
    exported = [
        *(str(dict(s.attributes or {})) for s in otel.spans()),
        *(str(e.attributes) for s in otel.spans() for e in s.events),
        *(str(s.status.description) for s in otel.spans()),
        *(f"{name} {p.attributes}" for name, ps in otel.metrics().items() for p in ps),
    ]
    assert len(otel.spans()) >= 4
    text = "\n".join(exported)
    for secret in (API_KEY, ADMIN_KEY, FLEET_TOKEN, WORKER_KEY, "sk-wrong-guess", MARKER):
        assert secret not in text, secret


async def test_a_stream_is_traced_to_its_end(
    otel: Otel, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _ = served
    body = {**QUESTION, "stream": True, "max_tokens": 5}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as reply:
        assert reply.status_code == 200
        events = [line async for line in reply.aiter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    [request] = [s for s in otel.spans() if s.kind == SpanKind.SERVER]
    attributes = dict(request.attributes or {})
    assert attributes["spotgate.stream"] is True
    assert attributes["gen_ai.usage.output_tokens"] == 5
    live = [s for s in otel.spans() if dict(s.attributes or {}).get("spotgate.worker") == "b-live"]
    [attempt] = [s for s in live if s.kind == SpanKind.CLIENT]
    assert attempt.end_time is not None and request.end_time is not None
    assert attempt.end_time <= request.end_time


async def test_pool_load_gauges_are_what_the_fleet_monitors_load_query_reads(
    otel: Otel, slow_worker: str
) -> None:
    """monitor_signals.py asks Azure Monitor for these names, filtered by the pool dimension."""
    runtime = build_runtime(
        settings(capacity_wait_s=10, worker_max_concurrency=1),
        InMemoryWorkerStore(),
        telemetry=otel.telemetry(),
    )
    runtime.registry.register("w1", pool="default", model="m", engine="sim", url=slow_worker)
    admission = runtime.router.admission
    async with await gateway(runtime) as client:

        async def ask() -> httpx.Response:
            return await client.post("/v1/chat/completions", json=QUESTION, headers=auth())

        both = asyncio.gather(ask(), ask())
        await until(lambda: admission.in_use("default") == 1 and admission.depth("default") == 1)
        assert otel.value(QUEUE_METRIC, **{POOL_DIMENSION: "default"}) == 1
        assert otel.value(IN_FLIGHT_METRIC, **{POOL_DIMENSION: "default"}) == 1
        assert all(r.status_code == 200 for r in await both)
    points = otel.metrics()
    assert [(p.attributes, p.value) for p in points[QUEUE_METRIC]] == [({"pool": "default"}, 0)]
    assert [(p.attributes, p.value) for p in points[IN_FLIGHT_METRIC]] == [({"pool": "default"}, 0)]
    wait = otel.histogram("spotgate_admission_wait_seconds", pool="default")
    assert wait.count == 2 and wait.max is not None and wait.max > 0.2  # the second one queued
    await runtime.close()
