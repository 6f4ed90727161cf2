"""Orchestration status in Durable Functions' shape, so local and Azure read the same.

Links in the check-status payload are built from the configured public URL,
never from the request's Host header, which any client may set.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import require_admin
from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.errors import InvalidRequest, NotFound
from spotgate.gateway.request_body import parse_body
from spotgate.orchestrations.control import OrchestrationControl
from spotgate.orchestrations.monitor_contract import (
    ORCHESTRATOR_NAME,
    MonitorPlan,
    MonitorState,
    monitor_instance_id,
)
from spotgate.runtime import Runtime


async def _control(request: Request) -> tuple[Runtime, OrchestrationControl]:
    runtime = await require_admin(request)
    control = runtime.orchestrations
    if control is None or not control.available:
        raise NotFound("No orchestration runner in this process.", code="not_found")
    return runtime, control


def _monitor_input(monitors: MonitorPlan, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(pool, first input): the pool's usual start input, with the operator's overrides."""
    pool = body.get("pool", "default")
    if pool not in monitors.pools:
        raise InvalidRequest(f"Unknown pool '{pool}'.", param="pool")
    extra = body.get("input") or {}
    if not isinstance(extra, dict):
        raise InvalidRequest("'input' must be an object.", param="input")
    first = monitors.start_input(pool) | extra | {"pool": pool}
    try:
        MonitorState.from_input(first)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"Invalid fleet_monitor input: {exc}", param="input") from None
    return pool, first


async def start(request: Request) -> Response:
    runtime, control = await _control(request)
    name = request.path_params["name"]
    if name != ORCHESTRATOR_NAME:
        raise NotFound(f"No orchestration named '{name}'.", code="not_found")
    body = parse_body(await read_request_body(request) or b"{}")
    pool, first = _monitor_input(runtime.monitors, body)
    instance_id = await control.start(name, monitor_instance_id(pool), first)
    links = control.management_links(runtime.settings.base_url(), instance_id)
    return json_response(links, 202)


async def status(request: Request) -> Response:
    _, control = await _control(request)
    instance_id = request.path_params["instance_id"]
    found = await control.get_status(instance_id)
    if found is None:
        raise NotFound(f"No orchestration instance '{instance_id}'.", code="not_found")
    return json_response(found)


async def terminate(request: Request) -> Response:
    _, control = await _control(request)
    instance_id = request.path_params["instance_id"]
    if await control.get_status(instance_id) is None:
        raise NotFound(f"No orchestration instance '{instance_id}'.", code="not_found")
    body = parse_body(await read_request_body(request) or b"{}")
    await control.terminate(instance_id, str(body.get("reason", "terminated by operator")))
    return json_response({"terminated": instance_id}, 202)


_EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


async def raise_event(request: Request) -> Response:
    """The `sendEventPostUri` of the check-status payload: admin only, as on Azure."""
    _, control = await _control(request)
    instance_id = request.path_params["instance_id"]
    event_name = request.path_params["event_name"]
    if not _EVENT_NAME.fullmatch(event_name):
        raise InvalidRequest("Event names are 1-64 letters, digits, '_', '.' or '-'.")
    if await control.get_status(instance_id) is None:
        raise NotFound(f"No orchestration instance '{instance_id}'.", code="not_found")
    raw = await read_request_body(request)
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise InvalidRequest("The event data must be JSON.") from None
    await control.raise_event(instance_id, event_name, data)
    return Response(status_code=202)


routes = [
    Route("/orchestrations/{name}", start, methods=["POST"]),
    Route("/orchestrations/{instance_id}", status, methods=["GET"]),
    Route("/orchestrations/{instance_id}/terminate", terminate, methods=["POST"]),
    Route("/orchestrations/{instance_id}/raiseEvent/{event_name}", raise_event, methods=["POST"]),
]
