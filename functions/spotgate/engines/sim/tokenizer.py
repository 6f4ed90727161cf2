"""A lossless, stateless toy tokenizer shared by every simulated worker.

Pieces are words with their leading space, single punctuation marks, single
whitespace characters and the chat-template markers, so generated text splits
back into exactly the tokens that produced it. Pieces outside the small fixed
vocabulary become byte-chunk ids that encode their own bytes, so any worker
can detokenize ids another worker produced without shared state.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence

from spotgate.engines.sim.vocabulary import GENERATION_PIECES

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

_PIECE = re.compile(r"<\|im_(?:start|end)\|>| ?\w+| ?[^\w\s]|\s")

_CHUNK_BYTES = 5
# Above any vocabulary id and below 2**53, so ids survive JSON parsers that use doubles.
_CHUNK_BASE = 1 << 48
_CHUNK_LIMIT = _CHUNK_BASE + (1 << (8 * _CHUNK_BYTES + 1))


def _vocabulary() -> tuple[str, ...]:
    pieces: dict[str, None] = dict.fromkeys([IM_START, IM_END, "\n", " ", "\t"])
    for role in ("system", "user", "assistant", "tool", "developer"):
        pieces[role] = None
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces[char] = None
        pieces[" " + char] = None
    for piece in GENERATION_PIECES:
        pieces[piece] = None
    return tuple(pieces)


VOCABULARY: tuple[str, ...] = _vocabulary()
_IDS: dict[str, int] = {piece: index for index, piece in enumerate(VOCABULARY)}


class InvalidTokenId(ValueError):
    pass


def pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def count(text: str) -> int:
    """Token count without building ids: the hot path for usage and length checks."""
    total = 0
    for piece in _PIECE.findall(text):
        if piece in _IDS:
            total += 1
        else:
            size = len(piece) if piece.isascii() else len(piece.encode())
            total += -(-size // _CHUNK_BYTES)
    return total


def encode(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _PIECE.findall(text):
        known = _IDS.get(piece)
        if known is not None:
            ids.append(known)
            continue
        raw = piece.encode()
        for start in range(0, len(raw), _CHUNK_BYTES):
            chunk = raw[start : start + _CHUNK_BYTES] + b"\x01"
            ids.append(_CHUNK_BASE + int.from_bytes(chunk, "little"))
    return ids


def _chunk_bytes(token_id: int) -> bytes:
    value = token_id - _CHUNK_BASE
    size, remainder = divmod(value.bit_length() - 1, 8)
    if remainder or not 1 <= size <= _CHUNK_BYTES:
        raise InvalidTokenId(f"Token id {token_id} is out of vocabulary.")
    return (value - (1 << (8 * size))).to_bytes(size, "little")


def decode(ids: Iterable[int]) -> str:
    out = bytearray()
    for token_id in ids:
        if 0 <= token_id < len(VOCABULARY):
            out += VOCABULARY[token_id].encode()
        elif _CHUNK_BASE <= token_id < _CHUNK_LIMIT:
            out += _chunk_bytes(token_id)
        else:
            raise InvalidTokenId(f"Token id {token_id} is out of vocabulary.")
    return out.decode("utf-8", "replace")


def token_strings(ids: Sequence[int]) -> list[str]:
    return [decode([token_id]) for token_id in ids]
