"""KeyVaultSecrets against recorded Key Vault answers, challenge authentication included.

The SecretClient runs unmodified over `KeyVaultTransport`: its challenge policy,
retries and error mapping (404 -> ResourceNotFoundError) are the SDK's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from spotgate.adapters.azure.key_vault_secrets import (
    KeyVaultSecrets,
    SecretsUnavailable,
    vault_name,
)
from spotgate.clock import ManualClock
from tests.adapters.azure.key_vault_transport import (
    KEY_VAULT_SCOPE,
    TENANT,
    TOKEN,
    KeyVaultCredential,
    KeyVaultTransport,
    forbidden,
    not_found,
    secret,
    vault_url,
)

NAMES = ("admin-key", "fleet-token", "key-salt", "SPILLOVER_API_KEY")
REFRESH_S = 300.0
RETRY_S = 30.0


@pytest.fixture
def vault() -> str:
    return vault_url()


@pytest.fixture
def kv(vault: str) -> KeyVaultTransport:
    """The deployment's vault: admin-key, fleet-token, key-salt and spillover-api-key."""
    transport = KeyVaultTransport()
    for name, value in (
        ("admin-key", "admin-1"),
        ("fleet-token", "fleet-1"),
        ("key-salt", "salt-1"),
        ("spillover-api-key", "spill-1"),
    ):
        transport.answer(name, secret(vault, name, value))
    return transport


def rotated(vault: str, *values: str, name: str = "admin-key") -> KeyVaultTransport:
    """A vault whose `name` answers `values` in turn (the others as in `kv`)."""
    transport = KeyVaultTransport()
    transport.answer(name, *(secret(vault, name, v) for v in values))
    for other, value in (("fleet-token", "fleet-1"), ("key-salt", "salt-1")):
        if other != name:
            transport.answer(other, secret(vault, other, value))
    transport.answer("spillover-api-key", secret(vault, "spillover-api-key", "spill-1"))
    return transport


@pytest.fixture
def credential() -> KeyVaultCredential:
    return KeyVaultCredential()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def secrets(
    vault: str, kv: KeyVaultTransport, credential: KeyVaultCredential, clock: ManualClock
) -> AsyncIterator[KeyVaultSecrets]:
    store = make(vault, kv, credential, clock)
    yield store
    await store.close()


def make(
    vault: str,
    kv: KeyVaultTransport,
    credential: KeyVaultCredential,
    clock: ManualClock,
    names: tuple[str, ...] = NAMES,
) -> KeyVaultSecrets:
    return KeyVaultSecrets(
        vault,
        credential,
        names,
        refresh_s=REFRESH_S,
        retry_s=RETRY_S,
        clock=clock,
        transport=kv,
        retry_total=1,
        retry_backoff_factor=0.01,
        retry_backoff_max=0.02,
    )


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.005)


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


async def test_start_answers_the_challenge_then_serves_every_secret(
    secrets: KeyVaultSecrets, kv: KeyVaultTransport, credential: KeyVaultCredential
) -> None:
    await secrets.start()
    assert secrets.get("admin-key") == "admin-1"
    assert secrets.get("fleet-token") == "fleet-1"
    assert secrets.get("key-salt") == "salt-1"
    assert secrets.get("SPILLOVER_API_KEY") == "spill-1", "read from spillover-api-key"
    # The first request to the vault went bare and got the challenge; the token the
    # credential gave for the challenge's resource and tenant opened the rest.
    challenged = kv.challenged
    assert 1 <= challenged <= len(NAMES), "concurrent first reads may each be challenged"
    assert kv.bare == challenged, "no token is sent before the vault asks for one"
    assert kv.authorised == len(NAMES)
    assert credential.asked and set(credential.asked) == {((KEY_VAULT_SCOPE,), TENANT)}
    # Later reads carry the token straight away: no second challenge.
    await secrets.refresh()
    assert kv.authorised == 2 * len(NAMES)
    assert kv.challenged == challenged


