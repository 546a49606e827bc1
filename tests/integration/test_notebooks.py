"""The notebooks run top to bottom in a fresh kernel, and are committed without outputs.

The kernel is this interpreter (a kernelspec written into a temp ``JUPYTER_PATH``), so the
test works in the fresh venv of ``.ci/run`` whatever kernels the machine has installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
EXPECTED = ("01_backtest.ipynb", "02_compare_models.ipynb", "03_paper_trading.ipynb")
# The paper-trading notebook is executed (and its outputs checked) in test_notebook_paper.py.
EXECUTED_HERE = [p for p in NOTEBOOKS if p.name != "03_paper_trading.ipynb"]
KERNEL = "modelyard-test"
TIMEOUT_S = 600


def test_the_notebooks_are_there() -> None:
    names = [p.name for p in NOTEBOOKS]
    for name in EXPECTED:
        assert name in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        (i, cell.get("execution_count"), len(cell.get("outputs", [])))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert dirty == [], f"{path.name}: strip the outputs (cell, execution_count, outputs)"


@pytest.fixture
def this_interpreter_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that starts ``sys.executable``, first on ``JUPYTER_PATH``."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "modelyard tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return KERNEL


@pytest.mark.slow
@pytest.mark.parametrize("path", EXECUTED_HERE, ids=lambda p: p.name)
def test_notebook_executes(path: Path, this_interpreter_kernel: str, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "run"
    workdir.mkdir()
    client = NotebookClient(
        nb,
        kernel_name=this_interpreter_kernel,
        timeout=TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)
    errors = [o for c in code_cells for o in c.outputs if o.get("output_type") == "error"]
    assert errors == []
