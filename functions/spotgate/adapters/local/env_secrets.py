"""The SecretStore of a local run: secrets are environment variables.

Name to variable:

| secret name | read from |
| --- | --- |
| `admin-key` | `SPOTGATE_ADMIN_KEY` |
| `fleet-token` | `SPOTGATE_FLEET_TOKEN` |
| `key-salt` | `SPOTGATE_KEY_SALT` |
| `metrics-token` | `SPOTGATE_METRICS_TOKEN` |
| any other, `x-y` | `X_Y` (upper case, hyphens to underscores), then the literal name `x-y` |

So a spillover entry's `api_key_env: FOUNDRY_API_KEY` reads `FOUNDRY_API_KEY`, and
`foundry-api-key` reads it too. `overrides` (by secret name) win over the
environment: `spotgate dev` generates its admin key and salt and hands them in.
An empty value counts as no secret (None), so a blank variable never becomes a
key that an empty credential would match.

The environment is read on every `get` (it is a live mapping), so there is no
copy to refresh.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from spotgate.adapters.local.private_files import private_file

ENV_NAMES = {
    "admin-key": "SPOTGATE_ADMIN_KEY",
    "fleet-token": "SPOTGATE_FLEET_TOKEN",
    "key-salt": "SPOTGATE_KEY_SALT",
    "metrics-token": "SPOTGATE_METRICS_TOKEN",
}


def env_name(name: str) -> str:
    """The environment variable secret `name` is read from first."""
    return ENV_NAMES.get(name) or name.replace("-", "_").upper()


class EnvSecrets:
    """A SecretStore over environment variables (see the module's table)."""

    def __init__(
        self, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> None:
        self._environ = environ
        self._overrides = dict(overrides or {})

    def get(self, name: str, /) -> str | None:
        value = self._overrides.get(name)
        if not value:
            value = self._environ.get(env_name(name)) or self._environ.get(name)
        return value or None

    async def refresh(self) -> None:
        return None

    async def close(self) -> None:
        return None


def persistent_salt(path: Path) -> str:
    """The local stack's `key-salt`: made once, kept in a 0600 file beside its key store,
    so keys created in one run still work in the next."""
    private_file(path)
    salt = path.read_text().strip()
    if not salt:
        salt = secrets.token_urlsafe(32)
        path.write_text(salt + "\n")
    return salt
