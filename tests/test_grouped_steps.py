"""Grouped steps change the trainer's overhead, never the updates: the same weights as a plain PyTorch loop."""

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
    "basic_ae_sgd": (lambda: Autoencoder(code_dim=32), autoencoder_loss, 32),
    "classifier_momentum": (lambda: Classifier(hidden_dims=[64, 32]), classifier_loss, 25),
}


@pytest.mark.parametrize("group_batches", [None, 1, 7])
@pytest.mark.parametrize("case", sorted(CASES))
def test_lightning_fit_reaches_the_plain_loops_weights(case, group_batches):
    build, loss_fn, batch_size = CASES[case]
    datamodule = ImageDataModule(train_subset=1000, batch_size=batch_size, group_batches=group_batches)
    datamodule.setup()
    torch.manual_seed(0)
    reference = build()
    torch.manual_seed(0)
    model = build()
    plain_loop(reference, datamodule, 2, loss_fn)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    steps_per_epoch = -(-1000 // batch_size)
    assert trainer.global_step == 2 * steps_per_epoch  # one update per mini-batch, grouped or not
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_groups_hold_consecutive_batches_and_cover_the_epoch():
    datamodule = ImageDataModule(train_subset=1000, batch_size=32, group_batches=5)
    datamodule.setup()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    trainer.strategy.connect(Autoencoder())
    datamodule.trainer = trainer
    loader = datamodule.train_dataloader()
    groups = list(loader)
    assert len(groups) == len(loader) == 7  # 32 batches in groups of 5
    assert [len(g) for g in groups] == [5] * 6 + [2]
    labels = torch.cat([batch[2] for group in groups for batch in group])
    expected = torch.cat([datamodule.split("train").batch(i)[2] for i in loader.sampler])
    assert torch.equal(labels, expected)


def test_a_plateau_scheduler_watches_val_loss_once_per_epoch():
    """ReduceLROnPlateau gets val/loss at each epoch's end: with a threshold no epoch can meet, every epoch after
    the first counts as a stall and (patience 0) halves the learning rate."""
    datamodule = ImageDataModule(train_subset=500, batch_size=50)
    model = Autoencoder(
        code_dim=8,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        scheduler=partial(ReduceLROnPlateau, factor=0.5, patience=0, threshold=0.9),
    )
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)


class StepScheduled(Autoencoder):
    """A model whose scheduler steps after every update (Lightning's interval 'step')."""

    def configure_optimizers(self):
        config = super().configure_optimizers()
        config["lr_scheduler"]["interval"] = "step"
        return config


def test_a_step_interval_scheduler_steps_after_every_update_inside_groups():
    datamodule = ImageDataModule(train_subset=1000, batch_size=32, group_batches=7)
    datamodule.setup()
    schedule = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.5, total_steps=2 * 32)
    torch.manual_seed(0)
    reference = Autoencoder(code_dim=32, optimizer=partial(torch.optim.SGD, lr=0.5))
    torch.manual_seed(0)
    model = StepScheduled(code_dim=32, optimizer=partial(torch.optim.SGD, lr=0.5), scheduler=schedule)
    plain_loop(reference, datamodule, 2, autoencoder_loss, schedule)
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(model, datamodule=datamodule)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
