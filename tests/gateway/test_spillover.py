"""Spillover against a real second OpenAI-compatible server: the sim engine under uvicorn.

A tiny ASGI wrapper in front of the sim records every request's path and
headers, so the tests see exactly what the endpoint would: the model renamed
to the deployment, the key in the right header, streamed and not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from spotgate.adapters.http_upstream import AiohttpUpstream
from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.errors import UpstreamError
from spotgate.gateway.admission import PoolState
from spotgate.gateway.forwarding import Reply, StreamReply
from spotgate.gateway.model_catalogue import ModelEntry, SpilloverTarget
from spotgate.gateway.spillover import SpilloverClient, should_spill, target_url
from spotgate.gateway.upstream import UpstreamClient, UpstreamReply, UpstreamStream
from tests.conftest import free_socket, serve_asgi

CHAT = {
    "model": "cheap-local",
    "messages": [{"role": "user", "content": "Tell me about lighthouses."}],
    "temperature": 0,
    "max_tokens": 12,
}
SECRETS = {"SPILL_KEY": "sk-test-123"}


@dataclass
class Recorder:
    """ASGI middleware that keeps (path, headers) of every HTTP request it passes on."""

    app: ASGIApp
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.seen.append((scope["path"], headers))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(create_sim_app(SimConfig(model="managed-model", ttft_ms=0, tokens_per_s=0)))
    with serve_asgi(recorder) as url:
        yield url, recorder


@pytest.fixture(params=["pooled", "aiohttp"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    client: UpstreamClient
    if request.param == "pooled":
        client = PooledHttpUpstream(connect_timeout_s=1, read_timeout_s=5)
    else:
        client = AiohttpUpstream(connect_timeout_s=1, read_timeout_s=5)
    yield client
    await client.close()


def entry(base_url: str, **target: Any) -> ModelEntry:
    spill = {
        "name": "sim",
        "base_url": base_url + "/v1",
        "deployment": "managed-model",
        "api_key_env": "SPILL_KEY",
        "extra_headers": {"X-Tenant": "spotgate"},
        **target,
    }
    return ModelEntry(
        name="cheap-local", context_length=2048, spillover=SpilloverTarget.model_validate(spill)
    )


async def test_non_streamed_request_is_renamed_and_authorised(
    endpoint: tuple[str, Recorder], upstream: UpstreamClient
) -> None:
    url, recorder = endpoint
    client = SpilloverClient(upstream, SECRETS.get)
    reply = await client.forward(
        entry(url), "/v1/chat/completions", dict(CHAT), {"X-Request-ID": "req-1"}
    )
    assert isinstance(reply, Reply)
    assert (reply.worker_id, reply.status) == ("spillover:sim", 200)
    answer = orjson.loads(reply.body)
    assert answer["model"] == "managed-model" and answer["choices"][0]["message"]["content"]
    path, headers = recorder.seen[-1]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer sk-test-123"
    assert "api-key" not in headers, "api-key is for Azure hosts only"
    assert headers["x-tenant"] == "spotgate" and headers["x-request-id"] == "req-1"
    assert headers["content-type"] == "application/json"
    assert headers["accept-encoding"] == "identity"


async def test_streamed_request_relays_the_endpoints_events(
    endpoint: tuple[str, Recorder], upstream: UpstreamClient
) -> None:
    url, recorder = endpoint
    client = SpilloverClient(upstream, SECRETS.get)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    result = await client.forward_stream(entry(url), "/v1/chat/completions", body, {})
    assert isinstance(result, StreamReply) and result.worker_id == "spillover:sim"
    raw = b"".join([chunk async for chunk in result.chunks])
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert {chunk["model"] for chunk in chunks} == {"managed-model"}
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert recorder.seen[-1][1]["authorization"] == "Bearer sk-test-123"


async def test_the_endpoints_errors_come_back_as_replies(
    endpoint: tuple[str, Recorder], upstream: UpstreamClient
) -> None:
    url, _ = endpoint
    client = SpilloverClient(upstream, SECRETS.get)
    wrong = entry(url, deployment="no-such-deployment")
    reply = await client.forward(wrong, "/v1/chat/completions", dict(CHAT), {})
    assert reply.status == 404 and b"no-such-deployment" in reply.body
    streamed = await client.forward_stream(
        wrong, "/v1/chat/completions", {**CHAT, "stream": True}, {}
    )
    assert isinstance(streamed, Reply) and streamed.status == 404
    assert streamed.worker_id == "spillover:sim"


async def test_without_a_deployment_the_catalogue_name_is_sent(
    endpoint: tuple[str, Recorder], upstream: UpstreamClient
) -> None:
    url, _ = endpoint
    client = SpilloverClient(upstream, SECRETS.get)
    reply = await client.forward(
        entry(url, deployment=None), "/v1/chat/completions", dict(CHAT), {}
    )
    assert reply.status == 404 and b"cheap-local" in reply.body


async def test_a_missing_key_or_endpoint_is_an_upstream_error(upstream: UpstreamClient) -> None:
    with free_socket() as sock:  # bound, never listening: connecting is refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        no_secrets: dict[str, str] = {}
        client = SpilloverClient(upstream, no_secrets.get)
        with pytest.raises(UpstreamError) as caught:
            await client.forward(entry(url), "/v1/chat/completions", dict(CHAT), {})
        assert caught.value.code == "spillover_misconfigured"
        assert "SPILL_KEY" in caught.value.message
        client = SpilloverClient(upstream, SECRETS.get)
        with pytest.raises(UpstreamError, match="could not be reached"):
            await client.forward(entry(url), "/v1/chat/completions", dict(CHAT), {})


class Capture:
    def __init__(self) -> None:
        self.url = ""
        self.headers: dict[str, str] = {}
        self.body: dict[str, Any] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        self.url, self.headers, self.body = url, headers, orjson.loads(body)
        return UpstreamReply(200, b"{}", "application/json")

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamStream:
        raise AssertionError

    async def close(self) -> None:
        pass


async def test_azure_openai_gets_its_api_key_header_and_v1_url() -> None:
    capture = Capture()
    client = SpilloverClient(capture, {"FOUNDRY_KEY": "azure-key"}.get)
    foundry = ModelEntry(
        name="llama",
        context_length=8192,
        spillover=SpilloverTarget(
            name="foundry",
            base_url="https://my-res.openai.azure.com/openai/v1/",
            deployment="gpt-4o-mini",
            api_key_env="FOUNDRY_KEY",
        ),
    )
    body = dict(CHAT)
    reply = await client.forward(foundry, "/v1/chat/completions", body, {})
    assert reply.worker_id == "spillover:foundry"
    assert capture.url == "https://my-res.openai.azure.com/openai/v1/chat/completions"
    assert capture.headers["api-key"] == "azure-key"
    assert capture.headers["Authorization"] == "Bearer azure-key"
    assert capture.body == {**CHAT, "model": "gpt-4o-mini"}
    assert body["model"] == "cheap-local", "the caller's body is not changed"


def test_target_url_joins_the_versioned_base() -> None:
    target = SpilloverTarget(name="x", base_url="http://h:1/v1")
    assert target_url(target, "/v1/embeddings") == "http://h:1/v1/embeddings"


@pytest.mark.parametrize(
    ("ready", "waiting", "limit", "spill"),
    [(0, 0, 8, True), (2, 8, 8, True), (2, 7, 8, False), (2, 0, 8, False)],
)
def test_should_spill_when_no_worker_is_ready_or_the_line_is_full(
    ready: int, waiting: int, limit: int, spill: bool
) -> None:
    state = PoolState("p", ready, capacity=ready * 16, in_use=0, waiting=waiting, queue_limit=limit)
    assert should_spill(state) is spill
