"""Where each request line of a batch input file is, in bytes: the one splitter both the
validator and the enqueuer use, so a line's index and byte range agree everywhere."""

from __future__ import annotations

from collections.abc import Iterator


def line_spans(content: bytes, base: int = 0) -> Iterator[tuple[int, int]]:
    """(offset, length) of every line that is not blank, from `base`, without its newline.

    Blank and whitespace-only lines are not requests (a trailing newline, a
    stray CRLF) and get no index; the index of a line is its rank here.
    """
    position, size = 0, len(content)
    while position < size:
        end = content.find(b"\n", position)
        if end == -1:
            end = size
        if content[position:end].strip():
            yield base + position, end - position
        position = end + 1
