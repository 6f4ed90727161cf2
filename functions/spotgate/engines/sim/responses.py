"""Response bodies and stream chunks in the JSON shapes vLLM's OpenAI server emits.

vLLM (0.32, the pinned build) serialises non-streamed bodies with every
optional field present as null, and stream chunks with only the fields it
set. The sim copies both, nulls included, so the gateway's normalisation
is exercised by the sim stack exactly as by real workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from spotgate.engines.sim.generation import Completion
from spotgate.engines.sim.streaming import sse


def new_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(16).hex()}"


_MESSAGE_NULLS = dict.fromkeys(("refusal", "annotations", "audio", "function_call", "reasoning"))
_CHOICE_NULLS = dict.fromkeys(("token_ids", "routed_experts"))
_COMPLETION_CHOICE_NULLS = dict.fromkeys(
    ("token_ids", "prompt_logprobs", "prompt_token_ids", "routed_experts")
)
_RESPONSE_NULLS = dict.fromkeys(("service_tier", "system_fingerprint"))
_CHAT_TAIL_NULLS = dict.fromkeys(
    (
        "prompt_logprobs",
        "prompt_token_ids",
        "prompt_text",
        "kv_transfer_params",
        "ec_transfer_params",
        "metrics",
    )
)
_COMPLETION_TAIL_NULLS = dict.fromkeys(("kv_transfer_params", "ec_transfer_params", "metrics"))


def usage(prompt_tokens: int, choices: Sequence[Completion]) -> dict[str, int]:
    completion_tokens = sum(choice.num_tokens for choice in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def _full_usage(prompt_tokens: int, choices: Sequence[Completion]) -> dict[str, int | None]:
    return {
        **usage(prompt_tokens, choices),
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def chat_body(
    id_: str, created: int, model: str, prompt_tokens: int, choices: Sequence[Completion]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": choice.text, **_MESSAGE_NULLS},
                "logprobs": None,
                "finish_reason": choice.finish_reason,
                "stop_reason": choice.stop_reason,
                **_CHOICE_NULLS,
            }
            for index, choice in enumerate(choices)
        ],
        **_RESPONSE_NULLS,
        "usage": _full_usage(prompt_tokens, choices),
        **_CHAT_TAIL_NULLS,
    }


def completion_body(
    id_: str, created: int, model: str, prompt_tokens: int, choices: Sequence[Completion]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": index,
                "text": choice.text,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
                "stop_reason": choice.stop_reason,
                **_COMPLETION_CHOICE_NULLS,
            }
            for index, choice in enumerate(choices)
        ],
        **_RESPONSE_NULLS,
        "usage": _full_usage(prompt_tokens, choices),
        **_COMPLETION_TAIL_NULLS,
    }


@dataclass(frozen=True, slots=True)
class _StreamChunks:
    """One stream's SSE events; subclasses name the object type and shape the choices."""

    object_type: ClassVar[str]
    id: str
    created: int
    model: str

    def _chunk(self, choice: dict[str, Any] | None, **extra: Any) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": self.object_type,
                "created": self.created,
                "model": self.model,
                "choices": [] if choice is None else [choice],
                **extra,
            }
        )

    def usage(self, prompt_tokens: int, choices: Sequence[Completion]) -> bytes:
        """The final `include_usage` chunk: no choices, the token counts."""
        return self._chunk(None, usage=usage(prompt_tokens, choices))


@dataclass(frozen=True, slots=True)
class ChatChunks(_StreamChunks):
    """`chat.completion.chunk` events: a role delta first, then one per token;
    a choice's last token carries its finish_reason, as in vLLM."""

    object_type: ClassVar[str] = "chat.completion.chunk"

    def opening(self, n: int) -> bytes:
        return b"".join(
            self._chunk(
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                },
                prompt_token_ids=None,
                prompt_text=None,
            )
            for index in range(n)
        )

    def token(self, index: int, text: str, final: Completion | None = None) -> bytes:
        if final is None:
            return self._chunk(
                {
                    "index": index,
                    "delta": {"content": text},
                    "logprobs": None,
                    "finish_reason": None,
                    "token_ids": None,
                }
            )
        return self._chunk(
            {
                "index": index,
                "delta": {"content": text} if text else {},
                "logprobs": None,
                "finish_reason": final.finish_reason,
                "stop_reason": final.stop_reason,
                "token_ids": None,
            }
        )


@dataclass(frozen=True, slots=True)
class CompletionChunks(_StreamChunks):
    """`text_completion` events: no role opening, one per token, the last with
    its finish_reason."""

    object_type: ClassVar[str] = "text_completion"

    def opening(self, n: int) -> bytes:
        return b""

    def token(self, index: int, text: str, final: Completion | None = None) -> bytes:
        return self._chunk(
            {
                "index": index,
                "text": text,
                "logprobs": None,
                "finish_reason": None if final is None else final.finish_reason,
                "stop_reason": None if final is None else final.stop_reason,
                "prompt_token_ids": None,
                "token_ids": None,
            }
        )
