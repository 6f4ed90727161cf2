"""What `make dev` / `spotgate dev` show and do on the way up, outside the stack itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

import spotgate.engines.local_model
from spotgate.dev_command import _prepare_smollm2

REPO = Path(__file__).resolve().parents[1]


def test_the_model_conversion_says_what_it_is_doing_on_lines_that_stay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def converting(cache_dir: Path, *, progress: object) -> Path:
        assert callable(progress)
        progress("Converting SmolLM2-135M-Instruct.Q4_1.gguf (once; about a minute)")
        progress("Dequantising the weights")
        return tmp_path

    monkeypatch.setattr(spotgate.engines.local_model, "prepare_smollm2", converting)
    console = Console(record=True, width=200)
    assert _prepare_smollm2(console) == tmp_path
    shown = console.export_text()
    assert "Converting SmolLM2-135M-Instruct.Q4_1.gguf (once; about a minute)" in shown
    assert "Dequantising the weights" in shown
    assert f"model: {tmp_path}" in shown


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_dev_installs_no_npm_packages() -> None:
    """The Azure emulators are for the tests; `make dev` must not wait a minute for them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    planned = subprocess.run(
        ["make", "-n", "-B", "dev"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "spotgate dev" in planned and "pip install" in planned
    assert "npm" not in planned
