"""EntraAdminTokens: Entra ID access tokens for the admin role, checked offline.

Keys are generated here (cryptography), served as a JWKS through a fake fetch, and
tokens are signed with PyJWT the way Entra ID signs them (RS256, `kid` header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from spotgate.adapters.azure.entra_tokens import (
    CachedJwks,
    EntraAdminTokens,
    issuers,
    jwks_url,
)
from spotgate.clock import ManualClock

TENANT = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
OTHER_TENANT = "11111111-2222-3333-4444-555555555555"
AUDIENCE = "api://spotgate-admin"
CLIENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ROLE = "spotgate.admin"
V2_ISSUER, V1_ISSUER = issuers(TENANT)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY = new_key()
ROTATED_KEY = new_key()
STRANGER_KEY = new_key()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public half as Entra's discovery keys list it (kty, use, kid, n, e; no alg)."""
    data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"kty": "RSA", "use": "sig", "kid": kid, "n": data["n"], "e": data["e"]}


class FakeFetch:
    """The JWKS endpoint: serves `documents` in turn (the last one from then on), counts calls."""

    def __init__(self, *documents: Mapping[str, Any] | Exception) -> None:
        self.documents = list(documents)
        self.calls = 0

    def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        document = self.documents[0] if len(self.documents) == 1 else self.documents.pop(0)
        if isinstance(document, Exception):
            raise document
        return document


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "aud": AUDIENCE,
        "iss": V2_ISSUER,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
        "tid": TENANT,
        "oid": "3c9e1f5a-7b2d-4e84-a6c0-d1f8b3e5a927",
        "sub": "3c9e1f5a-7b2d-4e84-a6c0-d1f8b3e5a927",
        "azp": CLIENT_ID,
        "roles": [ROLE],
        "ver": "2.0",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(
    key: rsa.RSAPrivateKey = KEY, kid: str = "key-1", algorithm: str = "RS256", **overrides: Any
) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def fetch() -> FakeFetch:
    return FakeFetch({"keys": [jwk(KEY, "key-1")]})


@pytest.fixture
def tokens(fetch: FakeFetch, clock: ManualClock) -> EntraAdminTokens:
    return EntraAdminTokens(TENANT, AUDIENCE, jwks=CachedJwks(fetch, clock=clock))


def test_a_valid_admin_token_passes(tokens: EntraAdminTokens, fetch: FakeFetch) -> None:
    assert tokens.is_admin(token())
    assert tokens.is_admin(token())
    assert fetch.calls == 1, "keys are cached"


def test_the_v1_issuer_passes_too(tokens: EntraAdminTokens) -> None:
    assert tokens.is_admin(token(iss=V1_ISSUER, ver="1.0"))


def test_several_audiences_and_a_tenant_spelled_upper_case(fetch: FakeFetch) -> None:
    tokens = EntraAdminTokens(TENANT.upper(), [CLIENT_ID, AUDIENCE], jwks=CachedJwks(fetch))
    assert tokens.is_admin(token(aud=CLIENT_ID))
    assert tokens.is_admin(token())


def test_time_claims_have_a_minute_of_leeway(tokens: EntraAdminTokens) -> None:
    now = int(time.time())
    assert tokens.is_admin(token(exp=now - 30)), "within the leeway"
    assert tokens.is_admin(token(nbf=now + 30))


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("wrong audience", {"aud": "api://someone-else"}),
        ("wrong issuer", {"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"}),
        ("issuer of no tenant", {"iss": "https://login.microsoftonline.com/common/v2.0"}),
        ("wrong tenant", {"tid": OTHER_TENANT}),
        ("expired", {"exp": int(time.time()) - 7200}),  # collected long before it runs
        ("not yet valid", {"nbf": int(time.time()) + 7200}),
        ("no exp", {"exp": None}),
        ("no nbf", {"nbf": None}),
        ("no tid", {"tid": None}),
        ("no role", {"roles": None}),
        ("another role", {"roles": ["spotgate.reader"]}),
        ("role as a string", {"roles": ROLE}),
        ("role in scp instead", {"roles": None, "scp": ROLE}),
    ],
)
def test_claims_that_do_not_hold_are_refused(
    tokens: EntraAdminTokens, case: str, overrides: dict[str, Any]
) -> None:
    assert not tokens.is_admin(token(**overrides)), case


