"""Reading the SSE a worker streams, to know what the client already has.

A relay passes on only complete lines, so a break never leaves half an event
for the client's SSE parser to choke on. `StreamProgress` also reads the
`data:` lines it passes on (one `orjson.loads` each, nothing else parsed):
the text of the stream's one choice, how many tokens that was, its
`id`/`created`/`model`, an error event. When the stream must go on elsewhere
it builds the continuation request and rewrites that worker's chunks into
the first stream's identity: one role chunk, one id, usage counting the
tokens of every worker against the original prompt.
"""

from __future__ import annotations

from typing import Any

import orjson

from spotgate.errors import error_body

DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """One SSE event carrying `payload` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_error(message: str, code: str = "upstream_error") -> bytes:
    return sse_event(error_body(message, code=code))


class SseRelay:
    """Passes on whole lines only, holding back a partial last line until it completes."""

    def __init__(self) -> None:
        self._tail = b""
        self._last = b"\n"  # the last bytes passed on; starts as if after a blank line

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._tail = data
            return b""
        if end == len(data):
            self._tail = b""
        else:
            self._tail, data = data[end:], data[:end]
        return self._passed(self._lines(data))

    def _lines(self, complete: bytes) -> bytes:
        return complete

    def _passed(self, out: bytes) -> bytes:
        if out:
            self._last = out
        return out

    def flush(self) -> bytes:
        """What is held back when the stream ends: a last line the worker never finished."""
        tail, self._tail = self._tail, b""
        return self._passed(tail)

    def boundary(self) -> bytes:
        """A newline if the client's last line was not blank: its open event must end first."""
        last = self._last[:-1]
        return b"" if last[last.rfind(b"\n") + 1 :].strip() == b"" else b"\n"

    def fail(self, message: str, code: str = "worker_lost") -> bytes:
        """The end of a stream that cannot go on: an error event, then [DONE]."""
        return self._passed(self.boundary() + sse_error(message, code) + DONE)


