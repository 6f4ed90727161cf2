"""One settings object picks every adapter and tunable; env vars use the SPOTGATE_ prefix.

Every field has a default that runs on a laptop, so `spotgate dev` needs no
configuration. Fields are grouped by concern, and every group reads the same
environment variables as before the grouping (the group's prefix is part of
the old flat name):

| group | reads | e.g. |
|---|---|---|
| `Settings` (root) | `SPOTGATE_<FIELD>` | `SPOTGATE_API_KEYS`, `SPOTGATE_POOLS` |
| `server` | `SPOTGATE_<FIELD>` | `SPOTGATE_PORT`, `SPOTGATE_HEADER_TIMEOUT_S` |
| `gateway` | `SPOTGATE_<FIELD>` | `SPOTGATE_CAPACITY_WAIT_S`, `SPOTGATE_REQUEST_LIMITS` |
| `cache` | `SPOTGATE_CACHE_<FIELD>` | `SPOTGATE_CACHE_TTL_S` (field `cache.ttl_s`) |
| `fleet` | `SPOTGATE_<FIELD>` | `SPOTGATE_MAX_WORKERS`, `SPOTGATE_POOL_POLICIES` |
| `azure` | `SPOTGATE_<FIELD>` | `SPOTGATE_COSMOS_ENDPOINT` |
| `tenancy` | `SPOTGATE_<FIELD>` | `SPOTGATE_USAGE_FLUSH_S`, `SPOTGATE_POOL_SKUS` |
| `local` | `SPOTGATE_LOCAL_<FIELD>` | `SPOTGATE_LOCAL_PROVISION_DELAY_S` |

`Settings(capacity_wait_s=0, cache_backend="memory")` still works: a flat
name is routed to its group. The fleet's scaling fields default to None,
meaning the policy's own default (fleet/autoscaler.py, capacity_mix.py,
fleet_policy.py), so each default is defined once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.registration import LOOPBACK_NETWORKS, parse_networks
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.request_limits import RequestLimits


def parse_pools(text: str) -> list[str]:
    """SPOTGATE_POOLS as JSON (`["a","b"]`) or as people type it (`a, b`); empty: default."""
    text = text.strip()
    items = json.loads(text) if text.startswith("[") else text.split(",")
    return [str(p).strip() for p in items if str(p).strip()] or ["default"]


def _config(prefix: str = "SPOTGATE_") -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class ServerSettings(BaseSettings):
    """How this process listens, and how much a client may send it."""

    model_config = _config()

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None, description="URL agents and clients use to reach the control plane."
    )
    data_dir: Path = Path(".spotgate")
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Whole request head, from connect or the last response."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest silence between request body chunks."
    )
    body_deadline_s: float = Field(
        default=120.0, gt=0, description="Whole request body, from when the app reads it."
    )
    max_connections_per_ip: int = Field(
        default=256, ge=1, description="Connections one client address may hold (local server)."
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins browsers may call the API from (a JSON list); empty: CORS off.",
    )


class GatewaySettings(BaseSettings):
    """Forwarding, failover, admission, routing and the request limits."""

    model_config = _config()

    upstream_connect_timeout_s: float = 2.0
    upstream_read_timeout_s: float = 600.0
    upstream_stream_read_timeout_s: float = Field(
        default=60.0, description="Silence mid-stream after which a stream is resumed elsewhere."
    )
    upstream_max_attempts: int = 3
    upstream_first_byte_timeout_s: float | None = Field(
        default=300.0, description="Non-streamed: the whole generation, for vLLM."
    )
    upstream_stream_first_byte_timeout_s: float | None = 30.0
    upstream_retry_deadline_s: float | None = 120.0
    worker_cooldown_s: float = 5.0
    stream_resumes: int = Field(default=3, description="Resumptions of one broken stream.")
    stream_resume_wait_s: float = 10.0
    breaker_failure_threshold: int = 3
    breaker_max_cooldown_s: float = 60.0
    health_probe_interval_s: float = 2.0
    health_probe_timeout_s: float = 1.0
    capacity_wait_s: float = 30.0
    quarantine_after_deaths: int = Field(
        default=2, ge=1, description="Workers a request may kill before it is refused (400)."
    )
    quarantine_ttl_s: float = 3600.0
    request_limits: RequestLimits = Field(
        default_factory=RequestLimits,
        description="Bounds on n, best_of, max_tokens, logprobs, messages, stop... per request; "
        "a catalogue entry's `limits` override them per model.",
    )
    model_catalogue: list[ModelEntry] = Field(
        default_factory=list,
        description="Catalogued models (JSON in env); see gateway/model_catalogue.py.",
    )
    catalogue_file: Path | None = Field(
        default=None, description="YAML or JSON model catalogue, merged after model_catalogue."
    )
    auto_model_name: str | None = Field(
        default="auto", description="The model name that picks the cheapest fitting model."
    )
    auto_default_completion_tokens: int = 1024
    token_count_timeout_s: float = 0.5
    selection_policy: str = "least-outstanding"
    prefix_affinity_chars: int = 1024
    prefix_affinity_min_chars: int = 256
    prefix_affinity_slack: int = 4
    prefix_affinity_factor: float = 1.25
    worker_max_concurrency: int = Field(
        default=16, description="Requests a worker runs at once (vLLM max_num_seqs)."
    )
    admission_queue_limit: int = Field(
        default=256, description="Requests that may wait per pool before a 429 or spillover."
    )


class CacheSettings(BaseSettings):
    """The response cache (SPOTGATE_CACHE_*)."""

    model_config = _config("SPOTGATE_CACHE_")

    backend: Literal["sqlite", "memory", "cosmos", "off"] = Field(
        default="sqlite", description="Response cache store (cosmos on Azure)."
    )
    max_bytes: int = 256 * 1024 * 1024
    ttl_s: float = 3600.0
    deterministic_only: bool = True
    rules: dict[str, dict[str, float | bool | int]] = Field(
        default_factory=dict,
        description="Per-model overrides, e.g. {'smollm2': {'ttl_s': 60, 'shared': true}}.",
    )
    timeout_s: float = 0.05

    @property
    def longest_ttl_s(self) -> float:
        return max([self.ttl_s, *(float(r.get("ttl_s", 0)) for r in self.rules.values())])


class FleetSettings(BaseSettings):
    """The control plane and the fleet monitor: heartbeats, ticks, where workers may live,
    and the scaling policy (None: the policy's own default)."""

    model_config = _config()

    compute: Literal["local", "azure"] = "local"
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 6.0
    monitor_tick_s: float = 5.0
    monitor_ticks_per_run: int = 12
    worker_networks: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_NETWORKS),
        description="Networks worker URLs must be in (the workers' subnet on Azure).",
    )
    min_workers: int | None = None
    max_workers: int | None = None
    target_concurrency_per_worker: float | None = None
    scale_down_stabilisation_s: float | None = None
    idle_to_zero_s: float | None = None
    batch_drain_target_s: float | None = None
    batch_line_estimate_s: float | None = None
    batch_deadline_margin_s: float | None = None
    zones: list[str] | None = None
    base_on_demand: int | None = None
    overprovision_spot: int | None = None
    drain_timeout_s: float | None = None
    provision_timeout_s: float | None = None
    lost_worker_grace_s: float | None = Field(
        default=None, description="A worker silent this long (its VM still listed) is deleted."
    )
    fleet_dry_run: bool = Field(
        default=False, description="Decide and report, but provision and delete nothing."
    )
    pool_policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-pool FleetPolicyConfig overrides, e.g. "
        "{'default': {'autoscaling': {'max_workers': 4}}}.",
    )

    _AUTOSCALING: ClassVar[tuple[str, ...]] = (
        "min_workers",
        "max_workers",
        "target_concurrency_per_worker",
        "scale_down_stabilisation_s",
        "idle_to_zero_s",
        "batch_drain_target_s",
        "batch_line_estimate_s",
        "batch_deadline_margin_s",
    )
    _MIX: ClassVar[tuple[str, ...]] = ("zones", "base_on_demand", "overprovision_spot")
    _DEADLINES: ClassVar[tuple[str, ...]] = (
        "drain_timeout_s",
        "provision_timeout_s",
        "lost_worker_grace_s",
    )

    @field_validator("worker_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a typo fails at start, not at the first registration
        return value

    def policy(self, pool: str) -> FleetPolicyConfig:
        """The pool's policy: the policy defaults, these settings, then pool_policies."""

        def chosen(names: tuple[str, ...]) -> dict[str, Any]:
            return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

        configured: dict[str, Any] = {
            "autoscaling": chosen(self._AUTOSCALING),
            "mix": chosen(self._MIX),
            **chosen(self._DEADLINES),
            "dry_run": self.fleet_dry_run,
        }
        override = self.pool_policies.get(pool) or {}
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(configured.get(key), dict):
                configured[key] = configured[key] | value
            else:
                configured[key] = value
        base = FleetPolicyConfig().to_dict()
        merged = {
            k: (base[k] | v if isinstance(v, dict) and isinstance(base.get(k), dict) else v)
            for k, v in configured.items()
        }
        return FleetPolicyConfig.from_dict(base | merged)


class AzureSettings(BaseSettings):
    """Where the Azure resources are: scale sets, Cosmos DB, Monitor, the batch queue."""

    model_config = _config()

    azure_subscription_id: str | None = Field(
        default=None, description="Subscription of the worker scale sets (compute=azure)."
    )
    azure_resource_group: str | None = Field(
        default=None, description="Resource group holding the worker scale sets."
    )
    store_backend: Literal["sqlite", "cosmos"] = Field(
        default="sqlite", description="Worker registry and fleet journal store (cosmos on Azure)."
    )
    cosmos_endpoint: str | None = Field(
        default=None, description="https://<account>.documents.azure.com:443/ (managed identity)."
    )
    cosmos_database: str = "spotgate"
    batch_queue_account_url: str | None = Field(
        default=None, description="Storage account whose spotgate-batch-{pool} queues count."
    )
    batch_files_account_url: str | None = Field(
        default=None, description="Blob endpoint holding batch input and output files."
    )
    batch_files_container: str = Field(
        default="spotgate-files", description="Blob container of the batch files."
    )
    monitor_metrics_endpoint: str | None = Field(
        default=None, description="https://<region>.metrics.monitor.azure.com"
    )
    monitor_gateway_resource_id: str | None = Field(
        default=None, description="Application Insights resource with the gateway's metrics."
    )
    key_vault_url: str | None = Field(
        default=None, description="https://<vault>.vault.azure.net/: secrets on Azure."
    )
    entra_tenant_id: str | None = Field(
        default=None, description="Tenant whose Entra ID tokens may act as admin."
    )
    entra_admin_audience: str | None = Field(
        default=None, description="The audience (app ID URI or client id) admin tokens carry."
    )
    entra_admin_role: str = Field(
        default="spotgate.admin", description="The app role an admin token must carry."
    )


class TenancySettings(BaseSettings):
    """Keys, usage metering and what tokens are sold and cost for."""

    model_config = _config()

    key_refresh_s: float = Field(
        default=2.0, gt=0, description="How often each instance re-reads the key store."
    )
    usage_flush_s: float = Field(
        default=1.0, gt=0, description="Usage records are written in batches this often."
    )
    usage_buffer_records: int = Field(
        default=50_000, gt=0, description="Records held for writing before new ones are dropped."
    )
    cache_hit_price_share: float = Field(
        default=0.5, ge=0, le=1, description="A cache hit is billed at this share of the price."
    )
    default_price_in_per_1m: float = Field(
        default=0.0, ge=0, description="Price of a model with no catalogue entry, prompt tokens."
    )
    default_price_out_per_1m: float = Field(default=0.0, ge=0)
    batch_price_share: float = Field(
        default=0.5, ge=0, le=1, description="A batch line is billed at this share of the price."
    )
    price_region: str = Field(
        default="local", description="The region GPU prices are looked up for (Azure location)."
    )
    price_table: Path | None = Field(
        default=None, description="A GPU price CSV to use instead of the packaged one."
    )
    default_sku: str = Field(
        default="local-cpu", description="The worker VM SKU of pools not in pool_skus."
    )
    pool_skus: dict[str, str] = Field(
        default_factory=dict, description="Worker VM SKU per pool, e.g. {'big': 'Standard_ND96'}."
    )

    def sku_for(self, pool: str | None) -> str:
        return self.pool_skus.get(pool or "", self.default_sku)


class LocalSettings(BaseSettings):
    """The local stack's stand-ins for the cloud (SPOTGATE_LOCAL_*)."""

    model_config = _config("SPOTGATE_LOCAL_")

    provision_delay_s: float = 0.0
    evictions_per_hour: float = Field(
        default=0.0, description="Local spot market: random evictions per spot worker-hour."
    )
    eviction_notice_s: float = 30.0


# group name -> (class, what its fields' flat names start with)
GROUPS: dict[str, tuple[type[BaseSettings], str]] = {
    "server": (ServerSettings, ""),
    "gateway": (GatewaySettings, ""),
    "cache": (CacheSettings, "cache_"),
    "fleet": (FleetSettings, ""),
    "azure": (AzureSettings, ""),
    "tenancy": (TenancySettings, ""),
    "local": (LocalSettings, "local_"),
}
FLAT_NAMES: dict[str, tuple[str, str]] = {
    prefix + field: (group, field)
    for group, (cls, prefix) in GROUPS.items()
    for field in cls.model_fields
}
"""Every flat setting name (`cache_ttl_s`, the env var without SPOTGATE_) -> (group, field)."""


class Settings(BaseSettings):
    model_config = _config()

    api_keys: list[str] = Field(default_factory=list, description="Keys accepted on /v1/*.")
    admin_key: str | None = Field(default=None, description="Key for /fleet and orchestrations.")
    fleet_token: str | None = Field(default=None, description="Token agents present.")
    pools: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["default"])
    models: list[str] = Field(
        default_factory=list, description="Models served even before a worker registers."
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    azure: AzureSettings = Field(default_factory=AzureSettings)
    tenancy: TenancySettings = Field(default_factory=TenancySettings)
    local: LocalSettings = Field(default_factory=LocalSettings)

    @model_validator(mode="before")
    @classmethod
    def _flat_names_to_groups(cls, data: Any) -> Any:
        """`Settings(cache_ttl_s=60)` sets `cache.ttl_s`; the group still reads its env."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        routed: dict[str, dict[str, Any]] = {}
        for name in [n for n in data if n in FLAT_NAMES]:
            group, field = FLAT_NAMES[name]
            routed.setdefault(group, {})[field] = data.pop(name)
        for group, values in routed.items():
            given = data.get(group)
            if isinstance(given, BaseSettings):
                given = given.model_dump()
            group_class = GROUPS[group][0]
            data[group] = group_class(**{**(given or {}), **values})
        return data

    @field_validator("pools", mode="before")
    @classmethod
    def _pools_as_typed(cls, value: Any) -> Any:
        return parse_pools(value) if isinstance(value, str) else value

    def fleet_policy(self, pool: str) -> FleetPolicyConfig:
        return self.fleet.policy(pool)

    def base_url(self) -> str:
        return self.server.public_url or f"http://{self.server.host}:{self.server.port}"

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def database_path(self) -> Path:
        return self.server.data_dir / "spotgate.sqlite3"
