"""The real gateway app with one worker registered at a given upstream, for benchmarks."""

from __future__ import annotations

import argparse

import uvicorn

from spotgate.adapters.http_upstream import AiohttpUpstream
from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.hosts.http import http_protocol_for
from spotgate.settings import Settings

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--key", default="sk-bench")
    parser.add_argument("--client", choices=("aiohttp", "pooled"), default="pooled")
    parser.add_argument("--data-dir", default=None, help="Where the SQLite response cache lives.")
    args = parser.parse_args()
    settings = Settings(
        api_keys=[args.key],
        admin_key=args.key,
        fleet_token=args.key,
        **({"data_dir": args.data_dir} if args.data_dir else {}),
    )
    client = PooledHttpUpstream if args.client == "pooled" else AiohttpUpstream
    upstream = client(
        connect_timeout_s=settings.gateway.upstream_connect_timeout_s,
        read_timeout_s=settings.gateway.upstream_read_timeout_s,
    )
    runtime = build_runtime(settings, InMemoryWorkerStore(), upstream=upstream)
    runtime.registry.register(
        "zero", pool="default", model=args.model, engine="zero", url=args.upstream
    )
    uvicorn.run(
        create_app(runtime),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=http_protocol_for(settings),  # what `spotgate dev` serves with
        log_level="warning",
        access_log=False,
    )
