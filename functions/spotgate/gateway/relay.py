"""A stream relay that releases what it holds when closed, whether or not it was started.

An async generator's `finally` runs only once the generator has started, so
closing one nobody read (a client gone before the first byte) does nothing:
the worker's stream, its load slot and the pool's admission slot it holds
would stay taken until garbage collection. A `Relay` pairs the generator with
the release of those: `aclose()` closes the generator (which runs its own
cleanup if it started), then releases, once, whether iteration never began,
stopped half-way or ended. A relay read to its end releases through its
generator's `finally`, as before, so the release must be idempotent.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

Release = Callable[[], Awaitable[None]]


class Relay:
    """The chunks of one relayed stream; `aclose()` is idempotent and always releases."""

    __slots__ = ("_chunks", "_closed", "_release")

    def __init__(self, chunks: AsyncGenerator[bytes, None], release: Release) -> None:
        self._chunks = chunks
        self._release = release
        self._closed = False

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._chunks.aclose()
        finally:
            await self._release()


def once(release: Release) -> Release:
    """`release` that does its work the first time it is called and nothing after."""
    done = False

    async def release_once() -> None:
        nonlocal done
        if not done:
            done = True
            await release()

    return release_once
