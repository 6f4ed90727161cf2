"""Local compute as the fleet monitor uses it: each "VM" a real `spotgate worker --engine sim`.

A real control plane (`create_app` over a runtime) is served on a loopback
port in the test's own event loop, and `LocalProcessCompute` starts worker
processes that register with it through their agents, exactly as in
`spotgate dev`. Nothing here asserts how fast anything is: waits only bound
how long a test may hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from spotgate.adapters.local.process_compute import LocalProcessCompute, WorkerSpec, free_port
from spotgate.adapters.local.scheduled_events import FakeScheduledEvents
from spotgate.adapters.local.spot_market import LocalSpotMarket
from spotgate.api.app import create_app
from spotgate.fleet.compute import CapacityError, ComputeProvider, ProvisionRequest
from spotgate.fleet.signals import ON_DEMAND, SPOT
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.conftest import free_socket

pytestmark = pytest.mark.integration

POOL = "default"
MODEL = "sim-model"
KEY = "sk-local-compute-test"
TOKEN = "fleet-token-local-compute-test"
START_TIMEOUT_S = 60.0  # a worker process importing the package on a loaded CI machine
# SIGKILL after this: see test_an_agent_signalled_twice_still_stops for why a stop may need it
STOP_GRACE_S = 5.0
SIM_ARGS = ["--ttft-ms", "1", "--tokens-per-s", "2000", "--max-concurrency", "4"]


@dataclass
class Plane:
    url: str
    runtime: Runtime
    compute: LocalProcessCompute
    market: LocalSpotMarket

    def worker(self, worker_id: str) -> Worker:
        worker = self.runtime.registry.get(worker_id)
        assert worker is not None, f"{worker_id} is not in the registry"
        return worker

    def state(self, worker_id: str) -> WorkerState | None:
        worker = self.runtime.registry.get(worker_id)
        return None if worker is None else worker.state


@contextlib.asynccontextmanager
async def control_plane(tmp_path: Path, *, provision_delay_s: float = 0.0) -> AsyncIterator[Plane]:
    """A served control plane and the local compute that launches workers against it."""
    settings = Settings(
        api_keys=[KEY],
        admin_key=KEY,
        fleet_token=TOKEN,
        data_dir=tmp_path,
        cache_backend="off",
        capacity_wait_s=0,
    )
    parts = build_gateway(settings, InMemoryWorkerStore())
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    market = LocalSpotMarket(parts.registry, lambda _worker_id, _notice_s: None)
    compute = LocalProcessCompute(
        parts.registry,
        control_plane_url=url,
        fleet_token=TOKEN,
        log_dir=tmp_path / "logs",
        provision_delay_s=provision_delay_s,
        heartbeat_interval_s=0.5,
        specs={POOL: WorkerSpec(POOL, MODEL, "sim", engine_args=SIM_ARGS)},
        spot_available=market.available,
        stop_grace_s=STOP_GRACE_S,
    )
    loop = asyncio.get_running_loop()

    def crash(worker_id: str) -> None:
        compute.kill(worker_id)

    def later(delay: float, action: Callable[[], None]) -> None:
        loop.call_later(delay, action)

    events = FakeScheduledEvents(parts.clock, crash, later)
    runtime = assemble_runtime(parts, scheduled_events=events)
    config = uvicorn.Config(
        create_app(runtime), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started, 10, "the control plane to start")
        yield Plane(url, runtime, compute, market)
    finally:
        await compute.shutdown()
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        sock.close()


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_ready(plane: Plane, worker_ids: list[str]) -> None:
    def all_ready() -> bool:
        for worker_id in worker_ids:
            if plane.state(worker_id) == WorkerState.GONE:
                log = plane.compute.log_path(worker_id)
                text = log.read_text(errors="replace") if log.exists() else "(no log)"
                raise AssertionError(f"{worker_id} ended before it was ready:\n{text}")
        return all(plane.state(w) == WorkerState.READY for w in worker_ids)

    await wait_for(all_ready, START_TIMEOUT_S, f"{worker_ids} ready")


async def chat(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hello?"}]},
        timeout=30,
    )


async def refuses_connections(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            await client.get(f"{url}/health")
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            return False
    return False


async def test_provisioned_spot_workers_register_ready_in_their_zone(tmp_path: Path) -> None:
    async with control_plane(tmp_path) as plane:
        compute: ComputeProvider = plane.compute

        ids = await compute.provision(ProvisionRequest(POOL, SPOT, "2", 2))

        assert len(ids) == 2 and len(set(ids)) == 2
        for worker_id in ids:  # recorded before any agent speaks: the monitor sees them coming
            assert plane.state(worker_id) == WorkerState.PROVISIONING
        await wait_ready(plane, ids)
        for worker_id in ids:
            worker = plane.worker(worker_id)
            assert (worker.pool, worker.model, worker.engine) == (POOL, MODEL, "sim")
            assert (worker.priority, worker.zone) == (SPOT, "2")
        listed = await compute.instances(POOL)
        assert sorted((i.worker_id, i.pool, i.priority, i.zone, i.state) for i in listed) == [
            (w, POOL, SPOT, "2", "running") for w in sorted(ids)
        ]
        assert await compute.instances("other-pool") == []
        urls = {plane.worker(w).url for w in ids}
        assert len(urls) == 2  # each its own port


async def test_delete_stops_exactly_that_worker_and_the_other_keeps_serving(
    tmp_path: Path,
) -> None:
    async with control_plane(tmp_path) as plane:
        compute: ComputeProvider = plane.compute
        doomed, survivor = await compute.provision(ProvisionRequest(POOL, SPOT, "1", 2))
        await wait_ready(plane, [doomed, survivor])
        doomed_url = plane.worker(doomed).url

        assert await compute.delete(POOL, [doomed]) == [doomed]

        await wait_for(lambda: plane.state(doomed) == WorkerState.GONE, 30, f"{doomed} gone")
        await wait_for(lambda: doomed not in plane.compute.workers(), 30, f"{doomed} process ended")
        assert await refuses_connections(doomed_url)
        assert [i.worker_id for i in await compute.instances(POOL)] == [survivor]
        assert plane.state(survivor) == WorkerState.READY
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                reply = await chat(client, plane.url)
                assert reply.status_code == 200, reply.text
                assert reply.headers["x-worker"] == survivor
        # deleting what is already gone is not an error: it counts as deleted
        assert await compute.delete(POOL, [doomed]) == [doomed]
        assert plane.state(survivor) == WorkerState.READY


async def test_refused_spot_launches_nothing_and_on_demand_still_provisions(
    tmp_path: Path,
) -> None:
    async with control_plane(tmp_path) as plane:
        compute: ComputeProvider = plane.compute
        plane.market.refuse()

        with pytest.raises(CapacityError) as refused:
            await compute.provision(ProvisionRequest(POOL, SPOT, "1", 2))

        error = refused.value
        assert (error.reason, error.code) == ("sku_not_available", "SkuNotAvailable")
        assert (error.priority, error.zone, error.provisioned) == (SPOT, "1", [])
        assert await compute.instances(POOL) == []
        assert plane.runtime.registry.all() == []
        assert plane.compute.workers() == []

        (worker_id,) = await compute.provision(ProvisionRequest(POOL, ON_DEMAND, None, 1))
        await wait_ready(plane, [worker_id])
        worker = plane.worker(worker_id)
        assert (worker.priority, worker.zone) == (ON_DEMAND, None)
        assert [(i.priority, i.state) for i in await compute.instances(POOL)] == [
            (ON_DEMAND, "running")
        ]


async def test_spot_refused_in_one_zone_still_provisions_in_another(tmp_path: Path) -> None:
    async with control_plane(tmp_path) as plane:
        compute: ComputeProvider = plane.compute
        plane.market.refuse("1")

        with pytest.raises(CapacityError):
            await compute.provision(ProvisionRequest(POOL, SPOT, "1", 1))
        (worker_id,) = await compute.provision(ProvisionRequest(POOL, SPOT, "3", 1))

        await wait_ready(plane, [worker_id])
        assert (plane.worker(worker_id).priority, plane.worker(worker_id).zone) == (SPOT, "3")
        plane.market.restore("1")
        (again,) = await compute.provision(ProvisionRequest(POOL, SPOT, "1", 1))
        assert plane.state(again) == WorkerState.PROVISIONING


async def test_a_provisioning_delay_is_listed_as_creating_first(tmp_path: Path) -> None:
    async with control_plane(tmp_path, provision_delay_s=3.0) as plane:
        compute: ComputeProvider = plane.compute

        (worker_id,) = await compute.provision(ProvisionRequest(POOL, SPOT, "1", 1))
        (listed,) = await compute.instances(POOL)

        assert (listed.worker_id, listed.state, listed.priority, listed.zone) == (
            worker_id,
            "creating",
            SPOT,
            "1",
        )
        assert plane.state(worker_id) == WorkerState.PROVISIONING
        assert plane.compute.workers() == []  # no process yet
        await wait_ready(plane, [worker_id])
        assert [i.state for i in await compute.instances(POOL)] == ["running"]


async def test_an_unknown_pool_is_refused(tmp_path: Path) -> None:
    async with control_plane(tmp_path) as plane:
        with pytest.raises(LookupError):
            await plane.compute.provision(ProvisionRequest("nowhere", SPOT, "1", 1))
        assert plane.runtime.registry.all() == []


# The agent's program, with a second SIGTERM sent while the first one's handler wakes waiters:
# the moment the worker's own terminate() lands when it follows the process group's SIGTERM.
_SIGNALLED_TWICE = """
import os, runpy, signal, sys, threading

