"""Who is calling: every way a key can be wrong is a 401 in OpenAI's shape, saying which.

Static keys (the operator's own) are accepted as they are; virtual keys are
checked against the directory, and a refusal names its case without telling
the caller anything about any other key.
"""

from __future__ import annotations

import pytest

from spotgate.clock import ManualClock
from spotgate.errors import AuthenticationFailed
from spotgate.gateway.tenancy.authority import KeyAuthority
from spotgate.gateway.tenancy.directory import KeyDirectory
from spotgate.gateway.tenancy.keys import ApiKey, new_secret
from spotgate.gateway.tenancy.memory_stores import InMemoryKeyStore

STATIC = "static-operator-key"
OTHER_STATIC = "another-operator-key"
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def setup(static: list[str] | None = None) -> tuple[KeyAuthority, KeyDirectory, ManualClock]:
    clock = ManualClock(START)
    keys = KeyDirectory(InMemoryKeyStore(), clock, lambda: "salt")
    statics = [STATIC] if static is None else static
    return KeyAuthority(keys, lambda: statics, clock), keys, clock


def refused(authority: KeyAuthority, presented: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        authority.authenticate(presented)
    error = caught.value
    assert error.status_code == 401
    body = error.body()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == error.message and error.message
    return error


@pytest.mark.parametrize("presented", [None, ""])
def test_a_missing_key_is_refused_and_told_how_to_send_one(presented: str | None) -> None:
    authority, _, _ = setup()
    error = refused(authority, presented)
    assert "Missing" in error.message and "Bearer" in error.message


@pytest.mark.parametrize(
    "presented", ["sk-proj-abcdefghijklmnopqrstuvwxyz", "sk-sg-short", "sk-sg-" + "x" * 200]
)
def test_a_malformed_key_is_refused_naming_the_prefix_keys_have(presented: str) -> None:
    authority, _, _ = setup()
    error = refused(authority, presented)
    assert "Malformed" in error.message and "sk-sg-" in error.message


async def test_an_unknown_key_is_refused_as_invalid() -> None:
    authority, keys, _ = setup()
    await keys.create("alice")
    error = refused(authority, new_secret())
    assert error.message == "Invalid API key."


async def test_a_virtual_key_is_refused_when_there_is_no_directory() -> None:
    clock = ManualClock(START)
    authority = KeyAuthority(None, lambda: [STATIC], clock)
    assert refused(authority, new_secret()).message == "Invalid API key."
    assert authority.authenticate(STATIC).key is None


async def test_a_revoked_key_is_refused_saying_so() -> None:
    authority, keys, _ = setup()
    key, secret = await keys.create("alice")
    assert authority.authenticate(secret).key_id == key.id
    await keys.revoke(key.id)
    error = refused(authority, secret)
    assert "revoked" in error.message


async def test_a_key_is_refused_from_the_moment_it_expires_with_that_moment_in_iso() -> None:
    authority, keys, clock = setup()
    _, secret = await keys.create("alice", expires_at=START + 60)
    clock.advance(59)
    assert authority.authenticate(secret).key is not None, "one second before: accepted"
    clock.advance(1)
    error = refused(authority, secret)
    assert "expired" in error.message
    assert "2023-11-14T22:14:20+00:00" in error.message


async def test_a_virtual_key_is_accepted_with_its_record() -> None:
    authority, keys, _ = setup()
    key, secret = await keys.create("alice", models=["m1"], cache_group="team")
    caller = authority.authenticate(secret)
    assert caller.key_id == key.id
    assert isinstance(caller.key, ApiKey) and caller.key.models == ["m1"]
    assert caller.cache_scope == "group:team"


async def test_a_static_key_is_accepted_without_a_key_record() -> None:
    authority, keys, _ = setup([STATIC, OTHER_STATIC])
    await keys.create("alice")
    first, second = authority.authenticate(STATIC), authority.authenticate(OTHER_STATIC)
    assert first.key is None and second.key is None
    assert first.key_id.startswith("static:") and second.key_id.startswith("static:")
    assert first.key_id != second.key_id, "two static keys are two callers"
    assert STATIC not in first.key_id, "the id does not reveal the key"
    assert authority.authenticate(STATIC).key_id == first.key_id, "and it is stable"


async def test_a_static_key_shaped_like_a_virtual_one_is_still_accepted() -> None:
    shaped = new_secret()
    authority, _, _ = setup([shaped])
    caller = authority.authenticate(shaped)
    assert caller.key is None and caller.key_id.startswith("static:")


def test_an_empty_static_key_in_the_settings_does_not_let_an_empty_key_in() -> None:
    authority, _, _ = setup(["", STATIC])
    refused(authority, "")
    assert authority.tenants() == 1


async def test_no_refusal_mentions_any_other_key() -> None:
    authority, keys, clock = setup()
    others = [await keys.create(name) for name in ("victim-prod", "victim-staging")]
    revoked, revoked_secret = await keys.create("tenant-revoked")
    await keys.revoke(revoked.id)
    expired, expired_secret = await keys.create("tenant-expired", expires_at=START + 1)
    clock.advance(5)
    messages = [
        refused(authority, presented).message
        for presented in (
            None,
            "not-a-key",
            new_secret(),
            others[0][1][:-1] + "?",  # one character off a real key
            revoked_secret,
            expired_secret,
        )
    ]
    secrets_of_others = [secret for _, secret in others]
    for message in messages:
        for key, secret in [*others, (revoked, revoked_secret), (expired, expired_secret)]:
            assert key.name not in message and key.id not in message, message
            assert key.prefix not in message and secret not in message, message
        assert not any(s[:10] in message for s in secrets_of_others)


async def test_tenants_counts_static_and_virtual_keys() -> None:
    authority, keys, _ = setup([STATIC])
    assert authority.tenants() == 1, "one static key: a single tenant"
    await keys.create("alice")
    assert authority.tenants() == 2
    await keys.create("bob")
    assert authority.tenants() == 3
    two_statics, _, _ = setup([STATIC, OTHER_STATIC])
    assert two_statics.tenants() == 2
    none, _, _ = setup([])
    assert none.tenants() == 0
