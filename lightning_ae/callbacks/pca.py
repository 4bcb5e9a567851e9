"""`PCABaseline`: PCA at the autoencoder's d', measured exactly like the autoencoder, side by side."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_ae.callbacks.base import EvaluationCallback, timed
from lightning_ae.callbacks.knn import knn_metrics
from lightning_ae.checks import check_positive_int
from lightning_ae.data.idx import default_cache_dir
from lightning_ae.evaluation.knn import check_knn_args
from lightning_ae.evaluation.pca import as_numpy, fit_pca, reconstruction_metrics


def pca_cache_file(train: np.ndarray, dim: int, cache_dir: str | None = None) -> Path | None:
    """Where the PCA fit of `train` (flat rows) at `dim` is cached; None when `cache_dir` is "none".

    Shared by `PCABaseline` and `TSNEPlot`'s PCA panel, so that a run fits PCA once.
    """
    if cache_dir == "none":
        return None
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / "pca"
    # Keyed by the exact training data, so a changed split or dataset never reuses a fit.
    key = hashlib.sha256(np.ascontiguousarray(train).data).hexdigest()[:20]
    return folder / f"pca-d{dim}-{key}.npz"


class PCABaseline(EvaluationCallback):
    """sklearn PCA with the model's d', fitted on the (clean, flat) training split, evaluated at test.

    Logged at test, next to the autoencoder's own metrics:
    `test/pca_bce_per_pixel`, `test/pca_bce_per_image`, `test/pca_mse_per_pixel`,
    `test/pca_mse_per_image` (the AE's definitions; see `reconstruction_metrics`),
    `val/pca_knn_acc`, `test/pca_knn_acc` and their errors (the same kNN as `KNNEvaluator`),
    `test/pca_encode_us_per_image`, `test/pca_knn_predict_us_per_image` and
    `test/pca_explained_variance` (fraction of the pixel variance the d' components keep).
    The fit is cached per (training data, d') under `cache_dir`, so runs do not refit it.

    Args:
        dim: PCA components; null takes the model's `code_dim`.
        k, knn_backend: the kNN, as in `KNNEvaluator`.
        cache_dir: where fits are cached (default: the data cache folder's `pca/`); "none" disables it.
    """

    def __init__(
        self, dim: int | None = None, k: int = 10, knn_backend: str = "auto", cache_dir: str | None = None
    ) -> None:
        super().__init__()
        check_knn_args(k, knn_backend)
        check_positive_int("dim", dim, allow_none=True, meaning="null: the model's code_dim")
        self.dim, self.k, self.knn_backend, self.cache_dir = dim, k, knn_backend, cache_dir
        self.from_cache: bool | None = None

    def _cache_file(self, train: np.ndarray, dim: int) -> Path | None:
        return pca_cache_file(train, dim, self.cache_dir)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics, seconds = timed(lambda: self.evaluate(trainer, pl_module), torch.device("cpu"))
        self.timings["pca_seconds"] = seconds
        pl_module.log_dict(metrics, rank_zero_only=True)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        data = self.data(trainer)
        dim = self.dim if self.dim is not None else int(pl_module.code_dim)
        train = data.split("train")
        train_flat = as_numpy(train.images)
        cache_file = self._cache_file(train_flat, dim)
        (pca, self.from_cache), fit_seconds = timed(lambda: fit_pca(train_flat, dim, cache_file), torch.device("cpu"))
        self.timings["pca_fit_seconds"] = fit_seconds
        cpu = torch.device("cpu")  # PCA runs on the CPU (a cached sklearn fit)
        metrics, encoded = knn_metrics(
            lambda images: timed(lambda: torch.from_numpy(pca.transform(as_numpy(images))), cpu),
            data,
            ("val", "test"),
            self.k,
            self.knn_backend,
            prefix="pca_",
        )
        metrics["test/pca_explained_variance"] = float(pca.explained_variance_ratio_.sum())
        reconstruction = torch.from_numpy(pca.inverse_transform(encoded["test"].codes.numpy()))
        errors = reconstruction_metrics(reconstruction, data.split("test").images.cpu())
        return metrics | {f"test/pca_{name}": value for name, value in errors.items()}
