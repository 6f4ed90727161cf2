"""The container host: `spotgate serve`, gateway and control plane as one plain ASGI server.

For Azure Container Apps, AKS or a VM. It reads the same settings as the
Functions host and picks the same adapters from them (SQLite or Cosmos DB,
environment or Key Vault secrets, Entra ID admin tokens, the worker scale
sets when `compute=azure`), and serves the same app. Two things differ, both
because there is no Functions host: the fleet monitor runs in this process on
the replay runner `spotgate dev` uses (hosts/local.py), so one replica should
run it; and no worker is started here: workers enrol through the agent API,
from the scale sets (`compute=azure`) or from a fixed list of machines someone
else runs (`spotgate serve --worker`), as only known instances may enrol.

It refuses to start rather than run open or useless: settings that cannot
work, or, on an address other than loopback, no admin credential or no fleet
token. Secrets from Key Vault are known only once the app has started, so with
Key Vault the secrets are checked then, and a failed check stops the startup.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from starlette.applications import Starlette

from spotgate.adapters.local.env_secrets import EnvSecrets
from spotgate.adapters.local.sqlite_fleet_journal import SqliteFleetJournal
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.errors import OpenAIError
from spotgate.fleet.compute import ComputeProvider
from spotgate.fleet.fixed_machines import FixedMachine, FixedMachines
from spotgate.fleet.registration import check_worker_url, parse_networks
from spotgate.gateway.tenancy.admins import AdminTokens
from spotgate.hosts.azure_parts import (
    azure_batch_stores,
    batch_configured,
    cosmos_gateway,
    entra_admin_tokens,
    scale_set_compute,
    vault_secrets,
)
from spotgate.hosts.batch import build_batch, local_batch_stores
from spotgate.hosts.gateway import assemble_runtime, build_gateway, monitor_plan
from spotgate.hosts.local import local_runner, local_secrets, local_tenancy, start_monitors
from spotgate.runtime import Lifecycle
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, KEY_SALT, SecretStore
from spotgate.settings import Settings

log = logging.getLogger("spotgate.serve")


class ServeRefused(RuntimeError):
    """The settings cannot serve; the message says what to set."""

    def __init__(self, problems: list[str]) -> None:
        lines = "\n".join(f"- {problem}" for problem in problems)
        super().__init__(f"spotgate serve refuses to start:\n{lines}")
        self.problems = problems


@dataclass
class Checks:
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_refusals(self) -> None:
        for warning in self.warnings:
            log.warning("%s", warning)
        if self.refusals:
            raise ServeRefused(self.refusals)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _needs_azure_sdk(settings: Settings) -> bool:
    azure = settings.azure
    return bool(
        azure.store_backend == "cosmos"
        or settings.cache.backend == "cosmos"
        or azure.key_vault_url
        or (azure.entra_tenant_id and azure.entra_admin_audience)
        or (settings.fleet.compute == "azure" and azure.azure_subscription_id)
    )


def settings_checks(settings: Settings, machines: Sequence[FixedMachine] = ()) -> Checks:
    """What is wrong before anything is built: a missing endpoint or SDK, a bad machine."""
    checks = Checks()
    azure = settings.azure
    if _needs_azure_sdk(settings) and importlib.util.find_spec("azure.identity") is None:
        checks.refusals.append(
            "these settings use Azure services (Cosmos DB, Key Vault, Entra ID or scale sets), "
            "whose SDKs are not installed: pip install 'spotgate[azure]'"
        )
    uses_cosmos = azure.store_backend == "cosmos" or settings.cache.backend == "cosmos"
    if uses_cosmos and not azure.cosmos_endpoint:
        checks.refusals.append("Cosmos DB is chosen but SPOTGATE_COSMOS_ENDPOINT is not set")
    if settings.cache.backend == "cosmos" and azure.store_backend != "cosmos":
        checks.refusals.append("SPOTGATE_CACHE_BACKEND=cosmos needs SPOTGATE_STORE_BACKEND=cosmos")
    scale_sets = bool(azure.azure_subscription_id and azure.azure_resource_group)
    if settings.fleet.compute == "azure" and machines:
        checks.refusals.append("--worker machines and SPOTGATE_COMPUTE=azure: choose one")
    elif settings.fleet.compute == "azure" and not scale_sets:
        checks.warnings.append(
            "SPOTGATE_COMPUTE=azure without SPOTGATE_AZURE_SUBSCRIPTION_ID and "
            "SPOTGATE_AZURE_RESOURCE_GROUP: no worker can enrol, and none is provisioned"
        )
    elif settings.fleet.compute != "azure" and not machines:
        checks.warnings.append(
            "no worker can enrol: name the machines with --worker ID=URL, or the scale sets "
            "with SPOTGATE_COMPUTE=azure and SPOTGATE_AZURE_SUBSCRIPTION_ID/_RESOURCE_GROUP"
        )
    networks = parse_networks(settings.fleet.worker_networks)
    for machine in machines:
        if machine.pool not in settings.pools:
            checks.refusals.append(
                f"--worker {machine.worker_id}: pool '{machine.pool}' is not in SPOTGATE_POOLS"
            )
        try:
            check_worker_url(machine.url, networks)
        except OpenAIError as refused:
            checks.refusals.append(f"--worker {machine.worker_id}: {refused}")
    if not is_loopback(settings.server.host) and all(n.is_loopback for n in networks):
        checks.warnings.append(
            "workers may only enrol from loopback addresses: set SPOTGATE_WORKER_NETWORKS to "
            'the networks your workers live in, e.g. ["10.0.0.0/16"]'
        )
    return checks


def secret_checks(
    settings: Settings, secrets: SecretStore, admin_tokens: AdminTokens | None
) -> Checks:
    """Whether operators and agents can get in, and API keys hash the same after a restart."""
    checks = Checks()
    host = settings.server.host
    exposed = not is_loopback(host)
    missing = []
    if secrets.get(ADMIN_KEY) is None and admin_tokens is None:
        missing.append(("SPOTGATE_ADMIN_KEY (or Entra ID admin tokens)", "/fleet and /admin"))
    if secrets.get(FLEET_TOKEN) is None:
        missing.append(("SPOTGATE_FLEET_TOKEN", "worker enrolment at /fleet/workers"))
    for name, closed in missing:
        if exposed:
            checks.refusals.append(f"set {name} before binding {host}, which is not loopback")
        else:
            checks.warnings.append(f"{name} is not set: {closed} stays closed")
    if secrets.get(KEY_SALT) is None:
        checks.refusals.append(
            "no key salt: API keys in a shared store must hash the same in every replica and "
            "after a restart; set SPOTGATE_KEY_SALT (a long random string) or key-salt in Key Vault"
        )
    return checks


def _env_secrets(settings: Settings) -> SecretStore:
    """The environment; with SQLite a salt kept in the data dir, as `spotgate dev` keeps it.
    With Cosmos DB no salt is made up: one that differs per replica breaks every key."""
    if settings.azure.store_backend != "cosmos":
        return local_secrets(settings)
    overrides = {ADMIN_KEY: settings.admin_key or "", FLEET_TOKEN: settings.fleet_token or ""}
    return EnvSecrets(os.environ, overrides)


def describe(settings: Settings, machines: Sequence[FixedMachine]) -> str:
    """One line for the operator: where state, secrets and workers come from."""
    azure = settings.azure
    stores = (
        f"Cosmos DB {azure.cosmos_endpoint}"
        if azure.store_backend == "cosmos"
        else f"SQLite in {settings.data_dir}"
    )
    secrets = f"Key Vault {azure.key_vault_url}" if azure.key_vault_url else "the environment"
    workers = f"{len(machines)} fixed machine(s)"
    if settings.fleet.compute == "azure":
        workers = f"scale sets in {azure.azure_resource_group or '(no resource group)'}"
    return f"stores: {stores}; secrets: {secrets}; workers: {workers}, none started here"


class ClosingCompute(ComputeProvider, Protocol):
    async def close(self) -> None: ...


def fleet_compute(settings: Settings, machines: Sequence[FixedMachine]) -> ClosingCompute | None:
    if machines:
        return FixedMachines(machines)
    return scale_set_compute(settings)


def build_serve_app(settings: Settings, machines: Sequence[FixedMachine] = ()) -> Starlette:
    """The app for `spotgate serve`; raises ServeRefused when the settings cannot serve.

    `machines`: workers on machines someone else runs; each pool that has some is kept at
    exactly that many (the monitor cannot add or remove such a machine)."""
    settings_checks(settings, machines).raise_refusals()
    log.info("%s", describe(settings, machines))
    vault = vault_secrets(settings)
    secrets = vault[0] if vault else _env_secrets(settings)
    lifecycles: list[Lifecycle] = [vault[1]] if vault else []
    tokens = entra_admin_tokens(settings)
    if vault is None:
        secret_checks(settings, secrets, tokens).raise_refusals()
    closers: list[SqliteWorkerStore | SqliteFleetJournal] = []
    if settings.azure.store_backend == "cosmos":
        cosmos = cosmos_gateway(settings, secrets, tokens)
        parts, journal = cosmos.parts, cosmos.journal
        lifecycles += cosmos.lifecycles
    else:
        store = SqliteWorkerStore(settings.database_path)
        journal = SqliteFleetJournal(settings.data_dir / "fleet-journal.sqlite3")
        closers += [store, journal]
        parts = build_gateway(
            settings,
            store,
            secrets=secrets,
            tenancy_stores=local_tenancy(settings),
            admin_tokens=tokens,
        )
    compute = fleet_compute(settings, machines)
    if settings.azure.store_backend == "cosmos" and batch_configured(settings):
        batch = build_batch(parts, azure_batch_stores(settings, cosmos.stores))
    else:
        batch = build_batch(parts, local_batch_stores(settings.data_dir))
    runner = local_runner(parts, journal, compute, batch)
    per_pool = Counter(machine.pool for machine in machines)
    pinned = {pool: settings.fleet_policy(pool).fixed_size(n) for pool, n in per_pool.items()}
    runtime = assemble_runtime(
        parts,
        journal=journal,
        orchestrations=runner,
        monitors=monitor_plan(settings, pinned),
        lifecycles=[*lifecycles, *batch.lifecycles],
        batches=batch.service(runner),
    )
    app = create_app(runtime, local=False)
    inner_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with inner_lifespan(app):
                if vault is not None:
                    secret_checks(settings, runtime.secrets, tokens).raise_refusals()
                await start_monitors(runner, runtime.monitors)
                try:
                    yield
                finally:
                    await runner.stop()
        finally:
            if compute is not None:
                await compute.close()
            for closer in closers:
                closer.close()

    app.router.lifespan_context = lifespan
    return app
