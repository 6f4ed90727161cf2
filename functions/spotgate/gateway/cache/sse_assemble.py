"""Rebuild the non-streamed body from a relayed SSE stream, so a streamed miss can be cached.

The cache stores the non-streamed body (see sse_replay for why), and a
streamed request's answer only ever exists as the chunks the gateway relays.
Assembling them gives the body a non-streamed request would have received:
text concatenated per choice `index`, the last `finish_reason`, the usage
chunk if the client asked for one, and tool-call deltas merged by their
`index` the way the OpenAI SDKs merge them.

Anything that would make the stored body differ from a fresh one yields
None instead (the answer is simply not cached): an error event or an
`error` payload, no final `[DONE]`, a choice that never finished, per-token
`logprobs`, or an unknown field with a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from spotgate.gateway.cache.sse_replay import BODY_KEYS, CHOICE_KEYS, TEXT_FIELDS, only_known
from spotgate.gateway.normalise import normalise_chat_response, normalise_completion_response


def _data_payloads(stream: bytes) -> list[bytes] | None:
    """The `data` of each SSE event, in order; None if an event is named `error`."""
    text = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    payloads = []
    for event in text.split(b"\n\n"):
        data_lines = []
        for line in event.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event" and value.strip() == b"error":
                return None
            if name == b"data":
                data_lines.append(value)
        if data_lines:
            payloads.append(b"\n".join(data_lines))
    return payloads


@dataclass(slots=True)
class _Choice:
    """One choice as its deltas arrive."""

    text: dict[str, list[str]] = field(default_factory=dict)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    stop_reason: Any = None
    has_stop_reason: bool = False

    def add_text(self, name: str, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        self.text.setdefault(name, []).append(value)
        return True

    def add_tool_calls(self, deltas: Any) -> bool:
        if not isinstance(deltas, list):
            return False
        for delta in deltas:
            if not isinstance(delta, dict) or not isinstance(delta.get("index"), int):
                return False
            call = self.tool_calls.setdefault(
                delta["index"], {"id": None, "name": None, "args": []}
            )
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                return False
            for slot, value in (("id", delta.get("id")), ("name", function.get("name"))):
                if value is None:
                    continue
                if not isinstance(value, str) or call[slot] not in (None, value):
                    return False
                call[slot] = value
            arguments = function.get("arguments")
            if arguments is not None:
                if not isinstance(arguments, str):
                    return False
                call["args"].append(arguments)
        return True

    def joined(self, name: str) -> str | None:
        parts = self.text.get(name)
        return None if parts is None else "".join(parts)


def _merge_choice(state: _Choice, choice: dict[str, Any], chat: bool) -> bool:
    """Folds one chunk's choice into `state`; False when it carries what cannot be stored."""
    if not only_known(choice, CHOICE_KEYS):
        return False
    if chat:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            return False
        for name, value in delta.items():
            if value is None:
                continue
            if name == "role":
                ok = value == "assistant"
            elif name in TEXT_FIELDS:
                ok = state.add_text(name, value)
            elif name == "tool_calls":
                ok = state.add_tool_calls(value)
            else:
                ok = False
            if not ok:
                return False
    elif not state.add_text("text", choice.get("text") or ""):
        return False
    finish = choice.get("finish_reason")
    if finish is not None:
        if not isinstance(finish, str):
            return False
        state.finish_reason = finish
    if "stop_reason" in choice:
        state.stop_reason, state.has_stop_reason = choice["stop_reason"], True
    return True


def _chat_message(state: _Choice) -> dict[str, Any] | None:
    calls = []
    for position in sorted(state.tool_calls):
        call = state.tool_calls[position]
        if call["id"] is None or call["name"] is None:
            return None
        function = {"name": call["name"], "arguments": "".join(call["args"])}
        calls.append({"id": call["id"], "type": "function", "function": function})
    content = state.joined("content")
    if calls and not content:
        content = None  # a tool-calling turn says nothing, as the non-streamed body has it
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content if content is not None or calls else "",
        "refusal": state.joined("refusal"),
    }
    for name in ("reasoning_content", "reasoning"):
        if name in state.text:
            message[name] = state.joined(name)
    if calls:
        message["tool_calls"] = calls
    return message


def _chunk_objects(stream: bytes) -> list[dict[str, Any]] | None:
    """The JSON chunks before `[DONE]`; None unless the stream ended well and held no error."""
    payloads = _data_payloads(stream)
    if not payloads or payloads[-1].strip() != b"[DONE]":
        return None
    objects: list[dict[str, Any]] = []
    for payload in payloads[:-1]:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or "error" in obj or not only_known(obj, BODY_KEYS):
            return None
        objects.append(obj)
    return objects


def _built_choice(index: int, state: _Choice, chat: bool) -> dict[str, Any] | None:
    if state.finish_reason is None:
        return None  # the stream ended before this choice did
    choice: dict[str, Any] = {"index": index}
    if chat:
        message = _chat_message(state)
        if message is None:
            return None
        choice["message"] = message
    else:
        choice["text"] = state.joined("text") or ""
    choice["logprobs"] = None
    choice["finish_reason"] = state.finish_reason
    if state.has_stop_reason:
        choice["stop_reason"] = state.stop_reason
    return choice


def assemble_stream(chunks: Iterable[bytes]) -> dict[str, Any] | None:
    """The non-streamed body equivalent to a relayed SSE stream, or None.

    `chunks` are the bytes as relayed (events may be split anywhere). None
    when the stream holds an error, does not end in `[DONE]`, or carries what
    a stored body could not reproduce (see the module docstring).
    """
    objects = _chunk_objects(b"".join(chunks))
    if not objects:
        return None
    first = objects[0]
    kind = first.get("object")
    if kind not in ("chat.completion.chunk", "text_completion"):
        return None
    chat = kind == "chat.completion.chunk"
    states: dict[int, _Choice] = {}
    usage: Any = None
    for obj in objects:
        choices = obj.get("choices")
        if obj.get("object") != kind or not isinstance(choices, list):
            return None
        if obj.get("usage") is not None:
            usage = obj["usage"]
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("index"), int):
                return None
            if not _merge_choice(states.setdefault(choice["index"], _Choice()), choice, chat):
                return None
    if not isinstance(first.get("id"), str) or not isinstance(first.get("model"), str):
        return None
    if not isinstance(first.get("created"), int) or not states:
        return None
    built = [_built_choice(index, states[index], chat) for index in sorted(states)]
    if any(choice is None for choice in built):
        return None
    body: dict[str, Any] = {
        "id": first["id"],
        "object": "chat.completion" if chat else "text_completion",
        "created": first["created"],
        "model": first["model"],
        "choices": built,
    }
    if isinstance(first.get("system_fingerprint"), str):
        body["system_fingerprint"] = first["system_fingerprint"]
    if isinstance(usage, dict):
        body["usage"] = usage
    return normalise_chat_response(body) if chat else normalise_completion_response(body)
