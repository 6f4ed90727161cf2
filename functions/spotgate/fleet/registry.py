"""The worker registry: the control plane's truth about which workers exist and may take traffic.

The gateway reads it on every request, so the ready set per model is kept as
a precomputed tuple and rebuilt only when a worker changes state. Every
change is written through to the store first, so a restart of the control
plane loses nothing it had acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from spotgate.clock import Clock
from spotgate.errors import InvalidRequest, NotFound, OpenAIError
from spotgate.fleet.registration import (
    CredentialRejected,
    RegistrationConflict,
    RegistrationRefused,
    WorkerAddress,
    credential_matches,
    new_credential,
)
from spotgate.fleet.store import WorkerStore
from spotgate.fleet.worker import (
    LOST_REASON,
    RETIRED_PREFIX,
    EngineMetrics,
    Eviction,
    Worker,
    WorkerState,
    can_move,
)

ChangeListener = Callable[[Worker], None]


class UnknownWorker(NotFound):
    def __init__(self, worker_id: str) -> None:
        super().__init__(f"No worker '{worker_id}' is registered.", code="worker_not_found")


class WorkerRetired(InvalidRequest):
    """The monitor deleted this worker; an agent still running on it must not bring it back."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(
            f"Worker '{worker_id}' was retired by the fleet monitor and is being deleted.",
            code="worker_retired",
            status_code=409,
        )


