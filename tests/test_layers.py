"""The layering the architecture promises, checked on the code as written.

core (gateway/, fleet/) <- adapters, orchestrations, engines <- api <- hosts <- CLI and
the Functions entry point. A module may import its own layer and the ones inside it,
never one outside; adapters never import the runtime or the settings; the HTTP app
does not pull in the Durable Functions SDK; routes stay a parse and a call.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "functions" / "spotgate"

LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("gateway", "fleet", "costs", "errors", "clock", "named_policy", "background",
         "secret_store", "table_export", "time_window", "telemetry", "batch")),
    (1, ("adapters", "orchestrations", "engines", "settings", "fleetsim")),
    (2, ("api", "runtime")),
    (3, ("hosts",)),
    (4, ("cli", "cli_client", "dev_command", "bench_command", "bench_requests", "bench_stats",
         "worker_process", "journal_command", "keys_command", "usage_command",
         "prices_command", "simulate_command", "serve_command")),
]  # fmt: skip


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for rank, names in LAYERS:
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        if name != "spotgate":
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every spotgate module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("spotgate."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spotgate."))
    return found


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_runs_outward(module: str) -> None:
    path = modules()[module]
    rank = layer_of(module)
    outward = [m for m in imports_of(path) if layer_of(m) > rank]
    assert outward == [], f"{module} (layer {rank}) imports outer layers: {outward}"


@pytest.mark.parametrize("module", sorted(m for m in modules() if ".adapters." in m))
def test_adapters_import_neither_the_runtime_nor_the_settings(module: str) -> None:
    bad = {"spotgate.runtime", "spotgate.settings"} & imports_of(modules()[module])
    assert not bad, f"{module} imports {bad}: hosts hand adapters what they need"


def test_the_http_app_does_not_load_the_durable_sdk() -> None:
    code = "import sys, spotgate.api.app; print('azure.durable_functions' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.endswith("_routes")))
def test_route_functions_stay_short(module: str) -> None:
    """A route parses and calls one object; anything longer belongs in the core."""
    tree = ast.parse(modules()[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 25, f"{module}.{node.name} is {length} lines"
