"""One simulated run: a trace, a worker profile, a fleet policy and a spot scenario.

Assembled from the fleet's real parts (registry, journal, control plane,
observation, planner, the monitor's tick and activities) around simulated
ones (time, the cloud, the gateway, the engines). Before the trace starts,
the monitor runs for a warm-up with the trace's opening load announced, so
the fleet is sized as a long-running service would be, not cold.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from spotgate.costs.price_table import PriceTable
from spotgate.fleet.control_plane import ControlPlane
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.registration import parse_networks
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import SPOT
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleetsim.cloud import SimCloud, SimVM
from spotgate.fleetsim.events import EventQueue
from spotgate.fleetsim.gateway_model import SimGateway, Spillover
from spotgate.fleetsim.metrics import RunResult, SloTargets, summarise
from spotgate.fleetsim.monitor_driver import MonitorDriver
from spotgate.fleetsim.scenarios import Scenario
from spotgate.fleetsim.service_profile import ServiceProfile
from spotgate.fleetsim.traces import Trace
from spotgate.fleetsim.worker_model import Job, SimWorker
from spotgate.orchestrations.services import SimpleFleetServices

POOL = "default"
WORKER_NETWORKS = ("10.0.0.0/8",)
DRAIN_LIMIT_S = 900.0
"""How long after the last arrival the run waits for answers still in flight."""


@dataclass(frozen=True)
class SimulationConfig:
    policy: FleetPolicyConfig
    profile: ServiceProfile
    scenario: Scenario
    policy_name: str = ""
    region: str = "eastus"
    tick_seconds: float = 5.0
    capacity_wait_s: float = 30.0
    cache_hit_rate: float = 0.0
    slots_per_worker: int | None = None
    """Requests the gateway sends one worker at once (default: the profile's concurrency)."""
    targets: SloTargets = field(default_factory=SloTargets)
    spillover: Spillover | None = None
    seed: int = 0
    warm_up_s: float | None = None
    """Seconds of monitor ticks before the trace (default: one boot and two minutes)."""
    price_at: float | None = None
    """When prices are looked up (default: now)."""


class Simulation:
    def __init__(self, trace: Trace, config: SimulationConfig, prices: PriceTable) -> None:
        self.trace = trace
        self.config = config
        self.prices = prices
        rng = random.Random(config.seed)
        profile = config.profile
        warm = config.warm_up_s
        self.warm_up_s = profile.boot_to_ready_s + 120.0 if warm is None else warm
        self.events = EventQueue(start=-self.warm_up_s)
        self.registry = WorkerRegistry(InMemoryWorkerStore(), self.events)
        self.journal = InMemoryFleetJournal(maxlen=5000)
        self.jobs: list[Job] = []
        self.peak_workers = 0
        self.serving: list[tuple[float, int, int]] = []
        self.gateway = SimGateway(
            self.events,
            self.registry,
            POOL,
            random.Random(rng.random()),
            slots_per_worker=config.slots_per_worker or profile.max_concurrency,
            capacity_wait_s=config.capacity_wait_s,
            cache_hit_rate=config.cache_hit_rate,
            wake=self.wake,
            spillover=config.spillover,
        )
        control = ControlPlane(
            self.registry,
            self.journal,
            self,
            pools=[POOL],
            worker_networks=parse_networks(list(WORKER_NETWORKS)),
        )
        self.cloud = SimCloud(
            self.events,
            control,
            profile,
            config.scenario,
            random.Random(rng.random()),
            model=profile.model,
            zones=config.policy.mix.zones,
            make_worker=self._make_worker,
            on_ready=self._ready,
            on_lost=self._lost,
        )
        self.gateway.cloud = self.cloud
        services = SimpleFleetServices(
            registry=self.registry,
            clock=self.events,
            heartbeat_timeout_s=3 * config.tick_seconds,
            journal=self.journal,
            compute=self.cloud,
            demand=self.gateway,
            in_flight=self.gateway.in_flight,
        )
        self.monitor = MonitorDriver(
            self.events,
            POOL,
            config.policy,
            services,
            tick_seconds=config.tick_seconds,
            before_tick=self._before_tick,
        )

    async def wake(self, pool: str) -> None:
        """The control plane's waker: an eviction report makes the monitor tick now."""
        await self.monitor.wake(pool)

    async def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        started = time.perf_counter()
        self.gateway.extra_demand = self._opening_in_flight()
        self.monitor.start()
        for n, request in enumerate(self.trace.requests):
            job = Job(n, request.at, request.prompt_tokens, request.completion_tokens)
            self.jobs.append(job)
            self.events.at(request.at, partial(self.gateway.arrive, job))
        self.events.at(0.0, self._end_warm_up)
        last = self.trace.duration_s
        step = max(1.0, last / 200)
        mark = 0.0
        while mark < last:
            mark = min(last, mark + step)
            await self.events.run_until(mark)
            if progress is not None:
                progress(mark / last if last else 1.0)
        end = last
        while any(j.done_at is None for j in self.jobs) and end < last + DRAIN_LIMIT_S:
            end += 5.0
            await self.events.run_until(end)
        finish = max([last, *(j.done_at for j in self.jobs if j.done_at is not None)])
        result = self._summary(finish)
        result.wall_s = time.perf_counter() - started
        result.seed = self.config.seed
        result.serving = self.serving
        return result

    def _opening_in_flight(self) -> int:
        """Little's law on the trace's first five minutes: what the fleet carries at start."""
        opening = [r for r in self.trace.requests if r.at < 300.0]
        if not opening:
            return 0
        rate = len(opening) / 300.0
        p = self.config.profile
        mean = sum(
            p.ttft_base_ms / 1000
            + r.prompt_tokens / p.prefill_tokens_per_s
            + r.completion_tokens / p.decode_rate(p.max_concurrency // 2 or 1)
            for r in opening
        ) / len(opening)
        return math.ceil(rate * mean)

    def _end_warm_up(self) -> None:
        self.gateway.extra_demand = 0

    def _before_tick(self) -> None:
        self.cloud.heartbeat_all()
        now = self.events.now()
        if now >= 0:
            self.peak_workers = max(self.peak_workers, len(self.cloud.vms))
            serving = self.cloud.ready(POOL)
            spot = sum(1 for vm in serving if vm.priority == SPOT)
            self.serving.append((now, spot, len(serving) - spot))

    def _make_worker(self, worker_id: str) -> SimWorker:
        return SimWorker(worker_id, self.config.profile, self._first_token, self._done)

    def _ready(self, vm: SimVM) -> None:
        self.gateway.worker_ready(vm)

    def _lost(self, jobs: list[Job]) -> None:
        self.events.after(0.0, lambda: self.gateway.resume(jobs))

    @staticmethod
    def _first_token(job: Job, now: float) -> None:
        if job.first_token_at is None:
            job.first_token_at = now

    def _done(self, job: Job, now: float) -> None:
        job.status = "served"
        job.done_at = now

    def _summary(self, end: float) -> RunResult:
        config = self.config
        stats = self.cloud.stats
        counts: dict[str, Any] = {
            "peak_workers": self.peak_workers,
            "evictions": stats.evictions,
            "bursts": stats.bursts,
            "spot_refusals": stats.spot_refusals,
            "ticks": self.monitor.ticks,
        }
        # cost counts from the trace's start: the warm-up is the service that ran before
        vms = [self._from_start(vm) for vm in self.cloud.history if (vm.gone_at or end) > 0]
        return summarise(
            self.jobs,
            vms,
            end=end,
            targets=config.targets,
            prices=self.prices,
            sku=config.profile.sku,
            region=config.region,
            price_at=config.price_at if config.price_at is not None else time.time(),
            spillover=config.spillover,
            labels={
                "policy": config.policy_name or config.policy.capacity_mix,
                "scenario": config.scenario.name,
                "trace": self.trace.name,
                "profile": config.profile.key,
            },
            counts=counts,
            timeline=[t for t in self.monitor.timeline if t[0] >= 0],
            duration_s=end,
        )

    @staticmethod
    def _from_start(vm: SimVM) -> SimVM:
        if vm.requested_at >= 0:
            return vm
        clipped = SimVM(vm.worker_id, vm.pool, vm.priority, vm.zone, vm.ip, 0.0)
        clipped.gone_at = vm.gone_at
        return clipped
