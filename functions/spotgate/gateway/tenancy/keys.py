"""Virtual API keys: what a client presents, and what the gateway keeps of it.

A key is shown once, when it is created; the gateway keeps only an HMAC of
it under a secret salt (`key-salt`), so a leaked store yields no usable key
and a lookup is one dict access on the digest. The record says who the key
belongs to and what it may do: models or model groups, requests and tokens
per minute, requests at once, a budget per period, an expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

KEY_PREFIX = "sk-sg-"
BudgetPeriod = Literal["day", "month", "total"]


def new_secret() -> str:
    """A fresh key as the client will present it: `sk-sg-` and 43 url-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def digest(secret: str, salt: str) -> str:
    """What the store keeps: HMAC-SHA256 of the key under the deployment's salt."""
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def looks_like_key(presented: str) -> bool:
    return presented.startswith(KEY_PREFIX) and 20 <= len(presented) <= 128


@dataclass
class ModelPrice:
    """USD per million tokens, prompt and completion."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass
class ApiKey:
    id: str
    name: str
    digest: str
    prefix: str
    """The first characters of the key, to tell keys apart in lists (never enough to use)."""
    owner: str | None = None
    models: list[str] = field(default_factory=list)
    """Models it may call (names or aliases); with `groups` empty too: every model."""
    groups: list[str] = field(default_factory=list)
    """Model groups it may call (a catalogue entry's `groups`)."""
    rpm: int | None = None
    tpm: int | None = None
    model_limits: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per model, by its catalogue name (aliases count as it): {"rpm": n, "tpm": n}."""
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "month"
    expires_at: float | None = None
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    """Per-model price overrides for this key (what it is charged)."""
    cache_group: str | None = None
    """Keys with the same cache group share cache entries; None: the key's own."""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def limited(self) -> bool:
        """Whether any per-minute limit applies (else no counter is touched per request)."""
        return bool(self.rpm or self.tpm or self.model_limits)

    @property
    def cache_scope(self) -> str:
        return f"group:{self.cache_group}" if self.cache_group else f"key:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the digest."""
        data = self.to_dict()
        del data["digest"]
        data["revoked"] = self.revoked_at is not None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiKey:
        fields = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in fields}
        values["prices"] = {
            model: price if isinstance(price, ModelPrice) else ModelPrice(**price)
            for model, price in (values.get("prices") or {}).items()
        }
        for name in ("models", "groups"):
            values[name] = list(values.get(name) or [])
        values["model_limits"] = {
            str(m): {str(k): int(v) for k, v in dict(limits).items() if v is not None}
            for m, limits in dict(values.get("model_limits") or {}).items()
        }
        values["metadata"] = dict(values.get("metadata") or {})
        return cls(**values)
