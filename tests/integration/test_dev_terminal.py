"""`spotgate dev` as a user runs it in two terminals: the operator's commands from another
folder of the checkout, with nothing exported, then Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import sim_stack

pytestmark = pytest.mark.integration


def test_a_second_terminal_finds_the_stack_and_ctrl_c_ends_it_cleanly(tmp_path: Path) -> None:
    nested = tmp_path / "notebooks" / "scratch"
    nested.mkdir(parents=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith("SPOTGATE_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "spotgate.cli", *args]
        return subprocess.run(
            command, cwd=nested, env=env, capture_output=True, text=True, timeout=30
        )

    with sim_stack(tmp_path, workers=1) as stack:
        shown = cli("fleet", "--json")
        assert shown.returncode == 0, shown.stderr
        [worker] = json.loads(shown.stdout)["workers"]
        killed = cli("fleet", "kill", worker["id"], "--url", stack.url, "--json")
        assert killed.returncode == 0, killed.stderr
        assert json.loads(killed.stdout) == {"killed": worker["id"]}
    assert stack.process.returncode == 0, "Ctrl-C is how the stack ends: not an error"
    log = stack.log.read_text()
    assert "stopped" in log
    assert "failed its health probe" not in log
