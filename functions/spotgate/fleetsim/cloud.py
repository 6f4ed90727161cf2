"""The simulated cloud and the agents on its VMs: what the fleet manager acts on.

It is a `ComputeProvider`, like the local process compute and the VMSS one:
the fleet monitor's own activities call `provision`, `delete` and
`instances`. A VM boots for the profile's `boot_to_ready_s`, then its agent
enrols through the real `ControlPlane` (which refuses it until a monitor
tick has seen its address, exactly as on Azure, so the agent retries),
heartbeats before every tick, and reports a spot eviction notice through
`ControlPlane.evicting`. The platform takes an evicted VM `notice_s` later;
the jobs it still held go back to the gateway to resume elsewhere.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from spotgate.errors import OpenAIError
from spotgate.fleet.compute import CapacityError, Instance, ProvisionRequest
from spotgate.fleet.control_plane import ControlPlane, Enrolment, EvictionNotice
from spotgate.fleet.signals import SPOT
from spotgate.fleetsim.events import EventQueue, _Event
from spotgate.fleetsim.scenarios import Scenario
from spotgate.fleetsim.service_profile import ServiceProfile
from spotgate.fleetsim.worker_model import Job, SimWorker

log = logging.getLogger("spotgate.fleetsim")

ENGINE = "fleetsim"
RETRY_ENROL_S = 5.0


@dataclass(eq=False)
class SimVM:
    worker_id: str
    pool: str
    priority: str
    zone: str | None
    ip: str
    requested_at: float
    state: str = "creating"
    token: str | None = None
    worker: SimWorker | None = None
    gone_at: float | None = None
    evicted: bool = False
    timers: list[_Event] = field(default_factory=list)


@dataclass
class CloudStats:
    evictions: int = 0
    bursts: int = 0
    spot_refusals: int = 0
    provisioned: dict[str, int] = field(default_factory=dict)


class SimCloud:
    def __init__(
        self,
        events: EventQueue,
        control_plane: ControlPlane,
        profile: ServiceProfile,
        scenario: Scenario,
        rng: random.Random,
        *,
        model: str,
        zones: tuple[str, ...],
        make_worker: Callable[[str], SimWorker],
        on_ready: Callable[[SimVM], None],
        on_lost: Callable[[list[Job]], None],
        trace_start: float = 0.0,
    ) -> None:
        self._events = events
        self._control = control_plane
        self._profile = profile
        self._scenario = scenario
        self._rng = rng
        self._model = model
        self._make_worker = make_worker
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._trace_start = trace_start
        self._ids = itertools.count(1)
        self.vms: dict[str, SimVM] = {}
        self.history: list[SimVM] = []
        self.stats = CloudStats()
        if scenario.bursts_per_hour > 0:
            for zone in zones:
                self._schedule_burst(zone)

    # ComputeProvider

    async def provision(self, request: ProvisionRequest) -> list[str]:
        now = self._events.now()
        if request.priority == SPOT and self._scenario.refused(
            request.zone, now - self._trace_start
        ):
            self.stats.spot_refusals += 1
            raise CapacityError(
                "allocation_failed",
                f"spot capacity refused in zone {request.zone}",
                priority=request.priority,
                zone=request.zone,
                code="ZonalAllocationFailed",
            )
        started = []
        for _ in range(request.count):
            n = next(self._ids)
            kind = "s" if request.priority == SPOT else "d"
            vm = SimVM(
                f"{request.pool}-{kind}{n}",
                request.pool,
                request.priority,
                request.zone,
                f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                now,
            )
            self.vms[vm.worker_id] = vm
            self.history.append(vm)
            self.stats.provisioned[request.priority] = (
                self.stats.provisioned.get(request.priority, 0) + 1
            )
            vm.timers.append(
                self._events.after(self._profile.boot_to_ready_s, partial(self._boot, vm))
            )
            started.append(vm.worker_id)
        return started

    async def delete(self, pool: str, worker_ids: Sequence[str]) -> list[str]:
        for worker_id in worker_ids:
            vm = self.vms.get(worker_id)
            if vm is not None and vm.pool == pool:
                self._remove(vm)
        return list(worker_ids)

    async def instances(self, pool: str) -> list[Instance]:
        return [
            Instance(vm.worker_id, vm.pool, vm.priority, vm.zone, vm.state, private_ip=vm.ip)
            for vm in self.vms.values()
            if vm.pool == pool
        ]

    # agents

    def heartbeat_all(self) -> None:
        for vm in list(self.vms.values()):
            if vm.token is not None and vm.worker is not None:
                try:
                    self._control.heartbeat(vm.worker_id, vm.token, vm.worker.metrics())
                except OpenAIError as exc:
                    log.debug("heartbeat of %s refused: %s", vm.worker_id, exc)

    def ready(self, pool: str) -> list[SimVM]:
        return [
            vm
            for vm in self.vms.values()
            if vm.pool == pool and vm.worker is not None and not vm.evicted
        ]

    def _boot(self, vm: SimVM) -> None:
        if vm.gone_at is not None:
            return
        vm.state = "running"
        self._enrol(vm)

    def _enrol(self, vm: SimVM) -> None:
        if vm.gone_at is not None:
            return
        enrolment = Enrolment(
            worker_id=vm.worker_id,
            pool=vm.pool,
            model=self._model,
            engine=ENGINE,
            url=f"http://{vm.ip}:8000",
            priority=vm.priority,
            zone=vm.zone,
        )
        try:
            _, vm.token = self._control.enrol(enrolment, vm.token)
        except OpenAIError as exc:  # as the agent does: wait as told, then try again
            retry = float((exc.headers or {}).get("Retry-After", RETRY_ENROL_S))
            vm.timers.append(self._events.after(retry, lambda: self._enrol(vm)))
            return
        vm.worker = self._make_worker(vm.worker_id)
        self._on_ready(vm)
        if vm.priority == SPOT:
            rate = self._scenario.rate_in(vm.zone)
            if rate > 0:
                delay = self._rng.expovariate(rate / 3600.0)
                vm.timers.append(self._events.after(delay, lambda: self._notice(vm)))

    async def _notice(self, vm: SimVM) -> None:
        if vm.gone_at is not None or vm.evicted or vm.token is None:
            return
        vm.evicted = True
        self.stats.evictions += 1
        now = self._events.now()
        notice = EvictionNotice(
            f"evict-{vm.worker_id}", "Preempt", not_before=now + self._scenario.notice_s
        )
        try:
            await self._control.evicting(vm.worker_id, vm.token, notice)
        except OpenAIError as exc:
            log.debug("eviction report of %s refused: %s", vm.worker_id, exc)
        vm.timers.append(self._events.after(self._scenario.notice_s, lambda: self._remove(vm)))

    def _schedule_burst(self, zone: str) -> None:
        delay = self._rng.expovariate(self._scenario.bursts_per_hour / 3600.0)
        self._events.after(delay, lambda: self._burst(zone))

    async def _burst(self, zone: str) -> None:
        self.stats.bursts += 1
        victims = [
            vm
            for vm in self.vms.values()
            if vm.priority == SPOT and vm.zone == zone and vm.worker is not None and not vm.evicted
        ]
        for vm in victims:
            if self._rng.random() < self._scenario.burst_share:
                await self._notice(vm)
        self._schedule_burst(zone)

    def _remove(self, vm: SimVM) -> None:
        if vm.gone_at is not None:
            return
        now = self._events.now()
        vm.gone_at = now
        for timer in vm.timers:
            EventQueue.cancel(timer)
        self.vms.pop(vm.worker_id, None)
        if vm.worker is not None:
            lost = vm.worker.evict_all(now)
            if lost:
                self._on_lost(lost)
