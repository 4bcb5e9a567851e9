"""Exact t-SNE in torch (`lightning_ae.evaluation.tsne`) against sklearn's, piece by piece and as a whole."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from scipy.spatial.distance import squareform
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE, trustworthiness
from sklearn.manifold._t_sne import _joint_probabilities, _kl_divergence
from sklearn.metrics import pairwise_distances

from lightning_ae.callbacks import PCABaseline, TSNEPlot, embeddings
from lightning_ae.data import ImageDataModule
from lightning_ae.evaluation.tsne import (
    TORCH_MAX_POINTS,
    choose_implementation,
    exact_tsne,
    joint_probabilities,
    kl_divergence,
    kl_gradient,
    tsne,
)
from lightning_ae.models import Autoencoder


@pytest.fixture(scope="module")
def pca_codes() -> np.ndarray:
    """PCA's 16-D codes of 300 MNIST test images: clustered, as real codes are."""
    datamodule = ImageDataModule(train_subset=2000)
    datamodule.setup()
    pca = PCA(16, random_state=0).fit(datamodule.split("train").images.numpy())
    return pca.transform(datamodule.split("test").images[:300].numpy()).astype(np.float64)


def test_the_affinities_are_sklearns(pca_codes):
    expected = squareform(_joint_probabilities(pairwise_distances(pca_codes, squared=True), 30.0, 0))
    ours = joint_probabilities(torch.from_numpy(pca_codes), 30.0).numpy()
    np.fill_diagonal(ours, 0)  # sklearn keeps only the pairs
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-12)


def test_the_divergence_and_its_gradient_are_sklearns(pca_codes):
    joint = joint_probabilities(torch.from_numpy(pca_codes), 30.0)
    points = np.random.default_rng(0).normal(size=(len(pca_codes), 2))
    condensed = squareform(joint.numpy(), checks=False)
    expected_kl, expected_gradient = _kl_divergence(points.ravel(), condensed, 1, len(points), 2)
    kl, gradient = kl_divergence(torch.from_numpy(points), joint), kl_gradient(torch.from_numpy(points), joint)
    assert kl.item() == pytest.approx(expected_kl, rel=1e-6)
    np.testing.assert_allclose(gradient.numpy().ravel(), expected_gradient, rtol=1e-5, atol=1e-12)


def test_the_map_is_as_faithful_as_sklearns(pca_codes):
    ours = exact_tsne(torch.from_numpy(pca_codes)).numpy()
    theirs = TSNE(2, perplexity=30.0, init="pca", random_state=0, method="exact").fit(pca_codes)
    joint = joint_probabilities(torch.from_numpy(pca_codes), 30.0)
    our_kl = kl_divergence(torch.from_numpy(ours), joint).item()
    assert our_kl <= theirs.kl_divergence_ * 1.05  # the quantity t-SNE minimises
    ours_trust = trustworthiness(pca_codes, ours, n_neighbors=10)
    assert ours_trust >= trustworthiness(pca_codes, theirs.embedding_, n_neighbors=10) - 0.01
    random_trust = trustworthiness(pca_codes, np.random.default_rng(0).normal(size=(len(ours), 2)), n_neighbors=10)
    assert ours_trust > random_trust + 0.3  # the check has teeth: a random map scores far lower


def test_auto_takes_torch_on_a_cuda_device_only_and_within_its_memory_bound():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert choose_implementation(5000, cuda) == "torch"
    assert choose_implementation(TORCH_MAX_POINTS + 1, cuda) == "sklearn"
    assert choose_implementation(5000, cpu) == "sklearn"
    assert choose_implementation(5000, cpu, "torch") == "torch"


def test_forcing_torch_on_the_cpu_runs_it_there(pca_codes):
    codes = torch.from_numpy(pca_codes[:100])
    points, how = tsne(codes, perplexity=10.0, implementation="torch")
    assert how == "torch"
    np.testing.assert_array_equal(points, exact_tsne(codes, 10.0).numpy())


