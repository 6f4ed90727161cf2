"""Owner-only folders and files for local state.

`.spotgate/` holds cached responses in clear text, the worker registry, the
fleet journal, worker logs and the dev API key. With the usual umask 022
they would be world-readable (0644 in 0755 folders), so every local store
creates its folder 0700 and its files 0600, whatever the umask. The mode is
set with chmod after creation because open/mkdir modes are masked by the
umask, and files that already exist (from older versions) are tightened too.
Folders that already exist are left alone: data_dir may point at a folder
the user shares on purpose (".", a home folder), and its files are private.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path | str) -> Path:
    """Creates `path` and any missing parents as 0700; existing folders keep their mode."""
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another spotgate process was quicker
            folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(str(path))
    return path


def private_file(path: Path | str) -> Path:
    """Creates `path` (empty) if missing, in a private folder, and makes it 0600 either way."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def private_database(path: Path | str) -> str:
    """Prepares an SQLite file to be opened: the file and its side files 0600.

    SQLite creates -wal, -shm and -journal files with the database file's
    mode, so a 0600 database keeps them 0600; side files left by an older
    version are tightened here. ":memory:" is returned untouched.
    """
    name = str(path)
    if name == ":memory:":
        return name
    private_file(name)
    for suffix in _SQLITE_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):  # most of the time there is none
            os.chmod(name + suffix, FILE_MODE)
    return name
