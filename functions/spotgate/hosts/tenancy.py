"""Keys, limits, metering and roles, assembled from the stores and secrets a host chose.

Hosts pick the stores (SQLite locally, Cosmos DB on Azure) and the secret
store (environment locally, Key Vault on Azure); tests and benchmarks get
memory stores and the settings' own secrets.
"""

from __future__ import annotations

import os
import secrets as random_secrets
import uuid

from spotgate.adapters.local.env_secrets import EnvSecrets
from spotgate.clock import Clock
from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.tenancy.authority import KeyAuthority
from spotgate.gateway.tenancy.directory import KeyDirectory
from spotgate.gateway.tenancy.keys import ModelPrice
from spotgate.gateway.tenancy.limiter import Limiter
from spotgate.gateway.tenancy.memory_stores import (
    InMemoryCounterStore,
    InMemoryKeyStore,
    InMemoryUsageStore,
)
from spotgate.gateway.tenancy.metering import MeteringStep
from spotgate.gateway.tenancy.pricing import Prices
from spotgate.gateway.tenancy.recorder import UsageRecorder
from spotgate.gateway.tenancy.tenancy import Tenancy, TenancyStores
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, KEY_SALT, SecretStore
from spotgate.settings import Settings


def settings_secrets(settings: Settings, salt: str | None = None) -> SecretStore:
    """The environment, with what the settings were given in code (tests, the dev stack)
    winning; a salt made up for this process when none is configured (memory key stores)."""
    overrides = {
        name: value
        for name, value in (
            (ADMIN_KEY, settings.admin_key),
            (FLEET_TOKEN, settings.fleet_token),
            (KEY_SALT, salt),
        )
        if value
    }
    store = EnvSecrets(os.environ, overrides)
    if not store.get(KEY_SALT):
        overrides[KEY_SALT] = random_secrets.token_urlsafe(32)
        store = EnvSecrets(os.environ, overrides)
    return store


def memory_stores(clock: Clock) -> TenancyStores:
    return TenancyStores(InMemoryKeyStore(), InMemoryUsageStore(), InMemoryCounterStore(clock))


def build_tenancy(
    settings: Settings,
    stores: TenancyStores,
    secrets: SecretStore,
    registry: WorkerRegistry,
    clock: Clock,
    *,
    instance_id: str | None = None,
) -> Tenancy:
    config = settings.tenancy
    directory = KeyDirectory(
        stores.keys, clock, lambda: secrets.get(KEY_SALT), refresh_s=config.key_refresh_s
    )
    authority = KeyAuthority(directory, lambda: settings.api_keys, clock)
    prices = Prices(
        ModelPrice(config.default_price_in_per_1m, config.default_price_out_per_1m),
        config.cache_hit_price_share,
        config.batch_price_share,
    )
    recorder = UsageRecorder(
        stores.usage, flush_s=config.usage_flush_s, max_buffer=config.usage_buffer_records
    )
    return Tenancy(
        authority,
        directory,
        Limiter(stores.counters, instance_id or uuid.uuid4().hex[:12]),
        recorder,
        prices,
        MeteringStep(recorder, prices, registry, config.sku_for),
        stores.counters,
        clock,
    )
