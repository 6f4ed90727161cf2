"""How a locally served process listens: uvicorn's httptools with the connection guards.

Kept apart from the dev stack (hosts/local.py) so a plain gateway process (the
benchmark's) loads only what it serves with.
"""

from __future__ import annotations

from spotgate.adapters.local.http_server import GuardedHttpToolsProtocol, guarded_http_protocol
from spotgate.settings import Settings


def http_protocol_for(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """Head deadline and connections per address, from the server settings."""
    return guarded_http_protocol(
        header_timeout_s=settings.server.header_timeout_s,
        max_connections_per_ip=settings.server.max_connections_per_ip,
    )
