"""Simulated policies are the real fleet's config: a name and knobs an operator could deploy."""

from __future__ import annotations

import pytest

from spotgate.fleet.capacity_mix import CapacityMix
from spotgate.fleetsim.policies import (
    POLICIES,
    parse_knobs,
    policy_config,
    policy_name,
)
from spotgate.fleetsim.service_profile import ServiceProfile

PROFILE = ServiceProfile("m", "s", 256, 1000.0, 10.0, 40.0, 100.0, 60.0)


def test_every_compared_policy_is_a_registered_capacity_mix_baseline_first() -> None:
    assert POLICIES[0] == "on-demand-only"
    assert set(POLICIES) <= set(CapacityMix.names())
    for name in POLICIES:
        assert policy_config(name, PROFILE).capacity_mix == name


@pytest.mark.parametrize(
    ("alias", "mix"),
    [("hedged", "spot-hedge"), ("on-demand", "on-demand-only"), ("spot", "spot-only")],
)
def test_aliases_name_their_capacity_mix(alias: str, mix: str) -> None:
    assert policy_name(alias) == mix
    assert policy_config(alias, PROFILE).capacity_mix == mix


def test_an_unknown_policy_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no policy 'spot-last'") as caught:
        policy_name("spot-last")
    assert all(name in str(caught.value) for name in (*POLICIES, "hedged"))
    with pytest.raises(ValueError, match="spot-last"):
        policy_config("spot-last", PROFILE)


def test_defaults_aim_each_worker_at_a_sixteenth_of_its_batch_across_three_zones() -> None:
    config = policy_config("spot-first", PROFILE, max_workers=12)
    scaling = config.autoscaling
    assert scaling.target_concurrency_per_worker == 16.0  # 256 sequences / 16
    assert (scaling.min_workers, scaling.max_workers) == (1, 12)
    assert config.mix.zones == ("1", "2", "3")


def test_a_one_sequence_worker_is_still_aimed_at_one() -> None:
    tiny = ServiceProfile("m", "s", 1, 1000.0, 10.0, 10.0, 0.0, 0.0)
    assert policy_config("spot-first", tiny).autoscaling.target_concurrency_per_worker == 1.0


def test_knobs_land_in_the_autoscaler_and_the_mix() -> None:
    knobs = {
        "min_workers": 2,
        "target_concurrency_per_worker": 48,
        "overprovision_spot": 3,
        "base_on_demand": 1,
    }
    config = policy_config("hedged", PROFILE, knobs)
    assert config.autoscaling.min_workers == 2
    assert config.autoscaling.target_concurrency_per_worker == 48
    assert config.mix.overprovision_spot == 3
    assert config.mix.base_on_demand == 1
    assert config.mix.zones == ("1", "2", "3")  # untouched by knobs


def test_a_misspelt_knob_is_refused_by_name_rather_than_ignored() -> None:
    with pytest.raises(ValueError, match="unknown policy knobs: min_worker, overprovison_spot"):
        policy_config("spot-first", PROFILE, {"min_worker": 2, "overprovison_spot": 1})
    with pytest.raises(ValueError, match="zones"):
        policy_config("spot-first", PROFILE, {"zones": 1})  # not a knob: the zones are fixed


def test_knobs_that_break_the_autoscaler_are_refused() -> None:
    with pytest.raises(ValueError, match="min_workers"):
        policy_config("spot-first", PROFILE, {"min_workers": 5}, max_workers=4)


def test_knobs_parse_as_whole_numbers_where_they_are_whole() -> None:
    knobs = parse_knobs(["target_concurrency_per_worker=48", " overprovision_spot =2.0", "x=0.5"])
    assert knobs == {"target_concurrency_per_worker": 48, "overprovision_spot": 2, "x": 0.5}
    assert isinstance(knobs["overprovision_spot"], int)
    assert parse_knobs([]) == {}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("min_workers", "write it as name=value"),
        ("=3", "write it as name=value"),
        ("min_workers=two", "the value must be a number"),
    ],
)
def test_malformed_knobs_are_refused(pair: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_knobs([pair])
