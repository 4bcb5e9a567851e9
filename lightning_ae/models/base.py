"""What every autoencoder shares: the reconstruction loss, the steps and what they log.

A subclass builds `encoder` and `decoder` (the decoder ends in logits, before the
output sigmoid) and sets `code_dim`. Evaluation beyond the loss (kNN, PCA, pictures)
lives in callbacks, which only need `encode`.

Two pieces of the training recipe start from the data, once, when a fit begins (`setup`):
the encoder sees centred inputs (x minus the mean training input, a buffer saved in every
checkpoint, so a checkpoint's codes need nothing else), and the decoder's output bias starts
at the inverse output activation of the mean training target (logit(mean) for a sigmoid),
so the first step already predicts the mean image instead of grey. Without them, a sigmoid
encoder sits for epochs on the plateau where every input gets the mean image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from lightning_ae.models.layers import Loss, OutputActivation, check_loss, check_output
from lightning_ae.models.trainable import LRSchedulerCallable, OptimizerCallable, TrainableModule


class AutoencoderBase(TrainableModule):
    encoder: nn.Module
    decoder: nn.Module

    def __init__(
        self,
        input_shape: tuple[int, ...],
        code_dim: int,
        loss: Loss,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None,
        output_activation: OutputActivation = "sigmoid",
        center_inputs: bool = True,
        init_output_bias: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.input_shape = tuple(input_shape)
        self.input_dim = math.prod(self.input_shape)
        self.center_inputs, self.init_output_bias = center_inputs, init_output_bias
        # Subtracted from every input before the encoder; zeros (no centring) until a fit sets it from the data.
        self.register_buffer("input_shift", torch.zeros(self.input_shape))
        self.code_dim = code_dim
        self.loss_name = check_loss(loss)
        check_output(output_activation, loss)
        self.output_activation = output_activation

    def encode(self, x: Tensor) -> Tensor:
        """The code of each input, shape (N, code_dim)."""
        return self.encoder(x - self.input_shift)

    @override
    def setup(self, stage: str) -> None:
        # Before a checkpoint is restored (Lightning restores after setup), so a resumed run keeps its own values.
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        wanted = self.center_inputs or self.init_output_bias  # the means cost a pass over the training split
        if stage == "fit" and wanted and hasattr(datamodule, "training_means"):
            self.init_from_data(*datamodule.training_means())

    @torch.no_grad()
    def init_from_data(self, input_mean: Tensor, target_mean: Tensor) -> None:
        """Centre the inputs on `input_mean`, and start the output at `target_mean` (as each option says)."""
        if self.center_inputs:
            self.input_shift.copy_(input_mean.reshape(self.input_shape))
        output_bias = self.output_bias()
        if self.init_output_bias and output_bias is not None:
            target = target_mean.to(output_bias.device).reshape(-1)
            # One bias per output value (an MLP's pixels) takes the mean image; a conv layer's one bias its mean.
            if output_bias.numel() != target.numel():
                target = target.mean().expand_as(output_bias)
            output_bias.copy_(self.inverse_output_activation(target))

    def output_bias(self) -> Tensor | None:
        """The bias of the decoder's last layer that has one (the output's pre-activation)."""
        biased = [m for m in self.decoder.modules() if isinstance(getattr(m, "bias", None), Tensor)]
        return biased[-1].bias if biased else None

    def inverse_output_activation(self, values: Tensor) -> Tensor:
        """The pre-activation that gives `values`; clipped where the activation never reaches them."""
        if self.output_activation == "sigmoid":
            return torch.logit(values.clamp(1e-3, 1 - 1e-3))
        return torch.atanh(values.clamp(-0.999, 0.999)) if self.output_activation == "tanh" else values

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints from before input centring have no shift: zeros are exactly what those models saw.
        checkpoint["state_dict"].setdefault("input_shift", torch.zeros(self.input_shape))

    def decode_logits(self, code: Tensor) -> Tensor:
        return self.decoder(code).view(-1, *self.input_shape)

    def decode(self, code: Tensor) -> Tensor:
        """Reconstructions shaped like the inputs: in [0, 1] with the default sigmoid output."""
        return self.activate_output(self.decode_logits(code))

    def activate_output(self, logits: Tensor) -> Tensor:
        if self.output_activation == "sigmoid":
            return torch.sigmoid(logits)
        return torch.tanh(logits) if self.output_activation == "tanh" else logits

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def reconstruction_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # BCE from logits: the same value as BCE on the sigmoid output, without its log(0) problems.
        if self.loss_name == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(self.activate_output(logits), target)

    def shared_step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        """The reconstruction loss of a batch, logged as `<stage>/loss`: train, validation and test alike
        (the test also logs the errors per pixel and per image)."""
        inputs, target, _ = batch
        code = self.encode(inputs)
        logits = self.decode_logits(code)
        loss = self.objective(logits, target, code, stage)
        # sync_dist: under DDP each rank holds a disjoint shard; the epoch value is their mean (one reduction
        # per epoch, none on one device), so every rank's checkpointing sees the same val/loss.
        self.log(
            f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(inputs), sync_dist=True
        )
        if stage == "test":
            self.log_test_errors(logits, target)
        return loss

    def objective(self, logits: Tensor, target: Tensor, code: Tensor, stage: str) -> Tensor:
        """What training minimises (and early stopping watches): the reconstruction loss; a variant adds its
        penalty on the code here (see `SparseAutoencoder`)."""
        return self.reconstruction_loss(logits, target)

    @override
    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def log_test_errors(self, logits: Tensor, target: Tensor) -> None:
        n = len(target)
        mse = (self.activate_output(logits) - target).pow(2).view(n, -1)
        # "per_pixel": mean over pixels and images; "per_image": summed over the pixels, mean over images.
        metrics = {"test/mse_per_pixel": mse.mean(), "test/mse_per_image": mse.sum(dim=1).mean()}
        if self.output_activation == "sigmoid":  # BCE scores probabilities only
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").view(n, -1)
            metrics.update({"test/bce_per_pixel": bce.mean(), "test/bce_per_image": bce.sum(dim=1).mean()})
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)

    @override
    def predict_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        inputs, _, labels = batch
        code = self.encode(inputs)
        return {"code": code, "reconstruction": self.decode(code), "label": labels}

    @override
    def on_test_epoch_end(self) -> None:
        self.log_dict(
            {
                "test/code_dim": float(self.code_dim),
                "test/compression_ratio": self.input_dim / self.code_dim,
                "test/size_saved_percent": 100.0 * (1 - self.code_dim / self.input_dim),
            }
        )

    def describe_rows(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(layer, shape after it, note) for every layer, input to reconstruction."""
        x = torch.zeros(1, *self.input_shape, device=self.device)
        rows = [("input", tuple(x.shape[1:]), "")]
        with torch.no_grad():
            for part, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
                for layer in layers:
                    x = layer(x)
                    if not isinstance(layer, nn.Identity):
                        params = sum(p.numel() for p in layer.parameters())
                        name = f"{part}: {type(layer).__name__}({layer.extra_repr()})"
                        rows.append((name, tuple(x.shape[1:]), f"{params:,} params" if params else ""))
                if part == "encoder":
                    rows.append(("code", tuple(x.shape[1:]), f"{x[0].numel()} numbers"))
        rows.append((f"output ({self.output_activation})", tuple(x.shape[1:]), ""))
        return rows

    def describe(self) -> str:
        """The tensor shape after every layer, input to reconstruction (how the input is transformed)."""
        rows = self.describe_rows()
        width = max(len(name) for name, _, _ in rows)
        return "\n".join(f"{name:{width}s}  {str(shape):14s} {note}".rstrip() for name, shape, note in rows)
