"""Schemathesis fuzzing of the gateway's OpenAI endpoints, from the official OpenAPI spec.

Cases are generated from tests/data/openai-openapi.yaml (the spec the response
shape tests validate against, with the same `nullable` rewrite) and sent over
loopback HTTP to a real gateway (uvicorn, its ASGI middleware and lifespan, the
in-memory response cache) in front of a real sim worker. Any 5xx fails, so does
a dropped connection or a timeout, and so does a 4xx whose body is not OpenAI's
error object.

Bodies are schema-valid (positive) and schema-violating (negative). Four in
five get `model` set to the sim's served name, so they reach the limits, the
router and the worker instead of stopping at a 404; the rest keep the generated
name and must be refused (404, or 400 for a body that is wrong anyway). One
chat or completion body in three gets `stream: true`; a streamed 200 must run
to its `data: [DONE]`.

The run is seeded, with Hypothesis's example database off and its storage in a
temporary folder, so nothing is written into the checkout. Hypothesis would
also mix in constants from whichever local modules happen to be imported (the
cases would then differ between this file alone and the whole suite); that is
switched off here, so the same code always sends the same cases (compare the
printed fingerprints; `pytest -s` shows them). Failures are collected over the
whole run, without shrinking: one smallest request per distinct (operation,
status, problem), so a red run lists every bug at once with a curl to replay it.

SPOTGATE_FUZZ_SEED and SPOTGATE_FUZZ_SCALE (a multiplier on the case counts)
explore further locally; CI runs the defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.errors import FailureGroup

from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY, auth
from tests.conftest import serve_asgi
from tests.openai_schema import SPEC_PATH, _SpecLoader, schemas

pytestmark = pytest.mark.fuzz

SERVED_MODEL = "fuzz-sim"
SEED = int(os.environ.get("SPOTGATE_FUZZ_SEED", "20260821"))
SCALE = float(os.environ.get("SPOTGATE_FUZZ_SCALE", "1"))
# (path in the spec, method, positive cases, negative cases): 481 in all.
OPERATIONS = [
    ("/chat/completions", "POST", 160, 80),
    ("/completions", "POST", 100, 50),
    ("/embeddings", "POST", 60, 30),
    ("/models", "GET", 1, 0),  # no parameters: one case is all there is
]
# Every KEEP_GENERATED_MODEL-th body keeps its generated `model`.
KEEP_GENERATED_MODEL = 5
# Every STREAM_EVERY-th body of these asks for a stream: the spec's own mix has
# `stream: true` in about 1 body of 30, and those all stop at a 400 before a worker.
STREAMED_PATHS = {"/chat/completions", "/completions"}
STREAM_EVERY = 3
# Names the gateway may answer without serving them: its own routing alias.
ANSWERED_MODELS = {SERVED_MODEL, "auto"}
REQUEST_TIMEOUT_S = 10
MAX_STREAM_EVENTS = 1_000_000
ERROR_KEYS = {"message", "type", "param", "code"}
SHOWN_BODY_CHARS = 1000


def _gateway_spec() -> dict[str, Any]:
    """The spec cut down to the operations the gateway serves, `nullable` rewritten.

    `servers` is dropped, so requests go to the base URL given and nowhere else, and
    so is `security`: the API key is always sent, so that negative cases spend
    themselves on bodies rather than on a missing Authorization header (which
    test_gateway_api covers).
    """
    spec = yaml.load(SPEC_PATH.read_bytes(), Loader=_SpecLoader)  # a SafeLoader subclass
    paths = {
        path: {method.lower(): spec["paths"][path][method.lower()]}
        for path, method, *_ in OPERATIONS
    }
    components = {**spec["components"], "schemas": schemas()}
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "paths": paths,
        "components": components,
    }


@pytest.fixture(scope="module", autouse=True)
def _isolated_hypothesis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis's storage in a temp folder, and no constants from imported local modules.

    The second is private API, hence the guards: should a later Hypothesis move it, the
    run still works, only its cases then shift with which spotgate modules other tests
    imported first (Hypothesis draws 5 % of its values from their constants).
    """
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:
        providers = Constants = None
    with pytest.MonkeyPatch.context() as patch:
        set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
        if Constants is not None and hasattr(providers, "_get_local_constants"):
            patch.setattr(providers, "_get_local_constants", Constants)
        constants_cache = getattr(providers, "CONSTANTS_CACHE", None)
        if constants_cache is not None:
            constants_cache.cache.clear()
        try:
            yield
        finally:
            set_hypothesis_home_dir(None)
            if constants_cache is not None:
                constants_cache.cache.clear()


