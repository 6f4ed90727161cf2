"""VllmLaunch and wait_healthy without vLLM: stand-in processes and a stub /health."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spotgate.engines.vllm_engine import EngineStartError, VllmLaunch, wait_healthy
from tests.conftest import free_port


def test_command_serves_the_folder_on_loopback(tmp_path: Path) -> None:
    launch = VllmLaunch(model_dir=tmp_path, port=8123, extra_args=["--seed", "1"])
    command = launch.command()
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(command[3::2], command[4::2], strict=False))
    assert pairs["--model"] == str(tmp_path)
    assert pairs["--served-model-name"] == "smollm2"
    assert pairs["--host"] == "127.0.0.1" and pairs["--port"] == "8123"
    assert pairs["--max-model-len"] == "2048" and pairs["--dtype"] == "float32"
    assert "--enforce-eager" in command and command[-2:] == ["--seed", "1"]
    assert launch.base_url == "http://127.0.0.1:8123"


def test_env_is_offline_quiet_and_sizes_the_kv_cache(tmp_path: Path) -> None:
    env = VllmLaunch(model_dir=tmp_path, port=1, kv_cache_gib=2, extra_env={"X": "1"}).env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["DO_NOT_TRACK"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["X"] == "1"


@pytest.fixture
def health_server() -> Iterator[str]:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_returns_once_health_answers(health_server: str) -> None:
    assert await wait_healthy(health_server, timeout_s=5) < 5


async def test_fails_fast_with_exit_code_and_log_when_the_process_dies(tmp_path: Path) -> None:
    log_path = tmp_path / "engine.log"
    with log_path.open("wb") as log:
        # An asyncio process, as `spotgate worker` starts vLLM (Popen is the fixture's case).
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "print('no such model folder'); raise SystemExit(3)",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineStartError, match=r"(?s)exited with code 3.*no such model folder"):
        await asyncio.wait_for(wait_healthy(url, 60, process, log_path), timeout=10)


async def test_times_out_naming_the_last_problem() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineStartError, match=r"not healthy after 1 s \(Connect"):
        await wait_healthy(url, 1, interval_s=0.1)
