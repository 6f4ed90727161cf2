"""Who is calling: a virtual key from the directory, or one of the deployment's static keys.

Static keys (`SPOTGATE_API_KEYS`, the dev stack's key) keep working and have
no limits: they are the operator's own. Virtual keys (`sk-sg-...`) carry
everything a tenant may do. Every refusal is a 401 in OpenAI's shape, with a
message that says which case it is (missing, malformed, unknown, revoked,
expired) but never anything about other keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from spotgate.clock import Clock
from spotgate.errors import AuthenticationFailed
from spotgate.gateway.tenancy.directory import KeyDirectory
from spotgate.gateway.tenancy.keys import KEY_PREFIX, ApiKey, looks_like_key


@dataclass(frozen=True)
class Caller:
    """Who a request is from. `key` is None for a static key."""

    key_id: str
    key: ApiKey | None = None

    @property
    def cache_scope(self) -> str:
        return self.key.cache_scope if self.key is not None else self.key_id


def static_key_id(secret: str) -> str:
    return "static:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


class KeyAuthority:
    def __init__(
        self,
        directory: KeyDirectory | None,
        static_keys: Callable[[], Iterable[str]],
        clock: Clock,
    ) -> None:
        self._directory = directory
        self._static = static_keys
        self._clock = clock

    @property
    def directory(self) -> KeyDirectory | None:
        return self._directory

    def tenants(self) -> int:
        """How many callers could be told apart (one means a shared cache leaks nothing)."""
        statics = len([k for k in self._static() if k])
        virtual = 0 if self._directory is None else self._directory.count
        return statics + virtual

    def authenticate(self, presented: str | None) -> Caller:
        if not presented:
            raise AuthenticationFailed("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        for static in self._static():
            if static and hmac.compare_digest(presented.encode(), static.encode()):
                return Caller(static_key_id(static))
        if not looks_like_key(presented):
            raise AuthenticationFailed(
                f"Malformed API key: spotgate keys start with '{KEY_PREFIX}'."
            )
        key = self._directory.lookup(presented) if self._directory is not None else None
        if key is None:
            raise AuthenticationFailed("Invalid API key.")
        if key.revoked_at is not None:
            raise AuthenticationFailed("This API key was revoked.")
        if key.expires_at is not None and self._clock.now() >= key.expires_at:
            when = datetime.fromtimestamp(key.expires_at, UTC).isoformat(timespec="seconds")
            raise AuthenticationFailed(f"This API key expired at {when}.")
        return Caller(key.id, key)

    def caller_for(self, key_id: str) -> Caller | None:
        """The caller a stored key id stands for now (a batch's owner, its lines run later),
        or None once that key is gone, revoked or expired: its work then stops."""
        if key_id.startswith("static:"):
            ids = {static_key_id(k) for k in self._static() if k}
            return Caller(key_id) if key_id in ids else None
        key = self._directory.get(key_id) if self._directory is not None else None
        if key is None or not key.active(self._clock.now()):
            return None
        return Caller(key.id, key)
