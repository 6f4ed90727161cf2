"""Deterministic answers: a fixed token stream per prompt, truncated per request.

Every answer is a prefix of one infinite stream seeded from the prompt, so
`max_tokens`, stop strings and continuation are all just different cuts of
the same sequence. That is what lets the gateway resume a broken stream by
sending the partial answer back and get exactly the missing tail.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from spotgate.engines.sim.vocabulary import (
    OPENERS,
    PARIS_ANSWER,
    SPACED_ADJECTIVES,
    SPACED_ADVERBS,
    SPACED_CONJUNCTIONS,
    SPACED_DETERMINERS,
    SPACED_NOUNS,
    SPACED_OPENERS,
    SPACED_PREPOSITIONS,
    SPACED_VERBS,
)

# Marks a natural end in the stream; text never contains an empty token otherwise.
_EOS = ""
_END_AFTER_SENTENCE = 0.35


@dataclass(frozen=True, slots=True)
class Completion:
    """One choice's output: a text piece per generated token.

    The last piece may be shortened (even to "") by a stop string, which
    still counts as a generated token, as it does in vLLM.
    """

    pieces: tuple[str, ...]
    finish_reason: str
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def num_tokens(self) -> int:
        return len(self.pieces)


def mentions_paris(prompt: str) -> bool:
    return "capital of france" in prompt.lower()


def _hash64(*parts: object) -> int:
    joined = "\x00".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(joined, digest_size=8).digest(), "little")


def choice_seeds(
    key: str,
    *,
    n: int,
    temperature: float,
    seed: int | None,
    server_seed: int,
    rng: random.Random,
) -> list[int]:
    """Greedy decoding gives every choice the same answer; sampling with a seed
    gives distinct but reproducible ones; sampling without a seed is random."""
    if temperature == 0:
        return [_hash64(server_seed, key)] * n
    if seed is not None:
        return [_hash64(server_seed, seed, index, key) for index in range(n)]
    return [rng.getrandbits(64) for _ in range(n)]


def _sentence(rng: random.Random, opener: tuple[str, ...]) -> list[str]:
    choice = rng.choice
    roll = rng.random
    tokens = [choice(opener)]
    if roll() < 0.5:
        tokens.append(choice(SPACED_ADJECTIVES))
    tokens.append(choice(SPACED_NOUNS))
    if roll() < 0.3:
        tokens.append(choice(SPACED_ADVERBS))
    tokens += (choice(SPACED_VERBS), choice(SPACED_DETERMINERS))
    if roll() < 0.4:
        tokens.append(choice(SPACED_ADJECTIVES))
    tokens.append(choice(SPACED_NOUNS))
    tail = roll()
    if tail < 0.35:
        tokens += (choice(SPACED_PREPOSITIONS), choice(SPACED_DETERMINERS))
        tokens.append(choice(SPACED_NOUNS))
    elif tail < 0.6:
        tokens += (",", choice(SPACED_CONJUNCTIONS), choice(SPACED_DETERMINERS))
        tokens += (choice(SPACED_NOUNS), choice(SPACED_VERBS), choice(SPACED_DETERMINERS))
        tokens.append(choice(SPACED_NOUNS))
    tokens.append(".")
    return tokens


def answer_stream(seed: int, *, paris: bool, leading_space: bool = False) -> Iterator[str]:
    """The infinite token stream for one seed, with end-of-answer markers in it;
    text keeps flowing past each marker for `ignore_eos` requests."""
    rng = random.Random(seed)
    opener = SPACED_OPENERS if leading_space else OPENERS
    if paris:
        yield " " + PARIS_ANSWER[0] if leading_space else PARIS_ANSWER[0]
        yield from PARIS_ANSWER[1:]
        yield _EOS
        opener = SPACED_OPENERS
    while True:
        yield from _sentence(rng, opener)
        opener = SPACED_OPENERS
        if rng.random() < _END_AFTER_SENTENCE:
            yield _EOS


def _after_prefix(stream: Iterator[str], prefix: str) -> Iterator[str] | None:
    """The rest of `stream` once `prefix` is consumed, or None if the stream
    does not start with it. A prefix ending mid-token resumes with the
    token's remainder."""
    position = 0
    for token in stream:
        if not token:
            continue
        end = position + len(token)
        if end <= len(prefix):
            if prefix[position:end] != token:
                return None
            position = end
            if position == len(prefix):
                return stream
        else:
            cut = len(prefix) - position
            if token[:cut] != prefix[position:]:
                return None
            return itertools.chain((token[cut:],), stream)
    return None


def _apply_stops(pieces: list[str], stops: Sequence[str]) -> Completion | None:
    text = "".join(pieces)
    found = [(text.find(stop), order, stop) for order, stop in enumerate(stops) if stop in text]
    if not found:
        return None
    cut, _, stop = min(found)
    stop_end = cut + len(stop)
    kept: list[str] = []
    position = 0
    for piece in pieces:
        if position >= stop_end:
            break
        kept.append(piece[: max(0, cut - position)])
        position += len(piece)
    return Completion(tuple(kept), "stop", stop)


def generate(
    seed: int,
    *,
    paris: bool,
    max_tokens: int,
    prefix: str = "",
    stops: Sequence[str] = (),
    ignore_eos: bool = False,
) -> Completion:
    """Cut one choice out of the seed's stream.

    With a `prefix` (a partial assistant message to continue) the output is
    what follows the prefix in the same stream, so prefix + output equals the
    uninterrupted answer. A prefix the stream never produced gets a fresh,
    still deterministic continuation.
    """
    stream = answer_stream(seed, paris=paris)
    if prefix:
        resumed = _after_prefix(stream, prefix)
        if resumed is None:
            resumed = answer_stream(
                _hash64(seed, prefix), paris=False, leading_space=not prefix[-1].isspace()
            )
        stream = resumed
    pieces: list[str] = []
    finish_reason = "length"
    for token in stream:
        if not token:
            if ignore_eos:
                continue
            finish_reason = "stop"
            break
        if len(pieces) >= max_tokens:
            break
        pieces.append(token)
    if stops:
        stopped = _apply_stops(pieces, [stop for stop in stops if stop])
        if stopped is not None:
            return stopped
    return Completion(tuple(pieces), finish_reason)
