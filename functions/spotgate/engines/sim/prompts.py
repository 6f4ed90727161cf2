"""Turning request bodies into prompt text, the way vLLM applies a chat template.

The same rendering feeds usage, length checks and `/tokenize`, so the prompt
token counts a client sees always agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spotgate.engines.sim import tokenizer
from spotgate.engines.sim.errors import invalid
from spotgate.engines.sim.params import flag
from spotgate.engines.sim.tokenizer import IM_END, IM_START

_ASSISTANT_TURN = f"{IM_START}assistant\n"


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """`text` is what the model reads; `key` is the conversation without a
    continued assistant prefix, so an interrupted answer and its resumption
    are seeded identically; `prefix` is that partial assistant message."""

    text: str
    key: str
    prefix: str


@dataclass(frozen=True, slots=True)
class TextPrompt:
    text: str
    num_tokens: int


def _content_text(message: Any, index: int) -> tuple[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid(f"'{param}' must be an object.", param)
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise invalid(f"'{param}.role' must be a non-empty string.", f"{param}.role")
    content = message.get("content")
    if content is None:
        return role, ""
    if isinstance(content, str):
        return role, content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return role, "\n".join(texts)
    raise invalid(f"'{param}.content' must be a string or a list of parts.", f"{param}.content")


def render_chat(body: dict[str, Any]) -> ChatPrompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' is required and must be a non-empty list.", "messages")
    turns = [_content_text(message, index) for index, message in enumerate(messages)]
    continue_final = flag(body, "continue_final_message")
    # vLLM's default too: continuing needs an explicit `add_generation_prompt: false`.
    add_generation_prompt = flag(body, "add_generation_prompt", default=True)
    if continue_final and add_generation_prompt:
        raise invalid(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
            "continue_final_message",
        )
    head = "".join(f"{IM_START}{role}\n{content}{IM_END}\n" for role, content in turns[:-1])
    last_role, last = turns[-1]
    if continue_final:
        text = f"{head}{IM_START}{last_role}\n{last}"
        if last_role == "assistant":
            return ChatPrompt(text, head + _ASSISTANT_TURN, last)
        return ChatPrompt(text, text, "")
    closed = f"{head}{IM_START}{last_role}\n{last}{IM_END}\n"
    if add_generation_prompt:
        text = closed + _ASSISTANT_TURN
        return ChatPrompt(text, text, "")
    return ChatPrompt(closed, closed + _ASSISTANT_TURN, "")


def _token_prompt(ids: list[Any], field: str) -> TextPrompt:
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in ids):
        raise invalid(f"'{field}' token lists must hold only integers.", field)
    try:
        return TextPrompt(tokenizer.decode(ids), len(ids))
    except tokenizer.InvalidTokenId as exc:
        raise invalid(str(exc), field) from None


def text_inputs(value: Any, field: str) -> list[TextPrompt]:
    """A string, a list of strings, a token list or a list of token lists,
    as the completions and embeddings APIs accept."""
    if isinstance(value, str):
        return [TextPrompt(value, tokenizer.count(value))]
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, int) and not isinstance(first, bool):
            return [_token_prompt(value, field)]
        if all(isinstance(item, str) for item in value):
            return [TextPrompt(item, tokenizer.count(item)) for item in value]
        if all(isinstance(item, list) and item for item in value):
            return [_token_prompt(item, field) for item in value]
    raise invalid(
        f"'{field}' is required: a string, a list of strings, or token id lists.",
        field,
    )
