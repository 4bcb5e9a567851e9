"""Denoising (2.2) and similarity reconstruction (2.3) on small real runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.neighbors import KNeighborsClassifier

from lightning_ae.callbacks import DenoisingReference, KNNEvaluator, PairsGrid, ReconstructionGrid, ResultsJSON
from lightning_ae.callbacks.denoising import find_plain_checkpoint
from lightning_ae.data import ImageDataModule
from lightning_ae.evaluation.pca import reconstruction_metrics
from lightning_ae.models import Autoencoder

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`


def adam(params):
    return torch.optim.Adam(params, lr=3e-3)


def fit(model, datamodule, root: Path, name: str, callbacks, epochs: int = 3) -> pl.Trainer:
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=TensorBoardLogger(root, name=name),
        callbacks=[*callbacks, ResultsJSON()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule)
    return trainer


@pytest.fixture(scope="module")
def denoising_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("denoising")
    plain = Autoencoder(code_dim=32, optimizer=adam)
    fit(plain, ImageDataModule(train_subset=5000, batch_size=50), root, "plain", [], epochs=5)
    plain_checkpoint = next((root / "plain").glob("version_0/checkpoints/*.ckpt"))
    # Masking that keeps a quarter of the pixels: the corrupted input is a strong baseline in MSE otherwise.
    datamodule = ImageDataModule(train_subset=5000, batch_size=50, corruption="masking", corruption_args={"p": 0.25})
    model = Autoencoder(code_dim=32, optimizer=adam)
    callbacks = [KNNEvaluator(), DenoisingReference(plain_checkpoint=str(plain_checkpoint)), ReconstructionGrid()]
    trainer = fit(model, datamodule, root, "denoising", callbacks, epochs=5)
    results = json.loads((Path(trainer.log_dir) / "results.json").read_text())
    return root, model, datamodule, results, plain_checkpoint


def test_denoising_ae_beats_the_corrupted_input_and_the_plain_ae(denoising_run):
    _, _, _, results, _ = denoising_run
    ae = results["ae"]
    for metric in ("bce_per_pixel", "mse_per_pixel"):
        assert ae[f"test/{metric}"] < ae[f"test/corrupted_{metric}"]
        assert ae[f"test/{metric}"] < ae[f"test/plain_ae_{metric}"]


def test_reference_errors_are_measured_on_the_fixed_corrupted_test_images(denoising_run):
    _, _, datamodule, results, plain_checkpoint = denoising_run
    test = datamodule.split("test")
    expected = reconstruction_metrics(test.fixed_inputs, test.images)
    assert results["ae"]["test/corrupted_mse_per_pixel"] == pytest.approx(expected["mse_per_pixel"], rel=1e-6)
    plain = Autoencoder(code_dim=32)
    plain.load_state_dict(torch.load(plain_checkpoint, weights_only=True)["state_dict"])
    with torch.no_grad():
        outputs = plain.eval()(test.fixed_inputs)
    expected = reconstruction_metrics(outputs, test.images)
    assert results["ae"]["test/plain_ae_bce_per_pixel"] == pytest.approx(expected["bce_per_pixel"], rel=1e-5)


def test_denoising_knn_is_measured_on_clean_images(denoising_run):
    _, model, datamodule, results, _ = denoising_run
    train, test = datamodule.split("train"), datamodule.split("test")
    with torch.no_grad():
        knn = KNeighborsClassifier(10).fit(model.encode(train.images).numpy(), train.labels.numpy())
        clean = (knn.predict(model.encode(test.images).numpy()) == test.labels.numpy()).mean()
        noisy = (knn.predict(model.encode(test.fixed_inputs).numpy()) == test.labels.numpy()).mean()
    assert results["ae"]["test/knn_acc"] == pytest.approx(clean, abs=1e-6)
    assert clean != noisy  # so the check above could tell them apart


def test_denoising_grid_shows_clean_corrupted_reconstructed(denoising_run):
    root, _, datamodule, _, _ = denoising_run
    image = Image.open(next((root / "denoising").glob("version_0/reconstructions.png")))
    assert image.size == (20 * 30 + 2, 3 * 30 + 2)
    pixels = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
    test = datamodule.split("test")
    first_zero = (test.labels == 0).nonzero()[0, 0]
    assert torch.allclose(pixels[2:30, 2:30], test.images[first_zero].view(28, 28), atol=1 / 255 + 1e-6)
    assert torch.allclose(pixels[32:60, 2:30], test.fixed_inputs[first_zero].view(28, 28), atol=1 / 255 + 1e-6)


def test_plain_checkpoint_of_another_shape_is_a_clear_error(denoising_run, tmp_path):
    _, _, datamodule, _, plain_checkpoint = denoising_run
    other = Autoencoder(code_dim=8)
    reference = DenoisingReference(plain_checkpoint=str(plain_checkpoint))
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.datamodule = datamodule  # what the callback reads; no run needed to build the reference
    with pytest.raises(ValueError, match=r"is not a Autoencoder of the same shape: Error\(s\) in loading state_dict"):
        reference._plain_model(trainer, other)
    missing = DenoisingReference(plain_checkpoint=str(tmp_path / "none.ckpt"))
    with pytest.raises(FileNotFoundError, match=r"none.ckpt'?: no such checkpoint file"):
        missing._plain_model(trainer, other)


def test_auto_finds_the_newest_plain_run_of_the_same_model_on_clean_data(tmp_path):
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"x")
    model_config = {"class_path": "lightning_ae.models.Autoencoder", "init_args": {"code_dim": 32, "loss": "bce"}}

    def write_run(name: str, data: dict, model: dict = model_config) -> None:
        folder = tmp_path / name / "version_0"
        folder.mkdir(parents=True)
        results = {"status": "tested", "best_checkpoint": str(checkpoint), "config": {"model": model, "data": data}}
        (folder / "results.json").write_text(json.dumps(results))

    args = {"code_dim": 32, "loss": "bce", "input_shape": (784,), "optimizer": "ignored"}
    write_run("noisy", {"dataset": "mnist", "corruption": "masking"})
    write_run("other-shape", {"dataset": "mnist", "corruption": None}, {**model_config, "init_args": {"code_dim": 8}})
    assert find_plain_checkpoint(tmp_path, Autoencoder, args, "mnist") is None
    # An older config that leaves out arguments at their defaults (output_activation) still matches.
    write_run("plain", {"dataset": "mnist", "corruption": None})
    assert find_plain_checkpoint(tmp_path, Autoencoder, args, "mnist") == checkpoint
    assert find_plain_checkpoint(tmp_path, Autoencoder, {**args, "output_activation": "tanh"}, "mnist") is None
    assert find_plain_checkpoint(tmp_path, Autoencoder, args, "fashion_mnist") is None


def test_auto_finds_a_plain_run_recorded_relative_to_another_working_directory(tmp_path, monkeypatch):
    """A run records its checkpoint relative to where it ran (lightning_logs/...); read from elsewhere,
    the checkpoint is found in the checkpoints folder beside its results.json."""
    folder = tmp_path / "logs" / "basic_ae" / "version_0"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best-epoch3.ckpt").write_bytes(b"x")
    model = {"class_path": "lightning_ae.models.Autoencoder", "init_args": {"code_dim": 32}}
    results = {
        "status": "tested",
        "best_checkpoint": "lightning_logs/basic_ae/version_0/checkpoints/best-epoch3.ckpt",
        "config": {"model": model, "data": {"dataset": "mnist", "corruption": None}},
    }
    (folder / "results.json").write_text(json.dumps(results))
    monkeypatch.chdir(tmp_path)  # where the recorded relative path does not exist
    found = find_plain_checkpoint(tmp_path / "logs", Autoencoder, {"code_dim": 32}, "mnist")
    assert found == folder / "checkpoints" / "best-epoch3.ckpt"
    (folder / "checkpoints" / "best-epoch3.ckpt").unlink()  # gone for good: no plain run to compare with
    assert find_plain_checkpoint(tmp_path / "logs", Autoencoder, {"code_dim": 32}, "mnist") is None


def test_pairs_mode_trains_and_shows_pairs_and_outputs(tmp_path):
    datamodule = ImageDataModule(pairs=True, sim=10, pair_objects=300, train_subset=3000, batch_size=100)
    model = Autoencoder(code_dim=16, optimizer=adam)
    datamodule.setup()
    objects = datamodule.split("train").images[:300]
    with torch.no_grad():
        before = model.reconstruction_loss(model.decode_logits(model.encode(objects)), objects).item()
    trainer = fit(model, datamodule, tmp_path, "pairs", [PairsGrid(objects=6), ReconstructionGrid()], epochs=2)
    assert trainer.global_step == 2 * 30  # 3,000 pairs at batch 100
    results = json.loads((Path(trainer.log_dir) / "results.json").read_text())
    assert results["last_epoch"]["val/loss"] < before
    pairs = Image.open(Path(trainer.log_dir) / "pairs.png")
    assert pairs.size == (11 * 30 + 2, 6 * 30 + 2)  # an object and its 10 partners per row
    # Reconstruction grid in pairs mode: objects, their partner targets, the outputs.
    assert Image.open(Path(trainer.log_dir) / "reconstructions.png").size == (20 * 30 + 2, 3 * 30 + 2)
