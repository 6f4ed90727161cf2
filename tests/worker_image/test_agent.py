"""The worker agent against real loopback fakes of vLLM, the control plane, IMDS and Key Vault.

The agent is stdlib-only and copied to VMs as a lone file, so it is loaded by
path, and everything it talks to is a real HTTP server on 127.0.0.1: the test
exercises the same sockets, headers and JSON a spot VM would.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

AGENT_PATH = Path(__file__).resolve().parents[2] / "worker_image" / "agent.py"
TOKEN = "fleet-secret-7f3a9c"
ACCESS = "eyJ-managed-identity-access-token"
WORKER = "vm-spot-1"

Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]] | None


def load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spotgate_agent", AGENT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["spotgate_agent"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def agent_mod() -> ModuleType:
    return load_agent()


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class FakeServer:
    """A ThreadingHTTPServer on a free loopback port; subclasses answer in `handle`.

    `handle` returns (status, json-or-bytes[, headers]), or None to drop the
    connection without a reply, as a crashing server would.
    """

    def __init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_POST(self) -> None:
                fake._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        parts = urlsplit(h.path)
        with self.lock:
            result = self.handle(method, parts.path, parse_qs(parts.query), h.headers, body)
        if result is None:
            h.close_connection = True
            return
        status, payload, *rest = result
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        for name, value in (rest[0] if rest else {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Message, body: Any
    ) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class FakeEngine(FakeServer):
    """vLLM's /health and /metrics, with load split over two engines' label sets."""

    def __init__(self) -> None:
        super().__init__()
        self.healthy = True
        self.running = 0
        self.waiting = 0
        self.health_checks = 0

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Message, body: Any
    ) -> Reply:
        if path == "/health":
            self.health_checks += 1
            return (200, b"") if self.healthy else (503, b"")
        if path == "/metrics" and self.healthy:
            text = (
                "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{engine="0",model_name="org/m, v1 {{x}}"}} '
                f"{self.running // 2}\n"
                f'vllm:num_requests_running{{engine="1",model_name="a \\"q,\\" b"}} '
                f"{self.running - self.running // 2}.0 1700000000000\n"
                f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {self.waiting}\n'
                'vllm:num_requests_waiting{engine="1",model_name="m"} NaN\n'
                'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
                'vllm:kv_cache_usage_perc{engine="1",model_name="m"} +Inf\n'
                "vllm:num_requests_running_total 99\n"
                'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 7\n'
            )
            return 200, text.encode()
        return 404, b""


class FakeControlPlane(FakeServer):
    """The /fleet/workers contract; `mode` is up, down (503) or close (drops connections).

    As the real one: registration hands out a worker credential; heartbeats and
    eviction reports must carry it (409 worker_credential_invalid if not); a live
    worker is registered again only with it (409 worker_registered); a retired one
    never (409 worker_retired).
    """

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.mode = "up"
        self.workers: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any, int]] = []
        self.in_flight = 0
        self.retired: set[str] = set()
        self.issued = 0
        self.pending = False  # as an instance the registration has not reached yet

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Message, body: Any
    ) -> Reply:
        reply = self._answer(path, headers, body)
        self.calls.append((path.rsplit("/", 1)[-1], path, body, reply[0] if reply else 0))
        return reply

    def _answer(self, path: str, headers: Message, body: Any) -> Reply:
        if self.mode == "close":
            return None
        if self.mode == "down":
            return 503, {"error": {"message": "down"}}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": {"message": "bad fleet token"}}
        presented = headers.get("X-Worker-Token")
        if path == "/fleet/workers":
            if body["id"] in self.retired:
                return 409, {"error": {"code": "worker_retired"}}
            live = self.workers.get(body["id"])
            if live and live.get("credential") and presented != live["credential"]:
                return 409, {"error": {"code": "worker_registered"}}
            self.issued += 1
            credential = f"worker-cred-{self.issued}-{body['id']}"
            self.workers[body["id"]] = {**body, "state": "ready", "credential": credential}
            return 201, {**self.workers[body["id"]], "worker_token": credential}
        _, _, _, worker_id, action = path.split("/")
        worker = self.workers.get(worker_id)
        if worker is None:
            return 404, {"error": {"code": "worker_not_found"}}
        if self.pending:
            return 409, {"error": {"code": "worker_registration_pending"}}, {"Retry-After": "0"}
        if presented != worker.get("credential"):
            return 409, {"error": {"code": "worker_credential_invalid"}}
        if action == "evicting":
            worker["state"] = "draining"
        return 200, {"state": worker["state"], "in_flight": self.in_flight}

    def of(self, kind: str, status: int | None = None) -> list[tuple[str, str, Any, int]]:
        return [c for c in list(self.calls) if c[0] == kind and (status is None or c[3] == status)]

    def registrations(self) -> list[Any]:
        return [c[2] for c in self.of("workers", 201)]


class FakeImds(FakeServer):
    """Scheduled Events, instance metadata and managed identity; demands Metadata: true."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.acks: list[tuple[float, list[dict[str, str]]]] = []
        self.polls = 0
        self.token_queries: list[dict[str, list[str]]] = []
        self.zone = "3"
        self.instance_reads = 0

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Message, body: Any
    ) -> Reply:
        if headers.get("Metadata") != "true":
            return 400, {"error": "Bad request. Required metadata header not specified"}
        if path == "/metadata/scheduledevents" and query.get("api-version") == ["2020-07-01"]:
            if method == "GET":
                self.polls += 1
                return 200, {"DocumentIncarnation": len(self.events), "Events": self.events}
            self.acks.append((time.time(), body["StartRequests"]))
            return 200, b""
        if path == "/metadata/instance" and query.get("api-version") == ["2021-02-01"]:
            self.instance_reads += 1
            return 200, {
                "compute": {"name": "vm-from-imds", "location": "westeurope", "zone": self.zone},
                "network": {
                    "interface": [
                        {
                            "ipv4": {
                                "ipAddress": [
                                    {"privateIpAddress": "10.1.2.3", "publicIpAddress": ""}
                                ],
                                "subnet": [{"address": "10.1.2.0", "prefix": "24"}],
                            },
                            "ipv6": {"ipAddress": []},
                            "macAddress": "000D3A000001",
                        }
                    ]
                },
            }
        if path == "/metadata/identity/oauth2/token":
            self.token_queries.append(query)
            return 200, {"access_token": ACCESS, "token_type": "Bearer"}
        return 404, b""

    def preempt(
        self, notice_s: float, resources: list[str] | None = None, kind: str = "Preempt"
    ) -> dict[str, Any]:
        event = {
            "EventId": f"EV-{kind}-{len(self.events)}",
            "EventType": kind,
            "ResourceType": "VirtualMachine",
            "Resources": [WORKER] if resources is None else resources,
            "EventStatus": "Scheduled",
            "NotBefore": formatdate(time.time() + notice_s, usegmt=True),
            "Description": "Virtual machine is being evicted from Azure",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }
        with self.lock:
            self.events.append(event)
        return event

    def acked_ids(self) -> list[str]:
        return [r["EventId"] for _, requests in list(self.acks) for r in requests]