class StreamProgress(SseRelay):
    """An `SseRelay` that remembers what the client got, and rewrites continuations."""

    def __init__(self, *, chat: bool, include_usage: bool) -> None:
        super().__init__()
        self.chat = chat
        self.include_usage = include_usage
        self.pieces: list[str] = []
        self.identity: dict[str, Any] = {}
        self.role_sent = False
        self.finish_reason: str | None = None
        self.final_usage_sent = False
        self.done = False
        self.error: dict[str, Any] | None = None
        self.blocker: str | None = None
        self.prompt_tokens: int | None = None
        self._base = 0  # tokens the client got before the current segment (worker)
        self._counted = 0  # content chunks in the current segment
        self._usage: dict[str, Any] | None = None  # the current segment's latest usage
        self._prefix_tokens = 0  # tokens of the prefix the current segment continues
        self._rewriting = False
        self._discard = False

    @property
    def tokens(self) -> int:
        """Tokens the client has received: the workers' usage where seen, else content chunks."""
        if self._discard:
            return self._base
        usage = self._usage
        done = usage.get("completion_tokens") if usage else None
        return self._base + (done if isinstance(done, int) else self._counted)

    def _error_info(self) -> dict[str, Any]:
        """vLLM nests its error event (`{"error": {...}}`); older builds send it flat."""
        error = self.error or {}
        nested = error.get("error")
        return nested if isinstance(nested, dict) else error

    def client_error(self) -> bool:
        """An upstream error event about the request itself, which no other worker would fix."""
        code = self._error_info().get("code")
        return isinstance(code, int) and 400 <= code < 500

    def error_message(self) -> str:
        return str(self._error_info().get("message") or "the worker reported an error")

    def finish(self) -> bytes:
        return self._passed(self.boundary() + DONE)

    def continuation(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, bytes]:
        """The request for the rest of the answer (None: nothing is missing but [DONE]),
        and the bytes to send the client first. Fed chunks are rewritten from here on."""
        produced = self.tokens
        preamble = self.boundary()
        limits = [body.get(k) for k in ("max_tokens", "max_completion_tokens")]
        if self.finish_reason is None and any(isinstance(n, int) and n <= produced for n in limits):
            # the break fell between the last token and its finish_reason: send it ourselves
            preamble += self._rewritten({"choices": [self._finish_choice("length")]})
        if self.finish_reason is not None and (self.final_usage_sent or not self.include_usage):
            return None, self._passed(preamble)
        text = "".join(self.pieces)
        request = dict(body)
        if text and self.chat:
            messages = list(body["messages"])
            last = messages[-1]
            if body.get("continue_final_message") and last.get("role") == "assistant":
                text = messages.pop()["content"] + text
            request["messages"] = [*messages, {"role": "assistant", "content": text}]
            request["continue_final_message"] = True
            request["add_generation_prompt"] = False
        elif text:
            request["prompt"] = body["prompt"] + text
        for key, limit in zip(("max_tokens", "max_completion_tokens"), limits, strict=True):
            if isinstance(limit, int):
                request[key] = max(1, limit - produced)
        if isinstance(body.get("min_tokens"), int):
            request["min_tokens"] = max(0, body["min_tokens"] - produced)
        self._discard = self.finish_reason is not None  # the answer is whole; usage is not
        if self._discard:
            request["max_tokens"] = 1
            request.pop("max_completion_tokens", None)
        options = body.get("stream_options")
        options = {**options} if isinstance(options, dict) else {}
        request["stream"] = True
        request["stream_options"] = {**options, "include_usage": True}  # to count tokens
        self._base, self._counted, self._usage = produced, 0, None
        self._prefix_tokens = produced if text else 0
        self._rewriting = True
        return request, self._passed(preamble)

    # -- reading and rewriting lines -------------------------------------------------------

    def _lines(self, complete: bytes) -> bytes:
        if self._rewriting:
            return self._rewrite_lines(complete)
        position = 0
        for line in complete.split(b"\n"):
            if line.startswith(b"data:") and not self._observe(line):
                return complete[:position]  # the error event is held back
            position += len(line) + 1
        return complete

    def _observe(self, line: bytes) -> bool:
        """Tracks one first-worker event; False for an error event, which stops the relay."""
        obj = self._parse(line)
        if obj is None:
            return True
        if "error" in obj or obj.get("object") == "error":
            self.error = obj
            return False
        if not self.identity:
            self.identity = {k: obj[k] for k in ("id", "created", "model") if k in obj}
        self._track(obj)
        return True

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        payload = line[5:].strip()
        if payload[:1] != b"{":
            if payload == b"[DONE]":
                self.done = True
            return None
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        return obj if isinstance(obj, dict) else None

    def _track(self, obj: dict[str, Any]) -> None:
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self.blocker = "the stream has more than one choice"
            if self.chat:
                delta = choice.get("delta") or {}
                if delta.get("role"):
                    self.role_sent = True
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.blocker = "a tool call is being streamed"
                if delta.get("reasoning_content") or delta.get("reasoning"):
                    self.blocker = "reasoning is being streamed"
                text = delta.get("content")
            else:
                text = choice.get("text")
            if text:
                self.pieces.append(text)
                self._counted += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
            if self.prompt_tokens is None and isinstance(usage.get("prompt_tokens"), int):
                self.prompt_tokens = usage["prompt_tokens"] - self._prefix_tokens
            if not obj.get("choices"):
                self.final_usage_sent = True

    def _rewrite_lines(self, complete: bytes) -> bytes:
        out: list[bytes] = []
        for line in complete.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            obj = self._parse(line)
            if self.done:
                out.append(DONE)
                break
            if obj is None:
                continue
            if "error" in obj or obj.get("object") == "error":
                self.error = obj
                break
            out.append(self._continued(obj))
        return b"".join(out)

    def _continued(self, obj: dict[str, Any]) -> bytes:
        choices = []
        for choice in obj.get("choices") or ():
            if self._discard or not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if self.chat and isinstance(delta, dict) and "role" in delta and self.role_sent:
                delta = {k: v for k, v in delta.items() if k != "role"}
                choice = {**choice, "delta": delta}
            if self._empty(choice):
                continue
            choices.append(choice)
        tracked = {**obj, "choices": choices}
        self._track(tracked)
        usage = obj.get("usage")
        if isinstance(usage, dict) and (choices or self.include_usage):
            prompt = self.prompt_tokens or 0
            total = {"prompt_tokens": prompt, "total_tokens": prompt + self.tokens}
            tracked["usage"] = {**usage, **total, "completion_tokens": self.tokens}
        elif not choices:
            return b""
        return self._rewritten(tracked)

    def _empty(self, choice: dict[str, Any]) -> bool:
        """A choice carrying nothing: the continuation's role opening, once the role went."""
        if choice.get("finish_reason") or choice.get("logprobs"):
            return False
        if not self.chat:
            return not choice.get("text")
        delta = choice.get("delta")
        return not isinstance(delta, dict) or not any(delta.values())

    def _finish_choice(self, reason: str) -> dict[str, Any]:
        self.finish_reason = reason
        if self.chat:
            return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}

    def _rewritten(self, obj: dict[str, Any]) -> bytes:
        if not self.identity:  # the first worker sent no chunk: the continuation's is ours
            self.identity = {k: obj[k] for k in ("id", "created", "model") if k in obj}
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return sse_event({"object": kind, **obj, **self.identity})
