"""Secrets as a port: the one way the gateway reads a credential, so a rotation needs no restart.

Every secret (the admin key, the fleet token, the salt API keys are hashed with,
a spillover endpoint's key) is read through a `SecretStore` by its Key Vault
style name. `get` is synchronous because the request path calls it: an adapter
answers from memory (environment variables, or a cache of Key Vault it renews
behind the caller) and never does I/O there. `refresh` renews that memory now;
`close` lets go of what the adapter holds.

Names are Key Vault's: lower case words joined by hyphens (`admin-key`). A
model catalogue entry's `api_key_env` (`FOUNDRY_API_KEY`) is a name too; each
adapter documents how it maps one onto its own store.
"""

from __future__ import annotations

from typing import Protocol

ADMIN_KEY = "admin-key"
FLEET_TOKEN = "fleet-token"
KEY_SALT = "key-salt"  # hashes API keys before they are stored or compared
API_KEY = "api-key"
METRICS_TOKEN = "metrics-token"  # lets a Prometheus scraper read /metrics, nothing else
WORKER_API_KEY = "vllm-api-key"  # vLLM's --api-key on the workers; only the gateway sends it


class SecretStore(Protocol):
    def get(self, name: str, /) -> str | None:
        """The current value of secret `name`, None when there is none. Never blocks."""
        ...

    async def refresh(self) -> None:
        """Read the secrets again now (a store that holds no copy does nothing)."""
        ...

    async def close(self) -> None: ...


class StaticSecrets(dict[str, str]):
    """A SecretStore over a plain dict, for tests: `StaticSecrets({"admin-key": "k"})`."""

    async def refresh(self) -> None:
        return None

    async def close(self) -> None:
        return None
