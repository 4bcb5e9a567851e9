"""The evaluation callbacks on a short real run: every number is recomputed independently with sklearn."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from lightning_ae.callbacks import (
    EmbeddingProjector,
    KNNEvaluator,
    PCABaseline,
    ReconstructionGrid,
    ResultsJSON,
    TSNEPlot,
)
from lightning_ae.callbacks.embeddings import MAX_SPRITE_ITEMS
from lightning_ae.data import ImageDataModule
from lightning_ae.models import Autoencoder

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

PROJECTOR_ITEMS = 600
TSNE_POINTS = 300


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """Two epochs of a d'=8 AE on 1,000 training images, tested with every callback on."""
    root = tmp_path_factory.mktemp("run")
    pl.seed_everything(0)
    datamodule = ImageDataModule(train_subset=1000, batch_size=50)
    model = Autoencoder(code_dim=8, optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    callbacks = [
        KNNEvaluator(every_n_epochs=1),
        PCABaseline(cache_dir=str(root / "pca-cache")),
        ReconstructionGrid(per_class=2),
        TSNEPlot(max_points=TSNE_POINTS),
        EmbeddingProjector(max_items=PROJECTOR_ITEMS),
        ResultsJSON(),
    ]
    trainer = pl.Trainer(
        max_epochs=2,
        logger=TensorBoardLogger(root, name="ae"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule)
    return trainer, model, datamodule, Path(trainer.log_dir), callbacks


def test_results_json_holds_ae_and_pca_side_by_side(evaluated_run):
    trainer, model, _, log_dir, _ = evaluated_run
    results = json.loads((log_dir / "results.json").read_text())
    assert results["status"] == "tested" and results["model"] == "Autoencoder" and results["code_dim"] == 8
    shared = {
        "test/bce_per_pixel",
        "test/bce_per_image",
        "test/mse_per_pixel",
        "test/mse_per_image",
        "test/knn_acc",
        "test/knn_error",
        "val/knn_acc",
        "val/knn_error",
        "test/encode_us_per_image",
        "test/knn_predict_us_per_image",
    }
    assert shared <= set(results["ae"]) and shared <= set(results["pca"])
    assert {"test/code_dim", "test/compression_ratio", "test/size_saved_percent"} <= set(results["ae"])
    assert results["ae"]["test/compression_ratio"] == 98.0
    assert results["ae"]["test/size_saved_percent"] == pytest.approx(100 * (1 - 8 / 784))
    assert results["epochs"] == 2 and results["global_step"] == 40
    assert set(results["last_epoch"]) >= {"train/loss", "val/loss"}
    assert results["best_checkpoint"].endswith(".ckpt")
    for key in ("fit_seconds", "test_seconds", "wall_seconds", "knn_seconds", "pca_seconds", "tsne_seconds"):
        assert results["timings"][key] > 0
    assert results["config"]["model"]["init_args"]["code_dim"] == 8
    assert all(isinstance(v, float) and math.isfinite(v) for v in results["ae"].values())


def test_knn_accuracy_equals_sklearn_on_the_models_codes(evaluated_run):
    _, model, datamodule, log_dir, _ = evaluated_run
    results = json.loads((log_dir / "results.json").read_text())
    with torch.no_grad():
        codes = {stage: model.encode(datamodule.split(stage).images).numpy() for stage in ("train", "val", "test")}
    knn = KNeighborsClassifier(10).fit(codes["train"], datamodule.split("train").labels.numpy())
    for stage in ("val", "test"):
        expected = (knn.predict(codes[stage]) == datamodule.split(stage).labels.numpy()).mean()
        assert results["ae"][f"{stage}/knn_acc"] == pytest.approx(expected, abs=1e-6)
        assert results["ae"][f"{stage}/knn_error"] == pytest.approx(1 - expected, abs=1e-6)


def test_pca_baseline_equals_sklearn_pca_at_the_same_dimension(evaluated_run):
    _, _, datamodule, log_dir, callbacks = evaluated_run
    results = json.loads((log_dir / "results.json").read_text())
    train, test = datamodule.split("train"), datamodule.split("test")
    pca = PCA(8, random_state=0).fit(train.images.numpy())
    recon = pca.inverse_transform(pca.transform(test.images.numpy())).clip(0, 1)
    mse = ((recon - test.images.numpy()) ** 2).astype(np.float64)
    assert results["pca"]["test/mse_per_pixel"] == pytest.approx(mse.mean(), rel=1e-4)
    assert results["pca"]["test/mse_per_image"] == pytest.approx(mse.sum(axis=1).mean(), rel=1e-4)
    assert results["pca"]["test/explained_variance"] == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-4)
    knn = KNeighborsClassifier(10).fit(pca.transform(train.images.numpy()), train.labels.numpy())
    expected = (knn.predict(pca.transform(test.images.numpy())) == test.labels.numpy()).mean()
    assert results["pca"]["test/knn_acc"] == pytest.approx(expected, abs=1e-6)
    # The fit was cached under the callback's cache folder, keyed by d'.
    pca_callback = next(c for c in callbacks if isinstance(c, PCABaseline))
    assert len(list(Path(pca_callback.cache_dir).glob("pca-d8-*.npz"))) == 1


def test_pca_baseline_reuses_its_cached_fit(evaluated_run):
    trainer, model, datamodule, _, callbacks = evaluated_run
    pca_callback = next(c for c in callbacks if isinstance(c, PCABaseline))
    assert pca_callback.from_cache is False  # the first test fitted it
    again = PCABaseline(cache_dir=pca_callback.cache_dir)
    metrics = again.evaluate(trainer, model)
    assert again.from_cache is True
    assert metrics["test/pca_knn_acc"] == trainer.callback_metrics["test/pca_knn_acc"].item()


def test_knn_every_n_epochs_logs_validation_accuracy_during_fit(evaluated_run):
    _, _, _, log_dir, _ = evaluated_run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir)).Reload()
    assert "val/knn_acc" in events.Tags()["scalars"]
    assert len(events.Scalars("val/knn_acc")) >= 2  # once per epoch, plus the one at test
    assert {"reconstructions", "test/reconstructions", "test/tsne"} <= set(events.Tags()["images"])


