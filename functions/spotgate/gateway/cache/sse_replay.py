"""Replay a stored answer as the SSE stream a worker would have sent.

The cache keeps one entry per question, the non-streamed body, because a
streamed and a non-streamed request share a key (cache_key). A streamed hit
is therefore replayed from that body; the reverse direction, a streamed miss
assembled into a body to store, is sse_assemble. The field sets below are
shared by both, so what one refuses the other refuses too.

Both directions refuse what they cannot reproduce exactly, so a cached
answer never differs from a fresh one in more than chunk boundaries:
  - per-token `logprobs` cannot be re-split into the worker's chunks;
  - unknown fields with a value (vLLM's `token_ids`, `prompt_logprobs`,
    `annotations`, `audio`, ...) cannot be placed in chunks either.
Text fields (`content`, `refusal`, vLLM's `reasoning`/`reasoning_content`)
and tool calls are carried both ways.
"""

from __future__ import annotations

from typing import Any

from spotgate.gateway.sse_progress import DONE, sse_event

# Streamed in this order, as a reasoning model emits its reasoning first.
TEXT_FIELDS = ("reasoning_content", "reasoning", "refusal", "content")
MESSAGE_KEYS = frozenset({"role", "tool_calls", *TEXT_FIELDS})
CHOICE_KEYS = frozenset({"index", "message", "delta", "text", "finish_reason", "stop_reason"})
BODY_KEYS = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"}
)
_CHUNK_OBJECTS = {"chat.completion": "chat.completion.chunk", "text_completion": "text_completion"}


class NotReplayable(ValueError):
    """The stored body holds something a replayed stream could not reproduce exactly."""


def _is_empty(value: Any) -> bool:
    return value is None or value == []


def only_known(obj: dict[str, Any], known: frozenset[str]) -> bool:
    """True when every field outside `known` is null or empty (vLLM sends them as null)."""
    return all(key in known or _is_empty(value) for key, value in obj.items())


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


def _clean_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Null details are vLLM's; the schema wants them absent."""
    return {key: value for key, value in usage.items() if value is not None}


def _chat_choice_chunks(choice: dict[str, Any], size: int) -> list[dict[str, Any]]:
    message = choice.get("message")
    if not isinstance(message, dict) or not only_known(message, MESSAGE_KEYS):
        raise NotReplayable("the message has fields a stream cannot carry")
    index, finish = choice["index"], choice.get("finish_reason")

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    out = [chunk({"role": "assistant", "content": ""})]
    for name in TEXT_FIELDS:
        text = message.get(name)
        if text is not None and not isinstance(text, str):
            raise NotReplayable(f"message.{name} is not a string")
        out.extend(chunk({name: piece}) for piece in _pieces(text or "", size))
    for position, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise NotReplayable("a tool call without an id or a function")
        function_name, arguments = function.get("name"), function.get("arguments", "")
        if not isinstance(function_name, str) or not isinstance(arguments, str):
            raise NotReplayable("a tool call without a name or string arguments")
        opening = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": function_name, "arguments": ""},
        }
        out.append(chunk({"tool_calls": [opening]}))
        out.extend(
            chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
            for piece in _pieces(arguments, size)
        )
    final = chunk({}, finish)
    if "stop_reason" in choice:
        final["stop_reason"] = choice["stop_reason"]
    out.append(final)
    return out


def _completion_choice_chunks(choice: dict[str, Any], size: int) -> list[dict[str, Any]]:
    text, index = choice.get("text"), choice["index"]
    if not isinstance(text, str):
        raise NotReplayable("choice.text is not a string")
    out: list[dict[str, Any]] = [
        {"index": index, "text": piece, "logprobs": None, "finish_reason": None}
        for piece in _pieces(text, size)
    ]
    final = {"index": index, "text": "", "logprobs": None, "finish_reason": choice["finish_reason"]}
    if "stop_reason" in choice:
        final["stop_reason"] = choice["stop_reason"]
    out.append(final)
    return out


def replay_as_stream(
    cached_chat_or_completion_json: dict[str, Any], *, include_usage: bool, chunk_chars: int = 16
) -> list[bytes]:
    """The SSE events a worker would have sent for this stored body, `[DONE]` last.

    Chat: a role opening per choice, text in `chunk_chars` pieces, tool calls,
    a closing chunk with `finish_reason`; then, with `include_usage`, one
    `choices: []` chunk carrying `usage`. Text completions the same, without
    the opening. Raises NotReplayable for bodies it cannot reproduce exactly.
    """
    body = cached_chat_or_completion_json
    chunk_object = _CHUNK_OBJECTS.get(body.get("object", ""))
    choices = body.get("choices")
    if chunk_object is None or not isinstance(choices, list):
        raise NotReplayable("not a chat or text completion body")
    if not only_known(body, BODY_KEYS):
        raise NotReplayable("the body has fields a stream cannot carry")
    base: dict[str, Any] = {
        "id": body.get("id"),
        "object": chunk_object,
        "created": body.get("created"),
        "model": body.get("model"),
    }
    if isinstance(body.get("system_fingerprint"), str):
        base["system_fingerprint"] = body["system_fingerprint"]
    split = (
        _chat_choice_chunks
        if chunk_object == "chat.completion.chunk"
        else _completion_choice_chunks
    )
    events: list[bytes] = []
    for choice in choices:
        if not isinstance(choice, dict) or not only_known(choice, CHOICE_KEYS):
            raise NotReplayable("a choice has fields a stream cannot carry (logprobs?)")
        if not isinstance(choice.get("index"), int) or not isinstance(
            choice.get("finish_reason"), str
        ):
            raise NotReplayable("a choice without an index or a finish_reason")
        events.extend(
            sse_event({**base, "choices": [chunk]}) for chunk in split(choice, chunk_chars)
        )
    usage = body.get("usage")
    if include_usage and isinstance(usage, dict):
        events.append(sse_event({**base, "choices": [], "usage": _clean_usage(usage)}))
    events.append(DONE)
    return events
