"""`DenoisingReference`: what denoising gains, measured on the same corrupted test images.

Two references beside the denoising AE's own test error (reconstruction of the clean
image from the corrupted input):

- the corrupted input itself, taken as the "reconstruction" (`test/corrupted_*`): a model
  that does nothing scores this;
- the plain autoencoder of the same shape, trained on clean images, given the same
  corrupted inputs (`test/plain_ae_*`), when its checkpoint is known.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_ae.callbacks.base import EvaluationCallback
from lightning_ae.checks import same_network
from lightning_ae.evaluation.pca import reconstruction_metrics
from lightning_ae.files import read_results_file, recorded_checkpoint

log = logging.getLogger(__name__)

AUTO = "auto"


def _defaults(model_class: type) -> dict[str, Any]:
    parameters = inspect.signature(model_class.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _same_model(config: dict[str, Any], model_class: type, init_args: dict[str, Any]) -> bool:
    # The class's defaults fill what a terser config left out (a run of `make train` against a study's run).
    ours = {"model": {"class_path": model_class.__name__, "init_args": init_args}}
    return same_network(config, ours, defaults=_defaults(model_class))


def find_plain_checkpoint(log_root: Path, model_class: type, init_args: dict[str, Any], dataset: str) -> Path | None:
    """The best checkpoint of the newest finished run under `log_root` of the same model on clean data."""
    found = []
    # lightning_logs/<name>/version_N/results.json (the CLI) or <study>/runs/<run id>/results.json (a study).
    candidates = [*log_root.glob("*/version_*/results.json"), *log_root.glob("runs/*/results.json")]
    for results_file in candidates:
        results, _ = read_results_file(results_file)
        if results is None:  # absent or damaged: not a run to compare with
            continue
        config = results.get("config") or {}
        checkpoint = recorded_checkpoint(results_file, results.get("best_checkpoint"))
        data = config.get("data") or {}
        if (
            results.get("status") == "tested"
            and checkpoint is not None
            and data.get("corruption") is None
            and not data.get("pairs")
            and data.get("dataset", "mnist") == dataset
            and _same_model(config, model_class, init_args)
        ):
            found.append((results_file.stat().st_mtime, checkpoint))
    return max(found)[1] if found else None


class DenoisingReference(EvaluationCallback):
    """Test errors of the corrupted input itself and of a plain AE on the same corrupted test images.

    Args:
        plain_checkpoint: checkpoint of the plain AE of the same shape (trained on clean
            images); "auto" looks for the newest finished run of the same model on clean
            data under the same log root (e.g. the one `make train` leaves); null: none.
    """

    def __init__(self, plain_checkpoint: str | None = AUTO) -> None:
        super().__init__()
        self.plain_checkpoint = plain_checkpoint
        self.used_checkpoint: Path | None = None

    def _plain_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> pl.LightningModule | None:
        init_args = {k: v for k, v in dict(pl_module.hparams).items() if not k.startswith("_")}
        if self.plain_checkpoint == AUTO:
            log_root = self.output_dir(trainer).parent.parent
            path = find_plain_checkpoint(log_root, type(pl_module), init_args, trainer.datamodule.dataset)
            if path is None:
                log.warning(
                    "DenoisingReference: no finished run of the plain %s with these hyperparameters under %s; "
                    "train it on clean data first (e.g. `make train` for the basic AE) to get test/plain_ae_*.",
                    type(pl_module).__name__,
                    log_root,
                )
                return None
        elif self.plain_checkpoint is None:
            return None
        else:
            path = Path(self.plain_checkpoint)
            if not path.is_file():
                raise FileNotFoundError(f"plain_checkpoint={str(path)!r}: no such checkpoint file.")
        # Only tensors are read (weights_only): a checkpoint cannot run code when loaded. Read on the CPU,
        # then the model goes to pl_module's device below.
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        plain = type(pl_module)(**init_args)
        try:
            plain.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"plain_checkpoint {path} is not a {type(pl_module).__name__} of the same shape: "
                f"{str(err).splitlines()[0]}"
            ) from err
        self.used_checkpoint = path
        return plain.to(pl_module.device).eval()

    @torch.no_grad()
    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        split = self.data(trainer).split("test")
        if split.fixed_inputs is None:
            log.warning("DenoisingReference: the data has no corruption; nothing to compare.")
            return
        corrupted, clean = split.fixed_inputs, split.images
        metrics = {f"test/corrupted_{k}": v for k, v in reconstruction_metrics(corrupted, clean).items()}
        plain = self._plain_model(trainer, pl_module)
        if plain is not None:
            batch = self.data(trainer).eval_batch_size
            # Where `clean` lives (the accelerator under data_on_device): the metrics compare the two there.
            outputs = torch.cat([plain(chunk.to(plain.device)).to(clean.device) for chunk in corrupted.split(batch)])
            metrics.update({f"test/plain_ae_{k}": v for k, v in reconstruction_metrics(outputs, clean).items()})
        pl_module.log_dict(metrics, rank_zero_only=True)
