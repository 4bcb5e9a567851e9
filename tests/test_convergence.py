"""Did it converge, did it learn: the trivial predictors against independent numpy computations, the two
verdicts, and both on short real runs (results.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from lightning_ae.callbacks import ResultsJSON
from lightning_ae.callbacks.trivial import trivial_predictor
from lightning_ae.data import ImageDataModule
from lightning_ae.evaluation import (
    class_mean_predictor_metrics,
    class_prior,
    class_prior_metrics,
    convergence,
    learned,
    mean_predictor_metrics,
    mean_target,
)
from lightning_ae.models import Autoencoder, Classifier

EPS = 1e-3  # PCA's clipping for BCE, used for the mean image too


def numpy_mean_image_errors(train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Independent: the mean training image scored on every test image, in float64 numpy."""
    mean = train.reshape(len(train), -1).astype(np.float64).mean(axis=0)
    target = test.reshape(len(test), -1).astype(np.float64)
    p = np.clip(mean, EPS, 1 - EPS)
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    mse = (target - mean) ** 2
    return {
        "bce_per_pixel": bce.mean(),
        "bce_per_image": bce.sum(axis=1).mean(),
        "mse_per_pixel": mse.mean(),
        "mse_per_image": mse.sum(axis=1).mean(),
    }


def test_mean_predictor_equals_numpy_in_chunks_with_pixels_that_are_always_zero():
    generator = torch.Generator().manual_seed(0)
    train = torch.rand(300, 50, generator=generator)
    test = torch.rand(77, 50, generator=generator)
    train[:, :5] = 0.0  # a border pixel: 0 in every training image, so the clipping matters...
    test[:3, 0] = 1.0  # ...wherever a test image has ink there
    mean = mean_target(train.split(64))
    figures = mean_predictor_metrics(mean, test.split(10))
    expected = numpy_mean_image_errors(train.numpy(), test.numpy())
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value, rel=1e-9), key
    assert mean.numpy() == pytest.approx(train.double().mean(dim=0).numpy())


def test_bce_of_the_mean_predictor_is_none_when_targets_leave_0_1():
    codes = torch.randn(40, 6)  # tanh or ReLU codes of a pre-training layer: MSE only
    figures = mean_predictor_metrics(mean_target([codes]), [codes])
    assert figures["bce_per_pixel"] is None and figures["bce_per_image"] is None
    assert figures["mse_per_pixel"] == pytest.approx(codes.double().var(dim=0, unbiased=False).mean().item())


def test_class_prior_cross_entropy_and_majority_error_equal_numpy():
    rng = np.random.default_rng(0)
    train = rng.choice(10, size=1000, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum())
    test = rng.integers(0, 10, size=400)
    prior = class_prior(torch.from_numpy(train), 10)
    figures = class_prior_metrics(prior, torch.from_numpy(test))
    counts = np.bincount(train, minlength=10) / len(train)
    assert figures["loss"] == pytest.approx(-np.log(counts[test]).mean(), rel=1e-12)
    assert figures["majority_class"] == int(np.argmax(counts))
    assert figures["error"] == pytest.approx((test != np.argmax(counts)).mean())


@pytest.mark.slow
def test_the_trivial_predictor_uses_the_splits_own_targets_clean_images_and_partners():
    """Denoising: the clean image (not the corrupted input); pairs: the partner image; on MNIST."""
    trainer = SimpleNamespace(datamodule=None)
    model = Autoencoder(code_dim=2)
    for kwargs in ({"corruption": "masking", "corruption_args": {"p": 0.5}}, {"pairs": True, "pair_objects": 300}):
        datamodule = ImageDataModule(train_subset=600, **kwargs)
        datamodule.setup()
        trainer.datamodule = datamodule
        figures = trivial_predictor(trainer, model)
        train, test = datamodule.split("train"), datamodule.split("test")
        if "pairs" in kwargs:
            train_targets, test_targets = train.images[train.partners], test.images[test.partners]
        else:
            train_targets, test_targets = train.images, test.images
        expected = numpy_mean_image_errors(train_targets.numpy(), test_targets.numpy())
        assert figures["predictor"] == "mean training image"
        for key, value in expected.items():
            assert figures[f"test/{key}"] == pytest.approx(value, rel=1e-9), (kwargs, key)


def test_convergence_verdicts():
    assert convergence([0.5, 0.4, 0.3], early_stopped=True, stopped_epoch=2)["converged"]
    flat = convergence([0.9, 0.300, 0.301, 0.302], tolerance=0.01, window=3)
    assert flat["converged"] and flat["relative_change"] == pytest.approx(0.002 / 0.302)
    falling = convergence([0.5, 0.4, 0.3], tolerance=0.01, window=3)
    assert not falling["converged"] and "still falling" in falling["reason"]
    short = convergence([0.5, 0.4], window=3)
    assert not short["converged"] and "too few epochs" in short["reason"]
    assert not convergence([0.3, None, 0.3], window=3)["converged"]