def test_a_wrong_implementation_or_perplexity_is_refused():
    with pytest.raises(ValueError, match="implementation='cuml'.*'auto', 'torch', 'sklearn'"):
        TSNEPlot(implementation="cuml")
    with pytest.raises(ValueError, match="perplexity=50.0 is not valid for 20 points"):
        exact_tsne(torch.zeros(20, 3), 50.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: auto runs exact t-SNE there")
def test_on_a_gpu_auto_runs_torch_there_and_draws_as_faithful_a_map(pca_codes):
    on_gpu, how = tsne(torch.from_numpy(pca_codes).cuda())  # auto: torch on the device
    assert how == "torch"
    on_cpu = exact_tsne(torch.from_numpy(pca_codes)).numpy()
    assert isinstance(on_gpu, np.ndarray) and on_gpu.shape == (len(pca_codes), 2)
    gpu_trust = trustworthiness(pca_codes, on_gpu, n_neighbors=10)
    assert gpu_trust >= trustworthiness(pca_codes, on_cpu, n_neighbors=10) - 0.01


def _stub_trainer(datamodule: ImageDataModule, root: Path, callbacks: list) -> SimpleNamespace:
    logger = TensorBoardLogger(root, name="run", version=0)
    return SimpleNamespace(
        datamodule=datamodule, loggers=[logger], logger=logger, is_global_zero=True, sanity_checking=False,
        current_epoch=0, global_step=0, world_size=1, global_rank=0, default_root_dir=str(root), callbacks=callbacks,
    )  # fmt: skip


def test_the_pca_panel_is_computed_once_per_d_and_read_back_after(tmp_path, monkeypatch, caplog):
    calls = []
    real_tsne = embeddings.tsne
    monkeypatch.setattr(embeddings, "tsne", lambda codes, *args: calls.append(len(codes)) or real_tsne(codes, *args))
    datamodule = ImageDataModule(train_subset=500)
    datamodule.setup()
    torch.manual_seed(0)
    model = Autoencoder(code_dim=16)
    plot = TSNEPlot(max_points=120, perplexity=10)
    trainer = _stub_trainer(datamodule, tmp_path, [PCABaseline(cache_dir=str(tmp_path / "cache")), plot])

    plot.on_test_end(trainer, model)
    assert calls == [120, 120]  # the model's codes, then PCA's
    first = plot.timings["pca_tsne_seconds"]
    [cached] = (tmp_path / "cache").glob("tsne-*.npz")

    def picture() -> np.ndarray:
        return np.asarray(Image.open(tmp_path / "run" / "version_0" / "pca_tsne.png"))

    drawn = picture()

    fits = []
    real_fit = embeddings.fit_pca
    monkeypatch.setattr(embeddings, "fit_pca", lambda *args: fits.append(1) or real_fit(*args))
    plot.on_test_end(trainer, model)
    assert calls == [120, 120, 120]  # the model's codes only: PCA's map was read back
    assert fits == []  # and no PCA was read or fitted for it
    np.testing.assert_array_equal(picture(), drawn)
    assert plot.timings["pca_tsne_seconds"] < first

    cached.write_bytes(b"not an npz")  # a damaged entry is computed again, with a warning
    plot.on_test_end(trainer, model)
    assert calls == [120, 120, 120, 120, 120] and "Unreadable PCA t-SNE cache" in caplog.text
    with np.load(cached) as stored:  # and written again
        assert stored["points"].shape == (120, 2)

    TSNEPlot(max_points=120, perplexity=12).on_test_end(trainer, model)  # other settings: another map
    assert len(calls) == 7 and len(list((tmp_path / "cache").glob("tsne-*.npz"))) == 2


def test_auto_falls_back_to_sklearn_when_the_device_runs_out_of_memory(pca_codes, monkeypatch, caplog):
    from lightning_ae.evaluation import tsne as module

    def out_of_memory(codes, perplexity):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 800.00 MiB")

    monkeypatch.setattr(module, "exact_tsne", out_of_memory)
    monkeypatch.setattr(module, "choose_implementation", lambda count, device, implementation="auto": "torch")
    codes = torch.from_numpy(pca_codes[:100])
    points, how = module.tsne(codes, perplexity=10.0)  # auto: sklearn instead, with a warning
    assert (
        how == "sklearn"
        and points.shape == (100, 2)
        and "ran out of GPU memory" in caplog.text
        and "Barnes-Hut" in caplog.text
    )
    with pytest.raises(torch.cuda.OutOfMemoryError):  # asked for torch explicitly: the error stands
        module.tsne(codes, perplexity=10.0, implementation="torch")
