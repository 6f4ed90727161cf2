"""Serves the fake Scheduled Events documents at the path shape of the real endpoint.

Like the real metadata service, which only the VM itself can reach at a
link-local address, it answers only callers on this machine (the workers'
agents): a dev stack bound to 0.0.0.0 must not let anyone on the network read
or acknowledge eviction notices. The peer address is the socket's (the dev
server trusts no forwarding headers).
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.errors import InvalidRequest, NotFound
from spotgate.gateway.request_body import parse_body
from spotgate.runtime import Runtime


def _on_this_machine(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _events(request: Request):
    runtime: Runtime = request.app.state.runtime
    if runtime.scheduled_events is None or not _on_this_machine(request):
        raise NotFound("No local metadata service in this process.")
    if request.headers.get("metadata", "").lower() != "true":
        raise InvalidRequest("Required metadata header not specified")
    return runtime.scheduled_events


async def scheduled_events(request: Request) -> Response:
    events = _events(request)
    worker_id = request.path_params["worker_id"]
    if request.method == "GET":
        return json_response(events.document(worker_id))
    body = parse_body(await read_request_body(request))
    starts = body.get("StartRequests")
    if not isinstance(starts, list):
        raise InvalidRequest("'StartRequests' must be an array.", param="StartRequests")
    ids = [s.get("EventId") for s in starts if isinstance(s, dict)]
    events.acknowledge(worker_id, [i for i in ids if isinstance(i, str)])
    return Response(status_code=200)


routes = [
    Route(
        "/_local/imds/{worker_id}/metadata/scheduledevents",
        scheduled_events,
        methods=["GET", "POST"],
    ),
]