async def test_a_token_the_vault_does_not_take_is_challenged_again(
    vault: str, kv: KeyVaultTransport, clock: ManualClock
) -> None:
    """A 401 after the challenge was answered is the vault's last word: a failed read."""
    store = make(vault, kv, KeyVaultCredential(token="not-" + TOKEN), clock)
    try:
        with pytest.raises(SecretsUnavailable, match="ClientAuthenticationError 401"):
            await store.start()
        assert kv.authorised == 0
        assert store.get("admin-key") is None
    finally:
        await store.close()


@pytest.fixture
async def rotating(
    vault: str, credential: KeyVaultCredential, clock: ManualClock
) -> AsyncIterator[tuple[KeyVaultSecrets, KeyVaultTransport]]:
    """A store over a vault whose admin-key is rotated after the first read."""
    kv = rotated(vault, "admin-1", "admin-2")
    store = make(vault, kv, credential, clock)
    yield store, kv
    await store.close()


async def test_a_rotated_value_is_served_after_refresh_s_and_get_never_waits(
    rotating: tuple[KeyVaultSecrets, KeyVaultTransport], clock: ManualClock
) -> None:
    secrets, kv = rotating
    await secrets.start()
    assert secrets.get("admin-key") == "admin-1"

    clock.advance(REFRESH_S - 1)
    assert secrets.get("admin-key") == "admin-1"
    await asyncio.sleep(0.05)
    assert kv.reads("admin-key") == 1, "fresh enough: no read"

    kv.hold = asyncio.Event()  # the vault is slow to answer the refresh
    clock.advance(2)
    assert secrets.get("admin-key") == "admin-1", "served from the cache at once"
    await until(lambda: kv.held == len(NAMES))
    for _ in range(20):  # a burst of requests while the one refresh is in flight
        assert secrets.get("admin-key") == "admin-1"
        await asyncio.sleep(0)
    kv.hold.set()
    await until(lambda: secrets.get("admin-key") == "admin-2")
    assert kv.reads("admin-key") == 2, "one refresh for the whole burst"
    assert secrets.get("fleet-token") == "fleet-1"


