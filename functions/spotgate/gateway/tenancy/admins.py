"""Who may manage keys, read usage and touch the fleet: the admin role.

Three credentials, three audiences, never interchangeable: API keys call
/v1 only; the fleet token is for worker agents only; the admin role is held
by whoever presents the admin key (a secret, so a rotation in Key Vault is
honoured without a restart) or, on Azure, an Entra ID access token that
carries the admin app role for this deployment's audience.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Protocol

from spotgate.errors import AuthenticationFailed
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, SecretStore


class AdminTokens(Protocol):
    def is_admin(self, bearer: str) -> bool:
        """Whether `bearer` is a valid token carrying the admin role (may block briefly
        to fetch signing keys, so it is called off the event loop)."""
        ...


def _matches(presented: str, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest(presented.encode(), (secret or "").encode())


def looks_like_jwt(presented: str) -> bool:
    return presented.count(".") == 2 and presented.startswith("eyJ")


class Roles:
    def __init__(self, secrets: SecretStore, tokens: AdminTokens | None = None) -> None:
        self._secrets = secrets
        self._tokens = tokens

    async def admin(self, presented: str | None) -> str:
        """How the caller proved it is an admin ("admin-key" or "entra"); 401 otherwise."""
        if not presented:
            raise AuthenticationFailed(
                "Missing admin key. Send it as 'Authorization: Bearer <key>'."
            )
        if _matches(presented, self._secrets.get(ADMIN_KEY)):
            return "admin-key"
        if self._tokens is not None and looks_like_jwt(presented):
            if await asyncio.to_thread(self._tokens.is_admin, presented):
                return "entra"
            raise AuthenticationFailed(
                "This Entra ID token is not valid here or does not carry the admin role."
            )
        raise AuthenticationFailed("Invalid admin key.")

    def agent(self, presented: str | None) -> None:
        if not presented:
            raise AuthenticationFailed(
                "Missing fleet token. Send it as 'Authorization: Bearer <key>'."
            )
        if not _matches(presented, self._secrets.get(FLEET_TOKEN)):
            raise AuthenticationFailed("Invalid fleet token.")
