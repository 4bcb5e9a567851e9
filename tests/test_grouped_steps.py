"""The speed path (`GroupedSteps`) changes the trainer's overhead, never the updates: the same weights as a plain
PyTorch loop, and as Lightning's default strategy; and it refuses what it cannot do."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_ae.data import ImageDataModule
from lightning_ae.data.loader import EpochBatchSampler
from lightning_ae.models import Autoencoder, Classifier
from lightning_ae.models.presets import HOMEWORK_CLASSIFIER, HOMEWORK_SGD
from lightning_ae.strategies import GroupedBatches, GroupedSteps


def plain_loop(model: torch.nn.Module, datamodule: ImageDataModule, epochs: int, loss_fn, schedule=None) -> None:
    """The reference: one SGD update per batch, batches in the DataModule's seeded order; `schedule` (a scheduler
    factory) steps after every update."""
    split = datamodule.split("train")
    if hasattr(model, "init_from_data"):  # the autoencoder's recipe: centred inputs, output bias from the data
        model.init_from_data(*datamodule.training_means())
    optimizer = model.optimizer_factory(model.parameters())
    scheduler = schedule(optimizer) if schedule is not None else None
    for epoch in range(epochs):
        sampler = EpochBatchSampler(len(split), datamodule.batch_size, True, datamodule.seed)
        sampler.set_epoch(epoch)
        for index in sampler:
            inputs, target, labels = split.batch(index)
            loss = loss_fn(model, inputs, target, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()


def autoencoder_loss(model, inputs, target, labels):
    return F.binary_cross_entropy_with_logits(model.decode_logits(model.encode(inputs)), target)


def classifier_loss(model, inputs, target, labels):
    return F.cross_entropy(model(inputs), labels)


CASES = {
    # The homework's protocols: no dropout, whose masks would differ between the two loops, and no schedule.
    "basic_ae_sgd": (lambda: Autoencoder(code_dim=32, **HOMEWORK_SGD.model), autoencoder_loss, 32),
    "classifier_momentum": (lambda: Classifier(hidden_dims=[64, 32], **HOMEWORK_CLASSIFIER.model), classifier_loss, 25),
}
QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.mark.parametrize("batches_per_step", ["default strategy", None, 1, 7])
@pytest.mark.parametrize("case", sorted(CASES))
def test_lightning_fit_reaches_the_plain_loops_weights(case, batches_per_step):
    build, loss_fn, batch_size = CASES[case]
    datamodule = ImageDataModule(train_subset=1000, batch_size=batch_size)
    datamodule.setup()
    torch.manual_seed(0)
    reference = build()
    torch.manual_seed(0)
    model = build()
    plain_loop(reference, datamodule, 2, loss_fn)
    grouped = batches_per_step != "default strategy"
    strategy = GroupedSteps(batches_per_step) if grouped else "auto"
    trainer = pl.Trainer(max_epochs=2, strategy=strategy, limit_val_batches=0, **QUIET)
    trainer.fit(model, datamodule=datamodule)
    batches = -(-1000 // batch_size)
    group = (batches_per_step or max(1, 4096 // batch_size)) if grouped else 1
    assert trainer.global_step == 2 * -(-batches // group)  # one Lightning step per group
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_groups_hold_consecutive_batches_and_cover_the_epoch():
    datamodule = ImageDataModule(train_subset=1000, batch_size=32)
    datamodule.setup()
    loader = datamodule.train_dataloader()
    loader.group = 5
    groups = list(loader)
    assert len(groups) == len(loader) == 7  # 32 batches in groups of 5
    assert [len(g) for g in groups] == [5] * 6 + [2]
    labels = torch.cat([batch[2] for group in groups for batch in group])
    expected = torch.cat([datamodule.split("train").batch(i)[2] for i in loader.sampler])
    assert torch.equal(labels, expected)


def test_any_loader_is_grouped_by_the_wrapper():
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(10)), batch_size=3)
    groups = list(GroupedBatches(loader, 2))
    assert len(GroupedBatches(loader, 2)) == len(groups) == 2
    assert [[b[0].tolist() for b in g] for g in groups] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9]]]


def test_only_the_training_loader_is_grouped():
    datamodule = ImageDataModule(train_subset=500, batch_size=50)
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["train"] = type(batch)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["val"] = type(batch)

    trainer = pl.Trainer(max_epochs=1, strategy=GroupedSteps(4), callbacks=[Spy()], **QUIET)
    trainer.fit(Autoencoder(code_dim=8), datamodule=datamodule)
    assert seen["train"] is list and seen["val"] is tuple


def test_a_plateau_scheduler_watches_val_loss_once_per_epoch():
    """ReduceLROnPlateau gets val/loss at each epoch's end: with a threshold no epoch can meet, every epoch after
    the first counts as a stall and (patience 0) halves the learning rate."""
    for strategy in (GroupedSteps(), "auto"):
        model = Autoencoder(
            code_dim=8,
            optimizer=partial(torch.optim.SGD, lr=0.1),
            scheduler=partial(ReduceLROnPlateau, factor=0.5, patience=0, threshold=0.9),
        )
        trainer = pl.Trainer(max_epochs=3, strategy=strategy, **QUIET)
        trainer.fit(model, datamodule=ImageDataModule(train_subset=500, batch_size=50))
        assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


class StepScheduled(Autoencoder):
    """A model whose scheduler steps after every update (Lightning's interval 'step')."""

    frequency = 1

    def configure_optimizers(self):
        config = super().configure_optimizers()
        config["lr_scheduler"].update(interval="step", frequency=self.frequency)
        return config


def test_a_step_interval_scheduler_steps_after_every_update_inside_groups():
    datamodule = ImageDataModule(train_subset=1000, batch_size=32)
    datamodule.setup()
    schedule = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.5, total_steps=2 * 32)
    torch.manual_seed(0)
    reference = Autoencoder(code_dim=32, optimizer=partial(torch.optim.SGD, lr=0.5))
    torch.manual_seed(0)
    model = StepScheduled(code_dim=32, optimizer=partial(torch.optim.SGD, lr=0.5), scheduler=schedule)
    plain_loop(reference, datamodule, 2, autoencoder_loss, schedule)
    trainer = pl.Trainer(max_epochs=2, strategy=GroupedSteps(7), limit_val_batches=0, **QUIET)
    trainer.fit(model, datamodule=datamodule)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


