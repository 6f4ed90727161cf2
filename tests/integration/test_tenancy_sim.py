"""Keys, limits, budgets and metering on a running sim stack, as a reseller runs them.

Keys are made with `spotgate keys create` against `spotgate dev --engine
sim`; clients call it with the official openai client and plain HTTP; the
usage report comes from `spotgate usage`. Token counts are checked against
what the workers themselves counted (their vLLM-named /metrics counters).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from spotgate.gateway.tenancy.usage import USAGE_COLUMNS
from tests.integration.conftest import ADMIN_KEY, KEY, Stack, sim_stack

pytestmark = pytest.mark.integration

MODEL = "sim-model"
FLUSH_S = 0.2
REFRESH_S = 0.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"SPOTGATE_USAGE_FLUSH_S": str(FLUSH_S), "SPOTGATE_KEY_REFRESH_S": str(REFRESH_S)}
    workdir = tmp_path_factory.mktemp("tenancy")
    with sim_stack(workdir, workers=2, ttft_ms=5, tokens_per_s=2000, env=env) as running:
        yield running


def new_key(stack: Stack, name: str, *options: str) -> dict[str, Any]:
    made = stack.cli("keys", "create", name, *options, "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert {"id", "name", "key"} <= key.keys() and key["key"].startswith("sk-sg-")
    return dict(key)


def chat(stack: Stack, key: str, n: int = 0, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Hello {n}"}], **extra}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def worker_tokens(stack: Stack) -> tuple[float, float]:
    """Prompt and generated tokens every ready worker counted, from its /metrics."""
    prompt = generated = 0.0
    for worker in stack.workers("ready"):
        text = httpx.get(f"{worker['url']}/metrics", timeout=5).text
        prompt += sum(
            float(v) for v in re.findall(r"^vllm:prompt_tokens_total\{.*\} (\S+)$", text, re.M)
        )
        generated += sum(
            float(v) for v in re.findall(r"^vllm:generation_tokens_total\{.*\} (\S+)$", text, re.M)
        )
    return prompt, generated


def records_of(stack: Stack, key_id: str) -> list[dict[str, Any]]:
    time.sleep(FLUSH_S * 3)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    page = httpx.get(f"{stack.url}/admin/usage/records?since=1h", headers=headers, timeout=10)
    return [r for r in page.json()["data"] if r["key_id"] == key_id]


def test_fifty_concurrent_requests_on_rpm_10_admit_exactly_10(stack: Stack) -> None:
    key = new_key(stack, "rpm-ten", "--rpm", "10")
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda n: chat(stack, key["key"], n, max_tokens=4), range(50)))
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 10 and statuses.count(429) == 40, statuses
    for refused in (r for r in replies if r.status_code == 429):
        error = error_of(refused)
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit-requests"] == "10"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    admitted = next(r for r in replies if r.status_code == 200)
    assert admitted.headers["x-ratelimit-limit-requests"] == "10"


def test_a_budget_that_runs_out_mid_run_answers_insufficient_quota(stack: Stack) -> None:
    key = new_key(stack, "small-budget", "--budget", "0.0002", "--budget-period", "day")
    replies = []
    for n in range(40):
        reply = chat(stack, key["key"], n, max_tokens=30, ignore_eos=True)
        replies.append(reply)
        if reply.status_code == 429:
            break
        time.sleep(0.05)  # spend is added as each answer ends
    assert replies[0].status_code == 200
    last = replies[-1]
    assert last.status_code == 429, "the budget never ran out"
    assert (error_of(last)["type"], error_of(last)["code"]) == (
        "rate_limit_error",
        "insufficient_quota",
    )
    records = records_of(stack, key["id"])
    spent = sum(r["revenue_usd"] for r in records)
    one = max(r["revenue_usd"] for r in records)
    assert 0.0002 <= spent <= 0.0002 + 2 * one, "refused once spend reached the budget"


def test_a_revoked_key_is_refused_on_its_next_request(stack: Stack) -> None:
    key = new_key(stack, "to-revoke")
    assert chat(stack, key["key"]).status_code == 200
    revoked = stack.cli("keys", "revoke", "to-revoke")
    assert revoked.returncode == 0, revoked.stderr
    refused = chat(stack, key["key"])
    assert refused.status_code == 401
    assert error_of(refused)["message"] == "This API key was revoked."


@pytest.mark.parametrize("stream", [False, True])
def test_usage_records_add_up_to_what_the_workers_counted(stack: Stack, stream: bool) -> None:
    key = new_key(stack, f"metered-{stream}")
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key["key"], max_retries=0)
    before = worker_tokens(stack)
    for n in range(6):
        question = [{"role": "user", "content": f"Tell me about the number {n} " * (n + 1)}]
        if not stream:
            client.chat.completions.create(model=MODEL, messages=question, max_tokens=5 + 7 * n)
            continue
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=question, max_tokens=5 + 7 * n, stream=True
            )
        )
        assert all(c.usage is None for c in chunks), "the client did not ask for usage"
    after = worker_tokens(stack)
    records = records_of(stack, key["id"])
    assert len(records) == 6 and not any(r["estimated"] for r in records)
    assert sum(r["prompt_tokens"] for r in records) == after[0] - before[0]
    assert sum(r["completion_tokens"] for r in records) == after[1] - before[1]
    assert {r["worker_id"] for r in records} <= {w["id"] for w in stack.workers("ready")}
    assert {r["priority"] for r in records} == {"spot"} and {r["sku"] for r in records} == {
        "local-cpu"
    }


def test_usage_by_model_shows_revenue_cost_and_margin(stack: Stack) -> None:
    key = new_key(stack, "for-the-report")
    for n in range(3):
        assert chat(stack, key["key"], n, max_tokens=8).status_code == 200
    time.sleep(FLUSH_S * 3)
    shown = stack.cli("usage", "--by", "model", "--since", "1h")
    assert shown.returncode == 0, shown.stderr
    for column in ("revenue_usd", "cost_usd", "margin_usd", MODEL):
        assert column in shown.stdout
    as_json = stack.cli("usage", "--by", "model", "--since", "1h", "--json")
    rows = {row["group"]: row for row in json.loads(as_json.stdout)}
    row = rows[MODEL]
    assert row["requests"] >= 3 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["revenue_usd"] > 0 and row["cost_usd"] > 0
    assert row["margin_usd"] == pytest.approx(row["revenue_usd"] - row["cost_usd"])


def test_every_bad_key_gets_its_documented_status_in_openai_shape(stack: Stack) -> None:
    expiring = new_key(stack, "expiring", "--expires", time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 2)
    ))  # fmt: skip
    other_model = new_key(stack, "other-model-only", "--models", "some-other-model")
    time.sleep(2.5)
    url = f"{stack.url}/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    cases = {
        "missing": (None, 401, "invalid_api_key"),
        "malformed": ("not-a-key", 401, "invalid_api_key"),
        "unknown": ("sk-sg-" + "x" * 43, 401, "invalid_api_key"),
        "expired": (expiring["key"], 401, "invalid_api_key"),
        "model not allowed": (other_model["key"], 403, "model_not_allowed"),
        "admin key on /v1": (ADMIN_KEY, 401, "invalid_api_key"),
    }
    for case, (key, status, code) in cases.items():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        reply = httpx.post(url, json=body, headers=headers, timeout=10)
        assert (reply.status_code, error_of(reply)["code"]) == (status, code), case
    assert "expired" in error_of(httpx.post(url, json=body, headers={
        "Authorization": f"Bearer {expiring['key']}"
    })).get("message", "")  # fmt: skip
    forbidden = httpx.post(
        url, json=body, headers={"Authorization": f"Bearer {other_model['key']}"}
    )
    assert error_of(forbidden)["type"] == "permission_error"
    for path in ("/admin/keys", "/admin/usage", "/fleet"):
        as_api = httpx.get(f"{stack.url}{path}", headers={"Authorization": f"Bearer {KEY}"})
        assert as_api.status_code == 401, f"an API key opened {path}"


def test_usage_exports_to_parquet_and_csv_with_one_schema(stack: Stack, tmp_path: Path) -> None:
    key = new_key(stack, "exported")
    for n in range(4):
        assert chat(stack, key["key"], n, max_tokens=6).status_code == 200
    time.sleep(FLUSH_S * 3)
    tables = {}
    for suffix in ("parquet", "csv"):
        out = tmp_path / f"usage.{suffix}"
        done = stack.cli("usage", "--since", "1h", "--export", str(out))
        assert done.returncode == 0, done.stderr
        tables[suffix] = (
            pq.read_table(out) if suffix == "parquet" else pacsv.read_csv(out)
        ).to_pylist()
    assert list(tables["parquet"][0]) == list(USAGE_COLUMNS) == list(tables["csv"][0])
    mine = [r for r in tables["parquet"] if r["key_id"] == key["id"]]
    assert len(mine) == 4 and all(r["completion_tokens"] > 0 for r in mine)
    assert len(tables["csv"]) == len(tables["parquet"])
