"""Azure services any host may run on: Key Vault, Entra ID admin tokens, Cosmos DB, scale sets.

Host-neutral on purpose: the Functions host (azure.py) and the container host
(serve.py) choose the same adapters from the same settings, so a deployment
moved from one to the other keeps its secrets, keys and fleet. Every Azure SDK
import is inside the function that needs it, so a host configured without
Azure (SQLite, environment secrets) runs without the `azure` extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spotgate.fleet.journal import FleetJournal
from spotgate.gateway.model_catalogue import load_catalogue
from spotgate.gateway.tenancy.admins import AdminTokens
from spotgate.gateway.tenancy.tenancy import TenancyStores
from spotgate.hosts.batch import BatchStores
from spotgate.hosts.gateway import GatewayParts, build_gateway
from spotgate.runtime import Lifecycle
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, KEY_SALT, WORKER_API_KEY, SecretStore
from spotgate.settings import Settings

if TYPE_CHECKING:
    from spotgate.adapters.azure.stores import AzureStores
    from spotgate.adapters.azure.vmss_compute import VmssCompute


def vault_secrets(settings: Settings) -> tuple[SecretStore, Lifecycle] | None:
    """Key Vault when the settings name one (read with the managed identity, renewed every
    few minutes; it is a lifecycle because the first read needs the event loop); else None,
    and the host picks its own store."""
    if not settings.azure.key_vault_url:
        return None
    from azure.identity.aio import DefaultAzureCredential

    from spotgate.adapters.azure.key_vault_secrets import KeyVaultSecrets

    catalogue = load_catalogue(settings.gateway.model_catalogue, settings.gateway.catalogue_file)
    spillover_keys = [
        e.spillover.api_key_env for e in catalogue if e.spillover and e.spillover.api_key_env
    ]
    vault = KeyVaultSecrets(
        settings.azure.key_vault_url,
        DefaultAzureCredential(),
        [ADMIN_KEY, FLEET_TOKEN, KEY_SALT, WORKER_API_KEY, *spillover_keys],
    )
    return vault, vault


def entra_admin_tokens(settings: Settings) -> AdminTokens | None:
    """Entra ID tokens with the admin app role, when a tenant and an audience are set."""
    tenant, audience = settings.azure.entra_tenant_id, settings.azure.entra_admin_audience
    if not tenant or not audience:
        return None
    from spotgate.adapters.azure.entra_tokens import (
        CachedJwks,
        EntraAdminTokens,
        entra_jwks_fetch,
    )

    jwks = CachedJwks(entra_jwks_fetch(tenant))
    return EntraAdminTokens(tenant, audience, settings.azure.entra_admin_role, jwks=jwks)


@dataclass(frozen=True)
class CosmosGateway:
    """The gateway over Cosmos DB, and what the host must start and close with it.

    `stores` is there for what only some hosts add (the Functions host publishes its
    admission queue to the journal container for the other instances' monitors)."""

    parts: GatewayParts
    journal: FleetJournal
    lifecycles: tuple[Lifecycle, ...]
    stores: AzureStores


def cosmos_gateway(
    settings: Settings, secrets: SecretStore, admin_tokens: AdminTokens | None
) -> CosmosGateway:
    """Registry, journal, keys, usage, counters (and the cache when its backend is cosmos)
    in Cosmos DB, kept in step with other instances; no I/O until the lifecycles start."""
    from spotgate.adapters.azure.cosmos_tenancy import cosmos_tenancy
    from spotgate.adapters.azure.store_sync import RegistrySync
    from spotgate.adapters.azure.stores import build_azure_stores

    stores = build_azure_stores(
        settings.azure.cosmos_endpoint,
        settings.azure.cosmos_database,
        cache=settings.cache.backend == "cosmos",
    )
    tenancy = cosmos_tenancy(stores.client.get_database_client(settings.azure.cosmos_database))
    parts = build_gateway(
        settings,
        stores.worker_store,
        cache_store=stores.cache_store,
        secrets=secrets,
        tenancy_stores=TenancyStores(tenancy.keys, tenancy.usage, tenancy.counters),
        admin_tokens=admin_tokens,
    )
    sync = RegistrySync(stores, parts.registry, settings.pools)
    return CosmosGateway(parts, stores.journal, (stores, sync), stores)


def scale_set_compute(settings: Settings) -> VmssCompute | None:
    """The worker scale sets, when `compute=azure` names a subscription and resource group;
    else None: the monitor observes and decides, and workers enrol themselves."""
    subscription, group = settings.azure.azure_subscription_id, settings.azure.azure_resource_group
    if settings.fleet.compute != "azure" or not subscription or not group:
        return None
    from azure.identity.aio import DefaultAzureCredential

    from spotgate.adapters.azure.vmss_compute import VmssCompute

    return VmssCompute(DefaultAzureCredential(), subscription, group, owns_credential=True)


def batch_configured(settings: Settings) -> bool:
    """The Batch API needs its files (Blob Storage) and its line queue (Storage queues)."""
    return bool(settings.azure.batch_files_account_url and settings.azure.batch_queue_account_url)


def azure_batch_stores(settings: Settings, cosmos: AzureStores) -> BatchStores:
    """Files in Blob Storage, lines on the pool's Storage queue, batches and results in
    Cosmos DB next to the fleet's containers; one managed identity for the storage account."""
    from azure.identity.aio import DefaultAzureCredential

    from spotgate.adapters.azure.blob_file_store import BlobFileStore
    from spotgate.adapters.azure.cosmos_batch_store import (
        BATCHES_CONTAINER,
        RESULTS_CONTAINER,
        CosmosBatchStore,
        CosmosLineResults,
    )
    from spotgate.adapters.azure.storage_line_queue import StorageLineQueue

    credential = DefaultAzureCredential()
    database = cosmos.client.get_database_client(settings.azure.cosmos_database)
    return BatchStores(
        files=BlobFileStore(
            settings.azure.batch_files_account_url,
            credential,
            container=settings.azure.batch_files_container,
        ),
        batches=CosmosBatchStore(database.get_container_client(BATCHES_CONTAINER)),
        queue=StorageLineQueue(settings.azure.batch_queue_account_url, credential),
        results=CosmosLineResults(database.get_container_client(RESULTS_CONTAINER)),
        closers=(credential.close,),
    )
