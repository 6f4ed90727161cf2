"""The seller's back-of-the-envelope, with every figure worked out by hand.

The worker: prefill 10,000 tokens/s, a full batch decodes 2,000 tokens/s.
A request of 1,000 prompt and 200 completion tokens takes 0.1 s of prefill
and 0.1 s of batch decoding: 5 requests a second, 6,000 tokens a second,
21.6 M tokens an hour at full use.
"""

from __future__ import annotations

import pytest

from spotgate.fleetsim.service_profile import ServiceProfile
from spotgate.fleetsim.unit_economics import (
    RequestShape,
    blended_hourly,
    break_even_price,
    cost_per_million_tokens,
    margin,
    requests_per_second,
    tokens_per_hour,
    with_batch_share,
)

PROFILE = ServiceProfile("m", "s", 64, 10_000.0, 50.0, 2_000.0, 20.0, 300.0)
SHAPE = RequestShape(prompt_tokens=1_000, completion_tokens=200)


def test_a_saturated_worker_serves_the_requests_its_gpu_time_allows() -> None:
    assert SHAPE.tokens == 1_200
    assert requests_per_second(PROFILE, SHAPE) == pytest.approx(5.0)
    assert tokens_per_hour(PROFILE, SHAPE, 1.0) == pytest.approx(21.6e6)
    assert tokens_per_hour(PROFILE, SHAPE, 0.5) == pytest.approx(10.8e6)


def test_cost_per_million_tokens_rises_as_utilisation_falls() -> None:
    # $3.60 an hour over 10.8 M tokens, then over 21.6 M
    assert cost_per_million_tokens(3.6, PROFILE, SHAPE, 0.5) == pytest.approx(1 / 3)
    assert cost_per_million_tokens(3.6, PROFILE, SHAPE, 1.0) == pytest.approx(1 / 6)


def test_cached_answers_are_sold_but_cost_no_gpu_time() -> None:
    # a quarter of the tokens sold come from the cache: three quarters of the cost
    assert cost_per_million_tokens(3.6, PROFILE, SHAPE, 0.5, cache_hit_rate=0.25) == (
        pytest.approx(0.25)
    )


def test_a_spot_share_blends_the_hourly_price() -> None:
    assert blended_hourly(1.0, 4.0, 0.75) == pytest.approx(1.75)
    assert blended_hourly(1.0, 4.0, 0.0) == 4.0
    assert blended_hourly(1.0, 4.0, 1.0) == 1.0


def test_margin_and_break_even_are_inverse() -> None:
    assert margin(0.5, 0.2) == pytest.approx(0.6)
    assert margin(0.2, 0.3) == pytest.approx(-0.5)  # selling below cost
    assert break_even_price(0.3) == pytest.approx(0.3)
    assert break_even_price(0.3, 0.25) == pytest.approx(0.4)
    assert margin(break_even_price(0.3, 0.25), 0.3) == pytest.approx(0.25)


def test_batch_work_blends_cost_and_discounted_price() -> None:
    # half the tokens batch: cost (0.4 + 0.1) / 2, price (1.0 + 0.5) / 2 at half price
    cost, price = with_batch_share(0.4, 0.1, 1.0, 0.5)
    assert (cost, price) == pytest.approx((0.25, 0.75))
    assert margin(price, cost) == pytest.approx(2 / 3)  # up from 0.6 with no batch
    assert with_batch_share(0.4, 0.1, 1.0, 0.0) == pytest.approx((0.4, 1.0))
    cost, price = with_batch_share(0.4, 0.1, 1.0, 1.0, batch_discount=0.2)
    assert (cost, price) == pytest.approx((0.1, 0.8))


@pytest.mark.parametrize(
    "call",
    [
        lambda: tokens_per_hour(PROFILE, SHAPE, 0.0),
        lambda: tokens_per_hour(PROFILE, SHAPE, 1.1),
        lambda: cost_per_million_tokens(3.6, PROFILE, SHAPE, 0.5, cache_hit_rate=1.0),
        lambda: blended_hourly(1.0, 4.0, 1.5),
        lambda: margin(0.0, 0.1),
        lambda: break_even_price(0.3, 1.0),
        lambda: with_batch_share(0.4, 0.1, 1.0, -0.1),
    ],
    ids=[
        "no-utilisation",
        "over-full",
        "all-cached",
        "spot-share-over-1",
        "free",
        "margin-1",
        "negative-batch",
    ],
)
def test_impossible_inputs_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
