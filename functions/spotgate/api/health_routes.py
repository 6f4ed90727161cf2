"""Probes for the host: live (process up), ready (started, monitors deciding), startup."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.errors import json_response
from spotgate.runtime import Runtime
from spotgate.telemetry.readiness import readiness


async def live(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """Ready: started, and every pool's monitor deciding (see telemetry/readiness.py)."""
    runtime: Runtime = request.app.state.runtime
    found = readiness(
        started=runtime.ready,
        pools=list(runtime.monitors.pools),
        registry=runtime.registry,
        journal=runtime.journal,
        now=runtime.clock.now(),
        tick_s=runtime.monitors.tick_seconds,
    )
    return json_response(found.to_dict(), 200 if found.ready else 503)


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