@pytest.fixture(scope="module")
def schema() -> schemathesis.BaseSchema:
    # An explicit config: none is discovered from a schemathesis.toml; streams are read
    # to their end (by default Schemathesis stops after 20 events); and the curl in a
    # report keeps the (test) API key, so it replays as it is.
    config = schemathesis.Config.from_dict(
        {
            "max-stream-events": MAX_STREAM_EVENTS,
            "output": {"sanitization": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_dict(_gateway_spec(), config=config)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    """A real gateway on loopback (with its lifespan) routing to one real sim worker."""
    sim = create_sim_app(SimConfig(model=SERVED_MODEL, ttft_ms=0, tokens_per_s=0))
    with serve_asgi(sim) as worker:
        settings = Settings(api_keys=[API_KEY], capacity_wait_s=0, cache_backend="memory")
        runtime = build_runtime(settings, InMemoryWorkerStore())
        runtime.registry.register(
            "w1", pool="default", model=SERVED_MODEL, engine="sim", url=worker
        )
        with serve_asgi(create_app(runtime), lifespan="on") as url:
            yield url


def openai_error_shape(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A 4xx body is OpenAI's error object and nothing else.

    `{"error": {"message": str, "type": str, "param": str | null, "code": str | null}}`
    """
    if not 400 <= response.status_code < 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"body is not JSON: {response.content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict) and set(body) == {"error"}, f"not an OpenAI error: {body}"
    assert set(error) == ERROR_KEYS, f"error keys {sorted(error)} != {sorted(ERROR_KEYS)}"
    assert isinstance(error["message"], str) and error["message"], f"message: {error['message']!r}"
    assert isinstance(error["type"], str), f"type: {error['type']!r}"
    for key in ("param", "code"):
        assert error[key] is None or isinstance(error[key], str), f"{key}: {error[key]!r}"


def unknown_model_is_refused(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A body that kept a generated model name the gateway does not serve is never answered."""
    model = case.body.get("model") if isinstance(case.body, dict) else None
    if isinstance(model, str) and model not in ANSWERED_MODELS:
        assert response.status_code >= 400, f"model {model!r} was served: {response.status_code}"


def stream_runs_to_done(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A 200 event stream ends, with `data: [DONE]`: a 200 status hides a cut-off stream.

    The sim does not pace its tokens, so a stream still open after REQUEST_TIMEOUT_S
    (where Schemathesis stops reading) has hung.
    """
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code != 200 or not content_type.startswith("text/event-stream"):
        return
    assert not response.stream_cut_short, f"stream still open after {REQUEST_TIMEOUT_S} s"
    tail = response.content.rstrip()[-200:]
    assert tail.endswith(b"data: [DONE]"), f"stream does not end with [DONE]: ...{tail!r}"


CHECKS = [not_a_server_error, openai_error_shape, unknown_model_is_refused, stream_runs_to_done]


@dataclass
class Failure:
    operation: str
    status: int  # 0: no response at all
    problem: str
    body: bytes
    curl: str


def _problem(exc: BaseException) -> str:
    if isinstance(exc, FailureGroup):
        return "; ".join(sorted({f"{f.title}: {f.message}".split("\n")[0] for f in exc.exceptions}))
    return f"{type(exc).__name__}: {exc}".split("\n")[0]


def _sent_body(case: schemathesis.Case, base_url: str) -> bytes:
    """The body bytes `case` goes on the wire with (also when no response came back)."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=auth())
    prepared = requests.Request(**kwargs).prepare()
    body = prepared.body or b""
    return body.encode() if isinstance(body, str) else body


def _report(failures: dict[tuple[str, int, str], Failure]) -> str:
    parts = []
    for failure in failures.values():
        text = failure.body[:SHOWN_BODY_CHARS].decode(errors="backslashreplace")
        body = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
        parts.append(
            f"{failure.status} {failure.operation}: {failure.problem}\n"
            f"  body ({len(failure.body)} bytes): {body}\n  {failure.curl[: 2 * SHOWN_BODY_CHARS]}"
        )
    return "\n\n".join(parts)


@pytest.mark.parametrize(
    ("path", "method", "count", "mode"),
    [
        pytest.param(path, method, count, mode, id=f"{method} {path} {mode.value}")
        for path, method, positive, negative in OPERATIONS
        for count, mode in (
            (positive, GenerationMode.POSITIVE),
            (negative, GenerationMode.NEGATIVE),
        )
        if count
    ],
)
def test_gateway_survives_fuzzing_from_the_openai_spec(
    schema: schemathesis.BaseSchema,
    gateway: str,
    path: str,
    method: str,
    count: int,
    mode: GenerationMode,
) -> None:
    operation = schema[path][method]
    base_url = f"{gateway}/v1"
    session = requests.Session()
    sent = 0
    fingerprint = hashlib.sha256()
    statuses: dict[int, int] = {}
    failures: dict[tuple[str, int, str], Failure] = {}

    def record(case: schemathesis.Case, status: int, exc: BaseException) -> None:
        key = (operation.label, status, _problem(exc))
        body = _sent_body(case, base_url)
        previous = failures.get(key)
        if previous is None or len(body) < len(previous.body):
            curl = case.as_curl_command(headers=auth(), base_url=base_url)
            failures[key] = Failure(*key, body, curl)

    @seed(SEED)
    @settings(
        max_examples=max(1, round(count * SCALE)),
        derandomize=True,  # what a run without the seed would fall back to
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal sent
        # Counters, not Hypothesis draws: drawn integers lean hard towards 0.
        if isinstance(case.body, dict) and sent % KEEP_GENERATED_MODEL:
            case.body["model"] = SERVED_MODEL
        if isinstance(case.body, dict) and path in STREAMED_PATHS and sent % STREAM_EVERY == 1:
            case.body["stream"] = True
        sent += 1
        try:
            response = case.call(
                base_url=base_url, session=session, headers=auth(), timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as exc:
            statuses[0] = statuses.get(0, 0) + 1
            record(case, 0, exc)
            return
        wire = response.request  # what was sent, less the port (which changes every run)
        fingerprint.update(repr((wire.path_url, wire.body)).encode())
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (FailureGroup, AssertionError) as exc:
            record(case, response.status_code, exc)

    started = time.monotonic()
    with session:
        run()
    elapsed = time.monotonic() - started
    print(
        f"\n{operation.label} {mode.value}: {sent} cases in {elapsed:.1f} s, "
        f"statuses {dict(sorted(statuses.items()))}, fingerprint {fingerprint.hexdigest()[:12]}"
    )
    assert sent > 0
    assert not failures, f"{len(failures)} distinct failure(s):\n\n{_report(failures)}"
