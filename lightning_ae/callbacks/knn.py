"""`KNNEvaluator`: how well the codes separate the classes, by kNN (k=10) fitted on the training codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytorch_lightning as pl
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy
from typing_extensions import override

from lightning_ae.callbacks.base import EvaluationCallback, EvaluationData, timed
from lightning_ae.checks import check_positive_int
from lightning_ae.evaluation.knn import DEFAULT_MEMORY_BYTES, check_knn_args, choose_backend, knn_predict


class Encoded(NamedTuple):
    codes: Tensor
    encode_seconds: float
    predict_seconds: float


def knn_metrics(
    encode: Callable[[Tensor], tuple[Tensor, float]],
    data: EvaluationData,
    stages: tuple[str, ...],
    k: int,
    backend: str,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    prefix: str = "",
) -> tuple[dict[str, float], dict[str, Encoded]]:
    """The kNN loop of every code the evaluation measures (the model's, PCA's): the training split encoded as the
    voters, then each split of `stages` encoded and classified. Returns `<stage>/<prefix>knn_acc` and `_error`, at
    test the microseconds per image of encoding and of predicting; and each stage's codes with those seconds (PCA
    reconstructs from the codes). `encode(images)` gives codes and the seconds it took."""
    train = data.split("train")
    train_codes, _ = encode(train.images)
    backend = choose_backend(train_codes.shape[1], train_codes.device, backend)
    num_classes = len(data.class_names)
    metrics: dict[str, float] = {}
    encoded: dict[str, Encoded] = {}
    for stage in stages:
        split = data.split(stage)
        codes, encode_seconds = encode(split.images)
        predicted, predict_seconds = timed(
            lambda codes=codes: knn_predict(train_codes, train.labels, codes, k, num_classes, backend, memory_bytes),
            codes.device,
        )
        accuracy = multiclass_accuracy(predicted, split.labels.to(codes.device), num_classes, average="micro").item()
        metrics[f"{stage}/{prefix}knn_acc"] = accuracy
        metrics[f"{stage}/{prefix}knn_error"] = 1.0 - accuracy
        if stage == "test":
            metrics[f"test/{prefix}encode_us_per_image"] = 1e6 * encode_seconds / len(split)
            metrics[f"test/{prefix}knn_predict_us_per_image"] = 1e6 * predict_seconds / len(split)
        encoded[stage] = Encoded(codes, encode_seconds, predict_seconds)
    return metrics, encoded


class KNNEvaluator(EvaluationCallback):
    """kNN accuracy of the codes of the clean validation and test images, with the training codes as references.

    Logged at test (and, with `every_n_epochs`, at the end of validation epochs):
    `val/knn_acc`, `val/knn_error`, `test/knn_acc`, `test/knn_error`, and at test the
    costs `test/encode_us_per_image` (encoding the test images) and
    `test/knn_predict_us_per_image` (classifying them, fit excluded).

    Args:
        k: neighbours that vote (the homework's k=10).
        backend: "auto" (sklearn's kd-tree on the CPU at low d', chunked torch otherwise),
            "torch" or "sklearn"; all give the same predictions, see `lightning_ae.evaluation.knn`.
        every_n_epochs: also measure validation accuracy every N training epochs (null: at test only).
        memory_mb: memory bound of one chunk of distances in the torch backend.
    """

    def __init__(
        self, k: int = 10, backend: str = "auto", every_n_epochs: int | None = None, memory_mb: int = 256
    ) -> None:
        super().__init__()
        check_knn_args(k, backend)
        check_positive_int("every_n_epochs", every_n_epochs, allow_none=True)
        self.k, self.backend, self.every_n_epochs = k, backend, every_n_epochs
        self.memory_bytes = memory_mb * 2**20 if memory_mb else DEFAULT_MEMORY_BYTES

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Before training, not after it: a vote of k among fewer training codes is undefined.
        if (available := len(self.data(trainer).split("train"))) < self.k:
            raise ValueError(
                f"KNNEvaluator: k={self.k} neighbours, but the training split holds {available} images; give "
                f"train_subset >= {self.k} or a smaller k."
            )

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stages: tuple[str, ...]) -> dict:
        data = self.data(trainer)
        metrics, encoded = knn_metrics(
            lambda images: self.encode(pl_module, images, data.eval_batch_size),
            data,
            stages,
            self.k,
            self.backend,
            self.memory_bytes,
        )
        if "test" in encoded:
            test = encoded["test"]
            self.timings.update(knn_encode_seconds=test.encode_seconds, knn_predict_seconds=test.predict_seconds)
        return metrics

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs is None or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            pl_module.log_dict(self.evaluate(trainer, pl_module, ("val",)), rank_zero_only=True)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics, seconds = timed(lambda: self.evaluate(trainer, pl_module, ("val", "test")), pl_module.device)
            self.timings["knn_seconds"] = seconds
            pl_module.log_dict(metrics, rank_zero_only=True)
