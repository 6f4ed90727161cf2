"""A fake Key Vault for azure-keyvault-secrets: recorded answers, its challenge auth, no network.

Key Vault does not take a token it did not ask for. The client's
ChallengeAuthPolicy sends its first request to a vault bare (no Authorization);
Key Vault answers 401 with `WWW-Authenticate: Bearer authorization="https://
login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`
(recorded/key_vault/challenge.json); the policy then asks the credential for a
token for `https://vault.azure.net/.default` in that tenant and sends the same
request again with it, and caches the challenge per vault host for the rest of the
process. `KeyVaultTransport` answers the same way: any request without the
token `KeyVaultCredential` hands out gets the recorded challenge, only an
authorised one reaches the recorded secrets. It is `ArmTransport` (routes served
in order, every request recorded) with that gate in front, an outage switch and
an optional hold, so a test can keep a read in flight.

The policy's challenge cache is global to the process, keyed by vault host: give
each test its own vault (`vault_url()`) so each one sees the whole conversation.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from azure.core.rest import HttpRequest

from tests.adapters.azure.arm_transport import ArmTransport, Reply

TENANT = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"  # as the recorded challenge names it
TOKEN = "kv-token-for-tests"
KEY_VAULT_SCOPE = "https://vault.azure.net/.default"


def vault_url() -> str:
    """A vault of its own (the challenge cache is per host and per process)."""
    return f"https://kv-sg{uuid.uuid4().hex[:10]}.vault.azure.net/"


def secret_path(name: str) -> str:
    """Route pattern of Get Secret (latest version) for `name`."""
    return rf"/secrets/{re.escape(name)}/?\?"


def secret(vault: str, name: str, value: str, version: str | None = None) -> Reply:
    """The recorded 200 of Get Secret, as `vault` would answer it for `name`."""
    reply = Reply.of("key_vault/secret_get")
    reply.body["value"] = value
    reply.body["id"] = f"{vault.rstrip('/')}/secrets/{name}/{version or uuid.uuid4().hex}"
    return reply


def not_found(name: str) -> Reply:
    reply = Reply.of("key_vault/secret_not_found")
    reply.body["error"]["message"] = reply.body["error"]["message"].replace("key-salt", name)
    return reply


def forbidden() -> Reply:
    return Reply.of("key_vault/forbidden_by_rbac")


@dataclass
class KeyVaultCredential:
    """An AsyncTokenCredential with a fixed token; it records what it was asked for."""

    token: str = TOKEN
    asked: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    async def get_token(
        self, *scopes: str, tenant_id: str | None = None, **kwargs: Any
    ) -> AccessToken:
        self.asked.append((scopes, tenant_id))
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> KeyVaultCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


class KeyVaultTransport(ArmTransport):
    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self._token = token
        self.challenged = 0  # requests without the token, answered with the challenge
        self.bare = 0  # of those, the ones with no Authorization header at all
        self.authorised = 0  # requests that carried the token and reached the routes
        self.down = False  # every request fails to connect, as when the vault is unreachable
        self.hold: asyncio.Event | None = None  # when set: authorised reads wait for it
        self.held = 0  # reads that have waited (or are waiting) on `hold`

    async def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        if self.down:
            raise ServiceRequestError("Cannot connect to host: Connection refused")
        authorization = request.headers.get("Authorization")
        if authorization != f"Bearer {self._token}":
            self.challenged += 1
            self.bare += authorization is None
            return await self._answer(request, Reply.of("key_vault/challenge"))
        self.authorised += 1
        if self.hold is not None:
            self.held += 1
            await self.hold.wait()
        return await super().send(request, **kwargs)

    def answer(self, name: str, *replies: Reply) -> None:
        """Serve `replies` to reads of secret `name`, in order, the last one from then on."""
        self.on("GET", secret_path(name), *replies, repeat_last=True)

    def reads(self, name: str) -> int:
        """Authorised reads of secret `name` (the challenged bare requests are not counted)."""
        return len(self.requests("GET", rf"/secrets/{re.escape(name)}/?$"))

    async def _answer(self, request: HttpRequest, reply: Reply) -> Any:
        """Serve `reply` outside the routes (and outside `sent`)."""
        probe = ArmTransport()
        probe.on(request.method, "", reply)
        return await probe.send(request)
