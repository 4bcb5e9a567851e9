"""A diverging run stops at once, says where and what to try, and records no metric values."""

from __future__ import annotations

import json

from conftest import REPO

from lightning_ae.cli import main

DIVERGING = [
    "--model.init_args.activation", "linear",
    "--model.init_args.output_activation", "linear",
    "--model.init_args.loss", "mse",
    "--model.init_args.optimizer.lr", "100",
]  # fmt: skip


def test_a_diverging_fit_stops_with_the_epoch_step_and_advice(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", str(REPO / "configs" / "basic_ae.yaml"), "--data.train_subset", "640"]
    argv += ["--trainer.max_epochs", "3", "--data.group_batches", "1", *DIVERGING]
    assert main(argv) == 3
    assert "training diverged at epoch 0, step" in caplog.text and "lower learning rate" in caplog.text
    [results_file] = tmp_path.glob("lightning_logs/*/version_0/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "diverged" and results["diverged"]["epoch"] == 0
    assert results["diverged"]["step"] < 20  # stopped within the first epoch of 20 steps, not at its end
    assert results["ae"] == {} and results["pca"] == {}  # no metric values, never a NaN
    assert all(value is None for value in results["last_epoch"].values())
