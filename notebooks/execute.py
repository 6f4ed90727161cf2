"""Run every notebook here top to bottom and save it with its outputs: `make notebooks`.

The notebooks are committed with their charts so they read on GitHub; this is
how those outputs are refreshed after a change to prices, calibrations or the
simulator. `make test` runs them too (tests/test_notebooks.py), without saving.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT_S = 600


def execute(path: Path, save: bool) -> float:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
    ).execute()
    if save:
        nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(names: list[str]) -> None:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: {execute(path, save=True):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
