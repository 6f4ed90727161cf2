"""A dev stack gives clients an API key and nothing more."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from spotgate.adapters.local.process_compute import worker_environment
from spotgate.adapters.local.scheduled_events import FakeScheduledEvents
from spotgate.api.app import create_app
from spotgate.cli_client import StackClient, discover_admin_key, discover_key
from spotgate.clock import ManualClock
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.hosts.local import dev_settings
from spotgate.settings import Settings

pytestmark = pytest.mark.adversarial


def test_the_dev_api_key_is_not_the_admin_key() -> None:
    settings, key = dev_settings(Settings(), None)
    assert settings.admin_key and settings.admin_key != key
    assert key in settings.api_keys and settings.admin_key not in settings.api_keys
    assert settings.fleet_token not in (key, settings.admin_key)
    again, _ = dev_settings(Settings(), None)
    assert again.admin_key != settings.admin_key, "fresh per run"


async def test_the_api_key_opens_no_operator_route() -> None:
    settings, key = dev_settings(Settings(cache_backend="off"), None)
    runtime = build_runtime(settings, InMemoryWorkerStore())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://dev") as client:
        as_client = {"Authorization": f"Bearer {key}"}
        for method, path in [
            ("GET", "/fleet"),
            ("POST", "/fleet/workers/default-w1/kill"),
            ("POST", "/fleet/workers/default-w1/evict"),
            ("POST", "/fleet/spot"),
            ("GET", "/orchestrations/fleet-monitor-default"),
            ("POST", "/orchestrations/fleet_monitor"),
            ("POST", "/orchestrations/fleet-monitor-default/terminate"),
            ("POST", "/orchestrations/fleet-monitor-default/raiseEvent/wake"),
        ]:
            reply = await client.request(method, path, headers=as_client, json={})
            assert reply.status_code == 401, (method, path, reply.text)
        admin = {"Authorization": f"Bearer {settings.admin_key}"}
        assert (await client.get("/fleet", headers=admin)).status_code == 200


def test_the_cli_takes_the_admin_key_from_the_private_dev_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SPOTGATE_ADMIN_KEY", "SPOTGATE_API_KEY", "SPOTGATE_DEV_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".spotgate").mkdir()
    record = {"url": "http://127.0.0.1:1", "api_key": "sk-api", "admin_key": "sk-admin"}
    (tmp_path / ".spotgate" / "dev.json").write_text(json.dumps(record))
    assert discover_admin_key() == "sk-admin"
    assert discover_key() == "sk-api"
    operator = StackClient("")
    assert (operator.url, operator.key) == ("http://127.0.0.1:1", "sk-admin")
    monkeypatch.setenv("SPOTGATE_API_KEY", "sk-exported-api")
    assert discover_admin_key() == "sk-admin", "an exported API key never stands in for it"


def test_workers_never_inherit_secrets_from_the_dev_process() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HF_HUB_OFFLINE": "1",
        "SPOTGATE_ADMIN_KEY": "admin",
        "SPOTGATE_API_KEYS": '["a"]',
        "SPOTGATE_DEV_API_KEY": "dev",
        "OPENAI_API_KEY": "openai",
        "FOUNDRY_API_KEY": "spill",
        "AZURE_CLIENT_SECRET": "s",
        "SPOTGATE_FLEET_TOKEN": "exported",
    }
    assert worker_environment(parent) == {"PATH": "/usr/bin", "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize(("peer", "status"), [("127.0.0.1", 200), ("10.9.8.7", 404)])
async def test_the_local_metadata_service_answers_only_this_machine(peer: str, status: int) -> None:
    events = FakeScheduledEvents(ManualClock(), lambda _w: None, lambda _d, _a: None)
    runtime = build_runtime(
        Settings(cache_backend="off"), InMemoryWorkerStore(), scheduled_events=events
    )
    transport = httpx.ASGITransport(app=create_app(runtime), client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dev") as client:
        path = "/_local/imds/default-w1/metadata/scheduledevents"
        reply = await client.get(path, headers={"Metadata": "true"})
        assert reply.status_code == status
        ack = await client.post(
            path, headers={"Metadata": "true"}, json={"StartRequests": [{"EventId": "x"}]}
        )
        assert ack.status_code == status
