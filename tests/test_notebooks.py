"""The committed notebooks run clean top to bottom against the package as it is now.

They are the users' cost analysis: a notebook that fails after a change to the
simulator or the price table is a broken product, so each runs here in a real
kernel, and its charts must still come out.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("cost_analysis.ipynb", "fleet_simulation.ipynb", "usage_report.ipynb")


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_clean_and_draws_its_charts(name: str) -> None:
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert images(committed) > 0, f"{name} was committed without its charts: run `make notebooks`"
    fresh = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(
        fresh, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    assert images(fresh) >= images(committed)


def test_notebooks_import_spotgate_rather_than_defining_logic() -> None:
    """No function or class lives only in a notebook: the package is where logic is tested."""
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
        assert "from spotgate" in code, name
        assert "\nclass " not in f"\n{code}", f"{name} defines a class"
