"""The real gateway app with one worker registered at a given upstream, for benchmarks.

Keys and usage live where `spotgate dev` keeps them (SQLite in the data dir),
so metering writes and, for a limited key, counter transactions are measured
as a local stack pays them. `--limited-key-file` creates a virtual key with
RPM, TPM and parallel limits too high to refuse anything and writes its secret
there, so a benchmark can measure what the limits' bookkeeping costs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

import uvicorn

from spotgate.adapters.http_upstream import AiohttpUpstream
from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.api.app import create_app
from spotgate.clock import SystemClock
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.tenancy.directory import KeyDirectory
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.hosts.http import http_protocol_for
from spotgate.hosts.local import local_secrets, local_tenancy
from spotgate.settings import Settings


async def create_limited_key(settings: Settings, salt: Callable[[], str | None]) -> str:
    directory = KeyDirectory(local_tenancy(settings).keys, SystemClock(), salt)
    await directory.reload()
    _, key = await directory.create("bench-limited", rpm=10**9, tpm=10**12, max_parallel=10**5)
    await directory.close()
    return key


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--key", default="sk-bench")
    parser.add_argument("--client", choices=("aiohttp", "pooled"), default="pooled")
    parser.add_argument("--data-dir", default=None, help="Where the SQLite stores live.")
    parser.add_argument("--limited-key-file", type=Path, default=None)
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
    secrets = local_secrets(settings)
    if args.limited_key_file is not None:
        salt = functools.partial(secrets.get, "key-salt")
        args.limited_key_file.write_text(asyncio.run(create_limited_key(settings, salt)))
    parts = build_gateway(
        settings,
        InMemoryWorkerStore(),
        upstream=upstream,
        secrets=secrets,
        tenancy_stores=local_tenancy(settings),
    )
    runtime = assemble_runtime(parts)
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
