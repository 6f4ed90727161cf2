"""The Starlette app: the subset of vLLM's OpenAI server a spotgate worker exposes."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.engines.sim import tokenizer
from spotgate.engines.sim.config import SimConfig
from spotgate.engines.sim.embeddings import embeddings_body
from spotgate.engines.sim.engine import Job, SimEngine
from spotgate.engines.sim.errors import SimError, invalid
from spotgate.engines.sim.generation import Completion, choice_seeds, generate, mentions_paris
from spotgate.engines.sim.params import (
    Sampling,
    check_model,
    completion_budget,
    flag,
    parse_body,
    sampling,
)
from spotgate.engines.sim.prompts import render_chat, text_inputs
from spotgate.engines.sim.responses import (
    ChatChunks,
    CompletionChunks,
    chat_body,
    completion_body,
    new_id,
)
from spotgate.engines.sim.streaming import EventStreamResponse, run_until_disconnect

SIM_VERSION = "0.0.0+spotgate.sim"
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


class _Routes:
    def __init__(self, engine: SimEngine) -> None:
        self.engine = engine
        self.config = engine.config
        model = self.config.model
        card = {
            "id": model,
            "object": "model",
            "created": engine.created,
            "owned_by": "spotgate-sim",
            "root": model,
            "parent": None,
            "max_model_len": self.config.max_model_len,
            "permission": [],
        }
        self._models = orjson.dumps({"object": "list", "data": [card]})

    def _choices(
        self, key: str, params: Sampling, max_tokens: int, prefix: str = ""
    ) -> list[Completion]:
        seeds = choice_seeds(
            key,
            n=params.n,
            temperature=params.temperature,
            seed=params.seed,
            server_seed=self.config.seed,
            rng=self.engine.rng,
        )
        paris = mentions_paris(key)
        cache: dict[int, Completion] = {}
        for seed in seeds:
            if seed not in cache:
                cache[seed] = generate(
                    seed,
                    paris=paris,
                    max_tokens=max_tokens,
                    prefix=prefix,
                    stops=params.stops,
                    ignore_eos=params.ignore_eos,
                )
        return [cache[seed] for seed in seeds]

    async def _respond(self, request: Request, job: Job, body: dict[str, Any]) -> Response:
        if self.engine.runs_immediately(job):
            await self.engine.run(job)
        elif not await run_until_disconnect(request.receive, self.engine.run(job)):
            return Response(status_code=499)
        return _json(body)

    async def chat(self, request: Request) -> Response:
        body = parse_body(await request.body())
        check_model(body, self.config)
        prompt = render_chat(body)
        params = sampling(body, chat=True)
        prompt_tokens = tokenizer.count(prompt.text)
        max_tokens = completion_budget(prompt_tokens, params.max_tokens, self.config)
        job = Job(prompt_tokens, self._choices(prompt.key, params, max_tokens, prompt.prefix))
        id_, created, model = new_id("chatcmpl"), int(time.time()), self.config.model
        if params.stream:
            chunks = ChatChunks(id_, created, model)
            events = self.engine.stream(job, chunks, include_usage=params.include_usage)
            return EventStreamResponse(events)
        return await self._respond(
            request, job, chat_body(id_, created, model, prompt_tokens, job.choices)
        )

    async def completions(self, request: Request) -> Response:
        body = parse_body(await request.body())
        check_model(body, self.config)
        prompts = text_inputs(body.get("prompt"), "prompt")
        params = sampling(body, chat=False)
        choices: list[Completion] = []
        for prompt in prompts:
            max_tokens = completion_budget(prompt.num_tokens, params.max_tokens, self.config)
            choices += self._choices(prompt.text, params, max_tokens)
        prompt_tokens = sum(prompt.num_tokens for prompt in prompts)
        job = Job(prompt_tokens, choices)
        id_, created, model = new_id("cmpl"), int(time.time()), self.config.model
        if params.stream:
            chunks = CompletionChunks(id_, created, model)
            events = self.engine.stream(job, chunks, include_usage=params.include_usage)
            return EventStreamResponse(events)
        return await self._respond(
            request, job, completion_body(id_, created, model, prompt_tokens, choices)
        )

    async def embeddings(self, request: Request) -> Response:
        body = parse_body(await request.body())
        check_model(body, self.config)
        inputs = text_inputs(body.get("input"), "input")
        limit = self.config.max_model_len
        for item in inputs:
            if item.num_tokens > limit:
                raise invalid(
                    f"This model's maximum context length is {limit} tokens. However, an input "
                    f"has {item.num_tokens} tokens. Please reduce the length of the input.",
                    "input",
                )
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise invalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
        self.engine.metrics.prompt_tokens += sum(item.num_tokens for item in inputs)
        self.engine.metrics.finished("stop")
        payload = embeddings_body(
            new_id("embd"),
            int(time.time()),
            self.config.model,
            inputs,
            self.config.embedding_dim,
            encoding_format,
        )
        return _json(payload)

    async def tokenize(self, request: Request) -> Response:
        body = parse_body(await request.body())
        check_model(body, self.config)
        if "messages" in body:
            text = render_chat(body).text
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise invalid("Either 'prompt' (a string) or 'messages' is required.", "prompt")
        ids = tokenizer.encode(text)
        strings = tokenizer.token_strings(ids) if flag(body, "return_token_strs") else None
        return _json(
            {
                "count": len(ids),
                "max_model_len": self.config.max_model_len,
                "tokens": ids,
                "token_strs": strings,
            }
        )

    async def detokenize(self, request: Request) -> Response:
        body = parse_body(await request.body())
        check_model(body, self.config)
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) for item in ids
        ):
            raise invalid("'tokens' must be a list of integers.", "tokens")
        try:
            return _json({"prompt": tokenizer.decode(ids)})
        except tokenizer.InvalidTokenId as exc:
            raise invalid(str(exc), "tokens") from None

    async def models(self, request: Request) -> Response:
        return Response(self._models, media_type="application/json")

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return _json({"version": SIM_VERSION})

    async def metrics(self, request: Request) -> Response:
        text = self.engine.metrics.render(self.config.model, self.engine.scheduler)
        return Response(text, media_type=_METRICS_TYPE)


async def _sim_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's `{"detail": ...}` shape, which is what vLLM answers for unknown paths."""
    assert isinstance(exc, HTTPException)
    return Response(
        orjson.dumps({"detail": exc.detail}),
        exc.status_code,
        dict(exc.headers or {}),
        media_type="application/json",
    )


def create_sim_app(config: SimConfig) -> Starlette:
    """A fresh simulated worker; each app has its own slots and counters, so many
    can share one process. The engine is reachable as `app.state.engine`."""
    engine = SimEngine(config)
    routes = _Routes(engine)
    app = Starlette(
        routes=[
            Route("/health", routes.health, methods=["GET"]),
            Route("/version", routes.version, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/v1/models", routes.models, methods=["GET"]),
            Route("/v1/chat/completions", routes.chat, methods=["POST"]),
            Route("/v1/completions", routes.completions, methods=["POST"]),
            Route("/v1/embeddings", routes.embeddings, methods=["POST"]),
            Route("/tokenize", routes.tokenize, methods=["POST"]),
            Route("/detokenize", routes.detokenize, methods=["POST"]),
        ],
        exception_handlers={SimError: _sim_error, HTTPException: _http_error},
    )
    app.state.engine = engine
    return app
