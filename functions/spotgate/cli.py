"""The `spotgate` command: run the stack, run one worker, and operate a running stack."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from spotgate.cli_client import GroupOptionsAnywhere, StackClient, render_fleet
from spotgate.journal_command import fleet_export
from spotgate.keys_command import keys_app
from spotgate.prices_command import prices_app
from spotgate.serve_command import serve
from spotgate.simulate_command import simulate
from spotgate.usage_command import usage

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
fleet_app = typer.Typer(
    cls=GroupOptionsAnywhere,
    help="Look at and poke the worker fleet of a running stack. "
    "--url and --json may come before or after the subcommand.",
)
app.add_typer(fleet_app, name="fleet")
app.add_typer(keys_app, name="keys")
app.add_typer(prices_app, name="prices")
app.command("usage")(usage)
app.command("simulate")(simulate)
app.command("serve")(serve)
# piped output (scripts, tests) is not cut to 80 columns
console = Console() if sys.stdout.isatty() else Console(width=200)

# no envvar here: cli_client.resolve_connection reads SPOTGATE_URL, so --url wins over it
UrlOption = Annotated[
    str,
    typer.Option(
        help="Base URL of a running stack (default: SPOTGATE_URL, else the nearest "
        ".spotgate/dev.json's, else http://127.0.0.1:8000).",
    ),
]


EngineArgOption = Annotated[
    list[str] | None,
    typer.Option(
        "--engine-arg",
        help="vllm: one more flag for vLLM's server, repeatable, e.g. "
        "--engine-arg=--enable-auto-tool-choice --engine-arg=--tool-call-parser=hermes.",
    ),
]


def _engine_args(values: list[str] | None, engine: str) -> list[str]:
    """Checked before anything starts, so a bad flag is a usage error, not a dead worker."""
    from spotgate.engines.vllm_engine import engine_args

    if values and engine != "vllm":
        raise typer.BadParameter("only --engine vllm takes engine flags", param_hint="--engine-arg")
    try:
        return engine_args(values or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--engine-arg") from None


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=0, help="Workers to start.")] = 2,
    engine: Annotated[str, typer.Option(help="vllm (real, CPU) or sim (simulator).")] = "vllm",
    model: Annotated[
        str, typer.Option(help="Served model name (default: smollm2; sim: sim-model).")
    ] = "",
    model_dir: Annotated[
        Path | None,
        typer.Option(help="vllm: serve this Hugging Face model folder instead of SmolLM2."),
    ] = None,
    engine_arg: EngineArgOption = None,
    ttft_ms: Annotated[float, typer.Option(help="sim: time to first token.")] = 20.0,
    tokens_per_s: Annotated[float, typer.Option(help="sim: decode speed.")] = 200.0,
    max_concurrency: Annotated[int, typer.Option(help="sim: concurrent sequences.")] = 16,
    embeddings: Annotated[
        bool, typer.Option(help="vllm: also run an embedding worker (all-MiniLM-L6-v2).")
    ] = False,
    autoscale: Annotated[
        bool, typer.Option(help="Scale the pool with load between --min/--max-workers.")
    ] = False,
    min_workers: Annotated[int, typer.Option(min=0, help="--autoscale: smallest pool.")] = 0,
    max_workers: Annotated[int, typer.Option(min=1, help="--autoscale: largest pool.")] = 4,
    target_concurrency: Annotated[
        float | None, typer.Option(help="--autoscale: requests per worker to aim for.")
    ] = None,
    scale_down_after: Annotated[
        float, typer.Option(help="--autoscale: seconds of lower load before shrinking.")
    ] = 30.0,
    idle_to_zero: Annotated[
        float, typer.Option(help="--autoscale: idle seconds before scaling to zero.")
    ] = 60.0,
    evictions_per_hour: Annotated[
        float, typer.Option(help="Random spot evictions per worker-hour (0: none).")
    ] = 0.0,
    eviction_notice: Annotated[float, typer.Option(help="Notice per eviction, seconds.")] = 30.0,
    provision_delay: Annotated[
        float, typer.Option(help="Seconds a new worker takes to 'boot' before it starts.")
    ] = 0.0,
    tick: Annotated[float, typer.Option(help="Fleet monitor tick, seconds.")] = 2.0,
    keep_history: Annotated[
        bool,
        typer.Option(
            "--keep-history",
            help="Keep earlier runs' evictions, spot refusals and decisions (.spotgate/).",
        ),
    ] = False,
) -> None:
    """Run gateway, control plane, fleet monitor and N workers on this machine."""
    from spotgate.dev_command import run_dev
    from spotgate.hosts.local import DevOptions

    if engine not in ("vllm", "sim"):
        raise typer.BadParameter("use vllm or sim", param_hint="--engine")
    extra = _engine_args(engine_arg, engine)
    if model_dir is not None:
        if engine != "vllm":
            raise typer.BadParameter(
                "only --engine vllm serves a model folder", param_hint="--model-dir"
            )
        if not (model_dir / "config.json").is_file():
            raise typer.BadParameter(
                f"{model_dir} has no config.json: give a Hugging Face model folder",
                param_hint="--model-dir",
            )
    options = DevOptions(
        workers=workers,
        engine=engine,
        model=model or _default_model(engine, model_dir),
        model_dir=model_dir.resolve() if model_dir is not None else None,
        engine_args=extra,
        ttft_ms=ttft_ms,
        tokens_per_s=tokens_per_s,
        max_concurrency=max_concurrency,
        embeddings=embeddings,
        autoscale=autoscale,
        min_workers=min_workers,
        max_workers=max_workers,
        target_concurrency=target_concurrency,
        scale_down_after_s=scale_down_after,
        idle_to_zero_s=idle_to_zero,
        keep_history=keep_history,
    )
    run_dev(
        console,
        options,
        host=host,
        port=port,
        settings_overrides={
            "local_evictions_per_hour": evictions_per_hour,
            "local_eviction_notice_s": eviction_notice,
            "local_provision_delay_s": provision_delay,
            "monitor_tick_s": tick,
        },
    )


def _default_model(engine: str, model_dir: Path | None) -> str:
    if engine == "sim":
        return "sim-model"
    return model_dir.resolve().name if model_dir is not None else "smollm2"


@app.command()
def worker(
    engine: Annotated[str, typer.Option(help="sim or vllm.")] = "sim",
    model: Annotated[str, typer.Option(help="Served model name.")] = "sim-model",
    pool: Annotated[str, typer.Option(help="Pool this worker belongs to.")] = "default",
    host: str = "127.0.0.1",
    port: int = 8001,
    worker_id: Annotated[str, typer.Option(help="Worker (VM) name.")] = "",
    control_plane: Annotated[
        str, typer.Option(envvar="SPOTGATE_CONTROL_PLANE_URL", help="Control plane URL.")
    ] = "http://127.0.0.1:8000",
    imds_url: Annotated[str, typer.Option(help="Instance metadata base URL.")] = "",
    heartbeat_interval: float = 2.0,
    model_dir: Annotated[Path | None, typer.Option(help="vllm: model folder.")] = None,
    ttft_ms: float = 20.0,
    tokens_per_s: float = 200.0,
    max_concurrency: int = 16,
    cpu_cores: Annotated[
        str | None, typer.Option(help="vllm: CPU cores for its threads, e.g. '1' or '0-3'.")
    ] = None,
    pooling: Annotated[
        bool, typer.Option(help="vllm: serve an embedding (pooling) model.")
    ] = False,
    priority: Annotated[str, typer.Option(help="spot or on-demand (reported to the fleet).")] = (
        "spot"
    ),
    zone: Annotated[str | None, typer.Option(help="Availability zone (reported).")] = None,
    engine_arg: EngineArgOption = None,
) -> None:
    """Run one engine and its agent (used by `dev`, and the model for the VM image)."""
    from spotgate.worker_process import WorkerOptions, run_worker

    extra = _engine_args(engine_arg, engine)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    options = WorkerOptions(
        engine=engine,
        model=model,
        pool=pool,
        host=host,
        port=port,
        worker_id=worker_id or f"{os.uname().nodename}-{port}",
        control_plane=control_plane,
        imds_url=imds_url or None,
        heartbeat_interval_s=heartbeat_interval,
        model_dir=model_dir,
        ttft_ms=ttft_ms,
        tokens_per_s=tokens_per_s,
        max_concurrency=max_concurrency,
        cpu_cores=cpu_cores,
        pooling=pooling,
        priority=priority,
        zone=zone,
        engine_args=extra,
    )
    raise typer.Exit(asyncio.run(run_worker(options)))


@app.command("prepare-model")
def prepare_model(
    cache_dir: Annotated[Path | None, typer.Option(help="Where converted models live.")] = None,
) -> None:
    """Convert the packaged SmolLM2-135M-Instruct weights into a folder vLLM serves (once)."""
    from spotgate.engines.local_model import default_model_cache, prepare_smollm2

    with console.status("Preparing SmolLM2-135M-Instruct") as status:
        path = prepare_smollm2(cache_dir or default_model_cache(), progress=status.update)
    console.print(f"model ready: {path}")


@fleet_app.callback(invoke_without_command=True)
def fleet(
    ctx: typer.Context,
    url: UrlOption = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False,
) -> None:
    """Show every worker: id, state, engine, model, in-flight, last heartbeat."""
    ctx.obj = StackClient(url)
    ctx.meta["json"] = as_json
    if ctx.invoked_subcommand is not None:
        return
    status = ctx.obj.call("GET", "/fleet")
    if as_json:
        console.print_json(json.dumps(status))
    else:
        render_fleet(console, status)


def _as_json(ctx: typer.Context, result: Any) -> bool:
    """Prints `result` and says so when `--json` was given (before or after the subcommand)."""
    if not ctx.meta.get("json"):
        return False
    console.print_json(json.dumps(result))
    return True


@fleet_app.command("kill")
def fleet_kill(ctx: typer.Context, worker_id: str) -> None:
    """Crash a local worker without notice (SIGKILL of its process group)."""
    result = ctx.obj.call("POST", f"/fleet/workers/{worker_id}/kill")
    if not _as_json(ctx, result if result is not None else {"killed": worker_id}):
        console.print(f"killed [bold]{worker_id}[/bold]")


@fleet_app.command("evict")
def fleet_evict(
    ctx: typer.Context,
    worker_id: str,
    notice: Annotated[float, typer.Option(help="Seconds of notice (Azure gives 30).")] = 30.0,
) -> None:
    """Give a local worker a spot eviction notice through its fake Scheduled Events endpoint."""
    event: dict[str, Any] = ctx.obj.call(
        "POST", f"/fleet/workers/{worker_id}/evict", {"notice_s": notice}
    )
    if not _as_json(ctx, event):
        console.print(
            f"eviction scheduled for [bold]{worker_id}[/bold]: event {event.get('EventId')}, "
            f"not before {event.get('NotBefore')}"
        )


@fleet_app.command("spot")
def fleet_spot(
    ctx: typer.Context,
    available: Annotated[
        bool, typer.Option("--available/--unavailable", help="Grant or refuse spot capacity.")
    ],
    zone: Annotated[str | None, typer.Option(help="Only this zone (default: every zone).")] = None,
) -> None:
    """Local stack: make spot capacity unavailable (or available again), to watch the fallback."""
    result: dict[str, Any] = ctx.obj.call(
        "POST", "/fleet/spot", {"available": available, "zone": zone}
    )
    if not _as_json(ctx, result):
        refused = ", ".join(result.get("refused_zones") or []) or "none"
        console.print(f"spot refused in: [bold]{refused}[/bold] ('*' = every zone)")


fleet_app.command("export")(fleet_export)


@app.command()
def bench(
    url: UrlOption = "",
    key: Annotated[
        str, typer.Option(help="API key (default: SPOTGATE_API_KEY, else dev.json's).")
    ] = "",
    model: Annotated[str, typer.Option(help="Model (default: smollm2, else the first).")] = "",
    concurrency: Annotated[int, typer.Option(min=1, help="Closed-loop clients.")] = 8,
    duration: Annotated[float, typer.Option(min=0.001, help="Seconds to run.")] = 30.0,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Send exactly N requests instead of --duration.")
    ] = None,
    stream: Annotated[bool, typer.Option(help="Stream answers (measures TTFT).")] = True,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens per request.")] = 64,
    prompt: Annotated[str, typer.Option(help="User message (a nonce is added).")] = "",
    ramp: Annotated[
        str, typer.Option(help='Schedule "clients:seconds,..." e.g. "4:10,16:20,2:30".')
    ] = "",
    cacheable: Annotated[
        bool, typer.Option(help="Identical temperature-0 requests the cache may answer.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.001, help="Per-request timeout, s.")] = 120.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Load a running stack with chat requests; report latency, TTFT and errors (1 on any error)."""
    from spotgate.bench_command import DEFAULT_PROMPT, BenchOptions, bench_main, parse_ramp

    try:
        steps = parse_ramp(ramp)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ramp") from None
    options = BenchOptions(
        url=url,
        model=model,
        key=key or None,
        concurrency=concurrency,
        duration_s=duration,
        requests=requests,
        stream=stream,
        max_tokens=max_tokens,
        prompt=prompt or DEFAULT_PROMPT,
        ramp=steps,
        cacheable=cacheable,
        timeout_s=timeout,
    )
    raise typer.Exit(bench_main(console, options, json_path))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
