"""What a request is charged, and what a spillover call costs us: both known when it ends.

The price of a model is the catalogue entry's (`price_in_per_1m`,
`price_out_per_1m`, the same numbers `auto` ranks by), unless the key has its
own price for that model; a model with no entry has the deployment's default
price. A cache hit is billed at `cache_hit_share` of the price: the tokens
cost nothing to serve, and a reseller usually passes some of that on.
"""

from __future__ import annotations

from spotgate.gateway.catalog import ResolvedModel
from spotgate.gateway.tenancy.keys import ApiKey, ModelPrice


class Prices:
    def __init__(self, default: ModelPrice, cache_hit_share: float) -> None:
        self._default = default
        self._cache_hit_share = cache_hit_share

    def price(self, key: ApiKey | None, model: ResolvedModel | None, requested: str) -> ModelPrice:
        if key is not None and key.prices:
            for name in (model.name if model is not None else None, requested):
                if name is not None and name in key.prices:
                    return key.prices[name]
        entry = model.entry if model is not None else None
        if entry is None:
            return self._default
        return ModelPrice(entry.price_in_per_1m, entry.price_out_per_1m)

    def revenue(
        self,
        key: ApiKey | None,
        model: ResolvedModel | None,
        requested: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cache_hit: bool = False,
    ) -> float:
        charged = self.price(key, model, requested).cost(prompt_tokens, completion_tokens)
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
