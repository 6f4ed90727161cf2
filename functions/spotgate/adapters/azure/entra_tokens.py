"""Entra ID access tokens as an operator credential: `is_admin(bearer)` for the admin routes.

An operator (or a pipeline's managed identity) that holds the app role
`spotgate.admin` on the app registration whose audience is configured may call
the admin routes with its Entra ID token instead of the shared admin key. A token
passes only when all of these hold:

- the header says RS256 (nothing else: no `none`, no HMAC, whatever the key) and names
  a `kid` among the tenant's current signing keys, and the signature checks out with it;
- `iss` is the tenant's v2.0 issuer `https://login.microsoftonline.com/{tenant}/v2.0`
  or its v1.0 one `https://sts.windows.net/{tenant}/`;
- `aud` is the configured audience (the app's client id, or its `api://` URI);
- `exp` and `nbf` are present and hold, with 60 s of leeway for clock skew;
- `tid` is the tenant;
- `roles` lists the admin role.

Anything else is False, never an exception: a bad bearer is a refusal, not an error.

Signing keys come from a `JwksSource`. `CachedJwks` keeps the tenant's key set
(`fetch` returns the JWKS document, `{"keys": [...]}`), renews it every `refresh_s`
and, for a `kid` it does not know (Entra rotates keys), fetches again at most once
a minute, so a stream of forged tokens with made-up ids costs one fetch a minute.
`fetch` runs on the caller's thread: the host passes `entra_jwks_fetch(tenant)` (a
blocking httpx GET with a short timeout), and may warm the cache off the event loop
at start (`await asyncio.to_thread(jwks.refresh)`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx
import jwt

from spotgate.clock import Clock, SystemClock

log = logging.getLogger("spotgate.azure")

ALGORITHM = "RS256"
LEEWAY_S = 60
MAX_TOKEN_CHARS = 32 * 1024  # Entra access tokens are a few KiB; this bounds the work


def jwks_url(tenant_id: str) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys"


def issuers(tenant_id: str) -> tuple[str, str]:
    """The v2.0 and v1.0 issuers of `tenant_id`'s access tokens."""
    return (
        f"https://login.microsoftonline.com/{tenant_id}/v2.0",
        f"https://sts.windows.net/{tenant_id}/",
    )


def entra_jwks_fetch(tenant_id: str, *, timeout_s: float = 5.0) -> Callable[[], Mapping[str, Any]]:
    """The real fetch for CachedJwks: GET the tenant's discovery keys (blocking)."""
    url = jwks_url(tenant_id)

    def fetch() -> Mapping[str, Any]:
        response = httpx.get(url, timeout=timeout_s, follow_redirects=False)
        response.raise_for_status()
        document: Mapping[str, Any] = response.json()
        return document

    return fetch


class JwksSource(Protocol):
    def key(self, kid: str) -> Any | None:
        """The public key with this key id, or None."""
        ...


def _keys_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The RSA signing keys of a JWKS document, by kid; anything else is left out."""
    keys: dict[str, Any] = {}
    entries = document.get("keys") if isinstance(document, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM).key
        except (jwt.PyJWTError, ValueError, TypeError):
            log.warning("Entra ID signing key %r could not be read; skipped", kid)
    return keys


class CachedJwks:
    """A JwksSource over `fetch`: renewed every `refresh_s`, and on an unknown kid once a minute."""

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        refresh_s: float = 3600.0,
        *,
        unknown_kid_interval_s: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self._fetch = fetch
        self._refresh_s = refresh_s
        self._unknown_kid_interval_s = unknown_kid_interval_s
        self._clock = clock or SystemClock()
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any | None:
        with self._lock:
            now = self._clock.now()
            if self._fetched_at is None or now - self._fetched_at >= self._refresh_s:
                retry_s = min(self._refresh_s, self._unknown_kid_interval_s)
                self._fetch_unless_tried_within(retry_s, now)
            if kid not in self._keys:
                self._fetch_unless_tried_within(self._unknown_kid_interval_s, now)
            return self._keys.get(kid)

    def refresh(self) -> bool:
        """Fetch now; False (the old keys kept) when the fetch failed."""
        with self._lock:
            return self._fetch_now(self._clock.now())

    def _fetch_unless_tried_within(self, interval_s: float, now: float) -> None:
        if self._attempted_at is None or now - self._attempted_at >= interval_s:
            self._fetch_now(now)

    def _fetch_now(self, now: float) -> bool:
        self._attempted_at = now
        try:
            keys = _keys_of(self._fetch())
        except Exception as error:  # an outage keeps the keys we have
            log.warning("Entra ID signing keys: fetch failed (%s); keeping the last ones", error)
            return False
        if not keys:
            log.warning("Entra ID signing keys: the key set has no RSA key; keeping the last ones")
            return False
        self._keys = keys
        self._fetched_at = now
        return True


class EntraAdminTokens:
    """Is this bearer an Entra ID access token of an operator with the admin role?"""

    def __init__(
        self,
        tenant_id: str,
        audience: str | Sequence[str],
        admin_role: str = "spotgate.admin",
        *,
        jwks: JwksSource,
    ) -> None:
        if not tenant_id or not audience or not admin_role:
            raise ValueError("EntraAdminTokens needs a tenant id, an audience and a role")
        self._tenant = tenant_id.lower()
        self._audience: list[str] = [audience] if isinstance(audience, str) else list(audience)
        self._issuers = issuers(self._tenant)
        self._role = admin_role
        self._jwks = jwks

    def is_admin(self, bearer: str) -> bool:
        try:
            return self._check(bearer)
        except Exception as error:  # a bad token is a refusal, whatever went wrong
            log.debug("Entra ID token refused: %s", type(error).__name__)
            return False

    def _check(self, bearer: str) -> bool:
        if not isinstance(bearer, str) or not bearer or len(bearer) > MAX_TOKEN_CHARS:
            return False
        header = jwt.get_unverified_header(bearer)
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            return False
        key = self._jwks.key(kid)
        if key is None:
            return False
        claims = jwt.decode(
            bearer,
            key,
            algorithms=[ALGORITHM],
            audience=self._audience,
            issuer=self._issuers,
            leeway=LEEWAY_S,
            options={"require": ["exp", "nbf", "iss", "aud", "tid"]},
        )
        tenant = claims.get("tid")
        if not isinstance(tenant, str) or tenant.lower() != self._tenant:
            return False
        roles = claims.get("roles")
        return isinstance(roles, list) and self._role in roles