class FakeVault(FakeServer):
    def __init__(self, value: str = TOKEN) -> None:
        super().__init__()
        self.value = value
        self.reads: list[str | None] = []

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Message, body: Any
    ) -> Reply:
        self.reads.append(headers.get("Authorization"))
        if headers.get("Authorization") != f"Bearer {ACCESS}":
            return 401, {"error": {"code": "Unauthorized"}}
        if path == "/secrets/fleet-token" and query.get("api-version") == ["7.4"]:
            return 200, {"value": self.value, "id": f"{self.url}/secrets/fleet-token/1"}
        return 404, {"error": {"code": "SecretNotFound"}}


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    server = FakeEngine()
    yield server
    server.close()


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    yield server
    server.close()


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    server = FakeImds()
    yield server
    server.close()


@pytest.fixture
def start_agent(
    agent_mod: ModuleType, engine: FakeEngine, cp: FakeControlPlane, imds: FakeImds
) -> Iterator[Callable[..., Any]]:
    """Runs agents in threads with short intervals; stops and joins them at teardown."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(**overrides: Any) -> Any:
        fields: dict[str, Any] = {
            "control_plane": cp.url,
            "model": "m",
            "worker_id": WORKER,
            "fleet_token": TOKEN,
            "pool": "p1",
            "engine_url": engine.url,
            "advertise_url": "http://10.0.0.4:8000",
            "zone": "2",
            "imds_url": imds.url,
            "heartbeat_interval": 0.05,
            "events_interval": 0.05,
            "ack_margin": 1.0,
            "engine_ready_timeout": 30.0,
            "engine_poll_interval": 0.05,
            "retry_base": 0.02,
            "retry_cap": 0.2,
            "auth_retry": 0.2,
            "timeout": 2.0,
            **overrides,
        }
        agent = agent_mod.Agent(agent_mod.Config(**fields))
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        agent.thread = thread
        return agent

    yield start
    for stop, _ in running:
        stop.set()
    for _, thread in running:
        thread.join(10)
        assert not thread.is_alive(), "agent did not stop"


def heartbeats(cp: FakeControlPlane) -> list[Any]:
    return [c[2] for c in cp.of("heartbeat", 200)]


# --- parsing and configuration -------------------------------------------------------------


def test_metrics_parser_sums_label_sets_and_skips_noise(agent_mod: ModuleType) -> None:
    engine = FakeEngine()
    try:
        engine.running, engine.waiting = 5, 2
        text = engine.handle("GET", "/metrics", {}, Message(), None)[1].decode()
    finally:
        engine.close()
    assert agent_mod.parse_metrics(text) == {
        "num_requests_running": 5.0,
        "num_requests_waiting": 2.0,
        "kv_cache_usage_perc": 0.25,
    }
    old = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:num_requests_running 1e0\n'
    assert agent_mod.parse_metrics(old)["kv_cache_usage_perc"] == 0.5
    both = old + "vllm:kv_cache_usage_perc 0.75\n"
    assert agent_mod.parse_metrics(both)["kv_cache_usage_perc"] == 0.75
    garbage = "vllm:num_requests_running{broken\nvllm:num_requests_waiting abc\n\n#x\n"
    assert agent_mod.parse_metrics(garbage) == dict.fromkeys(
        ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"), 0.0
    )


def test_retry_after_seconds_and_dates(agent_mod: ModuleType) -> None:
    reply = agent_mod.Response
    assert agent_mod.retry_after(reply(503, {"retry-after": "3"}, b"")) == 3.0
    assert agent_mod.retry_after(reply(503, {"retry-after": "9999"}, b"")) == 60.0
    later = formatdate(time.time() + 30, usegmt=True)
    assert 25 <= agent_mod.retry_after(reply(429, {"retry-after": later}, b"")) <= 30
    assert agent_mod.retry_after(reply(503, {}, b"")) is None
    assert agent_mod.retry_after(None) is None


def test_backoff_grows_to_its_cap_and_survives_long_outages(agent_mod: ModuleType) -> None:
    backoff = agent_mod.Backoff(0.5, 10.0)
    delays = [backoff.next() for _ in range(5000)]
    assert 0.25 <= delays[0] <= 0.5 and all(d <= 10.0 for d in delays)
    assert max(delays[-10:]) > 5.0
    assert backoff.next(at_least=42.0) == 42.0


def test_cli_flags_override_environment(agent_mod: ModuleType) -> None:
    env = {
        "SPOTGATE_CONTROL_PLANE_URL": "http://cp",
        "SPOTGATE_FLEET_TOKEN": TOKEN,
        "SPOTGATE_MODEL": "m",
        "SPOTGATE_POOL": "gpu",
        "SPOTGATE_HEARTBEAT_INTERVAL": "0.5",
    }
    config = agent_mod.parse_args(["--pool", "cli", "--zone", "3"], env)
    assert (config.control_plane, config.fleet_token, config.model) == ("http://cp", TOKEN, "m")
    assert (config.pool, config.zone, config.heartbeat_interval) == ("cli", "3", 0.5)
    assert (config.engine, config.engine_url, config.priority) == (
        "vllm",
        "http://127.0.0.1:8000",
        "spot",
    )
    assert config.imds_url == "http://169.254.169.254" and config.ack_margin == 5.0
    no_token = {**env, "SPOTGATE_FLEET_TOKEN": ""}
    kv = agent_mod.parse_args(["--key-vault-url", "https://v", "--model", "m"], no_token)
    assert kv.fleet_token is None and kv.fleet_token_secret == "fleet-token"
    with pytest.raises(SystemExit):
        agent_mod.parse_args(["--control-plane", "http://cp", "--model", "m"], {})


def test_worker_id_defaults_to_vm_name_then_hostname(agent_mod: ModuleType, imds: FakeImds) -> None:
    config = agent_mod.Config(control_plane="http://cp", model="m", imds_url=imds.url)
    assert agent_mod.Agent(config).worker_id == "vm-from-imds"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = agent_mod.Config(control_plane="http://cp", model="m", imds_url=dead)
    agent = agent_mod.Agent(config)
    assert agent.worker_id == socket.gethostname()
    assert (agent.zone, agent.url) == (None, "http://127.0.0.1:8000")


def test_zone_and_url_from_imds_unless_configured(agent_mod: ModuleType, imds: FakeImds) -> None:
    """One cloud-init serves every zone: the VM's zone and private IP come from IMDS."""
    base = {"control_plane": "http://cp", "model": "m", "imds_url": imds.url}
    agent = agent_mod.Agent(agent_mod.Config(**base, engine_url="http://127.0.0.1:8011/"))
    assert (agent.worker_id, agent.zone, agent.url) == ("vm-from-imds", "3", "http://10.1.2.3:8011")
    imds.zone = ""
    agent = agent_mod.Agent(agent_mod.Config(**base, worker_id="w", advertise_url="http://a:1"))
    assert (agent.worker_id, agent.zone, agent.url) == ("w", None, "http://a:1")
    reads = imds.instance_reads
    configured = {"worker_id": "w", "zone": "1", "advertise_url": "http://a:1"}
    agent = agent_mod.Agent(agent_mod.Config(**base, **configured))
    assert (agent.worker_id, agent.zone, agent.url) == ("w", "1", "http://a:1")
    assert imds.instance_reads == reads, "nothing left to learn: IMDS is not asked"


