"""A diverging run stops at once, says where and what to try, and records no metric values."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from lightning_ae.cli import main

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

# The homework's SGD (batch 32: 20 steps per epoch on 640 images): Adam's steps are bounded by its lr, SGD's are not.
DIVERGING = [
    "--config", str(REPO / "configs" / "fragments" / "homework_sgd.yaml"),
    "--model.init_args.activation", "linear",
    "--model.init_args.output_activation", "linear",
    "--model.init_args.loss", "mse",
    "--model.init_args.optimizer.lr", "100",
]  # fmt: skip


def test_a_diverging_fit_stops_with_the_epoch_step_and_advice(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", str(REPO / "configs" / "basic_ae.yaml"), "--data.train_subset", "640"]
    argv += ["--trainer.max_epochs", "3", *DIVERGING]
    assert main(argv) == 3
    assert "training diverged at epoch 0, step" in caplog.text and "lower learning rate" in caplog.text
    [results_file] = tmp_path.glob("lightning_logs/*/version_0/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "diverged" and results["diverged"]["epoch"] == 0
    assert results["diverged"]["step"] < 20  # stopped within the first epoch of 20 steps, not at its end
    assert results["ae"] == {} and results["pca"] == {}  # no metric values, never a NaN
    assert all(value is None for value in results["last_epoch"].values())


def test_a_study_reports_a_diverged_run_as_diverged_and_keeps_it_out_of_the_tables(tmp_path, monkeypatch):
    from lightning_ae.study.report import write_report
    from lightning_ae.study.runner import run_study
    from lightning_ae.study.spec import load_study

    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "diverge.yaml"
    study_file.write_text(
        f"""
name: diverge
every_run:
  trainer.max_epochs: 2
  data.train_subset: 640
  data.batch_size: 32
  model.init_args.optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 1.0}}}}
  model.init_args.scheduler: null
  model.init_args.activation: linear
  model.init_args.output_activation: linear
  model.init_args.loss: mse
callbacks:
  TSNEPlot: {{max_points: 200}}
  EmbeddingProjector: {{max_items: 200}}
experiments:
  basic_ae:
    config: {REPO / "configs" / "basic_ae.yaml"}
    grid:
      model.init_args.optimizer.init_args.lr: [0.01, 100]
"""
    )
    study = load_study(study_file)
    outcome = run_study(study, tmp_path / "study")
    assert len(outcome["ran"]) == 2 and not outcome["failed"]  # a diverged run is finished, not failed
    markdown, _ = write_report(study, tmp_path / "study", tmp_path / "report")
    text = markdown.read_text()
    assert "| diverged run | where and why |" in text
    [diverged_row] = [line for line in text.splitlines() if line.startswith("| basic_ae[lr=100]")]
    assert "training diverged at epoch 0" in diverged_row
    assert "nan" not in text.lower()
    # The tables hold only the run that trained: had the diverged one been averaged in, rows would read "mean ± std".
    assert "| linear | 32 | 24.5 | 95.9% | - | - |" in text and "±" not in text


def test_an_explosion_that_stays_finite_is_divergence_too(tmp_path, monkeypatch, capsys):
    """Adam at lr 1e6: the loss stays finite (a BCE of about a million per pixel) but ends far above the
    trivial predictor's (the mean training image, 0.26): diverged, exit 3, no test, no metric values."""
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", str(REPO / "configs" / "basic_ae.yaml"), "--data.train_subset", "640"]
    argv += ["--trainer.max_epochs", "2", "--model.init_args.optimizer.init_args.lr", "1e6"]
    assert main(argv) == 3
    [results_file] = tmp_path.glob("lightning_logs/*/version_0/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "diverged" and results["diverged"]["epoch"] == 0
    assert "over 10 times the trivial predictor's 0.26" in results["diverged"]["what"]
    assert results["ae"] == {} and "test/loss" not in json.dumps(results["last_epoch"])


class _Trainer:
    """What the guard reads of a trainer: the epoch's metrics, where it is, and the stop flag."""

    def __init__(self) -> None:
        self.callback_metrics: dict = {}
        self.current_epoch = self.global_step = 0
        self.should_stop = False
        self.datamodule = None  # no data: no trivial predictor, only the growth check


def _epochs(guard, losses: list[float]) -> _Trainer:
    trainer, module = _Trainer(), torch.nn.Linear(1, 1)
    guard.setup(trainer, module, "fit")
    guard.on_fit_start(trainer, module)
    for epoch, loss in enumerate(losses):
        trainer.current_epoch, trainer.callback_metrics["train/loss"] = epoch, torch.tensor(loss)
        guard.on_train_epoch_end(trainer, module)
        if trainer.should_stop:
            break
    return trainer


def test_a_loss_that_grows_past_the_factor_times_its_first_epoch_is_divergence():
    from lightning_ae.callbacks import DivergenceGuard

    guard = DivergenceGuard(factor=10)
    trainer = _epochs(guard, [1.0, 0.5, 9.9, 10.5, 0.1])
    assert trainer.should_stop and guard.diverged["epoch"] == 3
    assert guard.diverged["what"] == "the epoch's mean training loss 10.5 is over 10 times the first epoch's 1"

    healthy = DivergenceGuard()
    assert not _epochs(healthy, [1.0, 9.0, 0.2, 0.1]).should_stop and healthy.diverged is None


def test_a_resumed_run_compares_with_its_own_first_epoch():
    from lightning_ae.callbacks import DivergenceGuard

    first = DivergenceGuard()
    _epochs(first, [0.1, 0.09])
    resumed = DivergenceGuard()
    trainer, module = _Trainer(), torch.nn.Linear(1, 1)
    resumed.setup(trainer, module, "fit")
    resumed.load_state_dict(first.state_dict())  # what Lightning does when it restores a checkpoint
    resumed.on_fit_start(trainer, module)
    trainer.current_epoch, trainer.callback_metrics["train/loss"] = 2, torch.tensor(2.0)
    resumed.on_train_epoch_end(trainer, module)
    assert trainer.should_stop and "first epoch's 0.1" in resumed.diverged["what"]


@pytest.mark.parametrize("factor", [1, 0.5, float("inf"), True, "10"])
def test_the_factor_must_be_a_number_above_one(factor):
    from lightning_ae.callbacks import DivergenceGuard

    with pytest.raises(ValueError, match=r"factor=.* is not valid; valid: a number > 1"):
        DivergenceGuard(factor=factor)
