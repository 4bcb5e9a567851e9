"""PCA at the same d' as an autoencoder: sklearn's PCA, fitted once per (data, d') and cached.

The cache holds only arrays (an `.npz`, no pickle), written atomically; its key covers
what the fit depends on (the dataset's pinned checksum, the exact training indices, d',
sklearn's version), so a changed split or dataset never reuses a stale fit.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import sklearn
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import Tensor

from lightning_ae.files import atomic_write

log = logging.getLogger(__name__)

_FITTED = ("components_", "mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_")
BCE_EPS = 1e-3  # PCA reconstructions are clipped to [eps, 1 - eps] before BCE (they leave [0, 1])


def pca_cache_key(data_identity: str, train_indices: np.ndarray, dim: int) -> str:
    digest = hashlib.sha256()
    digest.update(f"{data_identity}|d={dim}|sklearn={sklearn.__version__}|".encode())
    digest.update(np.ascontiguousarray(train_indices, dtype=np.int64).tobytes())
    return f"pca-d{dim}-{digest.hexdigest()[:16]}"


def _restore(path: Path, dim: int, num_features: int) -> PCA | None:
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in _FITTED}
    except (OSError, ValueError, KeyError, EOFError) as err:
        log.warning("Discarding unreadable PCA cache %s (%s); refitting.", path, err)
        path.unlink(missing_ok=True)
        return None
    if arrays["components_"].shape != (dim, num_features):
        log.warning("Discarding PCA cache %s of shape %s; refitting.", path, arrays["components_"].shape)
        path.unlink(missing_ok=True)
        return None
    pca = PCA(n_components=dim)
    for name, value in arrays.items():
        setattr(pca, name, value)
    pca.n_components_, pca.n_features_in_ = dim, num_features
    return pca


def fit_pca(train: np.ndarray, dim: int, cache_file: Path | None = None, seed: int = 0) -> tuple[PCA, bool]:
    """sklearn's PCA with `dim` components fitted on `train` (N, D), and whether it came from the cache."""
    if not 0 < dim <= min(train.shape):
        raise ValueError(f"PCA dimension d'={dim} is not valid for data of shape {train.shape}.")
    if cache_file is not None and cache_file.exists():
        restored = _restore(cache_file, dim, train.shape[1])
        if restored is not None:
            return restored, True
    pca = PCA(n_components=dim, random_state=seed).fit(train)
    if cache_file is not None:
        try:
            with atomic_write(cache_file) as handle:
                np.savez(handle, **{name: getattr(pca, name) for name in _FITTED})
        except OSError as err:  # a read-only cache costs time, never correctness
            log.warning("Cannot write the PCA cache %s (%s).", cache_file, err)
    return pca, False


def reconstruction_metrics(reconstruction: Tensor, target: Tensor, eps: float = BCE_EPS) -> dict[str, float]:
    """BCE and MSE, per pixel (mean over pixels and images) and per image (sum over pixels, mean over images).

    The same definitions as the autoencoders' test metrics. The reconstruction is first
    clipped to [0, 1] (the pixel range; this can only lower the MSE) and, for BCE, to
    [eps, 1 - eps], because a linear reconstruction reaches 0 and 1 exactly, where BCE is
    infinite.
    """
    n = len(target)
    target = target.reshape(n, -1).double()
    # Computed where the target lives: a reconstruction made elsewhere (e.g. PCA's, on the CPU) is moved there.
    clipped = reconstruction.reshape(n, -1).to(target.device).double().clamp(0.0, 1.0)
    bce = F.binary_cross_entropy(clipped.clamp(eps, 1.0 - eps), target, reduction="none")
    mse = (clipped - target).pow(2)
    return {
        "bce_per_pixel": bce.mean().item(),
        "bce_per_image": bce.sum(dim=1).mean().item(),
        "mse_per_pixel": mse.mean().item(),
        "mse_per_image": mse.sum(dim=1).mean().item(),
    }


def as_numpy(images: Tensor) -> np.ndarray:
    """Flat float32 rows, as PCA takes them."""
    return images.detach().reshape(len(images), -1).to(torch.float32).cpu().numpy()
