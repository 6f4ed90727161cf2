"""Worker calibrations: a number the simulator obeys must say where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spotgate.costs.price_table import PriceTable
from spotgate.fleetsim.service_profile import ServiceProfile, load_profile, packaged_profiles

NUMERIC = (
    "max_concurrency",
    "prefill_tokens_per_s",
    "decode_tokens_per_s_single",
    "decode_tokens_per_s_max",
    "ttft_base_ms",
    "boot_to_ready_s",
)


def document(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": "m",
        "sku": "local-sim",
        "max_concurrency": 8,
        "prefill_tokens_per_s": 1000.0,
        "decode_tokens_per_s_single": 10.0,
        "decode_tokens_per_s_max": 40.0,
        "ttft_base_ms": 100.0,
        "boot_to_ready_s": 30.0,
        "sources": {name: f"measured {name} here" for name in NUMERIC},
    }
    data |= overrides
    return data


def test_there_are_packaged_profiles_for_the_default_and_the_local_stacks() -> None:
    names = packaged_profiles()
    assert "llama-3.1-8b@Standard_NC24ads_A100_v4" in names  # `spotgate simulate`'s default
    assert "sim-model@local-sim" in names


@pytest.mark.parametrize("name", packaged_profiles())
def test_every_packaged_profile_loads_and_cites_a_source_for_every_number(name: str) -> None:
    profile = load_profile(name)
    assert profile.key == name
    for field in NUMERIC:
        assert profile.sources.get(field, "").strip(), f"{name}: {field} has no source"


@pytest.mark.parametrize("name", packaged_profiles())
def test_every_packaged_profile_runs_on_a_priced_sku(name: str) -> None:
    """A calibration whose SKU has no price could not be costed by a simulation."""
    assert PriceTable.load().knows(load_profile(name).sku)


def test_a_profile_file_is_loaded_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(document()))
    profile = load_profile(path)
    assert (profile.key, profile.max_concurrency, profile.ttft_base_ms) == ("m@local-sim", 8, 100)
    assert ServiceProfile.from_dict(profile.to_dict()) == profile


def test_a_number_without_a_source_is_refused_by_name(tmp_path: Path) -> None:
    data = document()
    del data["sources"]["ttft_base_ms"]
    path = tmp_path / "unsourced.json"
    path.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"unsourced\.json: no source given for \['ttft_base_ms'\]"
    ):
        load_profile(path)


def test_a_profile_without_sources_is_refused_naming_every_number() -> None:
    data = document()
    del data["sources"]
    with pytest.raises(ValueError, match="no source given") as caught:
        ServiceProfile.from_dict(data)
    assert all(name in str(caught.value) for name in NUMERIC)


def test_a_missing_or_unknown_field_is_refused_by_name() -> None:
    data = document()
    del data["boot_to_ready_s"]
    with pytest.raises(ValueError, match=r"missing fields \['boot_to_ready_s'\]"):
        ServiceProfile.from_dict(data)
    with pytest.raises(ValueError, match=r"unknown fields \['gpu_count'\]"):
        ServiceProfile.from_dict(document(gpu_count=8))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_concurrency", 0, "max_concurrency must be positive"),
        ("prefill_tokens_per_s", -1.0, "prefill_tokens_per_s must be positive"),
        ("ttft_base_ms", -5.0, "must be >= 0"),
        ("decode_tokens_per_s_max", 5.0, "batch rate cannot be below one stream's"),
    ],
)
def test_impossible_numbers_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceProfile.from_dict(document(**{field: value}))


def test_an_unknown_profile_name_lists_the_packaged_ones() -> None:
    with pytest.raises(ValueError, match="no calibration 'gpt-5@Standard_X'") as caught:
        load_profile("gpt-5@Standard_X")
    assert all(name in str(caught.value) for name in packaged_profiles())