install, notify_all = signal.signal, threading.Condition.notify_all
state = {"in_handler": 0, "sent": False}

def signal_(signum, handler):
    if signum != signal.SIGTERM or not callable(handler):
        return install(signum, handler)
    def wrapped(*args):
        state["in_handler"] += 1
        try:
            return handler(*args)
        finally:
            state["in_handler"] -= 1
    return install(signum, wrapped)

def notify_all_(self):
    main = threading.get_ident() == threading.main_thread().ident
    if main and state["in_handler"] and not state["sent"]:
        state["sent"] = True
        os.kill(os.getpid(), signal.SIGTERM)
    notify_all(self)

signal.signal, threading.Condition.notify_all = signal_, notify_all_
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_an_agent_signalled_twice_still_stops(tmp_path: Path) -> None:
    agent = Path(__file__).resolve().parents[2] / "worker_image" / "agent.py"
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: the agent waits for its engine
    command = [sys.executable, "-c", _SIGNALLED_TWICE, str(agent)]
    command += ["--control-plane", closed, "--engine-url", closed, "--imds-url", closed]
    command += ["--model", MODEL]
    command += ["--worker-id", "w-twice", "--fleet-token", TOKEN]
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while "agent for w-twice starting" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(10)
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    assert returncode == 0, log.read_text(errors="replace")
    assert "stopping on signal" in log.read_text(errors="replace")
