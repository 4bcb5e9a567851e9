"""Evaluation as plain functions on tensors (kNN, PCA, reconstruction errors); the callbacks call them."""

from lightning_ae.evaluation.knn import knn_predict, nearest_neighbours
from lightning_ae.evaluation.pca import fit_pca, reconstruction_metrics

__all__ = ["fit_pca", "knn_predict", "nearest_neighbours", "reconstruction_metrics"]
