"""A batch input file is checked the way OpenAI checks it, and its lines are found exactly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from spotgate.batch.input_file import InputLimits, parse_input

CHAT = "/v1/chat/completions"


def request(custom_id: str = "r1", model: str = "m", **changes: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(changes)
    return line


def jsonl(*lines: dict[str, Any] | bytes, end: bytes = b"\n") -> bytes:
    return b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + end for x in lines)


def only_error(content: bytes, endpoint: str = CHAT, **limits: int) -> dict[str, Any]:
    parsed = parse_input(content, endpoint, InputLimits(**limits) if limits else None)
    assert parsed.error_count == 1, parsed.errors
    return parsed.errors[0]


def test_a_good_file_gives_every_request_its_index_custom_id_and_model() -> None:
    parsed = parse_input(jsonl(request("a"), request("b"), request("c")), CHAT)
    assert parsed.ok
    assert parsed.model == "m"
    assert [(x.index, x.line, x.custom_id) for x in parsed.lines] == [
        (0, 1, "a"),
        (1, 2, "b"),
        (2, 3, "c"),
    ]


def test_byte_ranges_are_exact_with_multibyte_text_crlf_and_blank_lines() -> None:
    first = orjson.dumps(request("é-1", body={"model": "m", "messages": [{"content": "日本語 ✓"}]}))
    second = orjson.dumps(request("ü-2"))
    content = b"\r\n" + first + b"\r\n   \r\n\n" + second  # no newline at the end
    parsed = parse_input(content, CHAT)
    assert parsed.ok, parsed.errors
    assert [x.line for x in parsed.lines] == [2, 5]
    ranges = [content[x.offset : x.offset + x.length] for x in parsed.lines]
    assert [r.rstrip(b"\r") for r in ranges] == [first, second]
    assert [orjson.loads(r)["custom_id"] for r in ranges] == ["é-1", "ü-2"]


def test_a_trailing_newline_and_whitespace_only_lines_are_not_requests() -> None:
    parsed = parse_input(jsonl(request("a")) + b"\n \t\n", CHAT)
    assert parsed.ok and len(parsed.lines) == 1


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n\t\n"])
def test_a_file_without_requests_is_empty(content: bytes) -> None:
    assert only_error(content)["code"] == "empty_file"


def test_a_line_that_is_not_json_names_its_line() -> None:
    error = only_error(jsonl(request("a"), b'{"custom_id": "b",', request("c")))
    assert error["code"] == "invalid_json_line"
    assert error["line"] == 2
    assert "not valid JSON" in error["message"]


def test_a_json_value_that_is_not_an_object_is_refused() -> None:
    error = only_error(jsonl(b"[1, 2]"))
    assert (error["code"], error["line"]) == ("invalid_json_line", 1)


def test_invalid_utf8_is_refused_by_line() -> None:
    error = only_error(jsonl(request("a"), b'{"custom_id": "\xff"}'))
    assert (error["code"], error["line"]) == ("invalid_json_line", 2)
    assert "UTF-8" in error["message"]


def test_a_byte_order_mark_gets_an_error_that_says_so() -> None:
    error = only_error(b"\xef\xbb\xbf" + jsonl(request("a")))
    assert error["code"] == "invalid_json_line"
    assert "byte order mark" in error["message"]


@pytest.mark.parametrize("field", ["custom_id", "method", "url", "body"])
def test_each_required_field_is_named_when_missing(field: str) -> None:
    line = request()
    del line[field]
    error = only_error(jsonl(line))
    assert (error["code"], error["param"], error["line"]) == (
        "missing_required_parameter",
        field,
        1,
    )


def test_a_body_without_a_model_is_refused() -> None:
    error = only_error(jsonl(request(body={"messages": []})))
    assert (error["code"], error["param"]) == ("missing_required_parameter", "body.model")


@pytest.mark.parametrize("custom_id", ["", 7, None, "x" * 513])
def test_custom_id_must_be_a_short_non_empty_string(custom_id: object) -> None:
    error = only_error(jsonl(request(custom_id=custom_id)))  # type: ignore[arg-type]
    assert (error["code"], error["param"]) == ("invalid_custom_id", "custom_id")


def test_a_custom_id_of_512_characters_is_fine() -> None:
    assert parse_input(jsonl(request("x" * 512)), CHAT).ok


def test_a_duplicate_custom_id_names_both_lines() -> None:
    error = only_error(jsonl(request("a"), request("b"), request("a")))
    assert (error["code"], error["line"]) == ("duplicate_custom_id", 3)
    assert "line 1" in error["message"]


@pytest.mark.parametrize("method", ["GET", "post", None])
def test_the_method_must_be_post(method: object) -> None:
    error = only_error(jsonl(request(method=method)))
    assert (error["code"], error["param"]) == ("invalid_method", "method")


@pytest.mark.parametrize("url", ["/v1/embeddings", "/chat/completions", "", None])
def test_the_url_must_be_the_batch_endpoint(url: object) -> None:
    error = only_error(jsonl(request(url=url)))
    assert (error["code"], error["param"]) == ("invalid_url", "url")
    assert CHAT in error["message"]


@pytest.mark.parametrize("body", ["text", [], None])
def test_the_body_must_be_an_object(body: object) -> None:
    error = only_error(jsonl(request(body=body)))
    assert (error["code"], error["param"]) == ("invalid_body", "body")


@pytest.mark.parametrize("model", ["", 3, None])
def test_the_model_must_be_a_non_empty_string(model: object) -> None:
    error = only_error(jsonl(request(body={"model": model})))
    assert (error["code"], error["param"]) == ("invalid_body", "body.model")


def test_a_batch_request_cannot_stream() -> None:
    error = only_error(jsonl(request(body={"model": "m", "stream": True})))
    assert (error["code"], error["param"]) == ("invalid_body", "body.stream")
    assert parse_input(jsonl(request(body={"model": "m", "stream": False})), CHAT).ok


def test_one_model_a_batch() -> None:
    error = only_error(jsonl(request("a", "m1"), request("b", "m1"), request("c", "m2")))
    assert (error["code"], error["param"], error["line"]) == ("mismatched_model", "body.model", 3)
    assert "m1" in error["message"] and "m2" in error["message"]


def test_the_model_is_the_first_lines_even_when_that_line_is_bad_otherwise() -> None:
    parsed = parse_input(jsonl(request("a", "m1", url="/v1/x"), request("b", "m2")), CHAT)
    assert [e["code"] for e in parsed.errors] == ["invalid_url", "mismatched_model"]


def test_an_oversized_line_is_refused_without_being_parsed() -> None:
    big = request("a", body={"model": "m", "pad": "x" * 2000})
    error = only_error(jsonl(request("z"), big), max_line_bytes=1000)
    assert (error["code"], error["line"]) == ("line_too_large", 2)


def test_an_oversized_file_is_refused_whole() -> None:
    error = only_error(jsonl(request("a"), request("b")), max_file_bytes=100)
    assert error["code"] == "file_too_large"


def test_more_requests_than_the_bound_are_refused() -> None:
    content = jsonl(*(request(str(i)) for i in range(4)))
    error = only_error(content, max_lines=3)
    assert (error["code"], error["line"]) == ("too_many_lines", 4)
    assert parse_input(content, CHAT, InputLimits(max_lines=4)).ok


def test_errors_are_capped_but_counted() -> None:
    content = jsonl(*(b"nope" for _ in range(7)))
    parsed = parse_input(content, CHAT, InputLimits(max_errors=3))
    assert parsed.error_count == 7
    assert [e["line"] for e in parsed.errors] == [1, 2, 3]


def test_errors_are_in_openais_batch_error_shape() -> None:
    error = only_error(jsonl(request(method="GET")))
    assert set(error) == {"code", "message", "param", "line"}
    assert all(isinstance(error[k], str) for k in ("code", "message", "param"))


def test_an_embeddings_batch_takes_embedding_lines() -> None:
    line = request(url="/v1/embeddings", body={"model": "e", "input": "hi"})
    parsed = parse_input(jsonl(line), "/v1/embeddings")
    assert parsed.ok and parsed.model == "e"
