"""`evaluation_callbacks()`: the evaluation any autoencoder gets, for a Trainer built in Python.

The same callbacks, with the same settings, as `configs/fragments/evaluation.yaml` gives a CLI run
(a test holds the two together), plus `ResultsJSON`, which the CLI adds to every run.
"""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_ae.callbacks.embeddings import EmbeddingProjector, TSNEPlot
from lightning_ae.callbacks.knn import KNNEvaluator
from lightning_ae.callbacks.pca import PCABaseline
from lightning_ae.callbacks.results import ResultsJSON


def evaluation_callbacks(results: bool = True) -> list[pl.Callback]:
    """kNN (k=10) on the codes, PCA at the same d', t-SNE of 5,000 test codes, the TensorBoard projector, and
    (with `results`) `results.json` in the run's log folder; all measured when `trainer.test` runs.

        trainer = pl.Trainer(max_epochs=5, callbacks=evaluation_callbacks())
        trainer.fit(model, datamodule=data)
        trainer.test(model, datamodule=data, ckpt_path="best")
    """
    callbacks: list[pl.Callback] = [
        KNNEvaluator(k=10),
        PCABaseline(),
        TSNEPlot(max_points=5000),
        EmbeddingProjector(max_items=10000),
    ]
    return [ResultsJSON(), *callbacks] if results else callbacks
