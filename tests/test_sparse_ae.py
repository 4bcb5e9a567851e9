"""A variant takes its model file, its config and this test: the sparse AE trains through `lightning-ae fit`,
gets every evaluation, and its penalty does what it is for (more code units at exactly zero)."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO

from lightning_ae.cli import main
from lightning_ae.data import ImageDataModule
from lightning_ae.models import SparseAutoencoder

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

# The evaluation fragment's callbacks, on fewer points (seconds, not a minute).
EVALUATION = """
trainer:
  callbacks+:
    - {class_path: lightning_ae.callbacks.KNNEvaluator, init_args: {k: 10}}
    - class_path: lightning_ae.callbacks.PCABaseline
    - {class_path: lightning_ae.callbacks.TSNEPlot, init_args: {max_points: 300}}
    - {class_path: lightning_ae.callbacks.EmbeddingProjector, init_args: {max_items: 300}}
"""


def test_the_sparse_ae_trains_through_the_cli_and_gets_every_evaluation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evaluation.yaml").write_text(EVALUATION)
    files = [REPO / "configs" / "basic_ae.yaml", REPO / "configs" / "sparse_ae.yaml", tmp_path / "evaluation.yaml"]
    argv = ["fit", *[arg for path in files for arg in ("--config", str(path))]]
    argv += ["--data.train_subset", "1000", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    assert main(argv) == 0
    [run] = tmp_path.glob("lightning_logs/SparseAutoencoder-*/version_0")
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "SparseAutoencoder" and results["status"] == "tested"
    assert {"test/knn_acc", "test/bce_per_pixel", "test/mse_per_image"} <= set(results["ae"]) & set(results["pca"])
    assert 0 <= results["ae"]["test/code_zero_fraction"] <= 1
    assert results["learned"]["learned"] is not None
    for picture in ("tsne.png", "pca_tsne.png", "reconstructions.png"):
        assert (run / picture).stat().st_size > 0, picture
    assert list(run.glob("projector/*/sprite.png")) or list(run.glob("**/sprite.png"))


def zero_fraction(sparsity: float) -> float:
    torch.manual_seed(0)
    model = SparseAutoencoder(
        sparsity=sparsity, code_dim=64, activation="relu", optimizer=lambda p: torch.optim.Adam(p, lr=3e-3)
    )
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    datamodule = ImageDataModule(train_subset=2000, batch_size=128)
    trainer.fit(model, datamodule=datamodule)
    [metrics] = trainer.test(model, datamodule=datamodule, verbose=False)
    return metrics["test/code_zero_fraction"]


def test_the_penalty_makes_the_code_sparser():
    assert zero_fraction(3e-3) > zero_fraction(0.0) + 0.1


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), "a lot"])
def test_a_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        SparseAutoencoder(sparsity=bad)
