"""One usage record per request: who asked, what served it, how many tokens, what it earned.

Revenue is fixed when the record is written (the price then). Cost is not:
a worker's GPU-hour is shared by every request it served that hour, so cost
is apportioned when a report is made (`costs/apportion.py`), except for spillover,
whose price per token is known at once (`spillover_cost_usd`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class UsageRecord:
    at: float
    request_id: str
    key_id: str | None
    model: str
    path: str
    status: int
    pool: str | None = None
    worker_id: str | None = None
    priority: str | None = None
    """spot | on-demand (from the worker), None for cache hits and spillover."""
    sku: str | None = None
    cache: str = "BYPASS"
    spillover: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    """Tokens were estimated (a stream the client cut, a worker that sent no usage)."""
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    error_code: str | None = None
    revenue_usd: float = 0.0
    spillover_cost_usd: float = 0.0
    batch_id: str | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


USAGE_COLUMNS = tuple(UsageRecord.__dataclass_fields__)
"""The export schema (CSV and Parquet), in this order, the same from SQLite and Cosmos DB."""
