"""A real gateway on loopback in front of fake workers that misbehave on cue.

The gateway is the real app (routes, forwarding, registry, cache) served by
uvicorn on a free loopback port. The workers are tiny HTTP/1.1 servers on
loopback that answer like vLLM, except that a request carrying POISON kills
the connection the way a crashed engine does (reset, no reply), and a slow
worker answers only after a delay, noticing if the gateway hangs up first.
Workers join through the real registration path: the fleet manager's
expectation first, then the agent's POST with the fleet token.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.conftest import serve_asgi

API_KEY = "sk-adversarial"
OTHER_KEY = "sk-adversarial-other-tenant"
ADMIN_KEY = "sk-adversarial-admin"
FLEET_TOKEN = "fleet-adversarial"
MODEL = "m"
POISON = b"POISON"


def completion(text: str) -> bytes:
    return json.dumps(
        {
            "id": f"chatcmpl-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    ).encode()


@dataclass
class FakeWorker:
    """One loopback worker. `delay_s` delays each answer; POISON in a body kills the
    connection; `garbage` answers 200 with a body that is not JSON."""

    name: str
    delay_s: float = 0.0
    garbage: bool = False
    garbage_body: bytes = b"<html>not json"
    received: list[bytes] = field(default_factory=list)
    hung_up_on: int = 0
    server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def poisoned(self) -> int:
        return sum(POISON in body for body in self.received)

    def start(self) -> None:
        worker = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while worker._one(self.connection, self.rfile):
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _one(self, conn: socket.socket, rfile: Any) -> bool:
        request_line = rfile.readline()
        if not request_line:
            return False
        length = 0
        while (line := rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = rfile.read(length) if length else b""
        if request_line.startswith(b"GET /health"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return True
        self.received.append(body)
        if POISON in body:  # the engine dies under this request: reset, no reply
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return False
        if self.delay_s and self._peer_left_within(conn, self.delay_s):
            self.hung_up_on += 1
            return False
        payload = self.garbage_body if self.garbage else completion(f"answer from {self.name}")
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        conn.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        return True

    @staticmethod
    def _peer_left_within(conn: socket.socket, seconds: float) -> bool:
        conn.settimeout(seconds)
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except TimeoutError:
            return False
        except OSError:
            return True
        finally:
            conn.settimeout(None)


@dataclass
class Gateway:
    url: str
    runtime: Runtime
    workers: dict[str, FakeWorker]
    credentials: dict[str, str]

    def post(
        self, path: str, body: dict[str, Any], key: str = API_KEY, **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30, **kw)

    def chat(self, content: str, key: str = API_KEY, **extra: Any) -> httpx.Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
        return self.post("/v1/chat/completions", body, key)


def gateway_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": [API_KEY],
        "admin_key": ADMIN_KEY,
        "fleet_token": FLEET_TOKEN,
        "capacity_wait_s": 1.0,
        "cache_backend": "memory",
        "health_probe_interval_s": 60.0,
        **overrides,
    }
    return Settings(**values)


def enroll(url: str, runtime: Runtime, worker: FakeWorker) -> str:
    """Provisioned by the fleet manager, then registered by its agent: its credential."""
    runtime.registry.expect(
        worker.name, pool="default", model="", engine="", address=f"127.0.0.1:{worker.port}"
    )
    body = {
        "id": worker.name,
        "pool": "default",
        "model": MODEL,
        "engine": "vllm",
        "url": f"http://127.0.0.1:{worker.port}",
    }
    reply = httpx.post(
        f"{url}/fleet/workers",
        json=body,
        headers={"Authorization": f"Bearer {FLEET_TOKEN}"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["worker_token"])


@contextlib.contextmanager
def running_gateway(workers: list[FakeWorker], **settings: Any) -> Iterator[Gateway]:
    runtime = build_runtime(gateway_settings(**settings), InMemoryWorkerStore())
    for worker in workers:
        worker.start()
    try:
        with serve_asgi(create_app(runtime), lifespan="on") as url:
            credentials = {w.name: enroll(url, runtime, w) for w in workers}
            yield Gateway(url, runtime, {w.name: w for w in workers}, credentials)
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture
def gateway_of() -> Any:
    """`gateway_of(workers, **settings)` as a context manager."""
    return running_gateway
