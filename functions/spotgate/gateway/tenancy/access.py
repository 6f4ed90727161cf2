"""Who may call, and which models: the first two steps of every /v1 request.

`AuthoriseStep` runs before anything is spent on a request (no model lookup,
no cache read): an unknown key learns nothing, not even whether the model
exists. It also fixes the request's cache scope: once more than one caller
can be told apart, each key (or each key's cache group) gets its own cache
entries, so a fast hit cannot tell one tenant what another asked.

`ModelAccessStep` runs once the model is resolved, so aliases and served
names count as the model they lead to, and `auto` is judged by the model it
chose among the models the key covers, never granted by its own name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from spotgate.errors import PermissionDenied
from spotgate.gateway.catalog import ResolvedModel
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.serving import RequestContext, ServingStep
from spotgate.gateway.tenancy.authority import Caller, KeyAuthority
from spotgate.gateway.tenancy.keys import ApiKey

CALLER = "caller"
"""The `RequestContext.notes` entry holding the request's `Caller`."""


def caller_of(context: RequestContext) -> Caller | None:
    caller = context.notes.get(CALLER)
    return caller if isinstance(caller, Caller) else None


def may_use(key: ApiKey | None, names: Iterable[str], groups: Iterable[str]) -> bool:
    """A key with neither models nor groups may use every model; a static key too."""
    if key is None or (not key.models and not key.groups):
        return True
    return bool(set(key.models).intersection(names) or set(key.groups).intersection(groups))


def entry_allowed(key: ApiKey) -> Callable[[ModelEntry], bool]:
    def allowed(entry: ModelEntry) -> bool:
        return may_use(key, [entry.name, entry.worker_model, *entry.aliases], entry.groups)

    return allowed


def model_names(model: ResolvedModel) -> tuple[list[str], list[str]]:
    """Every name that leads to `model` (a key may list any of them) and its groups."""
    entry = model.entry
    names = [model.name, model.served_name]
    if entry is not None:
        names += entry.aliases
    return names, list(entry.groups) if entry is not None else []


class AuthoriseStep(ServingStep):
    name = "authorise"

    def __init__(self, authority: KeyAuthority) -> None:
        self._authority = authority

    async def received(self, context: RequestContext) -> None:
        caller = context.request.caller or self._authority.authenticate(context.request.api_key)
        context.notes[CALLER] = caller
        if caller.key is not None and (caller.key.models or caller.key.groups):
            context.allowed = entry_allowed(caller.key)
        if context.cache_scope is None:
            shared = self._authority.tenants() <= 1
            context.cache_scope = "" if shared else caller.cache_scope


class ModelAccessStep(ServingStep):
    name = "model-access"

    async def resolved(self, context: RequestContext) -> None:
        caller = caller_of(context)
        model = context.model
        if caller is None or caller.key is None or model is None:
            return
        names, groups = model_names(model)
        if not may_use(caller.key, names, groups):
            requested = context.request.model
            shown = model.name if requested == model.name else f"{requested}' ('{model.name})"
            raise PermissionDenied(
                f"This API key may not use the model '{shown}'.",
                param="model",
                code="model_not_allowed",
            )
