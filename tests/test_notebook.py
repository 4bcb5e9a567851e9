"""notebooks/homework.ipynb (homework 2.1-2.4 from Python) executes in its fast setting, shows its figures, learns,
and is stored without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import REPO

nbformat = pytest.importorskip("nbformat")  # the dev extra's; `make install` puts them in .venv
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "notebooks" / "homework.ipynb"
TIMEOUT_S = 600  # per cell; the whole fast setting takes about 4 minutes on 2 cores


def test_the_notebook_is_stored_without_outputs_and_has_a_parameter_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    (parameters,) = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert "FAST = True" in parameters.source
    assert "without outputs" in notebook.cells[0].source


@pytest.mark.slow
def test_the_notebook_runs_fast_shows_figures_and_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The kernel inherits this process's environment: this checkout's lightning_ae, the fast setting, the runs here.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("LIGHTNING_AE_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("LIGHTNING_AE_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    print(f"fast setting: {time.perf_counter() - started:.0f} s")

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert f"setting fast; lightning_ae from {REPO / 'lightning_ae'};" in text  # this checkout, not another install
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) >= 12  # reconstructions, t-SNE maps, kNN and denoising plots, pairs

    (summary_file,) = (tmp_path / "runs").glob("fast-*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["setting"] == "fast"
    basic = summary["basic_ae"]["32"]
    assert basic["bce"] < basic["pca_bce"] < basic["trivial_bce"]  # the basic AE learned: below PCA at its d'
    assert basic["knn"] > 0.9  # kNN on its codes, far above chance (0.1)
    for dae in summary["denoising"].values():  # denoising beats the noisy input and the plain AE on it
        assert dae["bce"] < dae["plain_ae_bce"] and dae["bce"] < dae["corrupted_bce"]
    assert summary["similarity"]["knn"] > 0.85
    pretraining = summary["pretraining"]["sigmoid"]
    assert all(pretraining[item] < 0.1 for item in "abc")  # each classifier learned: under 10% error (prior: 88.65%)
