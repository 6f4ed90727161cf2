"""The Batch API, assembled once for any host from the stores it chose.

Hosts pick the stores (SQLite and disk locally, Blob Storage, a Storage
queue and Cosmos DB on Azure); everything else is the same everywhere: the
service the routes call, the runner that takes lines on spare capacity, the
orchestration's services, and the backlog the autoscaler reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from spotgate.batch.backlog import QueueBacklog
from spotgate.batch.input_file import InputLimits
from spotgate.batch.ports import BatchStore, FileStore, LineQueue, LineResults
from spotgate.batch.runner import AdmissionSlots, BatchLineRunner, RunnerOptions
from spotgate.batch.service import BatchLimits, BatchService
from spotgate.batch.validation import InputValidator
from spotgate.gateway.tenancy.access import may_use, model_names
from spotgate.hosts.gateway import GatewayParts
from spotgate.orchestrations.batch_activities import SimpleBatchServices
from spotgate.orchestrations.batch_job import BATCH_ORCHESTRATOR, batch_instance_id
from spotgate.orchestrations.control import OrchestrationControl
from spotgate.runtime import Lifecycle


@dataclass(frozen=True)
class BatchStores:
    files: FileStore
    batches: BatchStore
    queue: LineQueue
    results: LineResults
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()
    """What the stores share and do not own (a credential), closed after them."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for store in (self.files, self.batches, self.queue, self.results):
            await store.close()
        for close in self.closers:
            await close()


def local_batch_stores(data_dir: Path) -> BatchStores:
    from spotgate.adapters.local.disk_file_store import DiskFileStore
    from spotgate.adapters.local.sqlite_batch_store import SqliteBatchStore
    from spotgate.adapters.local.sqlite_line_queue import SqliteLineQueue
    from spotgate.adapters.local.sqlite_line_results import SqliteLineResults

    return BatchStores(
        files=DiskFileStore(data_dir / "files"),
        batches=SqliteBatchStore(data_dir / "batches.sqlite3"),
        queue=SqliteLineQueue(data_dir / "batch-lines.sqlite3"),
        results=SqliteLineResults(data_dir / "batch-lines.sqlite3"),
    )


class OrchestrationStarter:
    """`BatchStarter`: one orchestration per batch, named after it (a retry starts none twice)."""

    def __init__(self, control: OrchestrationControl) -> None:
        self._control = control

    async def start(self, batch_id: str) -> None:
        await self._control.start(
            BATCH_ORCHESTRATOR, batch_instance_id(batch_id), {"batch_id": batch_id}
        )


@dataclass(frozen=True)
class BatchParts:
    stores: BatchStores
    runner: BatchLineRunner
    services: SimpleBatchServices
    backlog: QueueBacklog
    limits: InputLimits

    @property
    def lifecycles(self) -> tuple[Lifecycle, ...]:
        """Stores first (the runner reads them), closed last."""
        return (self.stores, self.runner)

    def service(self, control: OrchestrationControl) -> BatchService:
        """What the routes call; it starts each batch's orchestration through `control`."""
        return BatchService(
            self.stores.files,
            self.stores.batches,
            OrchestrationStarter(control),
            self.services.clock,
            BatchLimits(input=self.limits),
        )


def build_batch(parts: GatewayParts, stores: BatchStores) -> BatchParts:
    settings = parts.settings
    authority = parts.tenancy.authority
    catalog = parts.router.catalog

    def resolve(owner: str, model: str) -> tuple[str, str] | None:
        """The model's served name and pool, if the batch's owner may use it."""
        resolved = None if catalog.is_auto(model) else catalog.resolve(model)
        caller = authority.caller_for(owner)
        if resolved is None or caller is None:
            return None
        names, groups = model_names(resolved)
        if not may_use(caller.key, names, groups):
            return None
        return resolved.served_name, resolved.pool

    limits = InputLimits(max_line_bytes=settings.server.max_body_bytes)
    runner = BatchLineRunner(
        queue=stores.queue,
        results=stores.results,
        files=stores.files,
        batches=stores.batches,
        serving=parts.serving,
        slots=AdmissionSlots(parts.router.admission),
        pools=lambda: settings.pools,
        owner=authority.caller_for,
        clock=parts.clock,
        options=RunnerOptions(),
    )
    services = SimpleBatchServices(
        files=stores.files,
        batches=stores.batches,
        queue=stores.queue,
        results=stores.results,
        clock=parts.clock,
        validator=InputValidator(resolve, limits),
    )
    backlog = QueueBacklog(stores.queue, stores.batches, runner.line_seconds, parts.clock)
    return BatchParts(stores, runner, services, backlog, limits)
