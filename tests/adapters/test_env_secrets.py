"""EnvSecrets (the local SecretStore) and StaticSecrets (the tests' one)."""

from __future__ import annotations

import pytest

from spotgate.adapters.local.env_secrets import EnvSecrets, env_name
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, KEY_SALT, SecretStore, StaticSecrets

ENVIRON = {
    "SPOTGATE_ADMIN_KEY": "admin-from-env",
    "SPOTGATE_FLEET_TOKEN": "fleet-from-env",
    "SPOTGATE_KEY_SALT": "salt-from-env",
    "FOUNDRY_API_KEY": "foundry",
    "spillover-api-key": "literal",
    "API_KEY": "",
}


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        (ADMIN_KEY, "SPOTGATE_ADMIN_KEY"),
        (FLEET_TOKEN, "SPOTGATE_FLEET_TOKEN"),
        (KEY_SALT, "SPOTGATE_KEY_SALT"),
        ("foundry-api-key", "FOUNDRY_API_KEY"),
        ("FOUNDRY_API_KEY", "FOUNDRY_API_KEY"),
    ],
)
def test_env_names(name: str, variable: str) -> None:
    assert env_name(name) == variable


def test_the_three_gateway_secrets_read_their_spotgate_variables() -> None:
    secrets = EnvSecrets(ENVIRON)
    assert secrets.get("admin-key") == "admin-from-env"
    assert secrets.get("fleet-token") == "fleet-from-env"
    assert secrets.get("key-salt") == "salt-from-env"


def test_a_spillover_key_reads_its_variable_by_either_spelling() -> None:
    secrets = EnvSecrets(ENVIRON)
    assert secrets.get("FOUNDRY_API_KEY") == "foundry"
    assert secrets.get("foundry-api-key") == "foundry"
    assert secrets.get("spillover-api-key") == "literal", "no SPILLOVER_API_KEY: the literal name"


def test_absent_or_empty_is_none() -> None:
    secrets = EnvSecrets(ENVIRON)
    assert secrets.get("nothing-here") is None
    assert secrets.get("api-key") is None, "an empty variable is no secret"
    assert EnvSecrets({}).get("admin-key") is None


def test_overrides_win_and_the_environment_is_read_live() -> None:
    environ = dict(ENVIRON)
    secrets = EnvSecrets(environ, overrides={"admin-key": "generated", "key-salt": "salt"})
    assert secrets.get("admin-key") == "generated"
    assert secrets.get("key-salt") == "salt"
    environ["SPOTGATE_FLEET_TOKEN"] = "rotated"
    assert secrets.get("fleet-token") == "rotated"


async def test_both_are_secret_stores() -> None:
    stores: list[SecretStore] = [EnvSecrets(ENVIRON), StaticSecrets({"admin-key": "k"})]
    for store in stores:
        await store.refresh()
        await store.close()
    assert stores[1].get("admin-key") == "k"
    assert stores[1].get("fleet-token") is None
