"""One settings object picks every adapter and tunable; env vars use the SPOTGATE_ prefix.

Every field has a default that runs on a laptop, so `spotgate dev` needs no
configuration and tests override fields in the initialiser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from spotgate.fleet.autoscaler import AutoscalerConfig
from spotgate.fleet.capacity_mix import CapacityMixConfig
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.registration import parse_networks
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.request_limits import RequestLimits


def parse_pools(text: str) -> list[str]:
    """SPOTGATE_POOLS as JSON (`["a","b"]`) or as people type it (`a, b`); empty: default."""
    text = text.strip()
    items = json.loads(text) if text.startswith("[") else text.split(",")
    return [str(p).strip() for p in items if str(p).strip()] or ["default"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPOTGATE_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None, description="URL agents and clients use to reach the control plane."
    )

    api_keys: list[str] = Field(default_factory=list, description="Keys accepted on /v1/*.")
    admin_key: str | None = Field(default=None, description="Key for /fleet and orchestrations.")
    fleet_token: str | None = Field(default=None, description="Token agents present.")

    worker_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Networks worker URLs must be in (the workers' subnet on Azure).",
    )

    data_dir: Path = Path(".spotgate")
    pools: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["default"])
    models: list[str] = Field(
        default_factory=list, description="Models served even before a worker registers."
    )

    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 6.0
    monitor_tick_s: float = 5.0
    monitor_ticks_per_run: int = 12

    upstream_connect_timeout_s: float = 2.0
    upstream_read_timeout_s: float = 600.0
    upstream_stream_read_timeout_s: float = Field(
        default=60.0, description="Silence mid-stream after which a stream is resumed elsewhere."
    )
    upstream_max_attempts: int = 3
    worker_cooldown_s: float = 5.0
    upstream_first_byte_timeout_s: float | None = Field(
        default=300.0, description="Non-streamed: the whole generation, for vLLM."
    )
    upstream_stream_first_byte_timeout_s: float | None = 30.0
    upstream_retry_deadline_s: float | None = 120.0
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

    compute: Literal["local", "azure"] = "local"
    local_provision_delay_s: float = 0.0
    local_evictions_per_hour: float = Field(
        default=0.0, description="Local spot market: random evictions per spot worker-hour."
    )
    local_eviction_notice_s: float = 30.0

    # --- fleet scaling policy (per pool overrides in pool_policies) ---
    min_workers: int = 0
    max_workers: int = 8
    target_concurrency_per_worker: float = 8.0
    scale_down_stabilisation_s: float = 300.0
    idle_to_zero_s: float = 600.0
    zones: list[str] = Field(default_factory=lambda: ["1", "2", "3"])
    base_on_demand: int = 0
    overprovision_spot: int = 0
    drain_timeout_s: float = 300.0
    provision_timeout_s: float = 900.0
    lost_worker_grace_s: float = Field(
        default=60.0, description="A worker silent this long (its VM still listed) is deleted."
    )
    fleet_dry_run: bool = Field(
        default=False, description="Decide and report, but provision and delete nothing."
    )
    pool_policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-pool FleetPolicyConfig overrides, e.g. "
        "{'default': {'autoscaling': {'max_workers': 4}}}.",
    )
    azure_subscription_id: str | None = Field(
        default=None, description="Subscription of the worker scale sets (compute=azure)."
    )
    azure_resource_group: str | None = Field(
        default=None, description="Resource group holding the worker scale sets."
    )
    batch_queue_account_url: str | None = Field(
        default=None, description="Storage account whose spotgate-batch-{pool} queues count."
    )
    monitor_metrics_endpoint: str | None = Field(
        default=None, description="https://<region>.metrics.monitor.azure.com"
    )
    monitor_gateway_resource_id: str | None = Field(
        default=None, description="Application Insights resource with the gateway's metrics."
    )
    monitor_workspace_id: str | None = Field(
        default=None, description="Log Analytics workspace with the Activity Log."
    )

    cache_backend: Literal["sqlite", "memory", "cosmos", "off"] = Field(
        default="sqlite", description="Response cache store (cosmos on Azure)."
    )
    store_backend: Literal["sqlite", "cosmos"] = Field(
        default="sqlite", description="Worker registry and fleet journal store (cosmos on Azure)."
    )
    cosmos_endpoint: str | None = Field(
        default=None, description="https://<account>.documents.azure.com:443/ (managed identity)."
    )
    cosmos_database: str = "spotgate"
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_ttl_s: float = 3600.0
    cache_deterministic_only: bool = True
    cache_rules: dict[str, dict[str, float | bool | int]] = Field(
        default_factory=dict,
        description="Per-model overrides, e.g. {'smollm2': {'ttl_s': 60, 'enabled': true}}.",
    )
    cache_timeout_s: float = 0.05

    @field_validator("worker_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a typo fails at start, not at the first registration
        return value

    @field_validator("pools", mode="before")
    @classmethod
    def _pools_as_typed(cls, value: Any) -> Any:
        return parse_pools(value) if isinstance(value, str) else value

    def fleet_policy(self, pool: str) -> FleetPolicyConfig:
        """The pool's policy: these settings, then its entry in pool_policies on top."""
        base = FleetPolicyConfig(
            autoscaling=AutoscalerConfig(
                min_workers=self.min_workers,
                max_workers=self.max_workers,
                target_concurrency_per_worker=self.target_concurrency_per_worker,
                scale_down_stabilisation_s=self.scale_down_stabilisation_s,
                idle_to_zero_s=self.idle_to_zero_s,
            ),
            mix=CapacityMixConfig(
                zones=tuple(self.zones),
                base_on_demand=self.base_on_demand,
                overprovision_spot=self.overprovision_spot,
            ),
            drain_timeout_s=self.drain_timeout_s,
            provision_timeout_s=self.provision_timeout_s,
            lost_worker_grace_s=self.lost_worker_grace_s,
            dry_run=self.fleet_dry_run,
        ).to_dict()
        override = self.pool_policies.get(pool) or {}
        merged = {
            k: (base[k] | v if isinstance(v, dict) and isinstance(base.get(k), dict) else v)
            for k, v in override.items()
        }
        return FleetPolicyConfig.from_dict(base | merged)

    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "spotgate.sqlite3"

    # --- model catalogue, auto model, prefix affinity, admission (gateway routing helper) ---
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
    # --- end gateway routing helper block ---
