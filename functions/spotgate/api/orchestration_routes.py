"""Orchestration status in Durable Functions' shape, so local and Azure read the same."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import require_admin
from spotgate.api.errors import json_response
from spotgate.errors import InvalidRequest, NotFound
from spotgate.gateway.request_body import parse_body
from spotgate.orchestrations.fleet_monitor import MonitorState, monitor_instance_id
from spotgate.orchestrations.watchdog import start_input
from spotgate.runtime import OrchestrationControl, Runtime

_STARTABLE = {"fleet_monitor"}


def _control(request: Request) -> tuple[Runtime, OrchestrationControl]:
    runtime = require_admin(request)
    if runtime.orchestrations is None:
        raise NotFound("No orchestration runner in this process.", code="not_found")
    return runtime, runtime.orchestrations


async def start(request: Request) -> Response:
    runtime, control = _control(request)
    name = request.path_params["name"]
    if name not in _STARTABLE:
        raise NotFound(f"No orchestration named '{name}'.", code="not_found")
    body = parse_body(await request.body() or b"{}")
    pool = body.get("pool", "default")
    if pool not in runtime.settings.pools:
        raise InvalidRequest(f"Unknown pool '{pool}'.", param="pool")
    extra = body.get("input") or {}
    if not isinstance(extra, dict):
        raise InvalidRequest("'input' must be an object.", param="input")
    first = start_input(runtime.settings, pool) | extra | {"pool": pool}
    try:
        MonitorState.from_input(first)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"Invalid fleet_monitor input: {exc}", param="input") from None
    instance_id = await control.start(name, monitor_instance_id(pool), first)
    return json_response(control.management_links(str(request.base_url), instance_id), 202)


async def status(request: Request) -> Response:
    _, control = _control(request)
    instance_id = request.path_params["instance_id"]
    found = await control.get_status(instance_id)
    if found is None:
        raise NotFound(f"No orchestration instance '{instance_id}'.", code="not_found")
    return json_response(found)


async def terminate(request: Request) -> Response:
    _, control = _control(request)
    instance_id = request.path_params["instance_id"]
    if await control.get_status(instance_id) is None:
        raise NotFound(f"No orchestration instance '{instance_id}'.", code="not_found")
    body = parse_body(await request.body() or b"{}")
    await control.terminate(instance_id, str(body.get("reason", "terminated by operator")))
    return json_response({"terminated": instance_id}, 202)


routes = [
    Route("/orchestrations/{name}", start, methods=["POST"]),
    Route("/orchestrations/{instance_id}", status, methods=["GET"]),
    Route("/orchestrations/{instance_id}/terminate", terminate, methods=["POST"]),
]
