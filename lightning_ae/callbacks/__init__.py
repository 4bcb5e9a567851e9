"""Callbacks: evaluation and side effects that any autoencoder gets for free (they only need `encode`)."""

from lightning_ae.callbacks.base import EvaluationCallback
from lightning_ae.callbacks.denoising import DenoisingReference
from lightning_ae.callbacks.divergence import DivergenceGuard
from lightning_ae.callbacks.embeddings import EmbeddingProjector, TSNEPlot
from lightning_ae.callbacks.evaluation import evaluation_callbacks
from lightning_ae.callbacks.every_run import every_run_callbacks
from lightning_ae.callbacks.hparams import HParamsSummary
from lightning_ae.callbacks.images import PairsGrid, ReconstructionGrid
from lightning_ae.callbacks.interruption import GracefulInterruption, RunInterrupted
from lightning_ae.callbacks.knn import KNNEvaluator
from lightning_ae.callbacks.pca import PCABaseline
from lightning_ae.callbacks.predictions import PredictionWriter
from lightning_ae.callbacks.progress import EpochLines, progress_bar
from lightning_ae.callbacks.random_state import RandomStateInCheckpoints
from lightning_ae.callbacks.results import ResultsJSON

__all__ = [
    "DenoisingReference",
    "DivergenceGuard",
    "EmbeddingProjector",
    "EpochLines",
    "EvaluationCallback",
    "GracefulInterruption",
    "HParamsSummary",
    "KNNEvaluator",
    "PCABaseline",
    "PairsGrid",
    "PredictionWriter",
    "RandomStateInCheckpoints",
    "ReconstructionGrid",
    "ResultsJSON",
    "RunInterrupted",
    "TSNEPlot",
    "evaluation_callbacks",
    "every_run_callbacks",
    "progress_bar",
]
