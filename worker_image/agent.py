"""spotgate worker agent: registers the engine, heartbeats its load, drains before spot eviction.

Stdlib only, one file: cloud-init copies it next to vLLM on each GPU VM, and the
local stack runs the very same file beside every worker process. Two threads share
one Agent: the lifecycle (engine health, registration, heartbeats) and the watcher
of Azure Scheduled Events, which runs from boot because an eviction notice can
arrive before the engine is up.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

log = logging.getLogger("spotgate.agent")
EVENTS_PATH = "/metadata/scheduledevents?api-version=2020-07-01"
DRAIN_EVENTS = {"Preempt", "Terminate", "Reboot", "Redeploy"}
FINAL_EVENTS = {"Preempt", "Terminate"}
GAUGES = {
    "vllm:num_requests_running": "num_requests_running",
    "vllm:num_requests_waiting": "num_requests_waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc": "gpu_cache_usage_perc",
}
# name, optional {labels} whose quoted values may hold commas, braces and escapes, then value
SAMPLE = re.compile(r'([a-zA-Z_:][\w:]*)\s*(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s*(\S+)')
HTTP_ERRORS = (OSError, http.client.HTTPException, ValueError)
SECRETS: set[str] = set()


class _Redact(logging.Filter):
    """Defence in depth: no bearer token reaches a log line, whatever a message carries."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in SECRETS:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


log.addFilter(_Redact())


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body or b"null")


HttpFn = Callable[[str, str, dict[str, str], bytes | None, float], Response]


def stdlib_http(
    method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float
) -> Response:
    """http.client rather than urllib: no proxy from the environment may sit in front of IMDS."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request(
            method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers
        )
        reply = conn.getresponse()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Sums vLLM's load gauges over label sets (e.g. one per engine); NaN and ±Inf are skipped."""
    sums = dict.fromkeys(GAUGES.values(), 0.0)
    seen = set()
    for line in text.splitlines():
        match = SAMPLE.match(line.strip())
        if match is None or match.group(1) not in GAUGES:
            continue
        try:
            value = float(match.group(2))
        except ValueError:
            continue
        if math.isfinite(value):
            sums[GAUGES[match.group(1)]] += value
            seen.add(GAUGES[match.group(1)])
    old_name = sums.pop("gpu_cache_usage_perc")
    if "kv_cache_usage_perc" not in seen:
        sums["kv_cache_usage_perc"] = old_name
    return sums


def _error_code(reply: Response) -> Any:
    try:
        return dig(reply.json(), "error", "code")
    except ValueError:
        return None