def test_odd_imds_metadata_falls_back(agent_mod: ModuleType) -> None:
    def imds_saying(shape: Any) -> Any:
        body = shape if isinstance(shape, bytes) else json.dumps(shape).encode()
        return lambda *_: agent_mod.Response(200, {}, body)

    config = agent_mod.Config(control_plane="http://cp", model="m")
    for shape in ([], b"<html>", {"compute": "x", "network": {"interface": []}}):
        agent = agent_mod.Agent(config, http=imds_saying(shape))
        assert (agent.worker_id, agent.zone) == (socket.gethostname(), None)
        assert agent.url == "http://127.0.0.1:8000"
    assert agent_mod.Agent(config, http=imds_saying({"compute": {"zone": 2}})).zone == "2"


def test_registration_carries_zone_and_private_url_from_imds(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    start_agent(worker_id=None, zone=None, advertise_url=None)
    wait_until(lambda: cp.registrations(), "registration")
    body = cp.registrations()[0]
    assert (body["id"], body["zone"]) == ("vm-from-imds", "3")
    assert body["url"].startswith("http://10.1.2.3:")


# --- registration and heartbeats ----------------------------------------------------------


def test_registers_once_engine_is_healthy(
    start_agent: Callable[..., Any], engine: FakeEngine, cp: FakeControlPlane
) -> None:
    engine.healthy = False
    agent = start_agent()
    wait_until(lambda: engine.health_checks >= 3, "health polling")
    assert cp.registrations() == []
    engine.healthy = True
    wait_until(lambda: cp.registrations(), "registration")
    assert cp.registrations()[0] == {
        "id": WORKER,
        "pool": "p1",
        "model": "m",
        "engine": "vllm",
        "url": "http://10.0.0.4:8000",
        "priority": "spot",
        "zone": "2",
    }
    wait_until(lambda: agent.registered, "the agent to see its registration accepted")


def test_heartbeats_carry_parsed_metrics_and_learn_in_flight(
    start_agent: Callable[..., Any], engine: FakeEngine, cp: FakeControlPlane
) -> None:
    engine.running, engine.waiting, cp.in_flight = 3, 2, 4
    agent = start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    assert heartbeats(cp)[-1] == {
        "metrics": {
            "num_requests_running": 3.0,
            "num_requests_waiting": 2.0,
            "kv_cache_usage_perc": 0.25,
        }
    }
    wait_until(lambda: agent.in_flight == 4 and agent.state == "ready", "heartbeat reply")


def test_forgotten_worker_registers_again(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    cp.workers.clear()
    wait_until(lambda: len(cp.registrations()) == 2, "re-registration after 404")
    assert cp.of("heartbeat", 404)
    count = len(heartbeats(cp))
    wait_until(lambda: len(heartbeats(cp)) > count + 2, "heartbeats after re-registering")


def test_heartbeats_carry_the_credential_handed_out_at_registration(
    start_agent: Callable[..., Any], cp: FakeControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spotgate.agent")
    agent = start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 3, "heartbeats accepted with the credential")
    assert not cp.of("heartbeat", 409)
    assert agent.credential == cp.workers[WORKER]["credential"]
    assert agent.credential not in caplog.text


def test_a_heartbeat_refused_for_its_credential_makes_the_agent_register_again(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    with cp.lock:
        cp.workers[WORKER]["credential"] = None  # e.g. the control plane lost its record
    wait_until(lambda: cp.of("heartbeat", 409), "the refused heartbeat")
    wait_until(lambda: len(cp.registrations()) == 2, "registration again")
    count = len(heartbeats(cp))
    wait_until(lambda: len(heartbeats(cp)) > count + 2, "heartbeats with the new credential")


def test_a_registration_not_yet_seen_by_another_instance_is_waited_for_not_repeated(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    cp.pending = True
    wait_until(lambda: len(cp.of("heartbeat", 409)) >= 3, "heartbeats answered 'pending'")
    time.sleep(0.3)
    pending = len(cp.of("heartbeat", 409))
    assert pending < 20, "it waits between tries, it does not spin"
    cp.pending = False
    count = len(heartbeats(cp))
    wait_until(lambda: len(heartbeats(cp)) > count + 2, "heartbeats once the record arrived")
    assert len(cp.registrations()) == 1, "it never registered again"


def test_a_retired_worker_stops_registering(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    cp.retired.add(WORKER)
    start_agent()
    wait_until(lambda: cp.of("workers", 409), "the refused registration")
    time.sleep(0.5)  # dozens of retry intervals
    assert len(cp.of("workers")) == 1, "no point asking again: the VM is being deleted"


def test_the_credential_survives_an_agent_restart_in_a_private_state_file(
    start_agent: Callable[..., Any], cp: FakeControlPlane, tmp_path: Path
) -> None:
    state = tmp_path / "credential.json"
    first = start_agent(state_file=str(state))
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats of the first agent")
    assert state.stat().st_mode & 0o777 == 0o600
    first.stop.set()
    first.thread.join(5)
    second = start_agent(state_file=str(state))
    wait_until(lambda: len(cp.registrations()) == 2, "the restarted agent registers")
    assert not cp.of("workers", 409), "it proved it is the same worker"
    count = len(heartbeats(cp))
    wait_until(lambda: len(heartbeats(cp)) > count + 2, "heartbeats after the restart")
    assert second.credential == cp.workers[WORKER]["credential"] != "worker-cred-1-" + WORKER


def test_without_its_credential_a_second_agent_cannot_take_over_a_live_worker(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats of the first agent")
    start_agent(advertise_url="http://127.0.0.66:8000")
    wait_until(lambda: cp.of("workers", 409), "the impostor's refused registration")
    assert cp.workers[WORKER]["url"] == "http://10.0.0.4:8000"


def test_survives_control_plane_outages(
    start_agent: Callable[..., Any], cp: FakeControlPlane
) -> None:
    cp.mode = "down"
    agent = start_agent()
    wait_until(lambda: len(cp.of("workers", 503)) >= 3, "register retries on 503")
    cp.mode = "close"
    count = len(cp.calls)
    wait_until(lambda: len(cp.calls) >= count + 3, "register retries on dropped connections")
    cp.mode = "up"
    wait_until(lambda: cp.registrations(), "registration after the outage")
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    cp.mode = "down"
    wait_until(lambda: len(cp.of("heartbeat", 503)) >= 3, "heartbeat retries")
    cp.mode = "up"
    count = len(heartbeats(cp))
    wait_until(lambda: len(heartbeats(cp)) > count, "heartbeats after the outage")
    assert agent.thread.is_alive()


def test_rotated_token_from_key_vault_and_no_secret_in_logs(
    start_agent: Callable[..., Any],
    cp: FakeControlPlane,
    imds: FakeImds,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="spotgate.agent")
    vault = FakeVault(value="stale-token-before-rotation")
    try:
        start_agent(fleet_token=None, key_vault_url=vault.url + "/")
        wait_until(lambda: cp.of("workers", 401), "registration with the stale token")
        vault.value = TOKEN
        wait_until(lambda: cp.registrations(), "registration with the rotated token")
        wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    finally:
        vault.close()
    assert set(vault.reads) == {f"Bearer {ACCESS}"} and len(vault.reads) >= 2
    assert imds.token_queries[0] == {
        "api-version": ["2018-02-01"],
        "resource": ["https://vault.azure.net"],
    }
    assert "fleet token rejected" in caplog.text
    for secret in (TOKEN, ACCESS, "stale-token-before-rotation"):
        assert secret not in caplog.text


def test_user_assigned_identity_client_id(agent_mod: ModuleType, imds: FakeImds) -> None:
    vault = FakeVault()
    try:
        config = agent_mod.Config(
            control_plane="http://cp", model="m", worker_id="w", imds_url=imds.url,
            key_vault_url=vault.url, identity_client_id="11111111-2222-3333-4444-555555555555",
        )  # fmt: skip
        assert agent_mod.Agent(config).fetch_token() == TOKEN
    finally:
        vault.close()
    assert imds.token_queries == [
        {
            "api-version": ["2018-02-01"],
            "resource": ["https://vault.azure.net"],
            "client_id": ["11111111-2222-3333-4444-555555555555"],
        }
    ]
    env = {"SPOTGATE_IDENTITY_CLIENT_ID": "abc", "SPOTGATE_KEY_VAULT_URL": "https://v"}
    parsed = agent_mod.parse_args(["--control-plane", "http://cp", "--model", "m"], env)
    assert parsed.identity_client_id == "abc"
    env["SPOTGATE_IDENTITY_CLIENT_ID"] = ""  # Bicep leaves it empty for a system identity
    parsed = agent_mod.parse_args(["--control-plane", "http://cp", "--model", "m"], env)
    assert parsed.identity_client_id is None


def test_key_vault_failure_returns_none(agent_mod: ModuleType, imds: FakeImds) -> None:
    vault = FakeVault()
    try:
        config = agent_mod.Config(
            control_plane="http://cp", model="m", worker_id="w", imds_url=imds.url
        )
        assert agent_mod.Agent(config).fetch_token() is None
        config.key_vault_url, config.fleet_token_secret = vault.url, "missing"
        assert agent_mod.Agent(config).fetch_token() is None
        config.fleet_token_secret = "fleet-token"
        agent = agent_mod.Agent(config)
        assert agent.fetch_token() == TOKEN and agent.token == TOKEN
    finally:
        vault.close()


# --- scheduled events ---------------------------------------------------------------------


def test_preempt_drains_then_acknowledges_once(
    start_agent: Callable[..., Any],
    engine: FakeEngine,
    cp: FakeControlPlane,
    imds: FakeImds,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spotgate.agent")
    engine.running, cp.in_flight = 1, 1
    agent = start_agent()
    wait_until(lambda: len(heartbeats(cp)) >= 2, "heartbeats")
    event = imds.preempt(notice_s=60)
    wait_until(lambda: cp.of("evicting", 200), "eviction report")
    report = cp.of("evicting", 200)[0][2]
    assert report["event_id"] == event["EventId"] and report["event_type"] == "Preempt"
    assert abs(report["not_before"] - (time.time() + 60)) < 5

    def heartbeats_after(n: int) -> Callable[[], bool]:
        start = len(heartbeats(cp))
        return lambda: len(heartbeats(cp)) >= start + n

    wait_until(heartbeats_after(3), "heartbeats while the engine is busy")
    engine.running = 0
    wait_until(heartbeats_after(3), "heartbeats while the gateway has requests in flight")
    assert imds.acks == []
    cp.in_flight = 0
    wait_until(lambda: imds.acks, "acknowledgement once idle")
    assert imds.acked_ids() == [event["EventId"]]

    cp.workers.clear()
    wait_until(lambda: cp.of("heartbeat", 404), "control plane forgetting the worker")
    polls = imds.polls
    wait_until(lambda: imds.polls >= polls + 5, "more event polls")
    assert imds.acked_ids() == [event["EventId"]]
    assert len(cp.registrations()) == 1, "an evicted worker must not register again"
    assert agent.thread.is_alive()


def test_acknowledges_at_the_deadline_even_if_busy(
    start_agent: Callable[..., Any], engine: FakeEngine, cp: FakeControlPlane, imds: FakeImds
) -> None:
    engine.running = 2
    start_agent(ack_margin=1.0)
    wait_until(lambda: len(heartbeats(cp)) >= 1, "heartbeats")
    event = imds.preempt(notice_s=3)
    not_before = time.mktime(time.strptime(event["NotBefore"], "%a, %d %b %Y %H:%M:%S GMT"))
    not_before -= time.timezone
    wait_until(lambda: imds.acks, "acknowledgement at the deadline")
    assert imds.acked_ids() == [event["EventId"]]
    assert imds.acks[0][0] >= not_before - 1.0 - 0.2
    assert heartbeats(cp)[-1]["metrics"]["num_requests_running"] == 2.0


def test_eviction_before_the_engine_is_up_skips_registration(
    start_agent: Callable[..., Any], engine: FakeEngine, cp: FakeControlPlane, imds: FakeImds
) -> None:
    engine.healthy = False
    event = imds.preempt(notice_s=60)
    start_agent()
    wait_until(lambda: imds.acks, "acknowledgement")
    assert [c[2]["event_id"] for c in cp.of("evicting")] == [event["EventId"]]
    engine.healthy = True
    polls = imds.polls
    wait_until(lambda: imds.polls >= polls + 5, "more event polls")
    assert cp.registrations() == []


def test_ignores_other_vms_and_only_logs_freeze(
    start_agent: Callable[..., Any], cp: FakeControlPlane, imds: FakeImds
) -> None:
    start_agent()
    wait_until(lambda: cp.registrations(), "registration")
    imds.preempt(notice_s=60, resources=["vm-spot-2"])
    imds.preempt(notice_s=60, kind="Freeze")
    polls = imds.polls
    wait_until(lambda: imds.polls >= polls + 5, "event polls")
    assert cp.of("evicting") == [] and imds.acks == []
    count = len(heartbeats(cp))
    wait_until(lambda: len(heartbeats(cp)) > count, "heartbeats go on")


def test_reboot_drains_and_acks_but_keeps_the_worker(
    start_agent: Callable[..., Any], cp: FakeControlPlane, imds: FakeImds
) -> None:
    agent = start_agent()
    wait_until(lambda: cp.registrations(), "registration")
    event = imds.preempt(notice_s=60, resources=[], kind="Reboot")
    wait_until(lambda: imds.acks, "acknowledgement")
    assert cp.of("evicting")[0][2]["event_type"] == "Reboot"
    assert imds.acked_ids() == [event["EventId"]]
    assert not agent.retired
    cp.workers.clear()
    wait_until(lambda: len(cp.registrations()) == 2, "re-registration after a reboot")


def test_imds_requires_the_metadata_header(
    agent_mod: ModuleType, imds: FakeImds, cp: FakeControlPlane
) -> None:
    reply = agent_mod.stdlib_http("GET", imds.url + agent_mod.EVENTS_PATH, {}, None, 2.0)
    assert reply.status == 400
    config = agent_mod.Config(
        control_plane=cp.url, model="m", worker_id=WORKER, imds_url=imds.url, fleet_token=TOKEN
    )
    imds.preempt(notice_s=60)
    assert [e["EventType"] for e in agent_mod.Agent(config).poll_events_once()] == ["Preempt"]


# --- the process ---------------------------------------------------------------------------


def test_process_exits_zero_on_sigterm_and_never_logs_the_token(
    engine: FakeEngine, cp: FakeControlPlane, imds: FakeImds
) -> None:
    command = [
        sys.executable, str(AGENT_PATH), "--control-plane", cp.url, "--model", "m",
        "--worker-id", WORKER, "--engine-url", engine.url, "--imds-url", imds.url,
        "--heartbeat-interval", "0.05", "--events-interval", "0.05",
    ]  # fmt: skip
    env = {"SPOTGATE_FLEET_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(heartbeats(cp)) >= 3, "heartbeats from the agent process")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0
    assert "registered vm-spot-1" in stderr
    assert TOKEN not in stderr
