"""Rewriting a relayed SSE stream line by line, whatever its chunk boundaries.

Some streams need their events changed on the way (chunks made schema-valid,
a usage chunk the gateway asked for on its own behalf taken out again). A
line split across two chunks is joined first, so a rewrite never sees half
an event; a line the rewrite drops takes its blank separator with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable

from spotgate.gateway.relay import Relay

LineRewrite = Callable[[bytes], bytes | None]
"""One line (without its newline) -> the line to send, or None to drop the event."""


def rewritten(chunks: Relay, rewrite: LineRewrite) -> Relay:
    return Relay(_rewriting(chunks, rewrite), chunks.aclose)


async def _rewriting(chunks: Relay, rewrite: LineRewrite) -> AsyncGenerator[bytes, None]:
    pending = b""
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            whole, newline, pending = (pending + chunk).rpartition(b"\n")
            if newline:
                out = _apply(whole + newline, rewrite)
                if out:
                    yield out
    if pending:
        out = _apply(pending, rewrite)
        if out:
            yield out


def _apply(block: bytes, rewrite: LineRewrite) -> bytes:
    kept: list[bytes] = []
    dropping = False
    for line in block.split(b"\n"):
        if dropping and line == b"":  # the blank line that ended a dropped event
            dropping = False
            continue
        new = rewrite(line)
        if new is None:
            dropping = True
            continue
        kept.append(new)
    return b"\n".join(kept)
