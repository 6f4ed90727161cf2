"""Mixed chat traffic from three virtual keys against a local `spotgate dev --engine sim` stack.

Made the sample export in this folder (see README.md). Usage, from the folder
the stack runs in (it reads the keys from key-<name>.json, each the output of
`spotgate keys create <name> --json`):

    SPOTGATE_URL=http://127.0.0.1:PORT python traffic.py 150 60

sends for 150 s and evicts default-w1 (30 s notice) 60 s in, with the CLI.
Only 127.0.0.1 is called.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

URL = os.environ["SPOTGATE_URL"].rstrip("/")
assert URL.startswith("http://127.0.0.1:"), "local stacks only"
MODEL = "sim-model"
CLIENTS = {"team-a": 2, "team-b": 2, "batch": 3}
"""Closed-loop clients per key; team-a is limited to 30 requests a minute."""
PAUSE_S = {"team-a": 0.8, "team-b": 1.2, "batch": 0.6}
CACHEABLE = "What is the capital of France?"
TOPICS = ["spot pricing", "GPU scheduling", "tokenizers", "KV caches", "autoscaling", "Parquet"]


def body(rng: random.Random, stream: bool) -> dict[str, object]:
    if rng.random() < 0.2:  # identical temperature-0 requests the cache may answer
        return {
            "model": MODEL,
            "messages": [{"role": "user", "content": CACHEABLE}],
            "temperature": 0,
            "max_tokens": 24,
            "stream": stream,
        }
    words = rng.randint(5, 120)
    prompt = f"Explain {rng.choice(TOPICS)} in {words} words. " + "context " * rng.randint(0, 200)
    request: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": rng.choice([16, 32, 64, 128, 256]),
        "temperature": 0.7,
        "stream": stream,
    }
    if stream and rng.random() < 0.5:
        request["stream_options"] = {"include_usage": True}
    return request


async def client(name: str, key: str, seed: int, until: float, seen: Counter[str]) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=URL, headers=headers, timeout=60) as http:
        while time.monotonic() < until:
            stream = rng.random() < 0.5
            request = body(rng, stream)
            try:
                if not stream:
                    reply = await http.post("/v1/chat/completions", json=request)
                    seen[f"{name} {reply.status_code}"] += 1
                else:
                    cut = rng.random() < 0.03  # a client that hangs up mid-stream
                    async with http.stream("POST", "/v1/chat/completions", json=request) as reply:
                        events = 0
                        async for line in reply.aiter_lines():
                            events += line.startswith("data:")
                            if cut and events >= 3:
                                break
                    seen[f"{name} {reply.status_code}{' cut' if cut else ''}"] += 1
            except httpx.HTTPError as error:
                seen[f"{name} {type(error).__name__}"] += 1
            await asyncio.sleep(rng.uniform(0, 2 * PAUSE_S[name]))


async def evict_later(delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    command = ["spotgate", "fleet", "evict", "default-w1", "--notice", "30"]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    print("evict:", done.returncode, done.stdout.strip(), done.stderr.strip(), flush=True)


async def main(keys: dict[str, str], duration_s: float, evict_at_s: float) -> None:
    until = time.monotonic() + duration_s
    seen: Counter[str] = Counter()
    tasks = [
        client(name, keys[name], seed=100 * i + j, until=until, seen=seen)
        for i, (name, count) in enumerate(CLIENTS.items())
        for j in range(count)
    ]
    await asyncio.gather(evict_later(evict_at_s), *tasks)
    for outcome, count in sorted(seen.items()):
        print(f"{outcome}: {count}")


if __name__ == "__main__":
    keys = {n: json.loads(Path(f"key-{n}.json").read_text())["key"] for n in CLIENTS}
    asyncio.run(main(keys, float(sys.argv[1]), float(sys.argv[2])))