class WorkerRegistry:
    def __init__(
        self,
        store: WorkerStore,
        clock: Clock,
        *,
        gone_retention_s: float = 300.0,
        distrust_retention_s: float = 86_400.0,
    ):
        """A distrusted worker's record is kept `distrust_retention_s` after it is gone, so
        cache entries it wrote (up to the longest cache TTL) are still recognised."""
        self._store = store
        self._clock = clock
        self._gone_retention_s = gone_retention_s
        self._distrust_retention_s = distrust_retention_s
        self._workers: dict[str, Worker] = {w.id: w for w in store.all()}
        self._ready_by_model: dict[str, tuple[Worker, ...]] = {}
        self._listeners: list[ChangeListener] = []
        self._rebuild_index()

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    # reads

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def all(self) -> list[Worker]:
        return sorted(self._workers.values(), key=lambda w: (w.pool, w.id))

    def ready_for_model(self, model: str) -> tuple[Worker, ...]:
        return self._ready_by_model.get(model, ())

    def in_pool(self, pool: str) -> list[Worker]:
        return [w for w in self.all() if w.pool == pool]

    # writes

    def trusted(self, worker_id: str) -> bool:
        """Whether answers this worker produced may still be served (from the cache)."""
        worker = self._workers.get(worker_id)
        return worker is None or worker.distrusted is None

    def expect(
        self, worker_id: str, *, pool: str, model: str, engine: str, url: str = "", **extra: Any
    ) -> Worker:
        """Record capacity the compute provider asked for, before its agent registers.
        `address` (in `extra`), when known, is the only one its agent may register at."""
        now = self._clock.now()
        worker = Worker(
            id=worker_id,
            pool=pool,
            model=model,
            engine=engine,
            url=url,
            state=WorkerState.PROVISIONING,
            registered_at=now,
            state_changed_at=now,
            **extra,
        )
        self._save(worker)
        return worker

    def enroll(
        self,
        worker_id: str,
        address: WorkerAddress,
        credential: str | None,
        *,
        pool: str,
        model: str,
        engine: str,
        priority: str = "spot",
        zone: str | None = None,
    ) -> tuple[Worker, str]:
        """An agent's registration, checked against what the fleet manager provisioned.

        Returns the worker and a fresh credential for its agent (the previous one
        stops working). Refuses an id nobody provisioned, an address other than the
        one the cloud reports for the instance, another pool, a changed URL of a
        live worker, and a live worker's re-registration without its credential.
        A refusal on a known worker makes the cache distrust what it produced.
        """
        previous = self._workers.get(worker_id)
        if previous is None:
            raise RegistrationRefused(
                f"No instance '{worker_id}' was provisioned by the fleet manager.",
                code="worker_not_provisioned",
            )
        if previous.retired:
            raise WorkerRetired(worker_id)
        try:
            self._check_claim(previous, address, credential, pool)
        except OpenAIError as exc:
            self.distrust(worker_id, f"registration refused: {exc.code}")
            raise
        worker = self.register(
            worker_id,
            pool=pool,
            model=model,
            engine=engine,
            url=address.url,
            priority=priority,
            zone=zone,
        )
        token, digest = new_credential()
        worker.credential = digest
        worker.address = worker.address or previous.address
        self._store.put(worker)
        return worker, token

    def _check_claim(
        self, known: Worker, address: WorkerAddress, credential: str | None, pool: str
    ) -> None:
        if known.pool != pool:
            raise RegistrationRefused(
                f"Worker '{known.id}' was provisioned for pool '{known.pool}', not '{pool}'.",
                code="worker_pool_mismatch",
                param="pool",
            )
        if known.address is None:
            raise RegistrationConflict(
                f"The cloud has not reported an address for '{known.id}' yet; retry shortly.",
                code="worker_address_unknown",
                headers={"Retry-After": "5"},
            )
        if not address.matches(known.address):
            raise RegistrationRefused(
                f"Worker '{known.id}' must register at the address its instance has.",
                code="worker_address_mismatch",
                param="url",
            )
        live = known.state in (WorkerState.READY, WorkerState.DRAINING)
        if live and known.url and known.url != address.url:
            raise RegistrationConflict(
                f"Worker '{known.id}' is registered at another URL, which cannot change.",
                code="worker_url_conflict",
                param="url",
            )
        if live and known.credential and not credential_matches(credential, known.credential):
            raise RegistrationConflict(
                f"Worker '{known.id}' is registered; only its own agent may register it again.",
                code="worker_registered",
            )

    def authenticate(self, worker_id: str, credential: str | None) -> Worker:
        """The live worker whose credential `credential` is; else 404 or 409.

        A worker still provisioning here may have registered on another instance a
        moment ago (on Azure, records reach every instance within seconds): its agent
        is told to retry, not to register again, which would race its own registration.
        """
        worker = self._require(worker_id)
        if worker.state == WorkerState.PROVISIONING and credential:
            raise RegistrationConflict(
                f"The registration of '{worker_id}' has not reached this instance yet.",
                code="worker_registration_pending",
                headers={"Retry-After": "2"},
            )
        if not credential_matches(credential, worker.credential):
            raise CredentialRejected(worker_id)
        return worker

    def distrust(self, worker_id: str, reason: str) -> None:
        """Its answers are no longer served from the cache (kept past its removal)."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.distrusted is not None:
            return
        worker.distrusted = reason
        self._save(worker)

    def retire(self, worker_id: str, why: str) -> None:
        """The monitor deleted it: gone, and never welcome back, whatever state it was in."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        reason = f"{RETIRED_PREFIX}: {why}"
        if worker.state == WorkerState.GONE:
            if not worker.retired:
                worker.reason = reason
                worker.state_changed_at = self._clock.now()
                self._save(worker)
            return
        self._move(worker, WorkerState.GONE, reason)

    def locate(self, worker_id: str, address: str) -> None:
        """The compute provider reported where the instance is."""
        worker = self._workers.get(worker_id)
        if worker is not None and worker.address != address:
            worker.address = address
            self._store.put(worker)

    def register(
        self,
        worker_id: str,
        *,
        pool: str,
        model: str,
        engine: str,
        url: str,
        priority: str = "spot",
        zone: str | None = None,
    ) -> Worker:
        """The worker takes traffic from now on. Unchecked: for `enroll`, after its checks,
        and for tests that set up a fleet."""
        now = self._clock.now()
        previous = self._workers.get(worker_id)
        came_back = previous and previous.eviction is not None and previous.eviction.returns
        if previous and previous.retired:
            raise WorkerRetired(worker_id)
        if previous and previous.state == WorkerState.DRAINING and not came_back:
            previous.last_heartbeat = now
            self._save(previous)
            return previous
        worker = Worker(
            id=worker_id,
            pool=pool,
            model=model,
            engine=engine,
            url=url.rstrip("/"),
            state=WorkerState.READY,
            priority=priority,
            zone=zone,
            registered_at=previous.registered_at if previous else now,
            last_heartbeat=now,
            state_changed_at=now,
            address=previous.address if previous else None,
            distrusted=previous.distrusted if previous else None,
        )
        self._save(worker)
        return worker

    def heartbeat(self, worker_id: str, metrics: dict[str, Any] | None = None) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None or worker.state == WorkerState.GONE:
            raise UnknownWorker(worker_id)
        worker.last_heartbeat = self._clock.now()
        worker.metrics = EngineMetrics.from_dict(metrics)
        self._store.put(worker)
        return worker

    def drain(
        self,
        worker_id: str,
        reason: str,
        *,
        event_id: str | None = None,
        not_before: float | None = None,
        event_type: str = "Preempt",
    ) -> Worker:
        """Stop routing new requests to the worker; its in-flight requests finish."""
        worker = self._require(worker_id)
        if event_id is not None:
            worker.eviction = Eviction(event_id, not_before, self._clock.now(), event_type)
        self._move(worker, WorkerState.DRAINING, reason)
        return worker

    def mark_gone(self, worker_id: str, reason: str) -> Worker | None:
        worker = self._workers.get(worker_id)
        if worker is None or worker.state == WorkerState.GONE:
            return worker
        self._move(worker, WorkerState.GONE, reason)
        return worker

    def absorb(self, updated: Iterable[Worker], removed: Iterable[str] = ()) -> list[Worker]:
        """Take in what other control-plane instances wrote to the shared store.

        On Azure several instances serve the API and an agent's heartbeat lands
        on any of them. The shared store has already settled conflicts (state
        never moves backwards there), so its answer is taken as it is; nothing
        is written back. Most pulled changes are heartbeats: those update the
        record in place, so neither the routing index nor the listeners do work
        for them. Returns (and announces) the workers whose routing changed.
        """
        changed = []
        for incoming in updated:
            copy = Worker.from_dict(incoming.to_dict())
            local = self._workers.get(copy.id)
            if local is not None and _routes_alike(local, copy):
                vars(local).update(vars(copy))
                continue
            self._workers[copy.id] = copy
            changed.append(copy)
        gone = [w for w in removed if self._workers.pop(w, None) is not None]
        if changed or gone:
            self._rebuild_index()
            for worker in changed:
                for listener in self._listeners:
                    listener(worker)
        return changed

    def expire_stale(self, heartbeat_timeout_s: float, pool: str | None = None) -> list[Worker]:
        """Declare gone every live worker whose agent has gone quiet; forget long-gone ones.

        `pool` limits it to one pool, so each pool's monitor reports its own expiries.
        """
        now = self._clock.now()
        expired = []
        for worker in list(self._workers.values()):
            if pool is not None and worker.pool != pool:
                continue
            if worker.state == WorkerState.GONE:
                keep = self._gone_retention_s
                if worker.distrusted is not None:
                    keep = max(keep, self._distrust_retention_s)
                if now - worker.state_changed_at > keep:
                    del self._workers[worker.id]
                    self._store.delete(worker.id)
                continue
            if worker.state == WorkerState.PROVISIONING:
                continue
            if now - max(worker.last_heartbeat, worker.state_changed_at) > heartbeat_timeout_s:
                self._move(worker, WorkerState.GONE, LOST_REASON)
                expired.append(worker)
        return expired

    # internals

    def _require(self, worker_id: str) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None or worker.state == WorkerState.GONE:
            raise UnknownWorker(worker_id)
        return worker

    def _move(self, worker: Worker, target: WorkerState, reason: str) -> None:
        if worker.state == target or not can_move(worker.state, target):
            return
        worker.state = target
        worker.reason = reason
        worker.state_changed_at = self._clock.now()
        self._save(worker)

    def _save(self, worker: Worker) -> None:
        self._store.put(worker)
        self._workers[worker.id] = worker
        self._rebuild_index()
        for listener in self._listeners:
            listener(worker)

    def _rebuild_index(self) -> None:
        index: dict[str, list[Worker]] = {}
        for worker in self._workers.values():
            if worker.state == WorkerState.READY:
                index.setdefault(worker.model, []).append(worker)
        self._ready_by_model = {m: tuple(ws) for m, ws in index.items()}


def _routes_alike(a: Worker, b: Worker) -> bool:
    """Whether the gateway would route to `b` exactly as to `a` (same state, place, model)."""
    return (a.state, a.url, a.model, a.pool) == (b.state, b.url, b.model, b.pool)
