"""`ReconstructionGrid`: what the autoencoder makes of a fixed set of test images."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image
from typing_extensions import override

from lightning_ae.callbacks.base import EvaluationCallback, class_stratified_indices, evaluating, logging_step
from lightning_ae.checks import check_path_segment, check_positive_int
from lightning_ae.data.loader import SplitData
from lightning_ae.files import atomic_write, write_json


def image_shape(split: SplitData) -> tuple[int, ...]:
    """(channels, height, width) of the split's images, as the dataset spec gives it."""
    if split.image_shape is None:
        raise ValueError("this picture needs a split of images; the data module gave one without an image_shape.")
    return split.image_shape


class ReconstructionGrid(EvaluationCallback):
    """Rows of `per_class` test images per class: originals, the model's inputs when they differ
    (corrupted, or the partner target in pairs mode), and the reconstructions.

    Sent to TensorBoard's Images tab (tag `reconstructions`) every `every_n_epochs`
    validation epochs and at test; written as `filename` in the run's folder at test.

    At test it also writes how an image is transformed on its way through the network, as
    `layers_filename` (JSON; null: not written): the model's `describe_rows()`, one
    `{"layer", "shape", "note"}` per layer with the shape after it, input to reconstruction
    (what `lightning-ae describe` prints). The study report shows it from there.
    """

    def __init__(
        self,
        per_class: int = 2,
        every_n_epochs: int = 1,
        filename: str = "reconstructions.png",
        layers_filename: str | None = "layers.json",
    ) -> None:
        super().__init__()
        check_positive_int("per_class", per_class)
        check_positive_int("every_n_epochs", every_n_epochs)
        if not filename.endswith(".png"):
            raise ValueError(f"filename={filename!r} is not valid; valid: a name ending in .png.")
        if layers_filename is not None and not layers_filename.endswith(".json"):
            raise ValueError(
                f"layers_filename={layers_filename!r} is not valid; valid: a name ending in .json, or null."
            )
        self.per_class, self.every_n_epochs = per_class, every_n_epochs
        self.filename = check_path_segment("filename", filename)
        self.layers_filename = layers_filename

    @torch.no_grad()
    def grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor:
        data = self.data(trainer)
        split = data.split("test")
        picked = class_stratified_indices(split.item_labels, self.per_class, len(data.class_names))
        inputs, targets, _ = split.batch(picked)
        clean = split.images[split.image_index(picked)]
        with evaluating(pl_module):
            outputs = pl_module(inputs.to(pl_module.device))
        # The split may live on the accelerator (data_on_device), the picture is made on the host: every row to the CPU.
        inputs, targets, clean, outputs = (row.cpu() for row in (inputs, targets, clean, outputs))
        rows = [clean]
        if not torch.equal(inputs, clean):
            rows.append(inputs)
        if not torch.equal(targets, clean):
            rows.append(targets)
        rows.append(outputs)
        images = torch.cat([row.reshape(-1, *image_shape(split)) for row in rows]).clamp(0, 1)
        return make_grid(images, nrow=len(picked), padding=2, pad_value=0.5)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        writer = self.tensorboard(trainer)
        if writer is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            # The scalars' step (not the epoch): one x-axis unit on every tab.
            writer.add_image("reconstructions", self.grid(trainer, pl_module), global_step=logging_step(trainer))

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        grid = self.grid(trainer, pl_module)
        writer = self.tensorboard(trainer)
        if writer is not None:
            writer.add_image("test/reconstructions", grid, global_step=logging_step(trainer))
        with atomic_write(self.output_dir(trainer) / self.filename) as handle:
            save_image(grid, handle, format="png")
        if self.layers_filename is not None and callable(getattr(pl_module, "describe_rows", None)):
            rows = [
                {"layer": name, "shape": list(shape), "note": note} for name, shape, note in pl_module.describe_rows()
            ]
            write_json(
                self.output_dir(trainer) / self.layers_filename, {"model": type(pl_module).__name__, "layers": rows}
            )


class PairsGrid(EvaluationCallback):
    """Similarity pairs (homework 2.3a): each row one training object, then its partners (the targets).

    Written at the start of fit as `filename` in the run's folder and to TensorBoard
    (tag `pairs`), so that what the model is asked to reproduce is visible.
    """

    def __init__(self, objects: int = 10, filename: str = "pairs.png") -> None:
        super().__init__()
        check_positive_int("objects", objects)
        if not filename.endswith(".png"):
            raise ValueError(f"filename={filename!r} is not valid; valid: a name ending in .png.")
        self.objects, self.filename = objects, check_path_segment("filename", filename)

    def grid(self, trainer: pl.Trainer) -> Tensor:
        split = self.data(trainer).split("train")
        if split.objects is None:
            raise ValueError("PairsGrid needs the DataModule in pairs mode (data.pairs: true).")
        rows = []
        for obj in split.objects.unique()[: self.objects]:
            pairs = torch.nonzero(split.objects == obj).flatten()
            rows.append(torch.cat([split.images[obj].unsqueeze(0), split.images[split.partners[pairs]]]))
        images = torch.cat(rows).reshape(-1, *image_shape(split)).cpu()  # drawn on the host, wherever the split lives
        return make_grid(images, nrow=len(rows[0]), padding=2, pad_value=0.5)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        grid = self.grid(trainer)
        writer = self.tensorboard(trainer)
        if writer is not None:
            writer.add_image("pairs", grid, global_step=0)
        with atomic_write(self.output_dir(trainer) / self.filename) as handle:
            save_image(grid, handle, format="png")
