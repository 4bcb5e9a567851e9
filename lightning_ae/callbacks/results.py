"""`ResultsJSON`: one `results.json` per run with the config, every metric (AE and PCA side by side) and the timings."""

from __future__ import annotations

import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import sklearn
import torch

import lightning_ae
from lightning_ae.callbacks.base import EvaluationCallback
from lightning_ae.callbacks.divergence import DivergenceGuard
from lightning_ae.files import write_json
from lightning_ae.models import AutoencoderBase
from lightning_ae.provenance import git_commit

PCA_PREFIX = "pca_"


def diverged(trainer: pl.Trainer) -> DivergenceGuard | None:
    """The run's DivergenceGuard when it stopped the run, else None."""
    for callback in trainer.callbacks:
        if isinstance(callback, DivergenceGuard) and callback.diverged is not None:
            return callback
    return None


def split_ae_and_pca(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """`test/pca_knn_acc` goes to the PCA table as `test/knn_acc`; everything else to the AE table."""
    ae, pca = {}, {}
    for key, value in metrics.items():
        stage, _, name = key.partition("/")
        if name.startswith(PCA_PREFIX):
            pca[f"{stage}/{name[len(PCA_PREFIX) :]}"] = value
        else:
            ae[key] = value
    return ae, pca


def _number(value: Any) -> float | None:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None  # JSON has no NaN; a null is unmistakable


class ResultsJSON(pl.Callback):
    """Writes `filename` into the run's log folder after fit and again after test, atomically.

    `config` is the run's resolved configuration; the CLI sets it, otherwise the model's
    and the DataModule's hyperparameters stand in.
    """

    def __init__(self, filename: str = "results.json") -> None:
        super().__init__()
        if not filename.endswith(".json"):
            raise ValueError(f"filename={filename!r} is not valid; valid: a name ending in .json.")
        self.filename = filename
        self.config: dict[str, Any] | None = None
        self.started: float | None = None
        self.phase_started = 0.0
        self.timings: dict[str, float] = {}
        self.fit_metrics: dict[str, float | None] = {}
        self.epochs = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = self.phase_started = time.perf_counter()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timings["fit_seconds"] = time.perf_counter() - self.phase_started
        self.epochs = trainer.current_epoch
        self.fit_metrics = {
            key: _number(value) for key, value in trainer.callback_metrics.items() if key.startswith(("train/", "val/"))
        }
        guard = diverged(trainer)
        self.write(trainer, pl_module, status="diverged" if guard else "fitted", test_metrics={})

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.phase_started = time.perf_counter()
        if self.started is None:
            self.started = self.phase_started

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timings["test_seconds"] = time.perf_counter() - self.phase_started
        metrics = {key: _number(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")}
        # Validation kNN measured at test time belongs with the test metrics.
        metrics.update(
            {k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/knn", "val/pca"))}
        )
        self.write(trainer, pl_module, status="tested", test_metrics=metrics)

    def collect_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        datamodule = trainer.datamodule
        return {
            "model": {"class_path": type(pl_module).__qualname__, "init_args": dict(pl_module.hparams)},
            "data": dict(datamodule.hparams) if datamodule is not None else None,
        }

    def write(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str, test_metrics: dict[str, float | None]
    ) -> None:
        if not trainer.is_global_zero:
            return
        model_metrics, pca = split_ae_and_pca(test_metrics)
        # "ae" for an autoencoder, "model" for anything else (the classifier), beside "pca".
        table = "ae" if isinstance(pl_module, AutoencoderBase) else "model"
        timings = dict(self.timings)
        for callback in trainer.callbacks:
            if isinstance(callback, EvaluationCallback):
                timings.update(callback.timings)
        timings["wall_seconds"] = time.perf_counter() - (self.started or self.phase_started)
        checkpoint = trainer.checkpoint_callback
        best_score = getattr(checkpoint, "best_model_score", None)
        guard = diverged(trainer)
        results = {
            "status": status,
            # A diverged run has no metric values (never a NaN to average); where and why it stopped instead.
            "diverged": None if guard is None else {**guard.diverged, "message": guard.message},
            "model": type(pl_module).__name__,
            "code_dim": getattr(pl_module, "code_dim", None),
            table: model_metrics,
            "pca": pca,
            "epochs": self.epochs,
            "last_epoch": self.fit_metrics,  # train/val loss of the last epoch (test uses the best checkpoint)
            "global_step": trainer.global_step,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "best_val_loss": None if best_score is None else _number(best_score),
            "timings": timings,
            "config": self.collect_config(trainer, pl_module),
            "environment": {
                "lightning_ae": lightning_ae.__version__,
                "torch": torch.__version__,
                "pytorch_lightning": pl.__version__,
                "sklearn": sklearn.__version__,
                "python": platform.python_version(),
                "commit": git_commit(),
                "device": str(pl_module.device),
                "world_size": trainer.world_size,
            },
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.path(trainer), results)

    def path(self, trainer: pl.Trainer) -> Path:
        return EvaluationCallback.output_dir(trainer) / self.filename
