import pytest

from spotgate.errors import InvalidRequest
from spotgate.gateway.request_body import check_chat, check_completion, check_embedding, parse_body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"{not json", "could not parse"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_unparseable_bodies_are_rejected_clearly(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_body(raw)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": {}, "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": [], "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
    ],
)
def test_chat_errors_name_the_offending_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_chat(body)
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_valid_requests_return_the_model() -> None:
    assert check_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}) == "m"
    assert check_completion({"model": "m", "prompt": "x"}) == "m"
    assert check_embedding({"model": "e", "input": ["a", "b"]}) == "e"
    with pytest.raises(InvalidRequest, match="prompt"):
        check_completion({"model": "m"})
    with pytest.raises(InvalidRequest, match="input"):
        check_embedding({"model": "m", "input": ""})


def test_whole_number_floats_count_as_integers_as_json_schema_says() -> None:
    assert check_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2.0})
    with pytest.raises(InvalidRequest) as caught:
        check_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2.5})
    assert caught.value.param == "n"
