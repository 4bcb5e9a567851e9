"""The callbacks every training run gets, from the CLI or as a pipeline stage (one list, so neither misses one)."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_ae.callbacks.divergence import DivergenceGuard
from lightning_ae.callbacks.hparams import HParamsSummary
from lightning_ae.callbacks.interruption import GracefulInterruption
from lightning_ae.callbacks.random_state import RandomStateInCheckpoints


def every_run_callbacks() -> list[pl.Callback]:
    return [
        HParamsSummary(),  # TensorBoard's HParams tab: the run's settings beside its test metrics
        DivergenceGuard(),  # stops a run whose loss or weights stop being finite
        GracefulInterruption(),  # Ctrl+C / SIGTERM: checkpoint after the current step (training), else stop at once
        RandomStateInCheckpoints(),  # dropout after a resume draws as if never stopped
    ]
