"""One settings object picks every adapter and tunable; env vars use the SPOTGATE_ prefix.

Every field has a default that runs on a laptop, so `spotgate dev` needs no
configuration and tests override fields in the initialiser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spotgate.gateway.model_catalogue import ModelEntry


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

    data_dir: Path = Path(".spotgate")
    pools: list[str] = Field(default_factory=lambda: ["default"])
    models: list[str] = Field(
        default_factory=list, description="Models served even before a worker registers."
    )

    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 6.0
    monitor_tick_s: float = 5.0
    monitor_ticks_per_run: int = 12

    upstream_connect_timeout_s: float = 2.0
    upstream_read_timeout_s: float = 600.0
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
    max_body_bytes: int = 4 * 1024 * 1024

    compute: Literal["local", "azure"] = "local"
    local_provision_delay_s: float = 0.0

    cache_backend: Literal["sqlite", "memory", "off"] = Field(
        default="sqlite", description="Response cache store (Cosmos DB on Azure)."
    )
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_ttl_s: float = 3600.0
    cache_deterministic_only: bool = True
    cache_rules: dict[str, dict[str, float | bool | int]] = Field(
        default_factory=dict,
        description="Per-model overrides, e.g. {'smollm2': {'ttl_s': 60, 'enabled': true}}.",
    )
    cache_timeout_s: float = 0.05

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
