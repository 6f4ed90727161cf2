"""A validating batch moves on to `in_progress` with its lines, or to `failed` with why."""

from __future__ import annotations

import orjson

from spotgate.batch.input_file import InputLimits
from spotgate.batch.objects import BatchObject, LineTask
from spotgate.batch.validation import InputValidator, validate

NOW = 1_700_000_100.0
CHAT = "/v1/chat/completions"


def batch(status: str = "validating", owner: str = "key-a") -> BatchObject:
    return BatchObject(
        "batch_1", owner, CHAT, "file-1", "24h", 1_700_000_000, 1_700_086_400, status
    )


def line(custom_id: str, model: str = "small") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body})


def known(model: str) -> tuple[str, str] | None:
    return ("small-served", "pool-a") if model == "small" else None


def test_a_good_file_runs_on_the_resolved_model_and_pool() -> None:
    content = line("a") + b"\n" + line("b") + b"\n"
    outcome = validate(batch(), content, known, now=NOW)
    running = outcome.batch
    assert running.status == "in_progress"
    assert running.in_progress_at == int(NOW)
    assert (running.model, running.pool) == ("small-served", "pool-a")
    assert running.request_counts.total == 2
    first = len(line("a")) + 1
    assert outcome.tasks() == [
        LineTask("batch_1", 0, 0, len(line("a"))),
        LineTask("batch_1", 1, first, len(line("b"))),
    ]


def test_a_model_the_owner_cannot_use_fails_the_batch_naming_its_line() -> None:
    outcome = validate(batch(), b"\n" + line("a", model="secret"), known, now=NOW)
    assert outcome.batch.status == "failed"
    assert outcome.batch.failed_at == int(NOW)
    assert outcome.batch.errors == [
        {
            "code": "model_not_found",
            "message": "The model 'secret' does not exist or you do not have access to it.",
            "param": "body.model",
            "line": 2,
        }
    ]
    assert outcome.tasks() == []


def test_a_bad_file_fails_with_openai_errors_and_says_how_many_were_left_out() -> None:
    content = b"\n".join(b"bad" for _ in range(5))
    outcome = validate(batch(), content, known, now=NOW, limits=InputLimits(max_errors=2))
    failed = outcome.batch
    assert failed.status == "failed"
    assert failed.errors is not None
    assert [e["line"] for e in failed.errors] == [1, 2, None]
    assert failed.errors[-1]["code"] == "too_many_errors"
    assert "3 more" in failed.errors[-1]["message"]
    assert failed.to_openai()["errors"] == {"object": "list", "data": failed.errors}
    assert failed.request_counts.total == 0


def test_a_batch_cancelled_while_it_validated_is_cancelled_and_runs_nothing() -> None:
    outcome = validate(batch("cancelling"), line("a"), known, now=NOW)
    assert outcome.batch.status == "cancelled"
    assert outcome.batch.cancelled_at == int(NOW)
    assert outcome.lines == ()


def test_a_batch_past_validating_is_left_as_it_is() -> None:
    running = batch("in_progress")
    assert validate(running, line("a"), known, now=NOW).batch == running


def test_the_orchestrations_validator_resolves_for_the_batchs_owner() -> None:
    asked: list[tuple[str, str]] = []

    def resolve(owner: str, model: str) -> tuple[str, str] | None:
        asked.append((owner, model))
        return ("small-served", "pool-a") if owner == "key-a" else None

    content = line("a") + b"\r\n" + line("b")
    running, spans = InputValidator(resolve).validate(batch(owner="key-a"), content, NOW)
    assert running.status == "in_progress"
    assert [content[o : o + n].rstrip(b"\r") for o, n in spans] == [line("a"), line("b")]
    refused, none = InputValidator(resolve).validate(batch(owner="key-b"), content, NOW)
    assert (refused.status, none) == ("failed", [])
    assert asked == [("key-a", "small"), ("key-b", "small")]