def test_reconstruction_grid_png_has_originals_over_reconstructions(evaluated_run):
    _, model, datamodule, log_dir, _ = evaluated_run
    image = Image.open(log_dir / "reconstructions.png")
    columns, rows = 20, 2  # two per class; originals, reconstructions
    assert image.size == (columns * 30 + 2, rows * 30 + 2)
    pixels = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
    test = datamodule.split("test")
    first_zero = test.images[(test.labels == 0).nonzero()[0, 0]].view(28, 28)
    assert torch.allclose(pixels[2:30, 2:30], first_zero, atol=1 / 255 + 1e-6)
    with torch.no_grad():
        reconstruction = model(first_zero.view(1, 784)).view(28, 28)
    assert torch.allclose(pixels[32:60, 2:30], reconstruction, atol=1 / 255 + 1e-6)


def test_tsne_png_is_written(evaluated_run):
    _, _, _, log_dir, _ = evaluated_run
    image = Image.open(log_dir / "tsne.png")
    assert image.format == "PNG" and min(image.size) > 500


def test_tsne_at_two_dimensions_plots_the_codes_themselves():
    codes = np.random.default_rng(0).normal(size=(50, 2))
    points, title = TSNEPlot(max_points=50, perplexity=5).embed(codes)
    assert points is codes and "no t-SNE" in title


def test_projector_files_and_sprite_bound(evaluated_run):
    _, model, datamodule, log_dir, _ = evaluated_run
    [tensors] = log_dir.glob("*/codes/tensors.tsv")
    rows = [line.split("\t") for line in tensors.read_text().splitlines()]
    assert len(rows) == PROJECTOR_ITEMS and {len(r) for r in rows} == {8}
    with torch.no_grad():
        codes = model.encode(datamodule.split("test").images[:PROJECTOR_ITEMS])
    np.testing.assert_allclose(np.array(rows, dtype=np.float32), codes.numpy(), rtol=1e-4, atol=1e-5)
    labels = (tensors.parent / "metadata.tsv").read_text().split()
    assert labels == [str(v) for v in datamodule.split("test").labels[:PROJECTOR_ITEMS].tolist()]
    side = math.ceil(math.sqrt(PROJECTOR_ITEMS)) * 28
    assert Image.open(tensors.parent / "sprite.png").size == (side, side)
    assert math.ceil(math.sqrt(MAX_SPRITE_ITEMS)) * 28 <= 8192 < math.ceil(math.sqrt(MAX_SPRITE_ITEMS + 1)) * 28
    with pytest.raises(ValueError, match=r"max_items=85265 is not valid"):
        EmbeddingProjector(max_items=MAX_SPRITE_ITEMS + 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_tensorboard_projector_serves_the_embedding_over_http(evaluated_run):
    _, _, datamodule, log_dir, _ = evaluated_run
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--host", "127.0.0.1"]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline = time.monotonic() + 90
        runs = None
        while time.monotonic() < deadline:
            try:
                runs = json.loads(_get(f"{base}/runs"))
                if runs:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert runs == ["."], f"projector runs: {runs}"
        info = json.loads(_get(f"{base}/info?run=."))
        [embedding] = info["embeddings"]
        assert embedding["tensorShape"] == [PROJECTOR_ITEMS, 8]
        name = urllib.parse.quote(embedding["tensorName"])
        tensor = np.frombuffer(_get(f"{base}/tensor?run=.&name={name}"), dtype=np.float32)
        assert tensor.size == PROJECTOR_ITEMS * 8
        metadata = _get(f"{base}/metadata?run=.&name={name}").decode().split()
        assert metadata == [str(v) for v in datamodule.split("test").labels[:PROJECTOR_ITEMS].tolist()]
        sprite = _get(f"{base}/sprite_image?run=.&name={name}")
        assert sprite.startswith(b"\x89PNG")
        assert embedding["sprite"]["singleImageDim"] == [28, 28]
    finally:
        server.terminate()
        server.wait(timeout=30)
