"""`spotgate simulate` as a user runs it: JSON for scripts, a table to read, clean refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from spotgate.cli import app
from spotgate.costs.price_table import PRICE_COLUMNS
from spotgate.fleetsim.policies import POLICIES
from spotgate.simulate_command import DEFAULT_PROFILE

A100 = "Standard_NC24ads_A100_v4"


def simulate(*args: str) -> Result:
    return CliRunner().invoke(app, ["simulate", *args])


def flat(text: str) -> str:
    """The output with the error console's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def round_prices(tmp_path: Path) -> Path:
    """Spot at a quarter of on-demand, dated long ago so any run date finds it."""
    path = tmp_path / "prices.csv"
    path.write_text(
        ",".join(PRICE_COLUMNS) + f"\n2020-01-01,eastus,{A100},1,1.00,4.00,test prices\n"
    )
    return path


def test_one_policy_as_json_reports_cost_against_on_demand_and_the_slo() -> None:
    result = simulate(
        "--trace", "poisson", "--rate", "2", "--minutes", "5", "--policy", "spot-first", "--json"
    )
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["trace"] == "poisson 2/s"
    assert document["profile"] == DEFAULT_PROFILE
    assert document["targets"] == {"ttft_s": 2.0, "tpot_s": 0.1}
    assert abs(document["requests"] - 600) < 5 * 600**0.5  # 2 a second for 5 minutes
    [run] = document["runs"]
    assert (run["policy"], run["scenario"], run["requests"]) == (
        "spot-first",
        "typical",
        document["requests"],
    )
    assert run["cost_usd"] > 0
    assert run["on_demand_only_cost_usd"] > run["cost_usd"]
    assert run["cost_vs_on_demand"] == pytest.approx(
        run["cost_usd"] / run["on_demand_only_cost_usd"]
    )
    assert 0.0 <= run["slo_ttft"] <= 1.0
    assert "timeline" not in run


def test_compare_runs_every_policy_prints_a_table_and_writes_the_json(
    round_prices: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs.json"
    result = simulate(
        "--compare", "--scenario", "calm", "--minutes", "3", "--trace", "poisson",
        "--prices", str(round_prices), "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert [r["policy"] for r in runs] == list(POLICIES)
    assert {r["scenario"] for r in runs} == {"calm"}
    share = {r["policy"]: r["cost_vs_on_demand"] for r in runs}
    assert share["on-demand-only"] == 1.0
    # in calm weather spot runs the baseline's fleet at a quarter of its price
    assert share["spot-only"] == pytest.approx(0.25)
    assert share["spot-first"] == pytest.approx(0.25)
    assert 0.25 <= share["spot-hedge"] < 1.0  # the same, plus a spare spot worker
    for policy in POLICIES:
        assert policy in result.stdout
    assert "25% of on-demand-only" in flat(result.stdout)


def test_an_unknown_policy_exits_2_naming_the_valid_ones() -> None:
    result = simulate("--policy", "spot-last", "--trace", "poisson", "--minutes", "1")
    assert result.exit_code == 2
    message = flat(result.output)
    assert "no policy 'spot-last'" in message
    assert all(name in message for name in (*POLICIES, "hedged"))
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_policy_and_compare_together_are_refused() -> None:
    result = simulate("--compare", "--policy", "spot-first", "--trace", "poisson")
    assert result.exit_code == 2
    assert "give --policy or --compare, not both" in flat(result.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "stormy"], "no scenario 'stormy': one of calm, typical, bad-day"),
        (["--profile", "gpt-5@Standard_X"], "no calibration 'gpt-5@Standard_X'"),
        (["--start-minute", "500"], "no requests in the chosen window"),
        (["--set", "min_workers"], "write it as name=value"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(args: list[str], message: str) -> None:
    result = simulate("--trace", "poisson", "--minutes", "1", *args)
    assert result.exit_code == 2
    assert message in flat(result.output)


def test_a_misspelt_knob_exits_2_naming_it() -> None:
    result = simulate("--trace", "poisson", "--minutes", "1", "--set", "min_worker=2")
    assert result.exit_code == 2
    assert "min_worker" in flat(result.output)
