"""`spotgate bench` against real servers on loopback: a simulated worker, broken upstreams, a stack.

Counts and kinds are asserted, never speeds: the numbers a benchmark prints
depend on the machine, what it counts must not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from typer.testing import CliRunner

from spotgate.adapters.local.process_compute import free_port
from spotgate.bench_command import BenchOptions, parse_ramp, resolve_model, run_bench
from spotgate.bench_stats import StepPlan, percentile
from spotgate.cli import app
from spotgate.cli_client import discover_url
from spotgate.engines.sim.config import SimConfig
from spotgate.engines.sim.server import create_sim_app
from spotgate.gateway.sse_progress import sse_error
from tests.conftest import serve_asgi
from tests.integration.conftest import KEY, sim_stack

MODEL = "sim-model"
SUMMARY_KEYS = {
    "url",
    "model",
    "stream",
    "cacheable",
    "max_tokens",
    "concurrency",
    "planned_duration_s",
    "planned_requests",
    "ramp",
    "duration_s",
    "requests",
    "ok",
    "errors",
    "errors_by_kind",
    "req_per_s",
    "latency_ms",
    "ttft_ms",
    "output_tokens",
    "output_tokens_per_s",
    "workers",
    "steps",
}


class ConcurrencyProbe:
    """Counts chat requests and the most that were ever inside the app at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.now = 0
        self.max = 0
        self.total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.total += 1
        self.max = max(self.max, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


@pytest.fixture
def probe() -> ConcurrencyProbe:
    return ConcurrencyProbe(create_sim_app(SimConfig(model=MODEL, ttft_ms=40, tokens_per_s=0)))


@pytest.fixture
def sim_url(probe: ConcurrencyProbe) -> Iterator[str]:
    with serve_asgi(probe) as url:
        yield url


def _broken_app() -> Starlette:
    """A worker that fails in each way bench must tell apart, chosen by the prompt's first word."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        mode = body["messages"][0]["content"].split()[0]
        if mode == "http500":
            error = {"message": "boom", "type": "server_error", "param": None, "code": "boom"}
            return JSONResponse({"error": error}, status_code=500)

        async def events() -> AsyncIterator[bytes]:
            chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            if mode == "sse-error":
                yield sse_error("worker went away")
                yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


async def test_requests_mode_sends_exactly_n(sim_url: str, probe: ConcurrencyProbe) -> None:
    options = BenchOptions(url=sim_url, model=MODEL, requests=25, concurrency=4, stream=False)
    summary = await run_bench(options)
    assert (summary["requests"], summary["ok"], summary["errors"]) == (25, 25, 0)
    assert probe.total == 25
    assert summary["errors_by_kind"] == {}
    assert summary["workers"] == {"-": 25}  # a bare worker sends no X-Worker
    assert summary["output_tokens"] > 0
    assert summary["ttft_ms"] is None  # no streams, no TTFT
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99"}


async def test_a_stream_run_reports_ttft(sim_url: str) -> None:
    summary = await run_bench(BenchOptions(url=sim_url, model=MODEL, requests=10, concurrency=2))
    assert (summary["requests"], summary["errors"]) == (10, 0)
    ttft, latency = summary["ttft_ms"], summary["latency_ms"]
    assert ttft is not None and ttft["p50"] is not None and ttft["p99"] is not None
    assert ttft["p50"] <= latency["p50"]  # each request's first token comes before its end
    assert summary["output_tokens"] > 0


async def test_each_failure_is_counted_by_kind() -> None:
    with serve_asgi(_broken_app()) as url:
        results = {}
        for mode, stream in (("http500", False), ("sse-error", True), ("cut", True)):
            options = BenchOptions(url=url, model=MODEL, requests=3, stream=stream, prompt=mode)
            results[mode] = await run_bench(options)
    assert results["http500"]["errors_by_kind"] == {"http_500:boom": 3}
    assert results["sse-error"]["errors_by_kind"] == {"sse_error:upstream_error": 3}
    assert results["cut"]["errors_by_kind"] == {"stream_without_done": 3}
    for summary in results.values():
        assert (summary["requests"], summary["ok"], summary["errors"]) == (3, 0, 3)
        assert summary["workers"] == {}


async def test_an_unreachable_stack_is_transport_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    summary = await run_bench(BenchOptions(url=url, model=MODEL, requests=4, concurrency=2))
    assert summary["errors_by_kind"] == {"transport:ConnectError": 4}


def test_cli_exits_1_when_the_upstream_returns_500s(tmp_path: Path) -> None:
    out = tmp_path / "results" / "bench.json"
    with serve_asgi(_broken_app()) as url:
        args = ["bench", "--url", url, "--model", MODEL, "--requests", "5", "--no-stream"]
        result = CliRunner().invoke(app, [*args, "--prompt", "http500 please", "--json", str(out)])
    assert result.exit_code == 1, result.output
    summary = json.loads(out.read_text())
    assert summary["errors"] == 5 and summary["errors_by_kind"] == {"http_500:boom": 5}
    assert "http_500:boom" in result.output


def test_cli_writes_the_documented_json(sim_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--url", sim_url, "--requests", "6", "--concurrency", "3"]
    result = CliRunner().invoke(app, [*args, "--max-tokens", "8", "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["model"] == MODEL  # found through /v1/models: the sim serves no smollm2
    assert (summary["requests"], summary["errors"], summary["max_tokens"]) == (6, 0, 8)
    assert summary["stream"] is True and summary["ttft_ms"] is not None
    assert summary["steps"][0]["requests"] == 6
    assert "latency p99" in result.output and "TTFT p50" in result.output


async def test_a_ramp_changes_the_number_of_clients(sim_url: str, probe: ConcurrencyProbe) -> None:
    ramp = parse_ramp("1:0.4,4:0.4,2:0.4")
    summary = await run_bench(BenchOptions(url=sim_url, model=MODEL, ramp=ramp, stream=False))
    steps = summary["steps"]
    assert [s["concurrency"] for s in steps] == [1, 4, 2]
    assert all(s["requests"] > 0 for s in steps)
    assert steps[0]["max_in_flight"] == 1
    assert steps[1]["max_in_flight"] == 4
    assert steps[2]["max_in_flight"] == 2  # counts requests started in the step only
    assert probe.max == 4  # the server saw the peak, never more
    assert summary["requests"] == sum(s["requests"] for s in steps) == probe.total
    assert summary["concurrency"] == 4 and summary["ramp"] == [[1, 0.4], [4, 0.4], [2, 0.4]]
    assert summary["planned_duration_s"] == pytest.approx(1.2)


async def test_an_idle_ramp_step_sends_nothing(sim_url: str) -> None:
    options = BenchOptions(url=sim_url, model=MODEL, ramp=parse_ramp("2:0.2,0:0.2"))
    summary = await run_bench(options)
    assert summary["steps"][1]["requests"] == 0
    assert summary["errors"] == 0


def test_parse_ramp() -> None:
    assert parse_ramp("4:10, 16:20,2:30") == (
        StepPlan(4, 10.0),
        StepPlan(16, 20.0),
        StepPlan(2, 30.0),
    )
    assert parse_ramp("") == ()
    for bad in ("4", "x:10", "4:0", "4:", "4:nan", "4:inf", "-1:5", "0:5"):
        with pytest.raises(ValueError):
            parse_ramp(bad)


def test_url_and_model_discovery(
    sim_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert discover_url("") == "http://127.0.0.1:8000"
    (tmp_path / ".spotgate").mkdir()
    (tmp_path / ".spotgate" / "dev.json").write_text(json.dumps({"url": sim_url + "/"}))
    assert discover_url("") == sim_url
    assert discover_url("http://elsewhere:1/") == "http://elsewhere:1"
    assert resolve_model(sim_url, None, "") == MODEL
    assert resolve_model(sim_url, None, "other") == "other"
    assert resolve_model(f"http://127.0.0.1:{free_port()}", None, "") == "smollm2"


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0


@pytest.mark.integration
def test_against_a_sim_stack_workers_and_cache(tmp_path: Path) -> None:
    """Through the real gateway: X-Worker names real workers, and --cacheable hits the cache."""
    with sim_stack(tmp_path, workers=2) as stack:
        ids = {w["id"] for w in stack.workers("ready")}
        fresh = asyncio.run(
            run_bench(BenchOptions(url=stack.url, key=KEY, model=MODEL, requests=12, concurrency=4))
        )
        cacheable = BenchOptions(
            url=stack.url, key=KEY, model=MODEL, requests=10, concurrency=1, cacheable=True
        )
        cached = asyncio.run(run_bench(cacheable))
    assert fresh["errors"] == 0 and sum(fresh["workers"].values()) == 12
    assert set(fresh["workers"]) <= ids  # sampled with a nonce: never the cache
    assert cached["errors"] == 0
    assert sum(cached["workers"].values()) == 10
    # the first misses; the cache stores in the background, so allow a second miss or so
    assert cached["workers"].get("cache", 0) >= 5
