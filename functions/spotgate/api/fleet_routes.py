"""The control plane's HTTP face: agents register and report here, operators look and poke."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import require_admin, require_key
from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.errors import InvalidRequest, NotFound
from spotgate.fleet.registration import check_worker_url, parse_networks
from spotgate.fleet.worker import Worker
from spotgate.gateway.request_body import parse_body
from spotgate.orchestrations.fleet_monitor import WAKE_EVENT, monitor_instance_id
from spotgate.runtime import OrchestrationControl, Runtime


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _require_fleet_token(request: Request) -> Runtime:
    runtime = _runtime(request)
    require_key(request, [runtime.settings.fleet_token], "fleet token")
    return runtime


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    return value


async def wake_monitor(control: OrchestrationControl, pool: str) -> None:
    """Replacement capacity is requested in the monitor's next tick: make that tick now."""
    instance_id = monitor_instance_id(pool)
    if await control.get_status(instance_id) is not None:
        await control.raise_event(instance_id, WAKE_EVENT)


WORKER_CREDENTIAL_HEADER = "x-worker-token"
"""Where an agent presents the credential it got at registration (beside the fleet token)."""
_PRIORITIES = ("spot", "on-demand")


def worker_view(runtime: Runtime, worker: Worker) -> dict[str, Any]:
    data = worker.to_dict()
    del data["credential"]
    data["in_flight"] = runtime.load.of(worker.id)
    return data


def _worker_credential(request: Request) -> str | None:
    return request.headers.get(WORKER_CREDENTIAL_HEADER)


async def register(request: Request) -> Response:
    """An agent's engine is healthy; see fleet/registration.py for what it must prove."""
    runtime = _require_fleet_token(request)
    settings = runtime.settings
    body = parse_body(await read_request_body(request))
    pool = _text(body, "pool") or ""
    if pool not in settings.pools:
        raise InvalidRequest(f"Unknown pool '{pool}'.", param="pool", code="unknown_pool")
    priority = _text(body, "priority", required=False) or "spot"
    if priority not in _PRIORITIES:
        raise InvalidRequest("'priority' must be spot or on-demand.", param="priority")
    address = check_worker_url(_text(body, "url") or "", parse_networks(settings.worker_networks))
    worker, credential = runtime.registry.enroll(
        _text(body, "id") or "",
        address,
        _worker_credential(request),
        pool=pool,
        model=_text(body, "model") or "",
        engine=_text(body, "engine") or "",
        priority=priority,
        zone=_text(body, "zone", required=False),
    )
    return json_response({**worker_view(runtime, worker), "worker_token": credential}, 201)


async def heartbeat(request: Request) -> Response:
    runtime = _require_fleet_token(request)
    worker_id = request.path_params["worker_id"]
    runtime.registry.authenticate(worker_id, _worker_credential(request))
    body = parse_body(await read_request_body(request) or b"{}")
    metrics = body.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise InvalidRequest("'metrics' must be an object.", param="metrics")
    worker = runtime.registry.heartbeat(worker_id, metrics)
    return json_response({"state": worker.state.value, "in_flight": runtime.load.of(worker.id)})


async def evicting(request: Request) -> Response:
    """An agent saw a spot eviction notice: stop routing to it now and wake the monitor."""
    runtime = _require_fleet_token(request)
    runtime.registry.authenticate(request.path_params["worker_id"], _worker_credential(request))
    body = parse_body(await read_request_body(request) or b"{}")
    not_before = body.get("not_before")
    if not_before is not None and not isinstance(not_before, int | float):
        raise InvalidRequest("'not_before' must be epoch seconds or null.", param="not_before")
    event_type = str(body.get("event_type") or "Preempt")
    worker = runtime.registry.drain(
        request.path_params["worker_id"],
        f"scheduled event {event_type}",
        event_id=str(body.get("event_id") or "unknown"),
        not_before=float(not_before) if not_before is not None else None,
        event_type=event_type,
    )
    if worker.eviction is not None and not worker.eviction.returns:
        runtime.journal.record_eviction(
            worker.pool, worker.id, worker.zone, worker.eviction.reported_at
        )
    if runtime.orchestrations is not None:
        await wake_monitor(runtime.orchestrations, worker.pool)
    return json_response(worker_view(runtime, worker))


async def fleet_status(request: Request) -> Response:
    runtime = require_admin(request)
    workers = [worker_view(runtime, w) for w in runtime.registry.all()]
    names = runtime.settings.pools
    control = runtime.orchestrations
    statuses: list[dict[str, Any] | None] = [None] * len(names)
    if control is not None:
        statuses = await asyncio.gather(
            *(control.get_status(monitor_instance_id(pool)) for pool in names)
        )
    pools = []
    for pool, status in zip(names, statuses, strict=True):
        members = [w for w in workers if w["pool"] == pool]
        monitor = (status or {}).get("customStatus") or {}
        pools.append(
            {
                "name": pool,
                "desired": monitor.get("desired"),
                "actual": monitor.get("actual"),
                "workers": len(members),
                "ready": sum(1 for w in members if w["state"] == "ready"),
                "draining": sum(1 for w in members if w["state"] == "draining"),
                "provisioning": sum(1 for w in members if w["state"] == "provisioning"),
                "monitor": (status or {}).get("customStatus"),
            }
        )
    evictions = [
        {"worker": w["id"], **w["eviction"]} for w in workers if w.get("eviction") is not None
    ]
    body = {
        "pools": pools,
        "workers": workers,
        "decisions": runtime.journal.recent(20),
        "evictions": evictions,
    }
    return json_response(body)


async def kill(request: Request) -> Response:
    runtime = require_admin(request)
    if runtime.faults is None:
        raise InvalidRequest("Killing a worker is only possible on a local stack.")
    worker_id = request.path_params["worker_id"]
    if not runtime.faults.kill(worker_id):
        raise NotFound(f"No local worker process '{worker_id}'.", code="worker_not_found")
    return json_response({"killed": worker_id})


async def evict(request: Request) -> Response:
    runtime = require_admin(request)
    if runtime.faults is None:
        raise InvalidRequest("Injecting an eviction is only possible on a local stack.")
    body = parse_body(await read_request_body(request) or b"{}")
    notice_s = body.get("notice_s", 30)
    if isinstance(notice_s, bool) or not isinstance(notice_s, int | float) or notice_s < 0:
        raise InvalidRequest("'notice_s' must be a non-negative number.", param="notice_s")
    event = runtime.faults.evict(request.path_params["worker_id"], float(notice_s))
    return json_response(event, 202)


async def spot_market(request: Request) -> Response:
    """Make the local spot market refuse (or grant again) spot capacity, everywhere or in a zone."""
    runtime = require_admin(request)
    if runtime.faults is None:
        raise InvalidRequest("The spot market can only be changed on a local stack.")
    body = parse_body(await read_request_body(request) or b"{}")
    available = body.get("available")
    if not isinstance(available, bool):
        raise InvalidRequest("'available' must be true or false.", param="available")
    zone = _text(body, "zone", required=False)
    return json_response(runtime.faults.spot(available, zone))


routes = [
    Route("/fleet", fleet_status, methods=["GET"]),
    Route("/fleet/workers", register, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/evicting", evicting, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/kill", kill, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/evict", evict, methods=["POST"]),
    Route("/fleet/spot", spot_market, methods=["POST"]),
]
