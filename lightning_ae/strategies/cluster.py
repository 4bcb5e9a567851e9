"""Who requeues a preempted SLURM job: a study engine that requeues its runs itself (submitit) sets
`REQUEUE_BY_ENGINE` in its runs' environment, and Lightning's own requeue (SIGUSR1, `scontrol requeue`) is turned
off, so that one preemption is one requeue, not two jobs resuming the same checkpoint."""

from __future__ import annotations

import os

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

REQUEUE_BY_ENGINE = "LIGHTNING_AE_REQUEUE_BY"


def leave_requeue_to_the_engine(trainer: pl.Trainer) -> None:
    environment = trainer._accelerator_connector.cluster_environment  # what Lightning's signal connector reads
    if os.environ.get(REQUEUE_BY_ENGINE) and isinstance(environment, SLURMEnvironment):
        environment.auto_requeue = False
