"""`spotgate dev` starts from a clean fleet history unless told to keep it.

The fleet journal lives in the data dir (`.spotgate/`) and outlives the
process, which is what a restarted control plane needs; but a new dev stack
inherited the last run's injected refusals and came up on on-demand ("spot
refused in 59 recent requests"). These build the dev app over a data dir whose
journal holds such a history, without serving it, and read the journal back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spotgate.adapters.local.sqlite_fleet_journal import SqliteFleetJournal
from spotgate.fleet.signals import SPOT, CapacityFailure, EvictionSignal
from spotgate.hosts.local import DevOptions, build_dev_app
from spotgate.settings import Settings

POOL = "default"
JOURNAL = "fleet-journal.sqlite3"


def write_old_run(data_dir: Path) -> None:
    """What an earlier run that refused spot everywhere and evicted a worker leaves behind."""
    with SqliteFleetJournal(data_dir / JOURNAL) as journal:
        for i in range(59):
            journal.record_capacity_failure(POOL, SPOT, None, "sku_not_available", at=100.0 + i)
        journal.record_eviction(POOL, "default-w2", "2", at=90.0)
        journal.append({"pool": POOL, "tick": 7, "reason": "spot refused in all zones"})


# keep_history -> (capacity failures, evictions, decisions) the new stack starts with
STARTS_WITH: dict[bool, tuple[int, int, int]] = {
    False: (0, 0, 0),
    True: (59, 1, 1),
}


@pytest.mark.parametrize("keep_history", sorted(STARTS_WITH))
async def test_a_dev_stack_starts_from_a_clean_fleet_history_unless_kept(
    tmp_path: Path, keep_history: bool
) -> None:
    write_old_run(tmp_path)
    settings = Settings(data_dir=tmp_path)

    app = build_dev_app(settings, DevOptions(engine="sim", keep_history=keep_history))

    runtime = app.state.runtime
    journal = runtime.journal
    try:
        assert isinstance(journal, SqliteFleetJournal)
        seen = (
            len(journal.capacity_failures(POOL, since=0.0)),
            len(journal.evictions(POOL, since=0.0)),
            len(journal.recent(10)),
        )
        assert seen == STARTS_WITH[keep_history]
    finally:
        await runtime.close()
        journal.close()


def test_the_cleared_journal_still_records_and_stays_cleared_on_disk(tmp_path: Path) -> None:
    write_old_run(tmp_path)
    with SqliteFleetJournal(tmp_path / JOURNAL) as journal:
        journal.clear()
        journal.record_eviction(POOL, "default-w2", "3", at=500.0)  # the same id, a new run
        journal.record_capacity_failure(POOL, SPOT, "1", "sku_not_available", at=501.0)
        journal.append({"pool": POOL, "tick": 1})
    with SqliteFleetJournal(tmp_path / JOURNAL) as reopened:
        assert reopened.evictions(POOL, since=0.0) == [EvictionSignal("3", 500.0)]
        assert reopened.capacity_failures(POOL, since=0.0) == [
            CapacityFailure(SPOT, "1", "sku_not_available", 501.0)
        ]
        assert [d["tick"] for d in reopened] == [1]


# command line -> DevOptions.keep_history
CLI_FLAGS: dict[str, tuple[list[str], bool]] = {
    "default": ([], False),
    "--keep-history": (["--keep-history"], True),
}


@pytest.mark.parametrize("name", sorted(CLI_FLAGS))
def test_dev_passes_keep_history_to_the_stack(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import spotgate.dev_command
    from spotgate.cli import app

    args, expected = CLI_FLAGS[name]
    seen: list[DevOptions] = []
    monkeypatch.setattr(
        spotgate.dev_command, "run_dev", lambda _console, options, **_kw: seen.append(options)
    )

    result = CliRunner().invoke(app, ["dev", "--engine", "sim", *args])

    assert result.exit_code == 0, result.output
    assert [o.keep_history for o in seen] == [expected]
