"""The admin API over HTTP: keys and usage, who may call it, and every bad input's 400."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import ADMIN_KEY, API_KEY, FLEET_TOKEN, EchoUpstream

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
# a JWT's shape (header.payload.signature, base64url), signed by nobody
FORGED_JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJyb2xlcyI6WyJzcG90Z2F0ZS5hZG1pbiJdfQ.c2ln"


class Tokens:
    """Stands in for Entra ID validation (tested on its own in adapters/azure)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def is_admin(self, bearer: str) -> bool:
        self.seen.append(bearer)
        return bearer == "eyJ.valid-admin.token"


@pytest.fixture
async def setup() -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, Tokens]]:
    settings = Settings(
        api_keys=[API_KEY], admin_key=ADMIN_KEY, fleet_token=FLEET_TOKEN, models=["m"]
    )
    tokens = Tokens()
    parts = build_gateway(
        settings, InMemoryWorkerStore(), upstream=EchoUpstream(), admin_tokens=tokens
    )
    parts.registry.register("w1", pool="default", model="m", engine="e", url="http://10.0.0.1:1")
    runtime = assemble_runtime(parts)
    app = create_app(runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, runtime, tokens


async def create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await client.post("/admin/keys", json=fields, headers=ADMIN)


def error(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json()["error"])


async def test_a_key_is_shown_once_and_listed_without_its_secret(setup: Any) -> None:
    client, _, _ = setup
    made = await create(client, name="team-a", models=["m"], rpm=5, owner="ops")
    assert made.status_code == 201
    secret = made.json()["key"]
    assert secret.startswith("sk-sg-") and made.json()["prefix"] == secret[:10]
    listed = (await client.get("/admin/keys", headers=ADMIN)).json()["data"]
    assert [k["name"] for k in listed] == ["team-a"]
    assert secret not in str(listed) and "digest" not in listed[0]
    by_name = (await client.get("/admin/keys/team-a", headers=ADMIN)).json()
    assert by_name["id"] == made.json()["id"] and by_name["rpm"] == 5
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={
        "Authorization": f"Bearer {secret}"
    })).status_code == 200  # fmt: skip


async def test_changes_and_revocation_apply_to_the_next_request(setup: Any) -> None:
    client, _, _ = setup
    secret = (await create(client, name="k")).json()["key"]
    caller = {"Authorization": f"Bearer {secret}"}
    changed = await client.patch("/admin/keys/k", json={"models": ["other"]}, headers=ADMIN)
    assert changed.json()["models"] == ["other"]
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=caller)
    assert refused.status_code == 403 and error(refused)["code"] == "model_not_allowed"
    await client.patch("/admin/keys/k", json={"models": None}, headers=ADMIN)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=caller)).status_code == 200
    revoked = await client.delete("/admin/keys/k", headers=ADMIN)
    assert revoked.json()["revoked"] is True
    after = await client.post("/v1/chat/completions", json=CHAT, headers=caller)
    assert after.status_code == 401 and error(after)["message"] == "This API key was revoked."


async def test_a_restricted_key_lists_only_its_models(setup: Any) -> None:
    client, _, _ = setup
    only = (await create(client, name="only-other", models=["other"])).json()["key"]
    everything = (await create(client, name="all")).json()["key"]
    listed = await client.get("/v1/models", headers={"Authorization": f"Bearer {only}"})
    assert listed.json()["data"] == []
    listed = await client.get("/v1/models", headers={"Authorization": f"Bearer {everything}"})
    assert [m["id"] for m in listed.json()["data"]] == ["m"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "k", "rpm": 0}, "rpm"),
        ({"name": "k", "rpm": "many"}, "rpm"),
        ({"name": "k", "tpm": -5}, "tpm"),
        ({"name": "k", "budget_usd": -1}, "budget_usd"),
        ({"name": "k", "budget_period": "week"}, "budget_period"),
        ({"name": "k", "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "k", "models": ["m"] * 300}, "models"),
        ({"name": "k", "metadata": {"blob": "x" * 5000}}, "metadata"),
        ({"name": "k", "digest": "chosen"}, "digest"),
        ({"name": "k", "revoked_at": None}, "revoked_at"),
        ({"name": "k", "model_limits": {"m": {"rpm": 1, "burst": 2}}}, "model_limits.m.burst"),
    ],
)
async def test_every_bad_key_field_is_a_400_naming_it(
    setup: Any, fields: dict[str, Any], param: str
) -> None:
    client, runtime, _ = setup
    refused = await create(client, **fields)
    assert refused.status_code == 400
    assert error(refused)["type"] == "invalid_request_error" and error(refused)["param"] == param
    assert runtime.tenancy.directory.all() == []


async def test_names_are_unique_among_active_keys_and_unknown_keys_are_404(setup: Any) -> None:
    client, _, _ = setup
    await create(client, name="dup")
    again = await create(client, name="dup")
    assert again.status_code == 400 and error(again)["param"] == "name"
    missing = await client.patch("/admin/keys/nobody", json={"rpm": 1}, headers=ADMIN)
    assert missing.status_code == 404 and error(missing)["code"] == "key_not_found"
    await client.delete("/admin/keys/dup", headers=ADMIN)
    assert (await create(client, name="dup")).status_code == 201, "a revoked name is free"


async def test_only_the_admin_role_opens_the_admin_api(setup: Any) -> None:
    client, _, tokens = setup
    virtual = (await create(client, name="client")).json()["key"]
    for credential in (None, API_KEY, FLEET_TOKEN, virtual, FORGED_JWT, "eyJ.bad.token"):
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        for method, path in (("GET", "/admin/keys"), ("GET", "/admin/usage")):
            refused = await client.request(method, path, headers=headers)
            assert refused.status_code == 401, (credential, path)
            assert error(refused)["code"] == "invalid_api_key"
    entra = {"Authorization": "Bearer eyJ.valid-admin.token"}
    assert (await client.get("/admin/keys", headers=entra)).status_code == 200
    assert FORGED_JWT in tokens.seen and API_KEY not in tokens.seen, "only JWTs are validated"
    assert (await client.get("/admin/keys", headers={"api-key": ADMIN_KEY})).status_code == 200


async def test_usage_reports_what_was_served_and_refuses_bad_windows(setup: Any) -> None:
    client, _, _ = setup
    made = (await create(client, name="metered")).json()
    caller = {"Authorization": f"Bearer {made['key']}"}
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=caller)).is_success
    report = (await client.get("/admin/usage?by=key&since=1h", headers=ADMIN)).json()
    row = next(r for r in report["rows"] if r["group"] == made["id"])
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (3, 9, 3)
    assert report["totals"]["requests"] == 3
    records = (await client.get("/admin/usage/records?since=1h", headers=ADMIN)).json()["data"]
    assert [r["key_id"] for r in records] == [made["id"]] * 3
    assert {r["worker_id"] for r in records} == {"w1"}
    since_then = time.time() + 3600
    for query, param in (
        ("by=colour", "by"),
        ("since=yesterday-ish", "since"),
        ("since=nan", "since"),
        (f"since=1h&until={since_then - 7 * 3600}", "until"),
    ):
        refused = await client.get(f"/admin/usage?{query}", headers=ADMIN)
        assert refused.status_code == 400 and error(refused)["param"] == param, query
    too_long = await client.get("/admin/usage/records?since=3d", headers=ADMIN)
    assert too_long.status_code == 400 and error(too_long)["param"] == "until"
