"""kNN and PCA functions against sklearn, the references they must equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from lightning_ae.evaluation.knn import knn_predict, majority_vote, nearest_neighbours
from lightning_ae.evaluation.pca import fit_pca, reconstruction_metrics


@pytest.fixture(scope="module")
def mnist_slices(datamodule):
    train, test = datamodule.split("train"), datamodule.split("test")
    return train.images[:6000].numpy(), train.labels[:6000], test.images[:1500].numpy(), test.labels[:1500]


def _sklearn_knn(train, labels, queries, k=10):
    return KNeighborsClassifier(n_neighbors=k).fit(train, labels.numpy()).predict(queries)


@pytest.mark.parametrize("dim", [2, 8, 32, 100])
@pytest.mark.parametrize("backend", ["torch", "sklearn", "auto"])
def test_knn_predictions_equal_sklearn_kneighborsclassifier(mnist_slices, dim, backend):
    train, labels, test, _ = mnist_slices
    pca = PCA(dim, random_state=0).fit(train)
    train_codes, test_codes = pca.transform(train).astype(np.float32), pca.transform(test).astype(np.float32)
    expected = _sklearn_knn(train_codes, labels, test_codes)
    predicted = knn_predict(torch.from_numpy(train_codes), labels, torch.from_numpy(test_codes), 10, 10, backend)
    assert predicted.dtype == torch.int64
    np.testing.assert_array_equal(predicted.numpy(), expected)


def test_knn_on_raw_pixels_equals_sklearn(mnist_slices):
    train, labels, test, _ = mnist_slices
    predicted = knn_predict(torch.from_numpy(train), labels, torch.from_numpy(test[:400]), backend="torch")
    np.testing.assert_array_equal(predicted.numpy(), _sklearn_knn(train, labels, test[:400]))


@pytest.mark.slow
def test_torch_knn_works_in_chunks_under_the_memory_bound(mnist_slices, monkeypatch):
    train, labels, test, _ = mnist_slices
    shapes = []
    real_addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        shapes.append((args[1].shape[0], args[2].shape[1]))
        return real_addmm(*args, **kwargs)

    monkeypatch.setattr(torch, "addmm", recording_addmm)
    bound = 2**20  # 1 MiB: 6,000 float32 distances per query row leaves room for about 43 rows
    train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
    chunked = nearest_neighbours(train_t, test_t, 10, memory_bytes=bound)
    assert len(shapes) > 1
    assert all(rows * cols * 4 * 2 <= bound for rows, cols in shapes)
    assert sum(rows for rows, _ in shapes) == len(test)
    monkeypatch.setattr(torch, "addmm", real_addmm)
    whole = nearest_neighbours(train_t, test_t, 10, memory_bytes=2**30)
    assert torch.equal(chunked, whole)
    # Nearest first, and the very nearest is the exact argmin of the distances.
    exact = torch.cdist(test_t.double(), train_t.double())
    assert torch.equal(chunked[:, 0], exact.argmin(dim=1))
    assert torch.all(exact.gather(1, chunked).diff(dim=1) >= 0)


def test_vote_ties_go_to_the_smallest_label_as_in_sklearn():
    neighbour_labels = torch.tensor([[2, 2, 5, 5], [7, 1, 7, 1], [3, 3, 3, 0], [9, 8, 7, 6]])
    assert majority_vote(neighbour_labels, 10).tolist() == [2, 1, 3, 6]
    # The same tie through sklearn: four points at distinct distances, labels 5, 2, 5, 2.
    train = np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    labels = torch.tensor([5, 2, 5, 2])
    query = np.zeros((1, 1), dtype=np.float32)
    ours = knn_predict(torch.from_numpy(train), labels, torch.from_numpy(query), k=4, backend="torch")
    assert ours.tolist() == _sklearn_knn(train, labels, query, k=4).tolist() == [2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"k=0 is not valid"),
        ({"backend": "faiss"}, r"backend='faiss' is not a known kNN backend"),
        ({"k": 7000}, r"k=7000 is larger than the number of training codes"),
    ],
)
def test_knn_bad_arguments_are_refused(mnist_slices, kwargs, message):
    train, labels, test, _ = mnist_slices
    with pytest.raises(ValueError, match=message):
        knn_predict(torch.from_numpy(train), labels, torch.from_numpy(test[:5]), **{"backend": "torch", **kwargs})


def test_cached_pca_equals_a_fresh_sklearn_fit_and_is_reused(mnist_slices, tmp_path, caplog):
    train, _, test, _ = mnist_slices
    cache = tmp_path / "pca.npz"
    first, from_cache = fit_pca(train, 16, cache)
    assert not from_cache and cache.exists()
    again, from_cache = fit_pca(train, 16, cache)
    assert from_cache
    reference = PCA(16, random_state=0).fit(train)
    expected = reference.inverse_transform(reference.transform(test))
    for pca in (first, again):
        np.testing.assert_allclose(pca.inverse_transform(pca.transform(test)), expected, atol=2e-5)
    # A damaged cache entry is discarded and refitted, never used.
    cache.write_bytes(b"not an npz")
    refit, from_cache = fit_pca(train, 16, cache)
    assert not from_cache and "Discarding unreadable PCA cache" in caplog.text
    np.testing.assert_allclose(refit.transform(test), again.transform(test), atol=2e-5)


def test_reconstruction_metrics_follow_their_definitions():
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(50, 784, generator=generator) > 0.7).float()
    recon = torch.rand(50, 784, generator=generator) * 1.4 - 0.2  # leaves [0, 1] like a PCA reconstruction
    metrics = reconstruction_metrics(recon, target, eps=1e-3)
    r, t = recon.double().numpy().clip(0, 1), target.double().numpy()
    p = r.clip(1e-3, 1 - 1e-3)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert metrics["bce_per_pixel"] == pytest.approx(bce.mean(), rel=1e-9)
    assert metrics["bce_per_image"] == pytest.approx(bce.sum(axis=1).mean(), rel=1e-9)
    assert metrics["mse_per_pixel"] == pytest.approx(((r - t) ** 2).mean(), rel=1e-9)
    assert metrics["mse_per_image"] == pytest.approx(784 * metrics["mse_per_pixel"], rel=1e-9)
