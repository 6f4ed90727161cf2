"""`model: "auto"`: the cheapest catalogued model whose context window fits the request.

Candidates are tried cheapest first and each is measured with its own
tokenizer, so the common case (the cheapest model fits) costs one /tokenize
call; a request that fits nowhere is the client's to shorten, hence a 400
that says how big the prompt is, not a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spotgate.errors import InvalidRequest, ModelNotFound
from spotgate.gateway.catalog import ModelCatalog
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.token_counting import TokenCount, TokenCounter


@dataclass(frozen=True, slots=True)
class AutoChoice:
    entry: ModelEntry
    prompt_tokens: int
    exact: bool
    completion_tokens: int


def completion_budget(body: dict[str, Any], default: int) -> int:
    """What the client allows the answer (`max_completion_tokens` is OpenAI's newer name)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


class AutoModelChooser:
    def __init__(
        self,
        catalog: ModelCatalog,
        counter: TokenCounter,
        *,
        default_completion_tokens: int = 1024,
        auto_name: str = "auto",
    ) -> None:
        """`default_completion_tokens` is the room reserved when the request sets no limit."""
        self._catalog = catalog
        self._counter = counter
        self._default_completion = default_completion_tokens
        self._auto_name = auto_name

    async def choose(
        self, body: dict[str, Any], allowed: Callable[[ModelEntry], bool] | None = None
    ) -> ModelEntry:
        return (await self.choose_detailed(body, allowed)).entry

    async def choose_detailed(
        self, body: dict[str, Any], allowed: Callable[[ModelEntry], bool] | None = None
    ) -> AutoChoice:
        """`allowed`: only these entries may be chosen (the models a caller's key covers)."""
        candidates = [e for e in self._catalog.auto_candidates() if allowed is None or allowed(e)]
        if not candidates:
            raise ModelNotFound(self._auto_name)
        completion = completion_budget(body, self._default_completion)
        measured: TokenCount | None = None
        for entry in candidates:
            if completion >= entry.context_length:
                continue
            measured = await self._counter.count(entry.worker_model, body)
            if measured.tokens + completion <= entry.context_length:
                return AutoChoice(entry, measured.tokens, measured.exact, completion)
        largest = max(entry.context_length for entry in candidates)
        if measured is None:
            raise InvalidRequest(
                f"The request asks for up to {completion} completion tokens, more than the "
                f"largest context window of any model '{self._auto_name}' can choose "
                f"({largest} tokens). Lower max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        about = "" if measured.exact else "about "
        raise InvalidRequest(
            f"The prompt has {about}{measured.tokens} tokens and the request leaves room for "
            f"{completion} completion tokens ({measured.tokens + completion} in all); no model "
            f"'{self._auto_name}' can choose has a context window that large (the largest is "
            f"{largest} tokens). Shorten the prompt or lower max_tokens.",
            param="messages" if "messages" in body else "prompt",
            code="context_length_exceeded",
        )
