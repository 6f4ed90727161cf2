"""What only the SQLite batch store promises beyond the contract
(test_batch_store_contract.py): batches outlive the process."""

from __future__ import annotations

from pathlib import Path

from spotgate.adapters.local.sqlite_batch_store import SqliteBatchStore
from spotgate.batch.objects import BatchObject


def a_batch(batch_id: str, owner: str = "key-a", created_at: int = 100) -> BatchObject:
    expires_at = created_at + 86_400
    return BatchObject(
        batch_id, owner, "/v1/chat/completions", "file-1", "24h", created_at, expires_at
    )


async def test_sqlite_batches_survive_a_restart(tmp_path: Path) -> None:
    first = SqliteBatchStore(tmp_path / "batches.sqlite3")
    await first.put(a_batch("batch_1"))
    await first.close()
    second = SqliteBatchStore(tmp_path / "batches.sqlite3")
    try:
        assert await second.get("batch_1") == a_batch("batch_1")
    finally:
        await second.close()
