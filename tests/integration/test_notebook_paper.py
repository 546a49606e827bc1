"""notebooks/03_paper_trading.ipynb runs top to bottom against the emulator (its outputs are
checked stripped in test_notebooks.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_paper_trading.ipynb"
KERNEL = "modelyard-paper-test"


@pytest.mark.slow
def test_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    # a kernelspec for this interpreter, so the fresh venv of .ci/run works as it is
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "modelyard", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=180, allow_errors=False,
        resources={"metadata": {"path": str(run_dir)}},
    )  # fmt: skip
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "".join(
        o.get("text", "") + json.dumps(o.get("data", {})) for c in code for o in c.outputs
    )
    assert "equity.csv" in text
    assert "total_return" in text
    assert "filled" in text