def test_learned_verdict_and_its_margin():
    assert learned(0.10, 0.26, "mean training image", "test/bce_per_pixel")["learned"]
    at_plateau = learned(0.25, 0.26, "mean training image", "test/bce_per_pixel", margin=0.1)
    assert not at_plateau["learned"] and at_plateau["trivial_loss"] == 0.26
    assert not learned(None, 0.26, "mean training image", "test/bce_per_pixel")["learned"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tolerance": 0}, "tolerance=0"),
        ({"tolerance": 1.5}, "tolerance=1.5"),
        ({"window": 1}, "window=1"),
        ({"window": 2.5}, "window=2.5"),
        ({"margin": -0.1}, "margin=-0.1"),
        ({"margin": 1}, "margin=1"),
    ],
)
def test_results_json_checks_its_verdict_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResultsJSON(**kwargs)


def test_the_history_survives_a_checkpoint():
    results = ResultsJSON()
    results.val_loss_history = [0.3, 0.2]
    again = ResultsJSON()
    again.load_state_dict(results.state_dict())
    assert again.val_loss_history == [0.3, 0.2]


# -- short real runs --------------------------------------------------------------------------


def short_run(root: Path, model: pl.LightningModule, epochs: int, extra=(), train_subset: int = 2000) -> dict:
    pl.seed_everything(0)
    datamodule = ImageDataModule(train_subset=train_subset, batch_size=50)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        logger=False,
        callbacks=[ResultsJSON(), *extra],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    return json.loads((root / "results.json").read_text())


def adam(lr: float):
    return lambda params: torch.optim.Adam(params, lr=lr)


@pytest.mark.slow
def test_a_run_that_learns_and_is_still_falling(tmp_path):
    results = short_run(tmp_path, Autoencoder(code_dim=32, optimizer=adam(1e-2)), epochs=3)
    history = results["val_loss_history"]
    assert len(history) == 3 and history[-1] == pytest.approx(results["last_epoch"]["val/loss"])
    assert history[0] > history[1] > history[2]
    assert results["convergence"]["converged"] is False and "still falling" in results["convergence"]["reason"]
    verdict = results["learned"]
    assert verdict["learned"] is True and verdict["metric"] == "test/bce_per_pixel"
    assert verdict["loss"] == results["ae"]["test/bce_per_pixel"]
    assert verdict["trivial_loss"] == results["trivial"]["test/bce_per_pixel"] and verdict["margin"] == 0.1
    assert set(results["trivial"]) >= {"test/bce_per_pixel", "test/bce_per_image", "test/mse_per_pixel"}
    assert results["device_name"] and results["environment"]["device"] == "cpu"


def test_a_run_that_never_moves_is_flat_but_did_not_learn(tmp_path):
    """Learning rate 0: val/loss is the same every epoch (converged by tolerance), and no better than the mean."""
    results = short_run(tmp_path, Autoencoder(code_dim=8, optimizer=adam(0.0)), epochs=3, train_subset=500)
    assert results["convergence"]["converged"] is True and results["convergence"]["relative_change"] == 0
    assert results["convergence"]["early_stopped"] is False
    assert results["learned"]["learned"] is False
    assert results["ae"]["test/bce_per_pixel"] > 0.9 * results["trivial"]["test/bce_per_pixel"]


def test_early_stopping_counts_as_converged(tmp_path):
    # No epoch can improve by 10 nats: EarlyStopping stops the run after epoch 1 (patience 1).
    stopper = EarlyStopping(monitor="val/loss", patience=1, min_delta=10.0)
    results = short_run(tmp_path, Autoencoder(code_dim=8, optimizer=adam(1e-3)), 10, [stopper], train_subset=500)
    assert results["epochs"] == 2 and len(results["val_loss_history"]) == 2
    convergence_ = results["convergence"]
    assert convergence_["converged"] is True and convergence_["early_stopped"] is True
    assert convergence_["stopped_epoch"] == 1 and "early stopping" in convergence_["reason"]


