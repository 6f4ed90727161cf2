"""`GET /fleet/journal`: the operator's read of the fleet journal, for `spotgate fleet export`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.clock import ManualClock
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings

API_KEY = "sk-test"
FLEET_TOKEN = "fleet-test"
ADMIN_KEY = "admin-test"
NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW - 2 * DAY)


@pytest.fixture
def runtime(clock: ManualClock) -> Runtime:
    settings = Settings(
        api_keys=[API_KEY],
        admin_key=ADMIN_KEY,
        fleet_token=FLEET_TOKEN,
        capacity_wait_s=0,
        cache_backend="memory",
        pools=["default", "big"],
        pool_skus={"big": "Standard_ND96"},
    )
    return build_runtime(settings, InMemoryWorkerStore(), clock=clock)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def a_fleet_with_history(runtime: Runtime, clock: ManualClock) -> None:
    """A `big` worker evicted a day ago, a `default` one still serving; it is now NOW."""
    registry, journal = runtime.registry, runtime.journal
    for worker_id, pool in (("w1", "big"), ("w2", "default")):
        registry.register(worker_id, pool=pool, model="m", engine="sim", url=f"http://{worker_id}")
    journal.record_eviction("big", "ancient", "3", at=NOW - 9 * DAY)
    clock.advance(DAY)
    journal.record_eviction("big", "w1", "1", at=clock.now())
    journal.record_capacity_failure("default", "spot", "2", "SkuNotAvailable", at=clock.now())
    journal.append({"pool": "big", "tick": 3, "observed_at": clock.now(), "reason": "evicted"})
    registry.mark_gone("w1", "evicted")  # the gateway's recorder writes its span
    clock.advance(DAY)


@pytest.mark.parametrize("key", [None, API_KEY, FLEET_TOKEN, "wrong"])
async def test_only_the_admin_key_reads_the_journal(
    client: httpx.AsyncClient, key: str | None
) -> None:
    response = await client.get("/fleet/journal", headers=auth(key) if key else {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_the_journal_since_a_time_as_json(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock
) -> None:
    a_fleet_with_history(runtime, clock)
    response = await client.get(f"/fleet/journal?since={NOW - 1.5 * DAY}", headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    body = response.json()
    assert (body["since"], body["now"]) == (NOW - 1.5 * DAY, NOW)
    assert body["evictions"] == [{"pool": "big", "worker_id": "w1", "zone": "1", "at": NOW - DAY}]
    assert body["capacity_failures"] == [
        {"pool": "default", "priority": "spot", "zone": "2", "reason": "SkuNotAvailable"}
        | {"at": NOW - DAY}
    ]
    assert [d["tick"] for d in body["decisions"]] == [3]
    spans = {s["worker_id"]: s for s in body["worker_spans"]}
    assert spans["w1"] == {
        "worker_id": "w1",
        "pool": "big",
        "priority": "spot",
        "sku": "Standard_ND96",
        "zone": None,
        "start": NOW - 2 * DAY,
        "end": NOW - DAY,
        "end_reason": "evicted",
    }
    assert (spans["w2"]["sku"], spans["w2"]["end"]) == ("local-cpu", None)  # still serving


async def test_without_since_it_reads_the_last_seven_days(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock
) -> None:
    a_fleet_with_history(runtime, clock)
    response = await client.get("/fleet/journal", headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    assert response.json()["since"] == NOW - 7 * DAY
    assert [e["worker_id"] for e in response.json()["evictions"]] == ["w1"]  # not `ancient`


@pytest.mark.parametrize("since", ["yesterday", "nan", "inf", "-inf", ""])
async def test_a_since_that_is_no_finite_number_is_a_400(
    client: httpx.AsyncClient, since: str
) -> None:
    response = await client.get(f"/fleet/journal?since={since}", headers=auth(ADMIN_KEY))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "since"
