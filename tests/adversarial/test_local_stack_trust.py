"""The local stack as a user runs it: what its workers hold, and what happens to a frozen one."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ADMIN_KEY, KEY, Stack, sim_stack, wait_until

pytestmark = [pytest.mark.adversarial, pytest.mark.integration]

SPILLOVER_SECRET = "sk-managed-endpoint-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"FOUNDRY_API_KEY": SPILLOVER_SECRET, "SPOTGATE_API_KEYS": '["sk-second-tenant"]'}
    with sim_stack(tmp_path_factory.mktemp("trust"), workers=2, env=env) as running:
        yield running


def worker_pid(stack: Stack, worker_id: str) -> int:
    """The `spotgate worker` process of this stack serving `worker_id`."""
    port = stack.url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if (
                b"worker" in argv
                and worker_id.encode() in argv
                and any(a.endswith(f":{port}".encode()) for a in argv)
            ):
                return int(entry.name)
    raise AssertionError(f"no process for {worker_id}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "stat").read_text().split()[2] != "Z"
    return False


def test_workers_hold_the_fleet_token_and_no_other_secret(stack: Stack) -> None:
    for worker in stack.workers("ready"):
        environ = (Path("/proc") / str(worker_pid(stack, worker["id"])) / "environ").read_bytes()
        assert b"SPOTGATE_FLEET_TOKEN=" in environ
        for secret in (ADMIN_KEY, KEY, "sk-second-tenant", SPILLOVER_SECRET):
            assert secret.encode() not in environ, f"{worker['id']} can read {secret[:8]}..."


def test_a_frozen_worker_is_replaced_and_its_vm_deleted(stack: Stack) -> None:
    victim = stack.workers("ready")[0]["id"]
    pid = worker_pid(stack, victim)
    os.killpg(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        wait_until(
            lambda: (stack_states(stack).get(victim) or ("gone", "deleted"))[1].startswith(
                "deleted"
            ),
            timeout_s=30,
            what=f"{victim} to be retired by the monitor",
        )
        wait_until(lambda: len(stack.workers("ready")) == 2, 30, "the replacement to be ready")
        wait_until(lambda: not alive(pid), 30, f"{victim}'s process to be deleted")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    assert victim not in {w["id"] for w in stack.workers("ready")}
    time.sleep(2)  # had it come back, it would have re-registered by now
    assert victim not in {w["id"] for w in stack.workers("ready")}
    assert time.monotonic() - frozen_at < 60


def stack_states(stack: Stack) -> dict[str, tuple[str, str]]:
    return {w["id"]: (w["state"], w.get("reason") or "") for w in stack.workers()}
