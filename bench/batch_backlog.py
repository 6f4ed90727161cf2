"""A Batch API job on spot, on the local sim stack: backlog-driven scaling under chaos.

Starts `spotgate dev --engine sim --autoscale` with an empty pool, uploads a
batch with the official openai client, and once a fifth of it is answered
kills one worker and gives another a 1 s eviction notice. GET /fleet and the
batch are sampled every 0.5 s. Reports how long the batch took, how far the
pool grew for the backlog and how soon it was back at zero, and checks the
output: every line answered, each exactly once. Exit code 1 otherwise.

    .venv/bin/python bench/batch_backlog.py [--out bench/results] [--lines 5000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import openai
from autoscale_ramp import ADMIN_KEY, KEY, DevStack
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spotgate.adapters.local.process_compute import free_port
from spotgate.cli_client import auth

HERE = Path(__file__).resolve().parent
MODEL = "sim-model"
SAMPLE_S = 0.5
MAX_WORKERS = 4
DRAIN_TARGET_S = 20


def dev_command(port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "spotgate.cli", "dev", "--engine", "sim", "--autoscale"),
        *("--port", str(port), "--min-workers", "0", "--max-workers", str(MAX_WORKERS)),
        *("--scale-down-after", "2", "--idle-to-zero", "3", "--tick", "0.5"),
        *("--provision-delay", "0.5", "--tokens-per-s", "100"),
    ]


def input_file(lines: int) -> bytes:
    rows = (
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "max_tokens": 12,
                "ignore_eos": True,
                "messages": [{"role": "user", "content": f"summarise item {i}"}],
            },
        }
        for i in range(lines)
    )
    return b"\n".join(json.dumps(row).encode() for row in rows) + b"\n"


def ready_workers(stack: DevStack) -> list[str]:
    fleet = httpx.get(f"{stack.url}/fleet", headers=auth(ADMIN_KEY), timeout=5).json()
    return [w["id"] for w in fleet["workers"] if w["state"] == "ready"]


def run(stack: DevStack, lines: int, console: Console) -> dict[str, Any]:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=2)
    started = time.monotonic()
    upload = client.files.create(
        file=("lines.jsonl", io.BytesIO(input_file(lines))), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    samples: list[dict[str, Any]] = []
    chaos: dict[str, Any] = {}
    completed_at: float | None = None
    final = batch
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("batch lines", total=lines)
        while True:
            now = time.monotonic() - started
            ready = ready_workers(stack)
            current = client.batches.retrieve(batch.id)
            done = current.request_counts.completed if current.request_counts else 0
            samples.append(
                {
                    "t": round(now, 2),
                    "ready": len(ready),
                    "completed": done,
                    "status": current.status,
                }
            )
            progress.update(task, completed=done)
            if not chaos and done >= lines // 5 and len(ready) >= 2:
                killed, evicted = ready[0], ready[1]
                httpx.post(f"{stack.url}/fleet/workers/{killed}/kill", headers=auth(ADMIN_KEY))
                httpx.post(
                    f"{stack.url}/fleet/workers/{evicted}/evict",
                    headers=auth(ADMIN_KEY),
                    json={"notice_s": 1},
                )
                chaos = {"t": round(now, 2), "killed": killed, "evicted": evicted}
            if completed_at is None and current.status in {"completed", "failed", "expired"}:
                completed_at = now
                final = current
            if completed_at is not None and not ready:
                break
            if now > 600:
                raise SystemExit("the batch did not finish and scale to zero within 10 minutes")
            time.sleep(SAMPLE_S)
    output = (
        client.files.content(final.output_file_id).text.splitlines() if final.output_file_id else []
    )
    ids = [json.loads(line)["custom_id"] for line in output]
    assert final.request_counts is not None
    return {
        "batch_id": batch.id,
        "status": final.status,
        "lines": lines,
        "completed": final.request_counts.completed,
        "failed": final.request_counts.failed,
        "output_lines": len(output),
        "distinct_custom_ids": len(set(ids)),
        "error_file": final.error_file_id is not None,
        "seconds_to_complete": round(completed_at or 0.0, 1),
        "seconds_to_zero_workers": samples[-1]["t"],
        "max_ready_workers": max(s["ready"] for s in samples),
        "lines_per_s": round(lines / (completed_at or 1.0), 1),
        "chaos": chaos,
        "samples": samples,
    }


def plot(doc: dict[str, Any], path: Path) -> None:
    samples = doc["samples"]
    t = [s["t"] for s in samples]
    fig, workers = plt.subplots(figsize=(10, 4.5))
    workers.step(
        t, [s["ready"] for s in samples], where="post", color="tab:green", label="ready workers"
    )
    workers.set_ylabel("ready workers")
    workers.set_xlabel("seconds since upload")
    workers.yaxis.get_major_locator().set_params(integer=True)
    lines = workers.twinx()
    lines.plot(t, [s["completed"] for s in samples], color="tab:blue", label="lines answered")
    lines.set_ylabel("lines answered")
    if doc["chaos"]:
        workers.axvline(doc["chaos"]["t"], color="tab:red", ls="--", label="kill + eviction")
    handles = workers.get_legend_handles_labels()[0] + lines.get_legend_handles_labels()[0]
    workers.legend(handles, [str(h.get_label()) for h in handles], loc="center right")
    workers.set_title(f"{doc['lines']:,} batch lines on the sim stack, max {MAX_WORKERS} workers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(doc: dict[str, Any]) -> Table:
    view = Table(title="batch on spot (sim stack)")
    view.add_column("measure")
    view.add_column("value", justify="right")
    for key in (
        "status",
        "lines",
        "completed",
        "failed",
        "output_lines",
        "distinct_custom_ids",
        "seconds_to_complete",
        "lines_per_s",
        "max_ready_workers",
        "seconds_to_zero_workers",
    ):
        view.add_row(
            key.replace("_", " "), f"{doc[key]:,}" if isinstance(doc[key], int) else str(doc[key])
        )
    return view


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--lines", type=int, default=5000)
    args = parser.parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=160)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SPOTGATE_BATCH_DRAIN_TARGET_S"] = str(DRAIN_TARGET_S)  # the stack inherits it
    os.environ["SPOTGATE_BATCH_LINE_ESTIMATE_S"] = "0.5"
    port = free_port()
    stack = DevStack(dev_command(port), port, args.out / "batch_backlog.dev.log")
    stack.start()
    try:
        doc = run(stack, args.lines, console)
    finally:
        leftovers = stack.stop()
    command = shlex.join(["spotgate", *stack.command[3:]])
    settings = {
        "SPOTGATE_BATCH_DRAIN_TARGET_S": DRAIN_TARGET_S,
        "SPOTGATE_BATCH_LINE_ESTIMATE_S": 0.5,
    }
    doc = {"command": command, "settings": settings, **doc, "leftover_worker_pids": leftovers}
    console.print(table(doc))
    json_path, png_path = args.out / "batch_backlog.json", args.out / "batch_backlog.png"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    plot(doc, png_path)
    console.print(f"wrote {json_path}, {png_path}")
    answered_once = doc["output_lines"] == doc["distinct_custom_ids"] == doc["lines"]
    return 0 if doc["status"] == "completed" and answered_once and not leftovers else 1


if __name__ == "__main__":
    raise SystemExit(main())
