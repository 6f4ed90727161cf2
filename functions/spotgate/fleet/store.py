"""The port through which the registry persists workers (SQLite locally, Cosmos DB on Azure)."""

from __future__ import annotations

from typing import Protocol

from spotgate.fleet.worker import Worker


class WorkerStore(Protocol):
    def put(self, worker: Worker) -> None: ...

    def get(self, worker_id: str) -> Worker | None: ...

    def all(self) -> list[Worker]: ...

    def delete(self, worker_id: str) -> None: ...


class InMemoryWorkerStore:
    """For unit tests of the core, where persistence is beside the point."""

    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}

    def put(self, worker: Worker) -> None:
        self._workers[worker.id] = Worker.from_dict(worker.to_dict())

    def get(self, worker_id: str) -> Worker | None:
        worker = self._workers.get(worker_id)
        return Worker.from_dict(worker.to_dict()) if worker else None

    def all(self) -> list[Worker]:
        return [Worker.from_dict(w.to_dict()) for w in self._workers.values()]

    def delete(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)
