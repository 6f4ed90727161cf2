"""Where worker agents talk to the control plane: register, heartbeat, report an eviction.

Each route checks the fleet token, parses, and calls the control plane
(fleet/control_plane.py); the worker's own credential travels in
`X-Worker-Token`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import require_agent
from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.errors import InvalidRequest
from spotgate.fleet.control_plane import Enrolment, EvictionNotice
from spotgate.fleet.overview import worker_view
from spotgate.gateway.request_body import parse_body
from spotgate.runtime import Runtime

WORKER_CREDENTIAL_HEADER = "x-worker-token"


def text_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    return value


async def _agent(request: Request) -> tuple[Runtime, dict[str, Any], str | None]:
    """The runtime, the parsed body and the worker credential, once the fleet token passed."""
    runtime = require_agent(request)
    body = parse_body(await read_request_body(request) or b"{}")
    return runtime, body, request.headers.get(WORKER_CREDENTIAL_HEADER)


def _enrolment(body: dict[str, Any]) -> Enrolment:
    return Enrolment(
        worker_id=text_field(body, "id") or "",
        pool=text_field(body, "pool") or "",
        model=text_field(body, "model") or "",
        engine=text_field(body, "engine") or "",
        url=text_field(body, "url") or "",
        priority=text_field(body, "priority", required=False) or "spot",
        zone=text_field(body, "zone", required=False),
    )


def _notice(body: dict[str, Any]) -> EvictionNotice:
    not_before = body.get("not_before")
    if not_before is not None and (
        isinstance(not_before, bool) or not isinstance(not_before, int | float)
    ):
        raise InvalidRequest("'not_before' must be epoch seconds or null.", param="not_before")
    return EvictionNotice(
        event_id=str(body.get("event_id") or "unknown"),
        event_type=str(body.get("event_type") or "Preempt"),
        not_before=None if not_before is None else float(not_before),
    )


async def register(request: Request) -> Response:
    runtime, body, credential = await _agent(request)
    worker, token = runtime.control_plane.enrol(_enrolment(body), credential)
    view = worker_view(worker, runtime.in_flight.of(worker.id))
    return json_response({**view, "worker_token": token}, 201)


async def heartbeat(request: Request) -> Response:
    runtime, body, credential = await _agent(request)
    metrics = body.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise InvalidRequest("'metrics' must be an object.", param="metrics")
    worker_id = request.path_params["worker_id"]
    worker = runtime.control_plane.heartbeat(worker_id, credential, metrics)
    return json_response(
        {"state": worker.state.value, "in_flight": runtime.in_flight.of(worker.id)}
    )


async def evicting(request: Request) -> Response:
    """An agent saw a spot eviction notice: stop routing to it now and wake the monitor."""
    runtime, body, credential = await _agent(request)
    worker_id = request.path_params["worker_id"]
    worker = await runtime.control_plane.evicting(worker_id, credential, _notice(body))
    return json_response(worker_view(worker, runtime.in_flight.of(worker.id)))


routes = [
    Route("/fleet/workers", register, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/fleet/workers/{worker_id}/evicting", evicting, methods=["POST"]),
]
