"""uvicorn's httptools protocol with the guards a server facing the network needs.

uvicorn parses the request head before the app exists for that request, and
it has no bound on how long a head may take to arrive nor on how many
connections one address may hold: 50 clients sending headers a byte at a
time keep 50 connections (and their buffers) open for as long as they like.
The app cannot see those clients, so the bounds live here, at the
connection:

- the whole request head must arrive within `header_timeout_s` of the
  connection opening, or of its first byte on a keep-alive connection (the
  quiet time between requests is uvicorn's keep-alive timeout); otherwise the
  connection is closed (with a 408 if the client had started a request, since
  no response is in progress then, after which the connection lingers
  half-closed for LINGER_S so the 408 is not lost). A head that arrives in
  one read, as nearly all do, never arms a timer;
- one client address may hold at most `max_connections_per_ip` connections;
  the next one is closed as soon as it is accepted. Loopback is not exempt:
  a local attacker is still an attacker, and tests can prove the cap.

The body is read by the app, which bounds it (api/request_reading.py). Azure
Functions has its own front end, so only locally served stacks use this.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from spotgate.errors import error_body

log = logging.getLogger("spotgate.http")

LINGER_S = 1.0
"""How long a connection answered 408 stays half-open so that the answer arrives whole."""


class ConnectionGuard:
    """The limits one server applies and the open connections per client address.

    Shared by every connection of one server; only its event loop touches it.
    """

    def __init__(self, *, header_timeout_s: float, max_connections_per_ip: int) -> None:
        if header_timeout_s <= 0:
            raise ValueError("header_timeout_s must be positive")
        if max_connections_per_ip <= 0:
            raise ValueError("max_connections_per_ip must be positive")
        self.header_timeout_s = header_timeout_s
        self.max_connections_per_ip = max_connections_per_ip
        self._open: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        """Counts a new connection from `host`, unless that address is at its cap."""
        if self._open[host] >= self.max_connections_per_ip:
            return False
        self._open[host] += 1
        return True

    def release(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]

    def open_from(self, host: str) -> int:
        return self._open[host]


def _timeout_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = orjson.dumps(
        error_body(
            "The request head did not arrive in time.",
            "invalid_request_error",
            code="request_timeout",
        )
    )
    head = [STATUS_LINE[408]]
    for name, value in default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.extend(
        [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
    )
    return b"".join(head) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus a request-head deadline and a per-address connection cap.

    Use a subclass made by `guarded_http_protocol`, which binds the guard;
    uvicorn builds one protocol object per connection from the class alone.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._counted_host: str | None = None
        self._lingering = False

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None:
            if not self.guard.admit(host):
                log.debug("refused a connection from %s: at its connection cap", host)
                transport.close()
                return
            self._counted_host = host
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave_guard()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The connection moves to another protocol object that never calls our connection_lost.
        self._leave_guard()
        super().handle_websocket_upgrade()

    def _leave_guard(self) -> None:
        self._cancel_head_timer()
        if self._counted_host is not None:
            self.guard.release(self._counted_host)
            self._counted_host = None

    # request head deadline

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served: its head arrived, this timer is stale
        log.debug("closing a connection from %s: no request head in time", self.client)
        if not self._head_started:
            self.transport.close()
            return
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # 408 before the client reads it: send it, half-close, drop input for a moment.
        self.transport.write(_timeout_response(self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._lingering = True
        self._head_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after a 408: read only so that closing does not reset the connection
        super().data_received(data)
        # A head that arrived whole (nearly all of them) costs no timer; one still
        # arriving at the end of a read gets its deadline now.
        if self._head_started and self._head_timer is None:
            self._arm_head_timer()


def guarded_http_protocol(
    *, header_timeout_s: float, max_connections_per_ip: int
) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with its own guard (one per server)."""
    bound = ConnectionGuard(
        header_timeout_s=header_timeout_s, max_connections_per_ip=max_connections_per_ip
    )

    class BoundGuardedHttpToolsProtocol(GuardedHttpToolsProtocol):
        guard = bound

    return BoundGuardedHttpToolsProtocol
