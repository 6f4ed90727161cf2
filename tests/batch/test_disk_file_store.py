"""What only the disk file store promises beyond the contract (test_file_store_contract.py):
the safety a shared machine needs (owner-only files, no id that reaches outside its
folder) and files that outlive the process."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from spotgate.adapters.local.disk_file_store import DiskFileStore
from spotgate.batch.objects import FileObject, new_file_id

CONTENT = '{"custom_id":"é"}\r\n{"custom_id":"日本"}\n'.encode()


def a_file(owner: str = "key-a", created_at: int = 100, purpose: str = "batch") -> FileObject:
    return FileObject(new_file_id(), owner, len(CONTENT), created_at, "in.jsonl", purpose)


async def test_disk_files_are_owner_only(tmp_path: Path) -> None:
    store = DiskFileStore(tmp_path / "files")
    file = a_file()
    await store.create(file, CONTENT)
    await store.close()
    assert stat.S_IMODE((tmp_path / "files" / file.id).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "files").stat().st_mode) == 0o700


@pytest.mark.parametrize("crafted", ["../secret", "/etc/passwd", "file-../../x", "file-a/b", ""])
async def test_a_crafted_id_never_reaches_outside_the_folder(tmp_path: Path, crafted: str) -> None:
    (tmp_path / "secret").write_bytes(b"do not read")
    store = DiskFileStore(tmp_path / "files")
    try:
        assert await store.get(crafted) is None
        with pytest.raises(KeyError):
            await store.read(crafted)
        with pytest.raises(KeyError):
            await store.read_range(crafted, 0, 5)
        assert await store.delete(crafted) is False
        with pytest.raises(ValueError):
            await store.create(FileObject(crafted, "key-a", 1, 1, "x", "batch"), b"x")
    finally:
        await store.close()
    assert (tmp_path / "secret").read_bytes() == b"do not read"


async def test_disk_files_survive_a_restart(tmp_path: Path) -> None:
    file = a_file()
    first = DiskFileStore(tmp_path / "files")
    await first.create(file, CONTENT)
    await first.close()
    second = DiskFileStore(tmp_path / "files")
    try:
        assert await second.get(file.id) == file
        assert await second.read(file.id) == CONTENT
    finally:
        await second.close()
