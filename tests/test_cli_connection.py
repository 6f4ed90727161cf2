"""Which stack `spotgate fleet` / `bench` talk to, with which key, however the user types it.

A fake stack on loopback records what reaches it, so each test asserts what the
user's command really sent: the URL it went to and the Authorization it carried.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from spotgate.cli import app
from spotgate.cli_client import (
    DEFAULT_URL,
    ConnectionProblem,
    hoist_options,
    resolve_connection,
)
from tests.conftest import serve_asgi

ENV_NAMES = ("SPOTGATE_URL", "SPOTGATE_ADMIN_KEY", "SPOTGATE_API_KEY", "SPOTGATE_DEV_API_KEY")


@dataclass
class FakeStack:
    url: str
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


@pytest.fixture
def stack() -> Iterator[FakeStack]:
    seen: list[tuple[str, str, str | None]] = []

    async def record(request: Request) -> JSONResponse:
        seen.append((request.method, request.url.path, request.headers.get("authorization")))
        if request.headers.get("authorization") is None:
            return JSONResponse({"error": {"message": "Missing or invalid API key."}}, 401)
        if request.url.path.endswith("/kill"):
            return JSONResponse({"killed": request.path_params["worker"]})
        return JSONResponse({"workers": [], "pools": []})

    routes = [
        Route("/fleet", record),
        Route("/fleet/workers/{worker}/kill", record, methods=["POST"]),
    ]
    with serve_asgi(Starlette(routes=routes)) as url:
        yield FakeStack(url, seen)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SPOTGATE_* variables, and a cwd two folders below the dev stack's root."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    nested = tmp_path / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    return tmp_path


def write_dev_file(root: Path, url: str, admin_key: str = "sk-admin") -> None:
    (root / ".spotgate").mkdir(exist_ok=True)
    record = {"url": url, "api_key": "sk-api", "admin_key": admin_key}
    (root / ".spotgate" / "dev.json").write_text(json.dumps(record))


def fleet(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["fleet", *args], env=env)
    return result.exit_code, result.output


def test_url_precedence_is_option_then_env_then_dev_file_then_default(clean_env: Path) -> None:
    assert resolve_connection().url == DEFAULT_URL
    write_dev_file(clean_env, "http://127.0.0.1:9001/")
    found = resolve_connection()
    assert (found.url, found.source) == (
        "http://127.0.0.1:9001",
        str(clean_env / ".spotgate" / "dev.json"),
    )
    env = {"SPOTGATE_URL": "http://127.0.0.1:9002"}
    assert resolve_connection(env=env).url == "http://127.0.0.1:9002"
    assert resolve_connection("http://127.0.0.1:9003", env=env).url == "http://127.0.0.1:9003"


def test_the_dev_files_keys_go_only_to_the_stack_it_names(clean_env: Path) -> None:
    write_dev_file(clean_env, "http://127.0.0.1:9001")
    local = resolve_connection()
    assert (local.admin_key, local.api_key) == ("sk-admin", "sk-api")
    assert resolve_connection("http://localhost:9001").admin_key == "sk-admin"  # same stack
    elsewhere = resolve_connection("https://gateway.example.com")
    assert (elsewhere.admin_key, elsewhere.api_key) == (None, None)
    exported = resolve_connection("https://gateway.example.com", env={"SPOTGATE_ADMIN_KEY": "k"})
    assert exported.admin_key == "k"


@pytest.mark.parametrize("bad", ["localhost:8000", "127.0.0.1", "ftp://host", "http://"])
def test_a_url_that_is_not_one_is_refused_by_name(clean_env: Path, bad: str) -> None:
    with pytest.raises(ConnectionProblem, match="--url"):
        resolve_connection(bad)
    with pytest.raises(ConnectionProblem, match="SPOTGATE_URL"):
        resolve_connection(env={"SPOTGATE_URL": bad})
    code, output = fleet("--url", bad)
    assert code == 2 and "not a URL" in output


def test_fleet_from_a_subfolder_uses_the_dev_files_url_and_admin_key(
    clean_env: Path, stack: FakeStack
) -> None:
    write_dev_file(clean_env, stack.url)
    code, output = fleet("--json")
    assert code == 0, output
    assert json.loads(output) == {"workers": [], "pools": []}
    assert stack.seen == [("GET", "/fleet", "Bearer sk-admin")]


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "{url}", "kill", "w1"],
        ["kill", "w1", "--url", "{url}"],
        ["kill", "--url={url}", "w1"],
    ],
)
def test_url_works_before_or_after_the_subcommand(
    clean_env: Path, stack: FakeStack, args: list[str]
) -> None:
    code, output = fleet(*(a.format(url=stack.url) for a in args), env={"SPOTGATE_ADMIN_KEY": "k"})
    assert code == 0, output
    assert "killed w1" in output
    assert stack.seen == [("POST", "/fleet/workers/w1/kill", "Bearer k")]


def test_json_after_the_subcommand_prints_the_answer(clean_env: Path, stack: FakeStack) -> None:
    code, output = fleet(
        "kill", "w1", "--url", stack.url, "--json", env={"SPOTGATE_ADMIN_KEY": "k"}
    )
    assert code == 0, output
    assert json.loads(output) == {"killed": "w1"}


def test_url_given_twice_is_an_error_not_a_guess(clean_env: Path, stack: FakeStack) -> None:
    code, output = fleet("--url", stack.url, "kill", "w1", "--url", "http://127.0.0.1:1")
    assert code == 2 and "more than once" in output
    assert stack.seen == []


def test_another_stack_gets_no_local_key_and_the_error_says_why(
    clean_env: Path, stack: FakeStack
) -> None:
    write_dev_file(clean_env, "http://127.0.0.1:9")  # a dev stack, but not this one
    code, output = fleet("kill", "w1", "--url", stack.url)
    assert code == 1
    assert stack.seen == [("POST", "/fleet/workers/w1/kill", None)]
    assert "SPOTGATE_ADMIN_KEY" in output


def test_hoisting_leaves_what_follows_a_double_dash_alone() -> None:
    takes = {"--url": True, "--json": False}
    commands = {"kill", "evict"}
    assert hoist_options(["kill", "w", "--url", "U"], takes, commands) == [
        "--url",
        "U",
        "kill",
        "w",
    ]
    assert hoist_options(["--json", "kill", "w"], takes, commands) == ["--json", "kill", "w"]
    assert hoist_options(["kill", "--", "--url"], takes, commands) == ["kill", "--", "--url"]
    assert hoist_options(["--url", "kill", "kill", "w"], takes, commands) == [
        "--url",
        "kill",
        "kill",
        "w",
    ]  # a URL that looks like a subcommand is still the value of --url
