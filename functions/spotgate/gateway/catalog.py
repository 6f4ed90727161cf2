"""Which model names the gateway answers for: catalogued ones plus whatever workers serve.

A catalogued model with no worker yet is known (its requests wait for
capacity or spill over); a name nobody configured or serves is a 404, not a
wait. A catalogue entry maps the name a client asks for (or an alias) to the
name workers serve it under and the pool that runs it; names workers serve
that no entry covers keep working as implicit entries, as before the
catalogue existed.

`/v1/models` lists canonical names and, as separate ids, aliases, because
that is what LiteLLM's proxy does (model_group_alias entries appear in
/v1/models since v1.44.24, unless marked hidden; here `hide_aliases`). A
served name that differs from its entry's name still resolves but is not
listed, so clients see one name per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from spotgate.errors import InvalidRequest
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import WorkerState
from spotgate.gateway.model_catalogue import ModelEntry, SpilloverTarget, check_unique_names
from spotgate.gateway.request_limits import RequestLimits

DEFAULT_POOL = "default"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a requested name leads: `served_name` routes to workers, `pool` to admission."""

    requested: str
    name: str
    served_name: str
    pool: str
    entry: ModelEntry | None = None

    @property
    def spillover(self) -> SpilloverTarget | None:
        return self.entry.spillover if self.entry is not None else None

    def limits(self, defaults: RequestLimits) -> RequestLimits:
        """The entry's limits over the gateway's: a field the entry sets wins, the rest stay."""
        own = self.entry.limits if self.entry is not None else None
        if own is None:
            return defaults
        return defaults.model_copy(update=own.model_dump(exclude_unset=True))

    @classmethod
    def of(cls, entry: ModelEntry, requested: str | None = None) -> ResolvedModel:
        return cls(requested or entry.name, entry.name, entry.worker_model, entry.pool, entry)

    def check_endpoint(self, path: str) -> None:
        """A 400 for an endpoint the entry's `mode` rules out, before a worker is asked:
        vLLM serves only its model's routes and answers the others a bare 404."""
        mode = self.entry.mode if self.entry is not None else None
        wanted = endpoint_mode(path)
        if mode is not None and wanted is not None and wanted != mode:
            raise wrong_endpoint(self.name, path, mode)


def endpoint_mode(path: str) -> str | None:
    """The catalogue `mode` that serves `path` (None: not a model endpoint)."""
    if path.endswith("/embeddings"):
        return "embedding"
    return "chat" if path.endswith("/completions") else None


def wrong_endpoint(model: str, path: str, mode: str | None) -> InvalidRequest:
    """The error for a model asked at an endpoint it does not serve; `mode` when known."""
    if mode == "chat":
        why = f"The model '{model}' is a chat model: it does not serve {path}."
    elif mode == "embedding":
        why = f"The model '{model}' is an embedding model: it serves /v1/embeddings only."
    else:
        why = f"The model '{model}' does not serve {path} (its workers have no such endpoint)."
    return InvalidRequest(
        f"{why} GET /v1/models lists the models.", param="model", code="unsupported_endpoint"
    )


def rewrite_model(raw: bytes, body: dict[str, Any], model: str) -> bytes:
    """The bytes to send when workers call the model differently; the client's bytes if not.
    `body` is left as the client sent it, for whatever keys off the requested name."""
    if body.get("model") == model:
        return raw
    return orjson.dumps({**body, "model": model})


class ModelCatalog:
    def __init__(
        self,
        registry: WorkerRegistry,
        configured: list[str],
        entries: Sequence[ModelEntry] = (),
        *,
        auto_name: str | None = None,
    ) -> None:
        """`configured` are plain names (Settings.models) known before any worker registers."""
        check_unique_names(entries, reserved=[auto_name] if auto_name else [])
        self._registry = registry
        self._entries = tuple(entries)
        self._by_name: dict[str, ModelEntry] = {}
        for entry in self._entries:
            for name in (entry.name, *entry.aliases):
                self._by_name[name] = entry
        self._by_served: dict[str, ModelEntry] = {}
        for entry in self._entries:
            self._by_served.setdefault(entry.worker_model, entry)
        self._configured = frozenset(configured) - self._by_name.keys() - self._by_served.keys()
        choosable = [e for e in self._entries if e.auto and e.mode != "embedding"]
        self._auto_name = auto_name if choosable else None
        self._auto = tuple(sorted(choosable, key=lambda e: (e.price, e.name)))

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        return self._entries

    def auto_candidates(self) -> list[ModelEntry]:
        """Entries `model: "auto"` may pick, cheapest first (ties by name, so it is stable)."""
        return list(self._auto)

    def is_auto(self, model: str) -> bool:
        """Whether `model` is the auto name and some entry may be chosen for it."""
        return model == self._auto_name

    def resolve(self, model: str) -> ResolvedModel | None:
        """The entry for a name, alias or served name; an implicit one for served or
        configured names no entry covers; None for a name nobody knows (a 404)."""
        entry = self._by_name.get(model) or self._by_served.get(model)
        if entry is not None:
            return ResolvedModel.of(entry, model)
        ready = self._registry.ready_for_model(model)  # O(1): the hot path stops here
        if ready:
            return ResolvedModel(model, model, model, ready[0].pool)
        # any worker of the model names its pool (a recently gone one's model waits for a
        # new one there); a configured name no worker has served yet is in the default pool
        pool = next((w.pool for w in self._registry.all() if w.model == model), None)
        if pool is None and model in self._configured:
            pool = DEFAULT_POOL
        return None if pool is None else ResolvedModel(model, model, model, pool)

    def knows(self, model: str) -> bool:
        return self.is_auto(model) or self.resolve(model) is not None

    def listing(self) -> dict[str, Any]:
        first_seen: dict[str, float] = {}
        for worker in self._registry.all():
            if worker.state == WorkerState.GONE:
                continue
            seen = first_seen.get(worker.model)
            if seen is None or worker.registered_at < seen:
                first_seen[worker.model] = worker.registered_at
        created: dict[str, float] = {}
        for entry in self._entries:
            ts = first_seen.get(entry.worker_model, 0.0)
            created[entry.name] = ts
            if not entry.hide_aliases:
                created.update((alias, ts) for alias in entry.aliases)
        for model in sorted(self._configured):
            created.setdefault(model, first_seen.get(model, 0.0))
        for model, ts in first_seen.items():
            if model not in self._by_served and model not in self._by_name:
                created.setdefault(model, ts)
        if self._auto_name:
            created[self._auto_name] = 0.0
        data = [
            {"id": model, "object": "model", "created": int(ts), "owned_by": "spotgate"}
            for model, ts in sorted(created.items())
        ]
        return {"object": "list", "data": data}
