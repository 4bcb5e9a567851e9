"""`HParamsSummary`: each run's hyper-parameters with its final test metrics, for TensorBoard's HParams tab.

Lightning writes the hyper-parameters when a fit starts, before any result exists (with a
`hp_metric = -1` placeholder unless the logger's `default_hp_metric` is off, as it is in
lightning-ae). This callback writes them again when the test ends, so the HParams tab of a
study's folder lists its runs side by side, sortable by `test/knn_acc`, `test/bce_per_pixel`
or `test/error` (the scalars the test logged).

It writes each run's session (its hyper-parameters) and no experiment definition: TensorBoard
takes the first experiment definition it finds as the whole table's columns, so a folder of
runs of different kinds would show one run's columns only. Without one it builds the columns
from every run's session; a study adds its own definition (the study runner's `write_study_hparams`).
"""

from __future__ import annotations

import numbers
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams
from typing_extensions import override


def flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """Nested hyper-parameters as the flat scalars and strings TensorBoard's HParams plugin accepts."""
    flat: dict[str, float | int | str | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if str(key).startswith("_") or value is None:  # internal (`_class_path`, `_instantiator`), or unset: no column
            continue
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool | str) or (isinstance(value, numbers.Number) and not isinstance(value, complex)):
            flat[name] = value
        else:  # lists, tuples, classes: their text (TensorBoard filters on it)
            flat[name] = str(value)
    return flat


class HParamsSummary(pl.Callback):
    """At test end: the model's and data's hyper-parameters, optimizer and epochs, for a run that has `test/*`
    metrics."""

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/") and v.numel() == 1}
        if not metrics:
            return
        params: dict[str, Any] = {"model": type(pl_module).__name__, **dict(pl_module.hparams)}
        if trainer.datamodule is not None:
            params["data"] = dict(trainer.datamodule.hparams)
        if trainer.optimizers:
            optimizer = trainer.optimizers[0]
            group = optimizer.param_groups[0]
            params["optimizer"] = {"name": type(optimizer).__name__, "lr": group.get("initial_lr", group["lr"])}
        configs = trainer.lr_scheduler_configs
        if configs:
            params["scheduler"] = type(configs[0].scheduler).__name__
        params["epochs"] = trainer.current_epoch
        # The session's start and end alone, not torch's experiment summary (see the module's docstring); the plugin
        # reads each metric's value from its scalar tag, which the test already logged (Lightning's log_hyperparams
        # would log them all again, at step 0).
        _, session_start, session_end = hparams(flat_hparams(params), metrics)
        for logger in loggers:
            writer = logger.experiment._get_file_writer()  # as SummaryWriter.add_hparams writes them
            writer.add_summary(session_start)
            writer.add_summary(session_end)
            writer.flush()
