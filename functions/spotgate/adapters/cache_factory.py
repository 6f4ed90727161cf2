"""Builds the response cache the settings ask for (SQLite locally; Cosmos DB on Azure)."""

from __future__ import annotations

from collections.abc import Callable

from spotgate.clock import Clock
from spotgate.gateway.cache_policy import CachePolicy, CacheRule
from spotgate.gateway.cache_store import CacheStore, InMemoryCacheStore
from spotgate.gateway.response_cache import ResponseCache
from spotgate.settings import Settings


def cache_policy_from(settings: Settings) -> CachePolicy:
    default = CacheRule(
        ttl_s=settings.cache_ttl_s, deterministic_only=settings.cache_deterministic_only
    )
    rules = {
        model: CacheRule(
            enabled=bool(rule.get("enabled", True)),
            ttl_s=float(rule.get("ttl_s", default.ttl_s)),
            deterministic_only=bool(rule.get("deterministic_only", default.deterministic_only)),
            max_entry_bytes=int(rule.get("max_entry_bytes", default.max_entry_bytes)),
            shared=bool(rule.get("shared", default.shared)),
        )
        for model, rule in settings.cache_rules.items()
    }
    return CachePolicy(rules, default)


def build_response_cache(
    settings: Settings,
    clock: Clock,
    store: CacheStore | None = None,
    trusted: Callable[[str], bool] = lambda _worker_id: True,
) -> ResponseCache | None:
    if store is None:
        if settings.cache_backend == "off":
            return None
        if settings.cache_backend == "memory":
            store = InMemoryCacheStore(clock, max_bytes=settings.cache_max_bytes)
        else:
            from spotgate.adapters.local.sqlite_cache_store import SqliteCacheStore

            store = SqliteCacheStore(
                settings.data_dir / "cache.sqlite3", max_bytes=settings.cache_max_bytes, clock=clock
            )
    return ResponseCache(
        store,
        cache_policy_from(settings),
        clock,
        timeout_s=settings.cache_timeout_s,
        trusted=trusted,
    )
