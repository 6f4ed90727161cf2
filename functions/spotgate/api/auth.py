"""Bearer-key checks for the three audiences: API clients, operators and worker agents."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.requests import Request

from spotgate.errors import AuthenticationFailed

if TYPE_CHECKING:
    from spotgate.runtime import Runtime


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("api-key")


def require_key(request: Request, accepted: Iterable[str | None], what: str = "API key") -> str:
    presented = bearer(request)
    if not presented:
        raise AuthenticationFailed(f"Missing {what}. Send it as 'Authorization: Bearer <key>'.")
    for key in accepted:
        if key and hmac.compare_digest(presented.encode(), key.encode()):
            return presented
    raise AuthenticationFailed(f"Invalid {what}.")


def require_admin(request: Request) -> Runtime:
    """The app's Runtime, once the request presented the admin key."""
    runtime: Runtime = request.app.state.runtime
    require_key(request, [runtime.settings.admin_key], "admin key")
    return runtime
