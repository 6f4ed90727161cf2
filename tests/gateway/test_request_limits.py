"""Per-model request limits: the catalogue's entry over the gateway's defaults."""

from __future__ import annotations

import pytest

from spotgate.errors import InvalidRequest
from spotgate.gateway.catalog import ResolvedModel
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.request_limits import DEFAULT_MAX_TOKENS, RequestLimits, check_limits

CHAT = "/v1/chat/completions"


def test_an_entry_overrides_only_the_fields_it_sets() -> None:
    defaults = RequestLimits(max_n=4, max_stop=2)
    entry = ModelEntry(name="m", context_length=4096, limits=RequestLimits(max_n=1))
    limits = ResolvedModel.of(entry).limits(defaults)
    assert (limits.max_n, limits.max_stop) == (1, 2)
    assert ResolvedModel("x", "x", "x", "default").limits(defaults) is defaults


def test_max_tokens_defaults_to_the_context_length() -> None:
    limits = RequestLimits()
    assert limits.token_bound(4096) == 4096
    assert limits.token_bound(None) == DEFAULT_MAX_TOKENS
    assert RequestLimits(max_tokens=100).token_bound(4096) == 100
    check_limits(CHAT, {"max_tokens": 4096}, limits, "m", 4096)
    with pytest.raises(InvalidRequest) as caught:
        check_limits(CHAT, {"max_tokens": 4097}, limits, "m", 4096)
    assert caught.value.param == "max_tokens" and "4096" in caught.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": True}, "n"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": 3}, "logprobs"),
        ({"stop": {"a": 1}}, "stop"),
    ],
)
def test_malformed_counts_name_their_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_limits(CHAT, body, RequestLimits(), "m")
    assert caught.value.param == param


def test_sensible_requests_pass() -> None:
    body = {"n": 2, "max_tokens": 256, "logprobs": True, "top_logprobs": 5, "stop": ["\n"]}
    check_limits(CHAT, body, RequestLimits(), "m", 2048)
    check_limits("/v1/completions", {"logprobs": 5, "prompt": ["a", "b"]}, RequestLimits(), "m")
