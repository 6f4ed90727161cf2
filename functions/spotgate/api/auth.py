"""Bearer credentials for the three audiences: API clients, operators and worker agents.

Which credential opens what is decided in the core (`gateway/tenancy/`): the
API key by the pipeline's authorise step, the admin role and the fleet token
by `Roles`. Routes only read the header.
"""

from __future__ import annotations

from starlette.requests import Request

from spotgate.runtime import Runtime


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("api-key")


async def require_admin(request: Request) -> Runtime:
    """The app's Runtime, once the request proved the admin role."""
    runtime: Runtime = request.app.state.runtime
    await runtime.roles.admin(bearer(request))
    return runtime


def require_agent(request: Request) -> Runtime:
    """The app's Runtime, once the request presented the fleet token."""
    runtime: Runtime = request.app.state.runtime
    runtime.roles.agent(bearer(request))
    return runtime
