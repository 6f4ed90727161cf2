"""Probes for the host: live (process up), ready (can serve a model), startup (booted)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.errors import json_response
from spotgate.fleet.worker import WorkerState
from spotgate.runtime import Runtime


async def live(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """Ready once at least one worker can take a request; a load balancer may route here then."""
    runtime: Runtime = request.app.state.runtime
    ready_workers = sum(1 for w in runtime.registry.all() if w.state == WorkerState.READY)
    body = {"status": "ok" if ready_workers else "unavailable", "ready_workers": ready_workers}
    return json_response(body, 200 if ready_workers else 503)


async def startup(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if runtime.ready:
        return json_response({"status": "ok"})
    return json_response({"status": "starting"}, 503)


routes = [
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/health/startup", startup, methods=["GET"]),
]
