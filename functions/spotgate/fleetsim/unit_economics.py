"""Cost per million tokens and margin, from a worker's calibration and a GPU's hourly price.

The back-of-the-envelope a seller does before any simulation: how many
tokens an hour one worker turns out at a given request shape and load, what
that costs at spot or on-demand prices, and what is left at a resale price.
Utilisation is the share of the worker's capacity that paid traffic uses;
interactive serving runs well below 1 to keep first tokens fast, batch work
can fill the rest, and cached answers cost no GPU time at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from spotgate.fleetsim.service_profile import ServiceProfile

OPENAI_BATCH_DISCOUNT = 0.5
"""OpenAI's Batch API bills half the synchronous price; sellers of batch work match it."""


@dataclass(frozen=True)
class RequestShape:
    prompt_tokens: float
    completion_tokens: float

    @property
    def tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens


def requests_per_second(profile: ServiceProfile, shape: RequestShape) -> float:
    """A worker's saturated rate: prefill and a full batch's decoding share one GPU's time."""
    gpu_s = (
        shape.prompt_tokens / profile.prefill_tokens_per_s
        + shape.completion_tokens / profile.decode_tokens_per_s_max
    )
    return 1.0 / gpu_s if gpu_s > 0 else 0.0


def tokens_per_hour(profile: ServiceProfile, shape: RequestShape, utilisation: float) -> float:
    if not 0 < utilisation <= 1:
        raise ValueError("utilisation must be in (0, 1]")
    return requests_per_second(profile, shape) * shape.tokens * 3600 * utilisation


def cost_per_million_tokens(
    hourly_usd: float,
    profile: ServiceProfile,
    shape: RequestShape,
    utilisation: float,
    cache_hit_rate: float = 0.0,
) -> float:
    """USD of GPU time per million tokens sold; cache hits are sold but use no GPU."""
    if not 0 <= cache_hit_rate < 1:
        raise ValueError("cache_hit_rate must be in [0, 1)")
    served = tokens_per_hour(profile, shape, utilisation)
    return hourly_usd / served * 1e6 * (1 - cache_hit_rate)


def blended_hourly(spot_usd: float, on_demand_usd: float, spot_share: float) -> float:
    """The hourly price of a fleet that runs `spot_share` of its worker-hours on spot."""
    if not 0 <= spot_share <= 1:
        raise ValueError("spot_share must be in [0, 1]")
    return spot_share * spot_usd + (1 - spot_share) * on_demand_usd


def margin(price_per_1m: float, cost_per_1m: float) -> float:
    """The share of revenue kept (negative: selling below cost)."""
    if price_per_1m <= 0:
        raise ValueError("price must be positive")
    return (price_per_1m - cost_per_1m) / price_per_1m


def break_even_price(cost_per_1m: float, target_margin: float = 0.0) -> float:
    """The price per million tokens that keeps `target_margin` of revenue."""
    if not 0 <= target_margin < 1:
        raise ValueError("target_margin must be in [0, 1)")
    return cost_per_1m / (1 - target_margin)


def with_batch_share(
    interactive_cost_per_1m: float,
    batch_cost_per_1m: float,
    interactive_price_per_1m: float,
    batch_share: float,
    batch_discount: float = OPENAI_BATCH_DISCOUNT,
) -> tuple[float, float]:
    """Blended (cost, price) per million tokens when `batch_share` of tokens are batch work.

    Batch work is cheaper to serve (it runs at high utilisation in the
    valleys of interactive load) and sells at a discount; whether it raises
    the margin depends on which effect is larger.
    """
    if not 0 <= batch_share <= 1:
        raise ValueError("batch_share must be in [0, 1]")
    cost = (1 - batch_share) * interactive_cost_per_1m + batch_share * batch_cost_per_1m
    batch_price = interactive_price_per_1m * (1 - batch_discount)
    price = (1 - batch_share) * interactive_price_per_1m + batch_share * batch_price
    return cost, price