def test_testing_the_best_checkpoint_keeps_the_fits_verdict(tmp_path):
    """The CLI tests the best checkpoint, which restores callback states as they were at its epoch: the
    history and EarlyStopping's stop must still be the whole fit's. lr 0: val/loss never moves, so the best
    checkpoint is epoch 0's, and EarlyStopping (patience 2) ends the run after epoch 2."""
    pl.seed_everything(0)
    datamodule = ImageDataModule(train_subset=500, batch_size=50)
    callbacks = [
        ResultsJSON(),
        EarlyStopping(monitor="val/loss", patience=2, min_delta=10.0),
        ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/loss", save_last=True),
    ]
    trainer = pl.Trainer(
        max_epochs=10,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Autoencoder(code_dim=8, optimizer=adam(0.0))
    trainer.fit(model, datamodule=datamodule)
    assert "epoch=0" in trainer.checkpoint_callback.best_model_path
    trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "tested" and results["epochs"] == 3 and len(results["val_loss_history"]) == 3
    assert results["convergence"]["early_stopped"] is True and results["convergence"]["stopped_epoch"] == 2


def test_class_mean_predictor_equals_numpy():
    generator = torch.Generator().manual_seed(0)
    train, test = torch.rand(300, 12, generator=generator), torch.rand(200, 12, generator=generator)
    train_labels, test_labels = torch.arange(300) % 3, torch.arange(200) % 3
    figures = class_mean_predictor_metrics(
        zip(train.split(64), train_labels.split(64), strict=True),
        zip(test.split(50), test_labels.split(50), strict=True),
        num_classes=3,
    )
    x, xt, y, yt = train.double().numpy(), test.double().numpy(), train_labels.numpy(), test_labels.numpy()
    means = np.stack([x[y == c].mean(0) for c in range(3)])[yt]
    clipped = np.clip(means, 1e-3, 1 - 1e-3)
    bce = -(xt * np.log(clipped) + (1 - xt) * np.log(1 - clipped))
    assert figures["mse_per_pixel"] == pytest.approx(((xt - means) ** 2).mean(), rel=1e-9)
    assert figures["bce_per_image"] == pytest.approx(bce.sum(1).mean(), rel=1e-9)


def test_a_similarity_model_is_judged_against_the_class_mean_it_cannot_beat():
    """Pairs: the floor is the class's mean image; learned means at least `margin` of the way down to it."""
    half_way = learned(0.24, 0.26, "mean training image", "test/bce_per_pixel", 0.1, floor=0.22, floor_name="class")
    assert half_way["learned"] is True and "of the way down" in half_way["reason"]  # 0.24 <= 0.26 - 0.1 * 0.04
    assert learned(0.24, 0.26, "mean training image", "test/bce_per_pixel", 0.1)["learned"] is False  # no floor
    assert learned(0.259, 0.26, "m", "test/bce_per_pixel", 0.1, floor=0.22)["learned"] is False
    trainer = SimpleNamespace(datamodule=ImageDataModule(train_subset=600, pairs=True, pair_objects=300))
    trainer.datamodule.setup()
    figures = trivial_predictor(trainer, Autoencoder(code_dim=2))
    assert figures["class_mean"]["test/bce_per_pixel"] < figures["test/bce_per_pixel"]


def test_a_classifier_is_set_against_the_class_prior(tmp_path):
    model = Classifier(hidden_dims=[32], optimizer=adam(3e-3))
    results = short_run(tmp_path, model, epochs=1, train_subset=1000)
    trivial = results["trivial"]
    datamodule = ImageDataModule(train_subset=1000)
    datamodule.setup()
    counts = np.bincount(datamodule.split("train").labels.numpy(), minlength=10) / 1000
    test = datamodule.split("test").labels.numpy()
    assert trivial["predictor"] == "class prior"
    assert trivial["test/loss"] == pytest.approx(-np.log(counts[test]).mean())
    assert trivial["test/error"] == pytest.approx((test != np.argmax(counts)).mean())
    assert results["learned"]["learned"] is True and results["learned"]["metric"] == "test/loss"
    assert results["learned"]["loss"] == results["model"]["test/loss"] < 0.9 * trivial["test/loss"]
    assert math.isfinite(results["learned"]["trivial_loss"])


def test_a_resumed_run_counts_the_fit_time_before_its_interruption(tmp_path):
    """A run stopped and resumed from last.ckpt reports the training time of both parts (a study sums these
    times), not only the part after the resume."""

    def fit(max_epochs: int, ckpt_path: str | None) -> dict:
        pl.seed_everything(0)
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            default_root_dir=tmp_path,
            logger=False,
            callbacks=[ResultsJSON(), ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        model = Autoencoder(code_dim=8, optimizer=adam(1e-3))
        trainer.fit(model, datamodule=ImageDataModule(train_subset=500, batch_size=50), ckpt_path=ckpt_path)
        return json.loads((tmp_path / "results.json").read_text())

    first = fit(2, None)  # as if stopped after epoch 2
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    checkpointed = next(state for key, state in saved.items() if key.startswith("ResultsJSON"))["fit_seconds"]
    assert 0 < checkpointed <= first["timings"]["fit_seconds"]
    resumed = fit(3, str(tmp_path / "checkpoints" / "last.ckpt"))
    assert resumed["epochs"] == 3 and len(resumed["val_loss_history"]) == 3
    assert resumed["timings"]["fit_seconds"] > checkpointed
    assert resumed["timings"]["wall_seconds"] >= resumed["timings"]["fit_seconds"]
