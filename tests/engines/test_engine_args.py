"""`--engine-arg`: vLLM flags from `spotgate dev` through `spotgate worker` to vLLM's command line.

The chain is followed as the processes run it: the dev command's options, the
worker command line the local compute provider starts, that command parsed by
`spotgate worker`, and the vLLM command the worker would exec.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

import spotgate.dev_command
import spotgate.worker_process
from spotgate.cli import app
from spotgate.engines.vllm_engine import engine_args
from spotgate.hosts.local import DevOptions, _worker_args
from spotgate.worker_process import WorkerOptions, vllm_launch

TOOLS = ["--engine-arg=--enable-auto-tool-choice", "--engine-arg=--tool-call-parser=hermes"]


def dev_options(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, list[DevOptions]]:
    seen: list[DevOptions] = []
    monkeypatch.setattr(
        spotgate.dev_command, "run_dev", lambda _console, options, **_kw: seen.append(options)
    )
    result = CliRunner().invoke(app, ["dev", *args])
    return result.exit_code, result.output, seen


def worker_options(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> WorkerOptions:
    seen: list[WorkerOptions] = []

    async def fake_run(options: WorkerOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(spotgate.worker_process, "run_worker", fake_run)
    result = CliRunner().invoke(app, ["worker", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_tool_calling_flags_reach_the_vllm_command_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, output, [options] = dev_options(
        monkeypatch, *TOOLS, "--engine-arg=--chat-template-content-format 'string'"
    )
    assert code == 0, output
    options.model_dir = tmp_path / "weights with a space"  # what run_dev fills in
    # as LocalProcessCompute starts it: the spec's engine and model, then the pool's args
    head = ["--engine", "vllm", "--model", options.model]
    spawned = worker_options(monkeypatch, [*head, *_worker_args(options, 0)])
    command = vllm_launch(spawned).command()
    assert command[-4:] == [
        "--enable-auto-tool-choice",
        "--tool-call-parser=hermes",
        "--chat-template-content-format",
        "string",
    ]
    pairs = dict(itertools.pairwise(command))
    assert pairs["--model"] == str(tmp_path / "weights with a space")
    assert pairs["--served-model-name"] == "smollm2"


def test_a_users_flag_comes_after_the_workers_default_so_it_wins(tmp_path: Path) -> None:
    options = WorkerOptions(
        engine="vllm", model="m", pool="p", host="127.0.0.1", port=1, worker_id="w",
        control_plane="http://cp", imds_url=None, heartbeat_interval_s=1, model_dir=tmp_path,
        engine_args=["--max-model-len", "8192"],
    )  # fmt: skip
    command = vllm_launch(options).command()
    assert command.index("8192") > command.index("2048")


@pytest.mark.parametrize(
    ("flag", "owned"),
    [
        ("--port=9000", "--port"),
        ("--host 0.0.0.0", "--host"),
        ("--model /elsewhere", "--model"),
        ("--served_model_name=x", "--served-model-name"),
        ("--serv=x", "--served-model-name"),  # argparse would take the abbreviation
        ("--api-key=secret", "--api-key"),
    ],
)
def test_flags_the_worker_owns_are_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, flag: str, owned: str
) -> None:
    with pytest.raises(ValueError, match=f"sets {owned} itself"):
        engine_args([flag])
    code, output, seen = dev_options(monkeypatch, f"--engine-arg={flag}")
    assert code == 2 and seen == []
    assert owned in output


@pytest.mark.parametrize(
    ("values", "problem"),
    [([""], "empty"), (["hermes"], "no flag before it"), (["--chat-template 'x"], "quotation")],
)
def test_malformed_engine_args_say_what_is_wrong(values: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        engine_args(values)


def test_flags_the_worker_does_not_own_pass_as_written() -> None:
    given = ["--max-model-len=4096", "--tool-call-parser hermes", "--model-impl=vllm"]
    assert engine_args(given) == [
        "--max-model-len=4096",
        "--tool-call-parser",
        "hermes",
        "--model-impl=vllm",
    ]


def test_the_sim_engine_takes_no_engine_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    code, output, seen = dev_options(monkeypatch, "--engine", "sim", *TOOLS)
    assert code == 2 and seen == [] and "--engine vllm" in output


def test_a_model_folder_without_a_config_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, output, seen = dev_options(monkeypatch, "--model-dir", str(tmp_path))
    assert code == 2 and seen == [] and "config.json" in output
    (tmp_path / "config.json").write_text("{}")
    code, output, [options] = dev_options(monkeypatch, "--model-dir", str(tmp_path))
    assert code == 0, output
    assert (options.model_dir, options.model) == (tmp_path.resolve(), tmp_path.resolve().name)
