"""The SecretStore on Azure: the deployment's Key Vault, cached, renewed behind the request path.

`start()` reads every listed secret once (the client does Key Vault's challenge
authentication on its first request: a bare request, a 401 naming the tenant and
resource, then the same request with a token for that resource). After that
`get()` answers from memory and, when the copy is older than `refresh_s`, starts
one background refresh (never more than one at a time) and returns the value it
has: a rotated secret is served within `refresh_s` of its rotation plus one read,
and no caller ever waits on Key Vault.

What a read can find:
- the secret: its value is served from then on;
- no such secret (404 SecretNotFound): None, logged once until it appears;
- anything else (an outage, a throttle, a missing role): the last good value stays
  and the read is tried again after `retry_s`; one warning per `refresh_s` while it lasts.

Names: the caller's names (`admin-key`, or a catalogue entry's `api_key_env`
such as `SPILLOVER_API_KEY`) are Key Vault names once underscores become hyphens and
letters are lower-cased (Key Vault names are letters, digits and hyphens, and
case-insensitive): `SPILLOVER_API_KEY` reads the vault's `spillover-api-key`.
Only the names listed at construction are read; any other name is None (logged once).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets.aio import SecretClient

from spotgate.background import cancel_and_wait
from spotgate.clock import Clock, SystemClock

log = logging.getLogger("spotgate.azure")

VAULT_NAME = re.compile(r"[0-9a-z-]{1,127}")


def vault_name(name: str) -> str:
    """The Key Vault name of secret `name`: `SPILLOVER_API_KEY` -> `spillover-api-key`."""
    stored = name.replace("_", "-").lower()
    if not VAULT_NAME.fullmatch(stored):
        raise ValueError(f"{name!r} cannot be a Key Vault secret name (letters, digits, hyphens)")
    return stored


class SecretsUnavailable(RuntimeError):
    """The first load got no answer from Key Vault for any secret."""


class _Outcome(enum.Enum):
    FOUND = "found"
    MISSING = "missing"
    FAILED = "failed"


@dataclass(frozen=True)
class _Read:
    name: str
    outcome: _Outcome
    value: str | None = None
    error: str = ""


def _describe(error: BaseException) -> str:
    """What went wrong, without the body (which can be long) or anything secret."""
    if isinstance(error, HttpResponseError):
        code = getattr(error.error, "code", None) if error.error else None
        return f"{type(error).__name__} {error.status_code} {code or ''}".rstrip()
    return type(error).__name__


class KeyVaultSecrets:
    """A SecretStore over Azure Key Vault; see the module docstring."""

    def __init__(
        self,
        vault_url: str,
        credential: AsyncTokenCredential,
        names: Iterable[str],
        *,
        refresh_s: float = 300.0,
        retry_s: float = 30.0,
        clock: Clock | None = None,
        **client_kwargs: Any,
    ) -> None:
        """`client_kwargs` go to the SecretClient (`transport`, retry settings)."""
        self._names = {name: vault_name(name) for name in names}
        self._vault_url = vault_url
        self._client = SecretClient(vault_url, credential, **client_kwargs)
        self._refresh_s = refresh_s
        self._retry_s = min(retry_s, refresh_s)
        self._clock = clock or SystemClock()
        self._values: dict[str, str | None] = {}
        self._due_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._answered = False
        self._last_error = ""
        self._logged_missing: set[str] = set()
        self._logged_unlisted: set[str] = set()
        self._warned_at: float | None = None
        self._closed = False

    async def start(self) -> None:
        """The first load; SecretsUnavailable when Key Vault answered none of its reads."""
        await self.refresh()
        if self._names and not self._answered:
            raise SecretsUnavailable(
                f"Key Vault {self._vault_url} answered none of {len(self._names)} reads "
                f"({self._last_error})"
            )

    def get(self, name: str, /) -> str | None:
        if self._clock.now() >= self._due_at:
            self._schedule()
        if name not in self._names:
            if name not in self._logged_unlisted:
                self._logged_unlisted.add(name)
                log.warning("secret %r is not among those read from Key Vault: None", name)
            return None
        return self._values.get(name)

    async def refresh(self) -> None:
        """Read every secret now, or wait for the read already under way."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._load(), name="key-vault-refresh")
        await asyncio.shield(self._task)

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._task)
        self._task = None
        await self._client.close()

    def _schedule(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called off the event loop: the next caller on it will refresh
            return
        self._task = loop.create_task(self._load(), name="key-vault-refresh")

    async def _read(self, name: str) -> _Read:
        try:
            secret = await self._client.get_secret(self._names[name])
        except ResourceNotFoundError:
            return _Read(name, _Outcome.MISSING)
        except Exception as error:  # kept last value; the caller logs the outage
            return _Read(name, _Outcome.FAILED, error=_describe(error))
        return _Read(name, _Outcome.FOUND, secret.value or None)

    async def _load(self) -> None:
        reads = await asyncio.gather(*(self._read(name) for name in self._names))
        failed = []
        for read in reads:
            if read.outcome is _Outcome.FOUND:
                self._values[read.name] = read.value
                self._logged_missing.discard(read.name)
            elif read.outcome is _Outcome.MISSING:
                self._values[read.name] = None
                if read.name not in self._logged_missing:
                    self._logged_missing.add(read.name)
                    log.warning(
                        "Key Vault %s has no secret %r: None until it is added",
                        self._vault_url,
                        self._names[read.name],
                    )
            else:
                self._values.setdefault(read.name, None)
                failed.append(read)
        self._answered = self._answered or len(failed) < len(reads)
        self._after_load(failed)

    def _after_load(self, failed: list[_Read]) -> None:
        now = self._clock.now()
        if not failed:
            self._due_at = now + self._refresh_s
            if self._warned_at is not None:
                log.info("Key Vault %s answers again", self._vault_url)
            self._warned_at = None
            return
        self._due_at = now + self._retry_s
        self._last_error = failed[0].error
        what = ", ".join(f"{self._names[r.name]} ({r.error})" for r in failed)
        if self._warned_at is None or now - self._warned_at >= self._refresh_s:
            self._warned_at = now
            log.warning(
                "Key Vault %s: could not read %s; serving the last values, retrying in %.0f s",
                self._vault_url,
                what,
                self._retry_s,
            )
        else:
            log.debug("Key Vault %s still failing: %s", self._vault_url, what)
