"""Fixtures for the batch stores' contract suites: the emulators the adapter tests use.

The same session-scoped servers as tests/adapters (Azurite queue and blob,
@vercel/cosmosdb-server), started on free loopback ports and stopped by pid.
"""

from __future__ import annotations

from tests.adapters.azure.conftest import azurite_blob, azurite_queue
from tests.adapters.conftest import cosmos_server

__all__ = ["azurite_blob", "azurite_queue", "cosmos_server"]
