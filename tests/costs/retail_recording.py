"""The recorded Retail Prices API answers (see recorded/README.md) served on an httpx transport."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

RECORDED = Path(__file__).parent / "recorded"
EMPTY_PAGE: dict[str, Any] = {
    "BillingCurrency": "USD",
    "CustomerEntityId": "Default",
    "CustomerEntityType": "Retail",
    "Items": [],
    "NextPageLink": None,
    "Count": 0,
}


def page(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return body


def recorded_items(*names: str) -> list[dict[str, Any]]:
    return [item for name in names for item in page(name)["Items"]]


def recorded_transport(seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    """Answers a region's filter with its recording (page 2 when `$skip` is set), else empty."""

    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.host != "prices.azure.com":
            return httpx.Response(404)
        region = re.search(r"armRegionName eq '([a-z0-9]+)'", request.url.params["$filter"])
        assert region is not None, request.url
        name = f"retail_prices_{region.group(1)}"
        if request.url.params.get("$skip"):
            name += "_page2"
        path = RECORDED / f"{name}.json"
        body = path.read_bytes() if path.exists() else json.dumps(EMPTY_PAGE).encode()
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return httpx.MockTransport(answer)