def test_a_token_signed_by_another_key_is_refused(tokens: EntraAdminTokens) -> None:
    assert not tokens.is_admin(token(key=STRANGER_KEY, kid="key-1"))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_other_algorithms_are_refused(tokens: EntraAdminTokens) -> None:
    # HS256 keyed with the public key's PEM: the classic algorithm confusion.
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": "key-1"})
    payload = _b64(claims())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert not tokens.is_admin(forged)
    # alg none, with and without a signature part
    none = _b64({"alg": "none", "typ": "JWT", "kid": "key-1"})
    assert not tokens.is_admin(f"{none}.{payload}.")
    assert not tokens.is_admin(f"{none}.{payload}")
    # RS512 with the right key is still not what Entra signs with
    assert not tokens.is_admin(token(algorithm="RS512"))
    # a header claiming RS256 over an HS256 signature
    relabelled = _b64({"alg": "RS256", "typ": "JWT", "kid": "key-1"})
    assert not tokens.is_admin(f"{relabelled}.{payload}." + forged.rsplit(".", 1)[1])


@pytest.mark.parametrize(
    "garbage",
    ["", "Bearer", "abc", "a.b.c", "...", "eyJhbGciOiJSUzI1NiJ9.e30.", "x" * 40_000, "ü.ü.ü"],
)
def test_garbage_is_refused(tokens: EntraAdminTokens, garbage: str) -> None:
    assert not tokens.is_admin(garbage)


def test_a_header_without_kid_is_refused(tokens: EntraAdminTokens) -> None:
    unsigned = jwt.encode(claims(), KEY, algorithm="RS256")  # no kid header
    assert not tokens.is_admin(unsigned)


def test_an_unknown_kid_is_refused_and_fetched_at_most_once_a_minute(
    tokens: EntraAdminTokens, fetch: FakeFetch, clock: ManualClock
) -> None:
    assert tokens.is_admin(token())
    assert fetch.calls == 1
    clock.advance(61)
    for _ in range(50):
        assert not tokens.is_admin(token(kid="made-up"))
    assert fetch.calls == 2, "one fetch for the whole burst"
    clock.advance(30)
    assert not tokens.is_admin(token(kid="made-up-too"))
    assert fetch.calls == 2
    clock.advance(31)
    assert not tokens.is_admin(token(kid="made-up-too"))
    assert fetch.calls == 3


def test_a_key_rotation_is_fetched_once(clock: ManualClock) -> None:
    before = {"keys": [jwk(KEY, "key-1")]}
    after = {"keys": [jwk(KEY, "key-1"), jwk(ROTATED_KEY, "key-2")]}
    fetch = FakeFetch(before, after)
    tokens = EntraAdminTokens(TENANT, AUDIENCE, jwks=CachedJwks(fetch, clock=clock))
    assert tokens.is_admin(token())
    clock.advance(120)
    for _ in range(5):
        assert tokens.is_admin(token(key=ROTATED_KEY, kid="key-2"))
    assert tokens.is_admin(token())
    assert fetch.calls == 2


def test_keys_are_renewed_every_refresh_s_and_an_outage_keeps_them(clock: ManualClock) -> None:
    keys = {"keys": [jwk(KEY, "key-1")]}
    fetch = FakeFetch(keys, OSError("connection refused"), keys)
    jwks = CachedJwks(fetch, refresh_s=3600, clock=clock)
    tokens = EntraAdminTokens(TENANT, AUDIENCE, jwks=jwks)
    assert tokens.is_admin(token())
    clock.advance(3600)
    assert tokens.is_admin(token()), "the renewal failed: the old keys still serve"
    assert fetch.calls == 2
    assert tokens.is_admin(token())
    assert fetch.calls == 2, "a failed renewal is retried after a minute, not on every call"
    clock.advance(60)
    assert tokens.is_admin(token())
    assert fetch.calls == 3


def test_a_key_set_without_rsa_keys_is_not_taken(clock: ManualClock) -> None:
    fetch = FakeFetch(
        {"keys": [jwk(KEY, "key-1")]},
        {"keys": [{"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"}]},
    )
    jwks = CachedJwks(fetch, refresh_s=10, clock=clock)
    assert jwks.key("key-1") is not None
    clock.advance(10)
    assert jwks.key("key-1") is not None
    assert fetch.calls == 2
    assert jwks.refresh() is False


def test_no_keys_at_all_refuses_everything(clock: ManualClock) -> None:
    fetch = FakeFetch(OSError("down"))
    tokens = EntraAdminTokens(TENANT, AUDIENCE, jwks=CachedJwks(fetch, clock=clock))
    assert not tokens.is_admin(token())
    assert not tokens.is_admin(token())
    assert fetch.calls == 1


def test_configuration_is_required() -> None:
    with pytest.raises(ValueError):
        EntraAdminTokens("", AUDIENCE, jwks=CachedJwks(FakeFetch({"keys": []})))
    with pytest.raises(ValueError):
        EntraAdminTokens(TENANT, "", jwks=CachedJwks(FakeFetch({"keys": []})))


def test_the_discovery_url() -> None:
    assert jwks_url(TENANT) == (f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys")
    assert issuers(TENANT) == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )
