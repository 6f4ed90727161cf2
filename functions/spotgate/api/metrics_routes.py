"""`GET /metrics`: Prometheus text for a scraper holding the admin key or the scrape token.

Metrics name models, workers and pools, which an anonymous caller has no
business enumerating, so the endpoint is not public; a scraper gets its own
token (`metrics-token` secret, `SPOTGATE_METRICS_TOKEN` locally) so it need
not hold the operator's key.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import bearer, require_admin
from spotgate.runtime import Runtime
from spotgate.secret_store import METRICS_TOKEN
from spotgate.telemetry.telemetry import CONTENT_TYPE


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    presented = bearer(request)
    token = runtime.secrets.get(METRICS_TOKEN)
    if not (token and presented and hmac.compare_digest(presented.encode(), token.encode())):
        await require_admin(request)
    return Response(runtime.telemetry.render(), headers={"content-type": CONTENT_TYPE})


routes = [Route("/metrics", metrics, methods=["GET"])]