class Manual(Autoencoder):
    def __init__(self) -> None:
        super().__init__(code_dim=8)
        self.automatic_optimization = False


@pytest.mark.parametrize(
    ("trainer_args", "model", "message"),
    [
        ({"gradient_clip_val": 1.0}, Autoencoder, "cannot clip gradients"),
        ({"accumulate_grad_batches": 2}, Autoencoder, "cannot accumulate gradients"),
        ({"precision": "bf16-mixed"}, Autoencoder, "trains in float32"),
        ({}, Manual, "automatic optimization"),
        ({}, type("EveryOther", (StepScheduled,), {"frequency": 2}), "frequency 2"),
    ],
)
def test_what_groups_cannot_do_is_refused_with_the_reason(trainer_args, model, message):
    if model is not Manual and model is not Autoencoder:
        built = model(code_dim=8, scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    else:
        built = model() if model is Manual else model(code_dim=8)
    trainer = pl.Trainer(max_epochs=1, strategy=GroupedSteps(), **trainer_args, **QUIET)
    with pytest.raises(ValueError, match=message) as raised:
        trainer.fit(built, datamodule=ImageDataModule(train_subset=200, batch_size=50))
    assert "trainer.strategy" in str(raised.value)


def test_a_bad_group_size_is_refused():
    for bad in (0, -3, True):
        with pytest.raises(ValueError, match="batches_per_step"):
            GroupedSteps(bad)


def test_the_logged_epoch_loss_is_the_same_as_without_groups():
    """Inner mini-batches' logs are held and logged once per group as their weighted mean: the epoch's
    train/loss equals Lightning's default strategy's (the same updates, the same per-batch losses)."""
    losses = {}
    for name, strategy in (("default", "auto"), ("grouped", GroupedSteps(7))):
        torch.manual_seed(0)
        trainer = pl.Trainer(max_epochs=2, strategy=strategy, limit_val_batches=0, **QUIET)
        trainer.fit(Autoencoder(code_dim=16), datamodule=ImageDataModule(train_subset=1000, batch_size=32))
        losses[name] = trainer.callback_metrics["train/loss"].item()
    assert losses["grouped"] == pytest.approx(losses["default"], rel=1e-5)
