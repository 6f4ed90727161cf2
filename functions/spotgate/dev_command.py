"""Console side of `spotgate dev`: settings, model preparation, the banner, the server loop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.rule import Rule

from spotgate.adapters.local.private_files import private_file
from spotgate.cli_client import DEV_CONNECTION_FILE
from spotgate.hosts.dev_catalogue import with_dev_catalogue
from spotgate.hosts.http import http_protocol_for
from spotgate.hosts.local import DevOptions, build_dev_app, dev_settings
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from spotgate.telemetry.access_log import ACCESS_LOGGER, JsonLineFormatter


def _write_connection_file(url: str, key: str, admin_key: str) -> None:
    """Lets `spotgate fleet` in another terminal find this stack without exporting keys;
    the admin key lives only here (mode 0600), not in the banner clients copy from."""
    fd = os.open(private_file(DEV_CONNECTION_FILE), os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "api_key": key, "admin_key": admin_key}, handle)


def _banner(url: str, key: str, model: str) -> str:
    return f"""[bold]spotgate is up[/bold]  {url}/v1   (API key below; `spotgate fleet` shows workers)

  export OPENAI_BASE_URL={url}/v1
  export OPENAI_API_KEY={key}

  Operator commands (`spotgate fleet`, /fleet, /orchestrations) take the separate admin key,
  which `spotgate` reads from .spotgate/dev.json (mode 0600); the API key above does not open them.

  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer $OPENAI_API_KEY" -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "What is the capital of France?"}}], "temperature": 0}}'

  python -c "from openai import OpenAI; c = OpenAI(); print(c.chat.completions.create(model='{model}', messages=[{{'role': 'user', 'content': 'What is the capital of France?'}}], temperature=0).choices[0].message.content)"
"""  # noqa: E501


def _prepare_smollm2(console: Console) -> Path:
    """The SmolLM2 folder; the first run's conversion (about a minute) says what it does,
    on lines that stay, rather than behind a spinner that vanishes."""
    from spotgate.engines.local_model import default_model_cache, prepare_smollm2

    with console.status("Preparing SmolLM2-135M-Instruct") as status:

        def say(message: str) -> None:
            console.print(f"  {message}", highlight=False)
            status.update(message)

        model_dir = prepare_smollm2(default_model_cache(), progress=say)
    console.print(f"model: {model_dir}")
    return model_dir


def _model_names(settings: Settings) -> str:
    """What a client may ask for, as /v1/models will list it."""
    names = []
    for entry in settings.gateway.model_catalogue:
        also = f" (also: {', '.join(entry.aliases)})" if entry.aliases else ""
        names.append(f"{entry.name}{also}")
    if settings.gateway.auto_model_name and any(
        entry.auto and entry.mode != "embedding" for entry in settings.gateway.model_catalogue
    ):
        names.append(f"{settings.gateway.auto_model_name} (the cheapest model that fits)")
    return ", ".join(names) or ", ".join(settings.models)


def log_access_to(path: Path) -> Path:
    """One JSON line per request into `path` (not the console: a bench would flood it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private_file(path)  # 0600, like everything else under .spotgate/
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    return path


def run_dev(
    console: Console,
    options: DevOptions,
    *,
    host: str,
    port: int,
    settings_overrides: dict[str, Any] | None = None,
) -> None:
    """Serves the stack `options` describes; a vllm stack gets its model folder prepared first."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    base = Settings(host=host, port=port, **(settings_overrides or {}))
    settings, key = dev_settings(base, os.environ.get("SPOTGATE_DEV_API_KEY"))
    if options.embeddings and options.engine != "vllm":
        raise SystemExit("--embeddings needs --engine vllm (sim workers answer embeddings)")
    pools = [*settings.pools, "embeddings"] if options.embeddings else settings.pools
    models = [options.model, *settings.models]
    settings = settings.model_copy(update={"models": models, "pools": pools})
    settings = with_dev_catalogue(settings, options)  # before model_dir is filled in below
    if options.engine == "vllm" and options.model_dir is None:
        options = replace(options, model_dir=_prepare_smollm2(console))
    elif options.model_dir is not None:
        console.print(f"model: {options.model_dir}")
    url = settings.base_url()
    _write_connection_file(url, key, settings.admin_key or "")
    access_log = log_access_to(settings.data_dir / "access.log")

    def on_ready(runtime: Runtime) -> None:
        console.print(Rule(style="green"))
        console.print(_banner(url, key, options.model), soft_wrap=True, highlight=False)
        console.print(f"  models: {_model_names(settings)}", highlight=False)
        console.print(Rule(style="green"))

    size = (
        f"autoscaling {options.min_workers}-{options.max_workers}"
        if options.autoscale
        else str(options.workers)
    )
    console.print(
        f"starting gateway on {url} with {size} {options.engine} worker(s); "
        f"API key: [bold]{key}[/bold]; access log (JSON lines): {access_log}"
    )
    app = build_dev_app(settings, options, on_ready)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=http_protocol_for(settings),  # httptools, with head and per-address limits
        proxy_headers=False,  # the peer is the socket's: the local IMDS trusts only loopback
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    # uvicorn re-raises the Ctrl-C it shut down for: the stack stopped cleanly, so exit 0
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
    console.print("stopped")
