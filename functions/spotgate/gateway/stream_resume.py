"""Resuming a completion stream on another worker after its worker died mid-answer.

When the worker streaming an answer dies (connection lost, or an error event
instead of the next token), the request is sent again to another worker as a
continuation: chat gets the partial answer as a final assistant message with
`continue_final_message` and `add_generation_prompt: false`; completions get
the partial text appended to the prompt; the token budget shrinks by what was
produced. For deterministic requests prefix + continuation is the answer the
first worker would have given (exactly on the sim; on vLLM up to numerics).
What cannot be continued faithfully (several choices, a tool call or
reasoning in flight, structured output, echo) ends with an SSE error event
and [DONE] instead, as does running out of resumes or workers, and so does a
stream whose request has now cost as many workers as the quarantine allows.
The error event the client reads never names a worker or a host; the log does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from spotgate.fleet.worker import Worker
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.quarantine import RequestQuarantine
from spotgate.gateway.relay import Relay
from spotgate.gateway.sse_progress import SseRelay, StreamProgress
from spotgate.gateway.upstream import UpstreamStream, WorkerUnreachable

log = logging.getLogger("spotgate.stream_resume")

_FAILED = "The worker serving this stream failed"
_STRUCTURED_KEYS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")

# (model, path, continuation body, headers, workers this stream used) -> stream, or why not
Reopen = Callable[
    [str, str, dict[str, Any], dict[str, str], set[str]],
    Awaitable[tuple[Worker, UpstreamStream] | str],
]


def resume_blocker(path: str, body: dict[str, Any]) -> str | None:
    """Why a stream of this request could not be continued elsewhere, or None if it can."""
    if body.get("n") not in (None, 1) or body.get("best_of") not in (None, 1):
        return "the request asks for more than one choice"
    if body.get("echo"):
        return "the request echoes its prompt"
    response_format = body.get("response_format")
    structured = isinstance(response_format, dict) and response_format.get("type") != "text"
    if structured or body.get("structured_outputs") or any(body.get(k) for k in _STRUCTURED_KEYS):
        return "structured output restarts its grammar on a continuation"
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "the request has no messages"
        last = messages[-1]
        continuing = body.get("continue_final_message") and isinstance(last, dict)
        if (
            continuing
            and last.get("role") == "assistant"
            and not isinstance(last.get("content"), str)
        ):
            return "the continued assistant message is not plain text"
        return None
    if path.endswith("/completions"):
        return None if isinstance(body.get("prompt"), str) else "the prompt is not one string"
    return "only completion streams can be resumed"


class _Lease:
    """The worker stream a relay reads now and the load slot it takes, released once,
    by the relay's own cleanup or by closing the relay, whichever comes first."""

    __slots__ = ("_load", "_released", "stream", "worker")

    def __init__(self, load: InFlight, worker: Worker, stream: UpstreamStream) -> None:
        self._load = load
        self.hold(worker, stream)

    def hold(self, worker: Worker, stream: UpstreamStream) -> None:
        """Takes over the next worker's stream, once the last one was released."""
        self.worker, self.stream, self._released = worker, stream, False

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            await self.stream.close()
        finally:
            self._load.finish(self.worker.id)


class StreamRelays:
    """The relays a Forwarder hands out for open streams: resuming where it can, plain where
    it cannot. Either releases the worker's load slot and reports failures to `health`;
    closing one releases them even if nobody started reading it."""

    def __init__(
        self,
        health: PassiveHealth,
        load: InFlight,
        reopen: Reopen,
        quarantine: RequestQuarantine,
        *,
        max_resumes: int,
    ) -> None:
        self._health = health
        self._load = load
        self._reopen = reopen
        self._quarantine = quarantine
        self._max_resumes = max_resumes

    def relay(
        self,
        worker: Worker,
        stream: UpstreamStream,
        path: str,
        model: str,
        body: dict[str, Any],
        headers: dict[str, str],
        tried: set[str],
    ) -> Relay:
        lease = _Lease(self._load, worker, stream)
        blocker = resume_blocker(path, body)
        if blocker is not None:
            return Relay(self._plain(lease, path, body, blocker), lease.release)
        return Relay(self._resuming(lease, path, model, body, headers, tried), lease.release)

    async def _plain(
        self, lease: _Lease, path: str, body: dict[str, Any], blocker: str
    ) -> AsyncGenerator[bytes, None]:
        """A stream no other worker could continue (`blocker` says why): whole lines relayed."""
        worker, stream = lease.worker, lease.stream
        relay = SseRelay()
        try:
            async for chunk in stream.chunks():
                if out := relay.feed(chunk):
                    yield out
            if out := relay.flush():
                yield out
        except WorkerUnreachable as exc:
            self._health.failed(worker.id, fatal=True)
            self._quarantine.worker_died(path, body, worker.id)
            log.warning(
                "worker %s failed mid-stream: %s; the answer cannot be resumed: %s",
                worker.id,
                exc,
                blocker,
            )
            yield relay.fail(f"{_FAILED}; the answer cannot be resumed: {blocker}.")
        finally:
            await lease.release()

    async def _resuming(
        self,
        lease: _Lease,
        path: str,
        model: str,
        body: dict[str, Any],
        headers: dict[str, str],
        tried: set[str],
    ) -> AsyncGenerator[bytes, None]:
        """Relays the lease's stream; when its worker dies, goes on with a continuation
        elsewhere, on a stream the lease then holds."""
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        progress = StreamProgress(
            chat=path.endswith("/chat/completions"), include_usage=include_usage
        )
        preamble = b""
        resumes = 0
        while True:
            worker, current = lease.worker, lease.stream
            problem = f"worker {worker.id} ended the stream early"
            fatal = died = False
            try:
                if preamble:
                    yield preamble
                async for chunk in current.chunks():
                    if out := progress.feed(chunk):
                        yield out
                    if progress.error is not None:
                        break
            except WorkerUnreachable as exc:
                problem = f"worker {worker.id} failed mid-stream: {exc}"
                fatal = died = True
            finally:
                await lease.release()
            if progress.done:
                return
            if progress.error is not None:
                if progress.client_error():
                    yield progress.fail(progress.error_message(), "upstream_error")
                    return
                problem = f"worker {worker.id} reported an error mid-stream: "
                problem += progress.error_message()
                progress.error = None
            self._health.failed(worker.id, fatal=fatal)
            why = progress.blocker
            if died and self._quarantine.worker_died(path, body, worker.id):
                why = "the request is quarantined: workers failed while serving it"
            if why is None and resumes >= self._max_resumes:
                why = f"it was resumed {resumes} time(s) already"
            if why is not None:
                log.warning("%s; the answer cannot be resumed: %s", problem, why)
                yield progress.fail(f"{_FAILED}; the answer cannot be resumed: {why}.")
                return
            resumes += 1
            request, preamble = progress.continuation(body)
            if request is None:
                yield preamble + progress.finish()
                return
            request["model"] = model  # the workers' name for it, not an alias the client used
            reopened = await self._reopen(model, path, request, headers, tried)
            if isinstance(reopened, str):
                log.warning("%s; resuming it failed: %s", problem, reopened)
                yield preamble + progress.fail(f"{_FAILED}; resuming it on another worker failed.")
                return
            log.info("%s; resumed on worker %s", problem, reopened[0].id)
            lease.hold(*reopened)
