"""Which model names the gateway answers for: configured ones plus whatever workers serve.

A configured model with no worker yet is known (its requests wait for
capacity); a name nobody configured or serves is a 404, not a wait.
"""

from __future__ import annotations

from typing import Any

from spotgate.fleet.registry import WorkerRegistry


class ModelCatalog:
    def __init__(self, registry: WorkerRegistry, configured: list[str]) -> None:
        self._registry = registry
        self._configured = frozenset(configured)

    def knows(self, model: str) -> bool:
        if model in self._configured or self._registry.ready_for_model(model):
            return True
        return any(w.model == model for w in self._registry.all())

    def listing(self) -> dict[str, Any]:
        created: dict[str, float] = {m: 0.0 for m in self._configured}
        for worker in self._registry.all():
            if worker.state.value == "gone":
                continue
            first = created.get(worker.model)
            if not first or worker.registered_at < first:
                created[worker.model] = worker.registered_at
        data = [
            {"id": model, "object": "model", "created": int(ts), "owned_by": "spotgate"}
            for model, ts in sorted(created.items())
        ]
        return {"object": "list", "data": data}
