"""The Azure Retail Prices API over HTTP: every item a `$filter` matches, all pages.

The endpoint is public, so there are no credentials. Each answer holds at most
1,000 items and a `NextPageLink` (an absolute URL with the filter and
`$skip`) until the last page, where it is null or empty. A page cap stops a
filter that matches far more than meant, and links are only followed on the
API's own host. Anything short of a full answer raises RetailPricesError,
so a caller never mistakes a cut-off answer for "no such meter".
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
API_VERSION = "2023-01-01-preview"


class RetailPricesError(Exception):
    """The API could not be read in full: offline, refused, or not a price page."""


class RetailPricesClient:
    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
        max_pages: int = 20,
        url: str = RETAIL_PRICES_URL,
    ) -> None:
        self._url = url
        self._host = httpx.URL(url).host
        self._max_pages = max_pages
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers={"Accept": "application/json"},
        )

    def __enter__(self) -> RetailPricesClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def items(
        self, odata_filter: str, on_page: Callable[[int, int], None] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of every page; `on_page(page_number, items_on_it)` after each."""
        request = self._http.build_request(
            "GET", self._url, params={"api-version": API_VERSION, "$filter": odata_filter}
        )
        found: list[dict[str, Any]] = []
        for page in range(1, self._max_pages + 1):
            body = self._page(request)
            items = body["Items"]
            found.extend(items)
            if on_page is not None:
                on_page(page, len(items))
            link = body.get("NextPageLink")
            if not link:
                return found
            url = httpx.URL(link)
            if url.scheme != "https" or url.host != self._host:
                raise RetailPricesError(f"NextPageLink leaves {self._host}: {link}")
            request = self._http.build_request("GET", url)
        raise RetailPricesError(
            f"more than {self._max_pages} pages for {odata_filter!r}: narrow the filter"
        )

    def _page(self, request: httpx.Request) -> dict[str, Any]:
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise RetailPricesError(
                f"could not reach {request.url.host}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            raise RetailPricesError(
                f"{request.url.host} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise RetailPricesError(f"{request.url.host} answered something not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
            raise RetailPricesError(f"{request.url.host} answered JSON without an Items list")
        if not all(isinstance(item, dict) for item in body["Items"]):
            raise RetailPricesError(f"{request.url.host} answered Items that are not objects")
        return body
