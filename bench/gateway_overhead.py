"""What the gateway adds to a request, and what a cache hit costs (zero-delay upstream).

Runs the real gateway (default settings: SQLite response cache on) pinned to
one core and the upstream plus wrk on the other. A sampled request
(temperature 0.7) is never cached, so it measures the forwarding path; its
latency percentiles are compared with calling the upstream directly
(several runs, one connection). A deterministic request (temperature 0) is a
cache hit after the first, so it measures the cache-hit path. A third pass
sends the sampled request with a virtual key that has RPM, TPM and parallel
limits (too high to refuse): what the limits' shared counters cost.

    make bench                      # or: .venv/bin/python bench/gateway_overhead.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from spotgate.adapters.local.process_compute import free_port

HERE = Path(__file__).resolve().parent
KEY = "sk-bench"


def body(temperature: float) -> str:
    return json.dumps(
        {
            "model": "bench-model",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": temperature,
            "max_tokens": 16,
        }
    )


BODY = body(0.7)  # sampled: never cached, always forwarded
HIT_BODY = body(0)  # deterministic: a cache hit after the first request


def lua(payload: str, key: str = KEY) -> str:
    return f"""
wrk.method = "POST"
wrk.body = [[{payload}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def pinned(core: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *command]
    return command


def start(command: list[str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.post(url, content=BODY, headers={"Authorization": f"Bearer {KEY}"}, timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server did not come up: {' '.join(command)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(10)


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        pinned(
            1,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        if match:
            result[f"p{pct}_ms"] = float(match.group(1)) * UNITS[match.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client", choices=("aiohttp", "pooled"), default="pooled")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gateway_overhead.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    console = Console()
    upstream_port, gateway_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    direct = f"{upstream_url}/v1/chat/completions"
    through = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    upstream = start(
        pinned(1, [sys.executable, str(HERE / "zero_upstream.py"), "--port", str(upstream_port)]),
        direct,
    )
    data_dir = tempfile.mkdtemp(prefix="spotgate-bench-")
    key_file = Path(data_dir) / "limited-key"
    gateway = start(
        pinned(
            0,
            [
                sys.executable,
                str(HERE / "gateway_server.py"),
                "--data-dir",
                data_dir,
                "--port",
                str(gateway_port),
                "--upstream",
                upstream_url,
                "--client",
                args.client,
                "--limited-key-file",
                str(key_file),
            ],
        ),
        through,
    )
    rows: list[dict[str, float]] = []
    try:
        scripts = {}
        limited_key = key_file.read_text().strip()
        for name, text in (
            ("forward", lua(BODY)),
            ("hit", lua(HIT_BODY)),
            ("limited", lua(BODY, limited_key)),
        ):
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
                handle.write(text)
            scripts[name] = Path(handle.name)
        script, hit_script = scripts["forward"], scripts["hit"]
        limited_script = scripts["limited"]
        wrk(through, script, 8, 2)  # warm-up: connection pools, lazy imports
        wrk(through, hit_script, 1, 1)  # stores the deterministic answer
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("benchmarking", total=args.runs)
            for _ in range(args.runs):
                d = wrk(direct, script, 1, args.seconds)
                g = wrk(through, script, 1, args.seconds)
                t = wrk(through, script, args.connections, args.seconds)
                h = wrk(through, hit_script, 1, args.seconds)
                ht = wrk(through, hit_script, args.connections, args.seconds)
                lg = wrk(through, limited_script, 1, args.seconds)
                lt = wrk(through, limited_script, args.connections, args.seconds)
                rows.append(
                    {
                        "direct_p50_ms": d["p50_ms"],
                        "direct_p99_ms": d["p99_ms"],
                        "gateway_p50_ms": g["p50_ms"],
                        "gateway_p99_ms": g["p99_ms"],
                        "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                        "added_p99_ms": g["p99_ms"] - d["p99_ms"],
                        "gateway_rps_one_core": t["rps"],
                        "cache_hit_p50_ms": h["p50_ms"],
                        "cache_hit_p99_ms": h["p99_ms"],
                        "cache_hit_rps_one_core": ht["rps"],
                        "limited_key_added_p50_ms": lg["p50_ms"] - d["p50_ms"],
                        "limited_key_added_p99_ms": lg["p99_ms"] - d["p99_ms"],
                        "limited_key_rps_one_core": lt["rps"],
                        "errors": sum(r["errors"] for r in (d, g, t, h, ht, lg, lt)),
                    }
                )
                progress.advance(task)
    finally:
        stop(gateway)
        stop(upstream)
    table = Table(
        title="gateway vs a zero-delay upstream: latency at 1 connection, rps at "
        f"{args.connections} connections, gateway pinned to one core"
    )
    table.add_column("metric")
    for i in range(len(rows)):
        table.add_column(f"run {i + 1}", justify="right")
    table.add_column("median", justify="right", style="bold")
    summary = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        summary[key] = statistics.median(values)
        fmt = "{:.0f}" if key.endswith("rps_one_core") or key == "errors" else "{:.3f}"
        table.add_row(key, *(fmt.format(v) for v in values), fmt.format(summary[key]))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": rows, "median": summary}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
