"""The keys every request is checked against, held in memory and kept in step with the store.

A request must not wait on a store to learn whether its key is valid, so the
directory keeps every key in memory, indexed by digest, and re-reads the
store every `refresh_s` (2 s by default): a key created, changed or revoked
on one gateway instance is honoured by every other within that time, with no
restart. Writes through the admin API go to the store first, then here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from spotgate.clock import Clock
from spotgate.errors import InvalidRequest, NotFound
from spotgate.gateway.tenancy.keys import ApiKey, digest, new_key_id, new_secret
from spotgate.gateway.tenancy.ports import KeyStore

log = logging.getLogger("spotgate.keys")

EDITABLE = frozenset(
    {
        "name",
        "owner",
        "models",
        "groups",
        "rpm",
        "tpm",
        "model_limits",
        "max_parallel",
        "budget_usd",
        "budget_period",
        "expires_at",
        "prices",
        "cache_group",
        "metadata",
    }
)


class KeyDirectory:
    def __init__(
        self,
        store: KeyStore,
        clock: Clock,
        salt: Callable[[], str | None],
        *,
        refresh_s: float = 2.0,
    ) -> None:
        """`salt()` is the deployment's `key-salt` secret; rotating it invalidates every key,
        so it is read once, at start."""
        self._store = store
        self._clock = clock
        self._salt_source = salt
        self._salt: str | None = None
        self._refresh_s = refresh_s
        self._by_digest: dict[str, ApiKey] = {}
        self._by_id: dict[str, ApiKey] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def salt(self) -> str:
        if self._salt is None:
            salt = self._salt_source()
            if not salt:
                raise RuntimeError("no key-salt secret: virtual API keys cannot be checked")
            self._salt = salt
        return self._salt

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.get_running_loop().create_task(self._refreshing())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._store.close()

    async def reload(self) -> None:
        keys = await self._store.all()
        self._by_id = {k.id: k for k in keys}
        self._by_digest = {k.digest: k for k in keys}

    def lookup(self, presented: str) -> ApiKey | None:
        """The key `presented` is (active or not); None if no key has that digest."""
        if not self._by_digest:
            return None
        return self._by_digest.get(digest(presented, self.salt))

    def get(self, key_or_name: str) -> ApiKey | None:
        found = self._by_id.get(key_or_name)
        if found is not None:
            return found
        named = [k for k in self._by_id.values() if k.name == key_or_name]
        if len(named) > 1:  # a name is unique among active keys; revoked ones may share it
            named = [k for k in named if k.revoked_at is None]
        return named[0] if len(named) == 1 else None

    def all(self) -> list[ApiKey]:
        return sorted(self._by_id.values(), key=lambda k: (k.created_at, k.id))

    @property
    def count(self) -> int:
        return len(self._by_id)

    async def create(self, name: str, **fields: Any) -> tuple[ApiKey, str]:
        """A new key and its secret, which is shown this once and never stored."""
        if not name or not isinstance(name, str):
            raise InvalidRequest("'name' must be a non-empty string.", param="name")
        unknown = set(fields) - EDITABLE
        if unknown:
            raise InvalidRequest(f"Unknown key fields: {', '.join(sorted(unknown))}.")
        if self._active_named(name):
            raise InvalidRequest(f"A key named '{name}' exists already.", param="name")
        secret = new_secret()
        now = self._clock.now()
        key = ApiKey.from_dict(
            {
                **fields,
                "id": new_key_id(),
                "name": name,
                "digest": digest(secret, self.salt),
                "prefix": secret[:10],
                "created_at": now,
                "updated_at": now,
            }
        )
        await self._save(key)
        return key, secret

    async def update(self, key_or_name: str, changes: dict[str, Any]) -> ApiKey:
        key = self.find(key_or_name)
        unknown = set(changes) - EDITABLE
        if unknown:
            raise InvalidRequest(f"Unknown key fields: {', '.join(sorted(unknown))}.")
        renamed = changes.get("name")
        if renamed and renamed != key.name and self._active_named(renamed):
            raise InvalidRequest(f"A key named '{renamed}' exists already.", param="name")
        data = key.to_dict() | changes | {"updated_at": self._clock.now()}
        updated = ApiKey.from_dict(data)
        await self._save(updated)
        return updated

    async def revoke(self, key_or_name: str) -> ApiKey:
        key = self.find(key_or_name)
        if key.revoked_at is not None:
            return key
        now = self._clock.now()
        revoked = replace(key, revoked_at=now, updated_at=now)
        await self._save(revoked)
        return revoked

    def _active_named(self, name: str) -> bool:
        return any(k.name == name and k.revoked_at is None for k in self._by_id.values())

    def find(self, key_or_name: str) -> ApiKey:
        """The key by id or name; 404 `key_not_found` if none (or the name is ambiguous)."""
        key = self.get(key_or_name)
        if key is None:
            raise NotFound(f"No key '{key_or_name}'.", code="key_not_found")
        return key

    async def _save(self, key: ApiKey) -> None:
        await self._store.put(key)
        old = self._by_id.get(key.id)
        if old is not None:
            self._by_digest.pop(old.digest, None)
        self._by_id[key.id] = key
        self._by_digest[key.digest] = key

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.reload()
            except Exception as exc:  # keep serving the last known keys
                if not self._failing:
                    log.warning("key store unreadable, serving the last known keys: %r", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("key store readable again")
                self._failing = False