def parse_http_date(value: Any) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def dig(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]...; None where IMDS JSON lacks a step or has another shape."""
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def retry_after(reply: Response | None) -> float | None:
    value = reply.headers.get("retry-after", "").strip() if reply else ""
    when = float(value) if value.isdigit() else parse_http_date(value)
    if when is not None and not value.isdigit():
        when -= time.time()
    return None if when is None else min(max(0.0, when), 60.0)


class Backoff:
    """Exponential with jitter, so a fleet does not stampede a control plane coming back."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self, at_least: float | None = None) -> float:
        delay = min(self.cap, self.base * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return max(random.uniform(delay / 2, delay), at_least or 0.0)


@dataclass
class Config:
    control_plane: str
    model: str
    worker_id: str | None = None
    fleet_token: str | None = None
    key_vault_url: str | None = None
    fleet_token_secret: str = "fleet-token"
    identity_client_id: str | None = None  # a user-assigned identity; None: the system one
    pool: str = "default"
    engine: str = "vllm"
    engine_url: str = "http://127.0.0.1:8000"
    advertise_url: str | None = None
    priority: str = "spot"
    zone: str | None = None
    imds_url: str = "http://169.254.169.254"
    heartbeat_interval: float = 2.0
    events_interval: float = 1.0
    ack_margin: float = 5.0
    engine_ready_timeout: float = 900.0
    engine_poll_interval: float = 1.0
    retry_base: float = 0.5
    retry_cap: float = 10.0
    auth_retry: float = 30.0
    timeout: float = 5.0
    state_file: str | None = None  # keeps the worker credential across agent restarts


class Agent:
    def __init__(self, config: Config, http: HttpFn = stdlib_http) -> None:
        self.config, self.http = config, http
        self.cp = config.control_plane.rstrip("/")
        self.engine = config.engine_url.rstrip("/")
        self.imds = config.imds_url.rstrip("/")
        self.stop = threading.Event()
        # What a VM does not configure it learns from IMDS: one cloud-init serves every zone
        known = config.worker_id and config.zone and config.advertise_url
        meta = {} if known else self._instance()
        name, zone = dig(meta, "compute", "name"), dig(meta, "compute", "zone")
        self.worker_id = config.worker_id or str(name or socket.gethostname())
        self.zone = config.zone or (str(zone) if zone else None)  # "": a VM in no zone
        ip = dig(meta, "network", "interface", 0, "ipv4", "ipAddress", 0, "privateIpAddress")
        port = urlsplit(self.engine).port or 80
        self.url = config.advertise_url or (f"http://{ip}:{port}" if ip else config.engine_url)
        self.token = config.fleet_token
        SECRETS.update([self.token] if self.token else [])
        # The credential the control plane handed this worker at registration: heartbeats
        # and eviction reports carry it, so no other holder of the fleet token can send them.
        self.credential = self._load_credential()
        self.registered = self.draining = self.retired = False
        self.evicting: dict[str, Any] | None = None
        self.in_flight: int | None = None
        self.metrics: dict[str, float] | None = None
        self.state: str | None = None
        self.handled: set[str] = set()
        self.acked: set[str] = set()
        self._events_failing = False
        self._lock = threading.Lock()

    def _call(self, method: str, url: str, payload: Any = None, **headers: str) -> Response:
        body = None if payload is None else json.dumps(payload).encode()
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.http(method, url, headers, body, self.config.timeout)

    def _cp(self, method: str, path: str, payload: Any = None) -> Response:
        token = self.token or self.fetch_token()
        if not token:
            raise OSError("no fleet token (Key Vault not readable yet)")
        headers = {"Authorization": f"Bearer {token}"}
        if self.credential:
            headers["X-Worker-Token"] = self.credential
        return self._call(method, self.cp + path, payload, **headers)

    def _load_credential(self) -> str | None:
        path = self.config.state_file
        try:
            with open(path or "", encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("worker_id") != self.worker_id:
            return None
        token = state.get("credential")
        if isinstance(token, str) and token:
            SECRETS.add(token)
            return token
        return None

    def _keep_credential(self, token: str) -> None:
        SECRETS.add(token)
        self.credential = token
        if not self.config.state_file:
            return
        try:
            fd = os.open(self.config.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"worker_id": self.worker_id, "credential": token}, handle)
        except OSError as exc:
            log.warning("cannot keep the worker credential in %s: %s", self.config.state_file, exc)

    def _refused_for_good(self, reply: Response) -> bool:
        """409 worker_retired: the fleet manager deleted this worker; registering again is
        pointless (it is about to be deleted), so the agent stops trying."""
        if reply.status == 409 and _error_code(reply) == "worker_retired":
            log.error("the control plane retired %s; not registering again", self.worker_id)
            self.retired = True
            return True
        return False

    def _instance(self) -> Any:
        """IMDS instance metadata (VM name, zone, private IP); {} off Azure or on failure."""
        url = f"{self.imds}/metadata/instance?api-version=2021-02-01"
        try:
            reply = self.http("GET", url, {"Metadata": "true"}, None, 2.0)
            return reply.json() if reply.status == 200 else {}
        except HTTP_ERRORS:
            return {}

    def fetch_token(self) -> str | None:
        """Reads the fleet token from Key Vault with the VM's managed identity; None on failure."""
        vault, name = self.config.key_vault_url, self.config.fleet_token_secret
        if not vault:
            return None
        params = {"api-version": "2018-02-01", "resource": "https://vault.azure.net"}
        if self.config.identity_client_id:
            params["client_id"] = self.config.identity_client_id
        query = urlencode(params)
        try:
            reply = self._call("GET", f"{self.imds}/metadata/identity/oauth2/token?{query}",
                               Metadata="true")  # fmt: skip
            if reply.status != 200:
                raise OSError(f"managed identity token: HTTP {reply.status}")
            access = str(reply.json()["access_token"])
            SECRETS.add(access)
            url = f"{vault.rstrip('/')}/secrets/{quote(name)}?api-version=7.4"
            reply = self._call("GET", url, Authorization=f"Bearer {access}")
            if reply.status != 200:
                raise OSError(f"Key Vault secret {name!r}: HTTP {reply.status}")
            token = str(reply.json()["value"])
        except (*HTTP_ERRORS, KeyError, TypeError) as exc:
            log.warning("fleet token from Key Vault unavailable: %s", exc)
            return None
        SECRETS.add(token)
        self.token = token
        log.info("fleet token read from Key Vault secret %r", name)
        return token

    def _get_engine(self, path: str) -> Response | None:
        try:
            return self.http("GET", self.engine + path, {}, None, 3.0)
        except HTTP_ERRORS:
            return None

    def engine_healthy(self) -> bool:
        reply = self._get_engine("/health")
        return reply is not None and reply.status == 200

    def wait_for_engine(self) -> bool:
        """True once GET /health is 200; False on stop, eviction or engine-ready timeout."""
        start = last_note = time.monotonic()
        while not self.stop.is_set() and self.evicting is None:
            if self.engine_healthy():
                log.info("engine healthy at %s", self.engine)
                return True
            if (waited := time.monotonic() - start) >= self.config.engine_ready_timeout:
                log.error("engine not healthy after %.0f s; giving up", waited)
                return False
            if time.monotonic() - last_note >= 15:
                log.info("waiting for engine at %s (%.0f s)", self.engine, waited)
                last_note = time.monotonic()
            self.stop.wait(self.config.engine_poll_interval)
        return False

    def _rejected(self, what: str, reply: Response) -> bool:
        """401/403: the token may have been rotated, so a Key Vault token is read afresh."""
        if reply.status not in (401, 403):
            return False
        log.error("%s: fleet token rejected (HTTP %s); will retry", what, reply.status)
        self.token = None if self.config.key_vault_url else self.token
        return True

    def _until_accepted(
        self,
        what: str,
        send: Callable[[], Response],
        accept: Callable[[Response], bool],
        keep_going: Callable[[], bool],
        deadline: float | None = None,
    ) -> Response | None:
        """Sends at least once, then retries with backoff; 401/403 retry slowly, never crash."""
        backoff = Backoff(self.config.retry_base, self.config.retry_cap)
        while True:
            try:
                reply = send()
                if accept(reply):
                    return reply
                if self._rejected(what, reply):
                    wait = self.config.auth_retry
                else:
                    log.warning("%s: HTTP %s %r", what, reply.status, reply.body[:200])
                    wait = backoff.next(retry_after(reply))
            except HTTP_ERRORS as exc:
                log.warning("%s: unreachable (%s)", what, exc)
                wait = backoff.next()
            if self.stop.is_set() or not keep_going():
                return None
            self.stop.wait(wait if deadline is None else min(wait, deadline - time.time()))

    def register(self) -> bool:
        """Registers, retrying until accepted; False if stopped or an eviction began first."""
        c = self.config
        body = {
            "id": self.worker_id, "pool": c.pool, "model": c.model, "engine": c.engine,
            "url": self.url, "priority": c.priority, "zone": self.zone,
        }  # fmt: skip
        reply = self._until_accepted(
            "register",
            lambda: self._cp("POST", "/fleet/workers", body),
            lambda r: r.status in (200, 201) or self._refused_for_good(r),
            lambda: self.evicting is None and not self.retired,
        )
        if reply is None or self.retired:
            return False
        try:
            token = reply.json().get("worker_token")
        except (ValueError, AttributeError):
            token = None
        if isinstance(token, str) and token:
            self._keep_credential(token)
        self.registered = True
        log.info(
            "registered %s (pool %s, model %s) at %s", self.worker_id, c.pool, c.model, self.cp
        )
        return True

    def heartbeat_once(self) -> Response | None:
        """One scrape and report; learns the gateway's in-flight count. None: nothing reported."""
        with self._lock:
            scraped = self._get_engine("/metrics")
            text = scraped.body.decode("utf-8", "replace") if scraped and scraped.ok else None
            self.metrics = None if text is None else parse_metrics(text)
            if self.metrics is None and not self.engine_healthy():
                log.warning("engine not answering; holding heartbeats until it is healthy")
                self.registered = False
                return None
            path = f"/fleet/workers/{quote(self.worker_id)}/heartbeat"
            try:
                reply = self._cp("POST", path, {"metrics": self.metrics})
            except HTTP_ERRORS as exc:
                log.warning("heartbeat: control plane unreachable (%s)", exc)
                return None
            if reply.status == 200:
                data = reply.json()
                self.in_flight = int(data.get("in_flight") or 0)
                if data.get("state") != self.state:
                    self.state = data.get("state")
                    log.info("control plane has %s %s", self.worker_id, self.state)
            elif reply.status == 409 and _error_code(reply) == "worker_registration_pending":
                log.info("registration of %s not seen here yet; heartbeating on", self.worker_id)
            elif reply.status in (404, 409):
                log.warning("control plane does not know %s as ours", self.worker_id)
                self.registered, self.in_flight, self.state = False, 0, None
            elif not self._rejected("heartbeat", reply):
                log.warning("heartbeat: HTTP %s", reply.status)
            return reply

    def poll_events_once(self) -> list[dict[str, Any]]:
        """Returns this VM's new events that need a drain; logs the others."""
        try:
            reply = self._call("GET", self.imds + EVENTS_PATH, Metadata="true")
            if reply.status != 200:
                raise OSError(f"HTTP {reply.status}")
            events = list(reply.json().get("Events") or [])
        except (*HTTP_ERRORS, AttributeError, TypeError) as exc:
            if not self._events_failing:
                log.warning("scheduled events unavailable (%s); polling on", exc)
            self._events_failing = True
            return []
        self._events_failing = False
        new = []
        for event in events:
            resources = [str(r).lower() for r in event.get("Resources") or []]
            event_id, kind = str(event.get("EventId")), event.get("EventType")
            if event_id in self.handled or (resources and self.worker_id.lower() not in resources):
                continue
            self.handled.add(event_id)
            log.warning("scheduled event %s %s (%s), not before %r", kind, event_id,
                        event.get("EventStatus"), event.get("NotBefore"))  # fmt: skip
            if kind in DRAIN_EVENTS:
                new.append(event)
        return new

    def drain_and_ack(self, event: dict[str, Any]) -> None:
        """Reports the eviction, waits for idle or the deadline, then lets Azure proceed."""
        event_id, kind = str(event.get("EventId")), str(event.get("EventType"))
        not_before = parse_http_date(event.get("NotBefore"))
        deadline = time.time() if not_before is None else not_before - self.config.ack_margin
        self.evicting, self.draining = event, True
        body = {"event_id": event_id, "event_type": kind, "not_before": not_before}
        try:
            reply = self._until_accepted(
                "report eviction",
                lambda: self._cp("POST", f"/fleet/workers/{quote(self.worker_id)}/evicting", body),
                lambda r: r.ok or r.status == 404,
                lambda: time.time() < deadline,
                deadline,
            )
            log.warning(
                "eviction reported: %s", f"HTTP {reply.status}" if reply else "not accepted"
            )
            last = None
            while self.registered and not self.stop.is_set() and time.time() < deadline:
                self.heartbeat_once()
                m = self.metrics
                busy = None if m is None else m["num_requests_running"] + m["num_requests_waiting"]
                if busy == 0 and self.in_flight == 0:
                    log.info("drained: engine idle and nothing in flight at the gateway")
                    break
                if (busy, self.in_flight) != last:
                    last = (busy, self.in_flight)
                    log.info("draining: engine busy %s, gateway in flight %s", *last)
                self.stop.wait(min(self.config.heartbeat_interval, deadline - time.time()))
            else:
                if self.registered and not self.stop.is_set():
                    log.warning("ack deadline reached while still busy")
            if not self.stop.is_set():
                self._acknowledge(event_id, max(deadline, time.time()) + 30)
        finally:
            self.draining = False
            self.retired = self.retired or kind in FINAL_EVENTS
            self.evicting = event if self.retired else None

    def _acknowledge(self, event_id: str, give_up_at: float) -> None:
        if event_id in self.acked:
            return
        body = {"StartRequests": [{"EventId": event_id}]}
        if self._until_accepted(
            f"acknowledge {event_id}",
            lambda: self._call("POST", self.imds + EVENTS_PATH, body, Metadata="true"),
            lambda r: r.ok,
            lambda: time.time() < give_up_at,
        ):
            self.acked.add(event_id)
            log.warning("acknowledged scheduled event %s", event_id)

    def _watch_events(self) -> None:
        while not self.stop.is_set():
            try:
                for event in self.poll_events_once():
                    self.drain_and_ack(event)
            except Exception:
                log.exception("scheduled events watcher error; continuing")
            self.stop.wait(self.config.events_interval)

    def _step(self, backoff: Backoff) -> bool:
        """One lifecycle step; False when the engine never became healthy."""
        interval = self.config.heartbeat_interval
        if not self.registered and self.evicting is None and not self.retired:
            if self.wait_for_engine():
                self.register()
            return (
                self.stop.is_set() or self.registered or self.evicting is not None or self.retired
            )
        if self.draining or not self.registered:
            self.stop.wait(interval)
            return True
        reply = self.heartbeat_once()
        if reply is not None and reply.ok:
            backoff.attempt = 0
            self.stop.wait(interval)
        elif reply is None or self.registered:  # not a cue to register again: wait
            self.stop.wait(max(interval, backoff.next(retry_after(reply))))
        return True

    def run(self, stop_event: threading.Event | None = None) -> int:
        """Runs until stop_event is set (0) or the engine never became healthy (1)."""
        self.stop = stop_event or self.stop
        watcher = threading.Thread(target=self._watch_events, name="events", daemon=True)
        watcher.start()
        backoff = Backoff(self.config.retry_base, self.config.retry_cap)
        log.info("agent for %s starting; control plane %s", self.worker_id, self.cp)
        try:
            while not self.stop.is_set():
                try:
                    if not self._step(backoff):
                        return 1
                except Exception:
                    log.exception("agent error; continuing")
                    self.stop.wait(backoff.next())
            return 0
        finally:
            self.stop.set()
            watcher.join(timeout=2 * self.config.timeout)


INTERNAL = {"engine_poll_interval", "retry_base", "retry_cap", "auth_retry", "timeout"}


def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Flags win over SPOTGATE_<FLAG> environment variables, which win over Config's defaults."""
    env = dict(os.environ) if env is None else env
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    for f in fields(Config):
        if f.name in INTERNAL:
            continue
        var = "SPOTGATE_" + ("CONTROL_PLANE_URL" if f.name == "control_plane" else f.name.upper())
        default = None if f.default is MISSING else f.default
        kind = float if isinstance(default, float) else str
        try:
            value = kind(env[var]) if env.get(var) else default
        except ValueError:
            parser.error(f"{var}={env[var]!r} is not a number")
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=value, help=f"[env {var}]")
    args = parser.parse_args(argv)
    if not args.control_plane or not args.model:
        parser.error("--control-plane and --model are required")
    if not args.fleet_token and not args.key_vault_url:
        parser.error("--fleet-token (or --key-vault-url with managed identity) is required")
    return Config(**vars(args))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    config = parse_args(argv)
    stop = threading.Event()
    # A handler only records the signal: Event.set() takes a lock, and a second signal
    # landing inside the first handler's set() would deadlock on it.
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    agent = Agent(config)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.run(stop)), daemon=True)
    thread.start()
    while thread.is_alive() and not received:
        thread.join(0.2)
    if received:
        stop.set()
        log.info("stopping on signal")
        thread.join(2.0)
        sys.exit(0)
    sys.exit(result[0] if result else 1)


if __name__ == "__main__":
    main()
