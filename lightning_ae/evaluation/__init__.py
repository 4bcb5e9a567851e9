"""Evaluation as plain functions on tensors (kNN, PCA, reconstruction errors, trivial predictors and the
converged/learned verdicts); the callbacks call them."""

from lightning_ae.evaluation.knn import knn_predict, nearest_neighbours
from lightning_ae.evaluation.pca import fit_pca, reconstruction_metrics
from lightning_ae.evaluation.verdicts import (
    class_mean_predictor_metrics,
    class_prior,
    class_prior_metrics,
    convergence,
    learned,
    mean_predictor_metrics,
    mean_target,
)

__all__ = [
    "class_mean_predictor_metrics",
    "class_prior",
    "class_prior_metrics",
    "convergence",
    "fit_pca",
    "knn_predict",
    "learned",
    "mean_predictor_metrics",
    "mean_target",
    "nearest_neighbours",
    "reconstruction_metrics",
]
