"""The response cache's storage port, its entry format, and an in-memory store for tests.

Stores see opaque bytes under opaque keys, so SQLite (local) and Cosmos DB
(Azure) implement the same four calls and one contract suite covers them all
(tests/adapters/test_cache_store_contract.py). Entries carry their own
`created_at`: a store's TTL is a space-reclaiming hint (the Cosmos emulator
never expires anything), and `ResponseCache` checks freshness itself.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from spotgate.clock import Clock

ENTRY_FORMAT_VERSION = 1


class CacheStore(Protocol):
    """Bytes by key with a time to live. Every call may fail or hang: callers bound them."""

    async def get(self, key: str) -> bytes | None:
        """The live value under `key`, or None when absent or expired."""
        ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store `value` under `key` (replacing any), readable for `ttl_s` seconds."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key`; absent keys are fine."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored non-streamed answer: what the worker said and when.

    Streamed requests are answered from the same entry (see sse_replay), so
    one entry serves both forms of the question.
    """

    status: int
    body: bytes
    model: str
    created_at: float
    worker_id: str

    def to_bytes(self) -> bytes:
        """A one-line JSON header, a newline, then the body verbatim.

        The body is already JSON; embedding it raw (not base64, not re-parsed)
        keeps a hit to one small parse. orjson never writes a raw newline, so
        the first one ends the header.
        """
        header = orjson.dumps(
            {
                "v": ENTRY_FORMAT_VERSION,
                "status": self.status,
                "model": self.model,
                "created_at": self.created_at,
                "worker_id": self.worker_id,
            }
        )
        return header + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedResponse:
        """Raises ValueError for anything `to_bytes` did not write."""
        header_bytes, newline, body = data.partition(b"\n")
        if not newline:
            raise ValueError("cache entry has no header line")
        try:
            header: Any = orjson.loads(header_bytes)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"cache entry header is not JSON: {exc}") from None
        if not isinstance(header, dict) or header.get("v") != ENTRY_FORMAT_VERSION:
            raise ValueError("cache entry has an unknown format")
        try:
            return cls(
                status=int(header["status"]),
                body=body,
                model=str(header["model"]),
                created_at=float(header["created_at"]),
                worker_id=str(header["worker_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cache entry header is incomplete: {exc}") from None


class InMemoryCacheStore:
    """A dict with TTL and a byte cap, evicting the least recently used: for unit tests.

    Not for production: each gateway process would keep its own copy, and the
    cap counts values only.
    """

    def __init__(self, clock: Clock, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._clock = clock
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0
        self.closed = False

    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at <= self._clock.now():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._remove(key)
        if len(value) > self._max_bytes or ttl_s <= 0:
            return
        self._entries[key] = (value, self._clock.now() + ttl_s)
        self._size += len(value)
        while self._size > self._max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    async def delete(self, key: str) -> None:
        self._remove(key)

    async def close(self) -> None:
        self.closed = True

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[0])
