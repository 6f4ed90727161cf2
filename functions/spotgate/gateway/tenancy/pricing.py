"""What a request is charged, and what a spillover call costs us: both known when it ends.

The price of a model is the catalogue entry's (`price_in_per_1m`,
`price_out_per_1m`, the same numbers `auto` ranks by), unless the key has its
own price for that model; a model with no entry has the deployment's default
price. A cache hit is billed at `cache_hit_share` of the price: the tokens
cost nothing to serve, and a reseller usually passes some of that on.

A Batch API line is sold cheaper, as OpenAI's Batch API is, because it waits
for spare capacity instead of asking for more: at the entry's own batch
price when it has one, otherwise at `batch_share` of whatever price applies
(a key's own price included).
"""

from __future__ import annotations

from spotgate.gateway.catalog import ResolvedModel
from spotgate.gateway.tenancy.keys import ApiKey, ModelPrice


class Prices:
    def __init__(
        self, default: ModelPrice, cache_hit_share: float, batch_share: float = 0.5
    ) -> None:
        self._default = default
        self._cache_hit_share = cache_hit_share
        self._batch_share = batch_share

    def price(
        self,
        key: ApiKey | None,
        model: ResolvedModel | None,
        requested: str,
        *,
        batch: bool = False,
    ) -> ModelPrice:
        share = self._batch_share if batch else 1.0
        entry = model.entry if model is not None else None
        own = self._key_price(key, model, requested)
        if own is not None:
            base, entry = own, None  # a key's own price wins over the entry's batch price too
        elif entry is not None:
            base = ModelPrice(entry.price_in_per_1m, entry.price_out_per_1m)
        else:
            base = self._default
        price_in, price_out = base.input_per_1m * share, base.output_per_1m * share
        if batch and entry is not None and entry.batch_price_in_per_1m is not None:
            price_in = entry.batch_price_in_per_1m
        if batch and entry is not None and entry.batch_price_out_per_1m is not None:
            price_out = entry.batch_price_out_per_1m
        return ModelPrice(price_in, price_out)

    @staticmethod
    def _key_price(
        key: ApiKey | None, model: ResolvedModel | None, requested: str
    ) -> ModelPrice | None:
        if key is not None and key.prices:
            for name in (model.name if model is not None else None, requested):
                if name is not None and name in key.prices:
                    return key.prices[name]
        return None

    def revenue(
        self,
        key: ApiKey | None,
        model: ResolvedModel | None,
        requested: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cache_hit: bool = False,
        batch: bool = False,
    ) -> float:
        price = self.price(key, model, requested, batch=batch)
        charged = price.cost(prompt_tokens, completion_tokens)
        return charged * self._cache_hit_share if cache_hit else charged

    @staticmethod
    def spillover_cost(
        model: ResolvedModel | None, prompt_tokens: int, completion_tokens: int
    ) -> float:
        target = model.spillover if model is not None else None
        if target is None:
            return 0.0
        price = ModelPrice(target.price_in_per_1m, target.price_out_per_1m)
        return price.cost(prompt_tokens, completion_tokens)
