"""The words simulated answers are made of.

Consonant-initial adjectives and nouns keep "a" grammatical, and every word
appears as a single tokenizer piece so completion token counts are exact.
"""

from __future__ import annotations

DETERMINERS = ("the", "a", "this", "every", "each", "one", "our", "that")
ADJECTIVES = (
    "quick", "small", "bright", "quiet", "modern", "simple", "careful", "steady",
    "patient", "gentle", "large", "busy", "clever", "distant", "familiar", "useful",
    "narrow", "warm", "hidden", "curious",
)  # fmt: skip
NOUNS = (
    "model", "server", "river", "garden", "teacher", "city", "system", "journey",
    "window", "network", "library", "market", "signal", "question", "story", "bridge",
    "forest", "method", "planet", "message", "harbor", "lantern", "record", "valley",
)  # fmt: skip
VERBS = (
    "found", "built", "followed", "carried", "described", "opened", "answered", "measured",
    "reached", "shaped", "remembered", "shared", "studied", "crossed", "joined", "changed",
)  # fmt: skip
ADVERBS = ("slowly", "quietly", "carefully", "often", "never", "soon", "rarely", "gladly")
PREPOSITIONS = ("near", "beyond", "with", "under", "across", "behind", "through", "beside")
CONJUNCTIONS = ("and", "but", "while", "because")

PARIS_ANSWER = ("The", " capital", " of", " France", " is", " Paris", ".")


def _lead(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(" " + word for word in words)


SPACED_DETERMINERS = _lead(DETERMINERS)
SPACED_ADJECTIVES = _lead(ADJECTIVES)
SPACED_NOUNS = _lead(NOUNS)
SPACED_VERBS = _lead(VERBS)
SPACED_ADVERBS = _lead(ADVERBS)
SPACED_PREPOSITIONS = _lead(PREPOSITIONS)
SPACED_CONJUNCTIONS = _lead(CONJUNCTIONS)
OPENERS = tuple(word.capitalize() for word in DETERMINERS)
SPACED_OPENERS = _lead(OPENERS)

GENERATION_PIECES: tuple[str, ...] = (
    *SPACED_DETERMINERS,
    *SPACED_ADJECTIVES,
    *SPACED_NOUNS,
    *SPACED_VERBS,
    *SPACED_ADVERBS,
    *SPACED_PREPOSITIONS,
    *SPACED_CONJUNCTIONS,
    *OPENERS,
    *SPACED_OPENERS,
    *PARIS_ANSWER,
    ",",
    ".",
)
