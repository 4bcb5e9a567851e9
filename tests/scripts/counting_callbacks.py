"""Used by tests/test_ddp.py: the kNN and PCA callbacks, recording every evaluation they run and on which rank.

Each evaluation appends one line `<callback> <global rank> <stages>` to the file named by
$EVALUATION_LOG, so a test can show that under DDP each runs once, on rank 0.
"""

import os

from lightning_ae.callbacks import KNNEvaluator, PCABaseline


def _record(name: str, trainer, stages: str) -> None:
    with open(os.environ["EVALUATION_LOG"], "a") as handle:
        handle.write(f"{name} {trainer.global_rank} {stages}\n")


class CountingKNN(KNNEvaluator):
    def evaluate(self, trainer, pl_module, stages):
        _record("knn", trainer, ",".join(stages))
        return super().evaluate(trainer, pl_module, stages)


class CountingPCA(PCABaseline):
    def evaluate(self, trainer, pl_module):
        _record("pca", trainer, "val,test")
        return super().evaluate(trainer, pl_module)