async def test_a_missing_secret_is_none_and_logged_once(
    vault: str,
    credential: KeyVaultCredential,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kv = KeyVaultTransport()
    kv.answer("admin-key", secret(vault, "admin-key", "admin-1"))
    salt = secret(vault, "key-salt", "salt-2")
    kv.answer("key-salt", not_found("key-salt"), not_found("key-salt"), salt)
    secrets = make(vault, kv, credential, clock, names=("admin-key", "key-salt"))
    caplog.set_level(logging.INFO, "spotgate.azure")
    try:
        await secrets.start()
        assert secrets.get("key-salt") is None
        assert secrets.get("admin-key") == "admin-1"
        await secrets.refresh()
        assert secrets.get("key-salt") is None
        assert len(warnings_of(caplog, "no secret 'key-salt'")) == 1
        assert not warnings_of(caplog, "could not read"), "a missing secret is no outage"
        await secrets.refresh()
        assert secrets.get("key-salt") == "salt-2", "added later: served"
    finally:
        await secrets.close()


async def test_an_outage_keeps_the_last_values_and_warns_once_per_interval(
    rotating: tuple[KeyVaultSecrets, KeyVaultTransport],
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets, kv = rotating
    caplog.set_level(logging.INFO, "spotgate.azure")
    await secrets.start()
    kv.down = True

    clock.advance(REFRESH_S + 1)
    assert secrets.get("admin-key") == "admin-1"  # starts the refresh that will fail
    await secrets.refresh()  # waits for it (or tries once more)
    assert secrets.get("admin-key") == "admin-1"
    assert secrets.get("key-salt") == "salt-1"
    assert len(warnings_of(caplog, "could not read")) == 1

    clock.advance(RETRY_S - 1)
    secrets.get("admin-key")
    await asyncio.sleep(0.05)
    clock.advance(1)
    await secrets.refresh()
    assert len(warnings_of(caplog, "could not read")) == 1, "one warning per interval"
    clock.advance(REFRESH_S)
    await secrets.refresh()
    assert len(warnings_of(caplog, "could not read")) == 2
    assert secrets.get("admin-key") == "admin-1"

    kv.down = False
    clock.advance(RETRY_S)
    secrets.get("admin-key")
    await until(lambda: secrets.get("admin-key") == "admin-2")
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_start_fails_when_the_vault_answers_no_read(
    vault: str, credential: KeyVaultCredential, clock: ManualClock
) -> None:
    kv = KeyVaultTransport()
    kv.on("GET", r"/secrets/", forbidden(), repeat_last=True)  # no role on the vault
    store = make(vault, kv, credential, clock)
    try:
        with pytest.raises(SecretsUnavailable, match="403 Forbidden"):
            await store.start()
        assert store.get("admin-key") is None
    finally:
        await store.close()


async def test_unreachable_at_start_fails_too(
    secrets: KeyVaultSecrets, kv: KeyVaultTransport
) -> None:
    kv.down = True
    with pytest.raises(SecretsUnavailable, match="ServiceRequestError"):
        await secrets.start()


async def test_one_refused_secret_does_not_hold_back_the_others(
    vault: str, credential: KeyVaultCredential, clock: ManualClock
) -> None:
    kv = KeyVaultTransport()
    kv.answer("admin-key", secret(vault, "admin-key", "admin-1"))
    kv.answer("fleet-token", forbidden())
    store = make(vault, kv, credential, clock, names=("admin-key", "fleet-token"))
    try:
        await store.start()
        assert store.get("admin-key") == "admin-1"
        assert store.get("fleet-token") is None
    finally:
        await store.close()


async def test_a_name_not_listed_is_none(
    secrets: KeyVaultSecrets, kv: KeyVaultTransport, caplog: pytest.LogCaptureFixture
) -> None:
    await secrets.start()
    sent = len(kv.sent)
    assert secrets.get("api-key") is None
    assert secrets.get("api-key") is None
    assert len(kv.sent) == sent
    assert len(warnings_of(caplog, "'api-key' is not among")) == 1


async def test_close_cancels_a_refresh_in_flight(
    secrets: KeyVaultSecrets, kv: KeyVaultTransport, clock: ManualClock
) -> None:
    await secrets.start()
    kv.hold = asyncio.Event()
    clock.advance(REFRESH_S)
    secrets.get("admin-key")
    await until(lambda: kv.held == len(NAMES))
    async with asyncio.timeout(5):
        await secrets.close()
    secrets.get("admin-key")  # closed: schedules nothing
    await asyncio.sleep(0.05)
    assert kv.held == len(NAMES) and kv.reads("admin-key") == 1


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("admin-key", "admin-key"),
        ("SPILLOVER_API_KEY", "spillover-api-key"),
        ("FOUNDRY_API_KEY", "foundry-api-key"),
    ],
)
def test_vault_names(name: str, stored: str) -> None:
    assert vault_name(name) == stored


@pytest.mark.parametrize("name", ["", "a/b", "key.salt", "x" * 128, "ключ"])
def test_names_key_vault_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        vault_name(name)


def test_the_recorded_answers_are_key_vault_shaped() -> None:
    """Get Secret's body and the 404 and challenge the SDK parses."""
    from tests.adapters.azure.arm_transport import recorded

    got: dict[str, Any] = recorded("key_vault/secret_get")["body"]
    assert set(got) >= {"value", "id", "attributes"}
    assert got["id"].startswith("https://") and "/secrets/" in got["id"]
    assert recorded("key_vault/secret_not_found")["body"]["error"]["code"] == "SecretNotFound"
    challenge = recorded("key_vault/challenge")
    assert challenge["status"] == 401
    assert 'resource="https://vault.azure.net"' in challenge["headers"]["WWW-Authenticate"]
    assert TENANT in challenge["headers"]["WWW-Authenticate"]
