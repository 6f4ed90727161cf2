"""What operators see and poke: the fleet's status, and local fault injection."""

from __future__ import annotations

import asyncio
import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.agent_routes import text_field
from spotgate.api.auth import require_admin
from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.errors import InvalidRequest, NotFound
from spotgate.fleet.journal_export import journal_snapshot
from spotgate.fleet.overview import fleet_overview
from spotgate.gateway.request_body import parse_body
from spotgate.orchestrations.monitor_contract import monitor_instance_id
from spotgate.runtime import LocalFaults

JOURNAL_WINDOW_S = 7 * 86400.0
"""How far back `/fleet/journal` reads without `since`."""


async def fleet_status(request: Request) -> Response:
    runtime = await require_admin(request)
    pools = runtime.monitors.pools
    control = runtime.orchestrations
    statuses = [None] * len(pools)
    if control is not None and control.available:
        ids = [monitor_instance_id(pool) for pool in pools]
        statuses = list(await asyncio.gather(*(control.get_status(i) for i in ids)))
    workers = runtime.registry.all()
    decisions = runtime.journal.recent(20)
    overview = fleet_overview(pools, workers, runtime.in_flight.of, statuses, decisions)
    return json_response(overview)


def _since(request: Request, now: float) -> float:
    text = request.query_params.get("since")
    if text is None:
        return now - JOURNAL_WINDOW_S
    try:
        since = float(text)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        raise InvalidRequest("'since' must be a finite number of Unix seconds.", param="since")
    return since


async def fleet_journal(request: Request) -> Response:
    """Evictions, refusals, decisions and worker spans since `since`, for `fleet export`."""
    runtime = await require_admin(request)
    now = runtime.clock.now()
    sku_for = runtime.settings.tenancy.sku_for
    snapshot = journal_snapshot(
        runtime.journal, runtime.registry, sku_for, _since(request, now), now
    )
    return json_response(snapshot.to_json())


async def _faults(request: Request, refusal: str) -> LocalFaults:
    runtime = await require_admin(request)
    if runtime.faults is None:
        raise InvalidRequest(refusal)
    return runtime.faults


async def kill(request: Request) -> Response:
    faults = await _faults(request, "Killing a worker is only possible on a local stack.")
    worker_id = request.path_params["worker_id"]
    if not faults.kill(worker_id):
        raise NotFound(f"No local worker process '{worker_id}'.", code="worker_not_found")
    return json_response({"killed": worker_id})


async def evict(request: Request) -> Response:
    faults = await _faults(request, "Injecting an eviction is only possible on a local stack.")
    body = parse_body(await read_request_body(request) or b"{}")
    notice_s = body.get("notice_s", 30)
    if isinstance(notice_s, bool) or not isinstance(notice_s, int | float) or notice_s < 0:
        raise InvalidRequest("'notice_s' must be a non-negative number.", param="notice_s")
    event = faults.evict(request.path_params["worker_id"], float(notice_s))
    return json_response(event, 202)


async def spot_market(request: Request) -> Response:
    """Make the local spot market refuse (or grant again) spot capacity, everywhere or in a zone."""
    faults = await _faults(request, "The spot market can only be changed on a local stack.")
    body = parse_body(await read_request_body(request) or b"{}")
    available = body.get("available")
    if not isinstance(available, bool):
        raise InvalidRequest("'available' must be true or false.", param="available")
    return json_response(faults.spot(available, text_field(body, "zone", required=False)))


routes = [
    Route("/fleet", fleet_status, methods=["GET"]),
    Route("/fleet/journal", fleet_journal, methods=["GET"]),
    Route("/fleet/workers/{worker_id}/kill", kill, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/evict", evict, methods=["POST"]),
    Route("/fleet/spot", spot_market, methods=["POST"]),
]
