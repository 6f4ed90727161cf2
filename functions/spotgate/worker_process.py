"""`spotgate worker`: one inference engine plus its agent, living and dying together.

The agent is `worker_image/agent.py`, the same stdlib file the GPU VMs run,
so the local stack exercises the real registration, heartbeat and eviction
code. If either half exits the other is stopped, so the compute provider
sees one process group that is either whole or gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spotgate.engines.vllm_engine import VllmLaunch

log = logging.getLogger("spotgate.worker")


def agent_script() -> Path:
    configured = os.environ.get("SPOTGATE_AGENT_SCRIPT")
    if configured:
        return Path(configured)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root / "worker_image" / "agent.py"


@dataclass
class WorkerOptions:
    engine: str
    model: str
    pool: str
    host: str
    port: int
    worker_id: str
    control_plane: str
    imds_url: str | None
    heartbeat_interval_s: float
    model_dir: Path | None = None
    ttft_ms: float = 20.0
    tokens_per_s: float = 200.0
    max_concurrency: int = 16
    cpu_cores: str | None = None
    pooling: bool = False
    priority: str = "spot"
    zone: str | None = None
    engine_args: list[str] = field(default_factory=list)
    """Extra vLLM flags (already checked by `engines.vllm_engine.engine_args`)."""


def _agent_command(options: WorkerOptions) -> list[str]:
    engine_url = f"http://{options.host}:{options.port}"
    command = [
        sys.executable,
        str(agent_script()),
        "--control-plane",
        options.control_plane,
        "--worker-id",
        options.worker_id,
        "--pool",
        options.pool,
        "--model",
        options.model,
        "--engine",
        options.engine,
        "--engine-url",
        engine_url,
        "--heartbeat-interval",
        str(options.heartbeat_interval_s),
        "--priority",
        options.priority,
    ]
    if options.zone:
        command += ["--zone", options.zone]
    if options.imds_url:
        command += ["--imds-url", options.imds_url]
    return command


async def _serve_sim(options: WorkerOptions) -> None:
    import uvicorn

    from spotgate.engines.sim import SimConfig, create_sim_app

    config = SimConfig(
        model=options.model,
        ttft_ms=options.ttft_ms,
        tokens_per_s=options.tokens_per_s,
        max_concurrency=options.max_concurrency,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_sim_app(config),
            host=options.host,
            port=options.port,
            loop="none",
            http="httptools",
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    # run_worker owns SIGTERM/SIGINT (it stops the agent too); uvicorn must not take them over
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    await server.serve()


def vllm_launch(options: WorkerOptions) -> VllmLaunch:
    """How this worker runs vLLM: its folder, served name, address, and the user's flags
    last, so a flag the worker does not own (say --max-model-len) overrides its default."""
    from spotgate.engines.vllm_engine import VllmLaunch

    if options.model_dir is None:
        raise SystemExit("--model-dir is required with --engine vllm")
    pooling: dict[str, Any] = {}
    extra_args = list(options.engine_args)
    if options.pooling:
        from spotgate.engines.embedding_model import vllm_pooling_args

        pooling = {"dtype": "float32", "max_model_len": 256}
        extra_args = [*vllm_pooling_args(), *extra_args]
    return VllmLaunch(
        model_dir=options.model_dir,
        served_model_name=options.model,
        host=options.host,
        port=options.port,
        extra_args=extra_args,
        **pooling,
        extra_env={"VLLM_CPU_OMP_THREADS_BIND": options.cpu_cores} if options.cpu_cores else {},
    )


async def _start_vllm(options: WorkerOptions) -> asyncio.subprocess.Process:
    launch = vllm_launch(options)
    return await asyncio.create_subprocess_exec(
        *launch.command(), env={**os.environ, **launch.env()}, stdin=asyncio.subprocess.DEVNULL
    )


async def run_worker(options: WorkerOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    engine_task: asyncio.Future[object]
    vllm: asyncio.subprocess.Process | None = None
    if options.engine == "sim" and options.engine_args:
        raise SystemExit("--engine-arg is for --engine vllm; the sim engine takes none")
    if options.engine == "sim":
        engine_task = asyncio.ensure_future(_serve_sim(options))
    elif options.engine == "vllm":
        vllm = await _start_vllm(options)
        engine_task = asyncio.ensure_future(vllm.wait())
    else:
        raise SystemExit(f"unknown engine {options.engine!r}; use sim or vllm")

    agent = await asyncio.create_subprocess_exec(
        *_agent_command(options), stdin=asyncio.subprocess.DEVNULL
    )
    agent_task = asyncio.ensure_future(agent.wait())
    stop_task = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(
        {engine_task, agent_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
    )
    exit_code = 0
    if engine_task in done:
        log.error("engine exited; stopping the agent")
        exit_code = 1
    elif agent_task in done:
        log.error("agent exited with %s; stopping the engine", agent.returncode)
        exit_code = 1

    for process in (agent, vllm):
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
    engine_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await engine_task
    return exit_code
