"""Browser clients: CORS only for the origins an operator listed, off by default."""

from __future__ import annotations

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY, EchoUpstream

ALLOWED = "https://chat.example.test"
PREFLIGHT = {
    "Origin": ALLOWED,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def client_for(origins: list[str]) -> httpx.AsyncClient:
    settings = Settings(api_keys=[API_KEY], cors_allowed_origins=origins)
    runtime = build_runtime(settings, InMemoryWorkerStore(), upstream=EchoUpstream())
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://gw"
    )


async def test_no_cors_headers_unless_configured() -> None:
    async with client_for([]) as client:
        answer = await client.get("/v1/models", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in answer.headers
        preflight = await client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers


async def test_a_listed_origin_may_call_and_read_the_request_id() -> None:
    async with client_for([ALLOWED]) as client:
        preflight = await client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        answer = await client.get(
            "/v1/models", headers={"Origin": ALLOWED, "Authorization": f"Bearer {API_KEY}"}
        )
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize("origin", ["https://evil.example.test", "null", ALLOWED + ".evil.test"])
async def test_other_origins_get_no_grant(origin: str) -> None:
    async with client_for([ALLOWED]) as client:
        preflight = await client.options(
            "/v1/chat/completions", headers={**PREFLIGHT, "Origin": origin}
        )
        assert preflight.headers.get("access-control-allow-origin") != origin
        assert preflight.status_code == 400
        answer = await client.get("/v1/models", headers={"Origin": origin})
        assert "access-control-allow-origin" not in answer.headers
