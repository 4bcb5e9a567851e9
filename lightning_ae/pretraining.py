"""Greedy layer-wise pre-training with fine-tuning (homework 2.4), as one resumable pipeline.

Stages, each a Lightning run with its own TensorBoard log, checkpoints and `results.json`
under `output_dir/<stage>/`:

1. `layer1` ... `layerL`: one basic AE per hidden layer. The first reconstructs the images;
   each next one the codes of the layer below, computed once with the trained encoder
   (not per batch). The output activation and loss fit the range of what is
   reconstructed: images and sigmoid codes are in (0, 1): sigmoid output and BCE; tanh
   codes are in (-1, 1): tanh output and MSE (BCE is undefined outside [0, 1], and
   rescaling to (0, 1) would only hide the same squared-error fit); ReLU codes are in
   [0, inf): linear output and MSE. With `layers.masking` each is a denoising AE (its input
   masked, its target clean: stacked denoising autoencoders).
2. `frozen`: the classifier built from the trained encoders plus a fresh softmax layer;
   only the softmax layer trains (the homework's "before fine-tuning").
3. `finetune`: the same start (trained encoders, a fresh softmax layer, the same seed),
   every layer trains.

A stage whose `results.json` says it was tested is skipped when the pipeline runs again
(its best checkpoint is loaded instead); an interrupted stage resumes from its
`last.ckpt`. `output_dir/pipeline.json` holds the config that made the stages: running
another config into the same folder is refused, so results of different configs never mix.
No pre-training (homework 2.4a) is `configs/classifier.yaml`, a plain `lightning-ae fit`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_ae.callbacks import ResultsJSON, every_run_callbacks, progress_bar
from lightning_ae.callbacks.results import diverged, failure_record
from lightning_ae.checks import check_dropout, check_positive_int
from lightning_ae.data import ImageDataModule
from lightning_ae.data.corruptions import Masking
from lightning_ae.data.tensors import TensorDataModule
from lightning_ae.files import (
    folder_locked,
    read_results_file,
    recorded_checkpoint,
    resumable_checkpoint,
    set_aside,
    write_json,
)
from lightning_ae.models import Autoencoder, Classifier
from lightning_ae.models.layers import ACTIVATIONS
from lightning_ae.models.trainable import LRSchedulerCallable, OptimizerCallable, adam_lr1e3, reduce_lr_on_plateau
from lightning_ae.strategies import GroupedSteps, leave_requeue_to_the_engine, use_atomic_checkpoints

log = logging.getLogger(__name__)

# What each activation's codes range over, and the output activation and loss that fit it.
RECONSTRUCTION = {"sigmoid": ("sigmoid", "bce"), "tanh": ("tanh", "mse"), "relu": ("linear", "mse")}
RECONSTRUCTION["linear"] = ("linear", "mse")


@dataclass
class Stage:
    """How one kind of stage trains: at most `epochs` epochs; with `patience`, early stopping on val/loss.

    `dropout` and `input_dropout` are the classifier's (see `Classifier`), for the frozen and fine-tuning
    stages; the layers' autoencoders take none.

    `masking` is the layers' only: each layer's autoencoder sees its input with masking noise, every
    value kept with probability `masking` (the `masking` corruption's p), and reconstructs the clean
    input: stacked denoising autoencoders (Vincent et al., JMLR 2010). The next layer learns from the
    codes of the clean inputs. None: plain autoencoders (the homework's).
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: OptimizerCallable = field(default=adam_lr1e3)
    scheduler: LRSchedulerCallable | None = field(default=reduce_lr_on_plateau)
    patience: int | None = 3
    dropout: float = 0.0
    input_dropout: float = 0.0
    masking: float | None = None


class StageDiverged(RuntimeError):
    """A stage of the pipeline diverged; the pipeline's results.json says where (status "diverged")."""


class LayerwisePretraining:
    """The pipeline; `run()` runs (or resumes) every stage and returns the test metrics of `frozen` and `finetune`.

    Args:
        activation: of every hidden layer (sigmoid, tanh, relu).
        hidden_dims: the classifier's hidden layers (the homework's two of 1000, between the pixels and the 10 classes).
        layers: how each layer's autoencoder trains.
        frozen: how the softmax layer trains on the frozen pre-trained layers.
        finetune: how the whole network is fine-tuned.
        dataset, val_size, train_subset, seed: the data, as in ImageDataModule.
        output_dir: where the stages go.
        accelerator, devices: passed to every stage's Trainer.
        grouped_steps: train each stage on the speed path (`lightning_ae.strategies.GroupedSteps`, one
            device); false: Lightning's default strategy (e.g. for several devices).
    """

    def __init__(
        self,
        activation: str = "sigmoid",
        hidden_dims: list[int] | None = None,
        layers: Stage | None = None,
        frozen: Stage | None = None,
        finetune: Stage | None = None,
        dataset: str = "mnist",
        val_size: int = 5000,
        train_subset: int | None = None,
        seed: int = 0,
        output_dir: str = "lightning_logs/pretrain",
        accelerator: str = "auto",
        devices: int | str = 1,
        grouped_steps: bool = True,
        resolved_config: dict[str, Any] | None = None,
    ) -> None:
        if activation not in RECONSTRUCTION or activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not valid; valid values: {sorted(RECONSTRUCTION)}.")
        hidden_dims = [1000, 1000] if hidden_dims is None else list(hidden_dims)
        if not hidden_dims:
            raise ValueError("hidden_dims is empty: layer-wise pre-training needs at least one hidden layer.")
        for size in hidden_dims:
            check_positive_int("hidden_dims", size)
        # The defaults are configs/pretrain.yaml's recipe (a test holds the two together).
        self.layers = layers or Stage()
        self.frozen = frozen or Stage(epochs=60)
        self.finetune = finetune or Stage(epochs=50, patience=5, dropout=0.5, input_dropout=0.2)
        for name, stage in (("layers", self.layers), ("frozen", self.frozen), ("finetune", self.finetune)):
            check_positive_int(f"{name}.epochs", stage.epochs)
            check_positive_int(f"{name}.batch_size", stage.batch_size)
            if stage.patience is not None:
                check_positive_int(f"{name}.patience", stage.patience)
            for rate in ("dropout", "input_dropout"):
                check_dropout(f"{name}.{rate}", getattr(stage, rate))
        if self.layers.dropout or self.layers.input_dropout:
            raise ValueError(
                "layers.dropout and layers.input_dropout must be 0: dropout is the classifier's (frozen.dropout, "
                "finetune.dropout); the layers' autoencoders take none."
            )
        self.layer_corruption = self._layer_corruption()
        self.activation, self.hidden_dims = activation, hidden_dims
        self.data_args = {"dataset": dataset, "val_size": val_size, "train_subset": train_subset, "seed": seed}
        # Absolute, so that the stages' checkpoint folders read the same from any working directory (a stage
        # resumed under another spelling of its folder would forget its best checkpoint).
        self.seed, self.output_dir = seed, Path(output_dir).absolute()
        self.accelerator, self.devices, self.grouped_steps = accelerator, devices, grouped_steps
        # The config that defines the results (for pipeline.json and each stage's results.json).
        self.config = resolved_config or {
            "activation": activation,
            "hidden_dims": hidden_dims,
            **self.data_args,
            **{
                name: {
                    "epochs": s.epochs,
                    "batch_size": s.batch_size,
                    "optimizer": repr(s.optimizer),
                    "scheduler": repr(s.scheduler),
                    "patience": s.patience,
                    "dropout": s.dropout,
                    "input_dropout": s.input_dropout,
                    "masking": s.masking,
                }
                for name, s in (("layers", self.layers), ("frozen", self.frozen), ("finetune", self.finetune))
            },
        }
        self.datamodule = ImageDataModule(**self.data_args)

    def _layer_corruption(self) -> Masking | None:
        for name, stage in (("frozen", self.frozen), ("finetune", self.finetune)):
            if stage.masking is not None:
                raise ValueError(
                    f"{name}.masking={stage.masking!r}: masking noise is the layers' (layers.masking, stacked "
                    f"denoising autoencoders); the classifier drops input pixels with {name}.input_dropout."
                )
        if self.layers.masking is None:
            return None
        try:
            return Masking(self.layers.masking)
        except ValueError:
            raise ValueError(
                f"layers.masking={self.layers.masking!r} is not valid; valid: 0 < masking <= 1, the probability that "
                "an input value is kept, or null for plain autoencoders."
            ) from None

    # -- bookkeeping -------------------------------------------------------------------------

    def _claim_output_dir(self) -> None:
        """Refuse to mix: the folder's stages must come from this same config."""
        record = self.output_dir / "pipeline.json"
        how = ("accelerator", "devices", "grouped_steps", "output_dir")  # where and how fast, not what
        defining = {k: v for k, v in self.config.items() if k not in how}
        if record.exists():
            try:
                previous = json.loads(record.read_text())["config"]
                assert isinstance(previous, dict)
            except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
                raise ValueError(
                    f"{record}: not a readable pipeline record ({type(err).__name__}: {err}). It says which config "
                    "made the stages in that folder; delete the folder to start over, or choose another --output_dir."
                ) from None
            differing = sorted(k for k in set(previous) | set(defining) if previous.get(k) != defining.get(k))
            if differing:
                details = "; ".join(f"{k}: {previous.get(k)!r} there, {defining.get(k)!r} now" for k in differing)
                raise ValueError(
                    f"output_dir {self.output_dir} holds stages of another pipeline config ({details}). "
                    "Choose another --output_dir, or delete that folder to start over."
                )
        else:
            write_json(record, {"config": defining})

    @staticmethod
    def _finished(stage_dir: Path) -> dict[str, Any] | None:
        """The stage's results when it was tested; a damaged results.json is set aside and the stage redone
        (it resumes from its last checkpoint, so a stage that had finished goes straight to its test)."""
        results, problem = read_results_file(stage_dir / "results.json")
        if problem is not None:
            set_aside(stage_dir / "results.json", problem)
        return results if results is not None and results.get("status") == "tested" else None

    def _trainer(self, name: str, stage: Stage, results: ResultsJSON) -> pl.Trainer:
        stopping = (
            [] if stage.patience is None else [EarlyStopping("val/loss", min_delta=1e-4, patience=stage.patience)]
        )
        trainer = pl.Trainer(
            max_epochs=stage.epochs,
            accelerator=self.accelerator,
            devices=self.devices,
            strategy=GroupedSteps() if self.grouped_steps else "auto",
            logger=TensorBoardLogger(self.output_dir, name=name, version="", default_hp_metric=False),
            callbacks=[
                ModelCheckpoint(
                    monitor="val/loss",
                    save_last=True,
                    filename="best-epoch{epoch}",
                    auto_insert_metric_name=False,
                    enable_version_counter=False,  # a resumed stage overwrites its own last.ckpt
                ),
                results,
                *every_run_callbacks(),  # HParams, divergence guard, clean Ctrl+C/SIGTERM, exact resumption
                progress_bar(),
                *stopping,
            ],
            enable_model_summary=False,
        )
        use_atomic_checkpoints(trainer)  # a full disk or a kill never leaves a cut-off checkpoint
        leave_requeue_to_the_engine(trainer)
        return trainer

    def _load(self, model: pl.LightningModule, checkpoint: str, stage: str) -> None:
        # Only tensors are read (weights_only): a checkpoint cannot run code when loaded.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"stage {stage!r}: its checkpoint {checkpoint} does not fit this pipeline's {type(model).__name__} "
                f"({str(err).splitlines()[0]}). Delete {self.output_dir / stage} to retrain it."
            ) from err

    def run_stage(self, name: str, model: pl.LightningModule, datamodule: pl.LightningDataModule, stage: Stage) -> dict:
        """Train and test one stage, or load it when it already finished; returns its results."""
        stage_dir = self.output_dir / name
        finished = self._finished(stage_dir)
        if finished is not None:
            checkpoint = recorded_checkpoint(stage_dir / "results.json", finished.get("best_checkpoint"))
            if checkpoint is None:
                raise FileNotFoundError(
                    f"stage {name!r} finished, but its best checkpoint {finished.get('best_checkpoint')} is in "
                    f"neither that path nor {stage_dir / 'checkpoints'}. Delete {stage_dir} to retrain the stage."
                )
            log.info("Stage %s finished before; loading %s", name, checkpoint)
            self._load(model, str(checkpoint), name)
            return finished
        results = ResultsJSON()
        results.config = {"pipeline": self.config, "stage": name}
        trainer = self._trainer(name, stage, results)
        # The last good checkpoint (cut-off ones set aside), or none: the stage starts afresh.
        if (checkpoint := resumable_checkpoint(stage_dir / "checkpoints", f"stage {name}")) is not None:
            log.info("Stage %s was interrupted; resuming from %s", name, checkpoint)
        # Only tensors and plain values are read (weights_only), as the CLI's fit reads them.
        path = None if checkpoint is None else str(checkpoint)
        trainer.fit(model, datamodule=datamodule, ckpt_path=path, weights_only=True)
        if diverged(trainer) is None:
            trainer.test(model, datamodule=datamodule, ckpt_path="best", weights_only=True)
        if (failure := failure_record(trainer)) is not None:
            message = f"stage {name!r}: {failure['message']}"
            # The pipeline's results say so (a study lists it as diverged, not failed), with no metric values.
            record = {**failure, "stage": name, "message": message}
            write_json(
                self.output_dir / "results.json",
                {"status": "diverged", "model": "LayerwisePretraining", "config": self.config, "diverged": record},
            )
            raise StageDiverged(message)
        return json.loads((stage_dir / "results.json").read_text())

    # -- the stages ----------------------------------------------------------------------------

    @torch.no_grad()
    def _codes(self, model: Autoencoder, inputs: Tensor, batch_size: int = 2000) -> Tensor:
        """The codes of `inputs`, computed where the model is, returned where the inputs are."""
        model.eval()
        return torch.cat([model.encode(chunk.to(model.device)).to(inputs.device) for chunk in inputs.split(batch_size)])

    def pretrain_layers(self) -> tuple[list[nn.Linear], dict[str, dict]]:
        """Train one autoencoder per hidden layer; the trained encoder layers, first to last, and each
        layer's results by stage name."""
        self.datamodule.setup()
        splits = {
            s: (self.datamodule.split(s).images, self.datamodule.split(s).labels) for s in ("train", "val", "test")
        }
        encoders: list[nn.Linear] = []
        layer_results: dict[str, dict] = {}
        input_range = "sigmoid"  # the images are in [0, 1], like sigmoid codes
        for number, size in enumerate(self.hidden_dims, start=1):
            output_activation, loss = RECONSTRUCTION[input_range]
            pl.seed_everything(self.seed + number, verbose=False)
            model = Autoencoder(
                code_dim=size,
                hidden_dims=[],
                activation=self.activation,
                loss=loss,
                output_activation=output_activation,
                optimizer=self.layers.optimizer,
                scheduler=self.layers.scheduler,
                input_shape=(splits["train"][0].shape[1],),
            )
            data = TensorDataModule(
                splits,
                self.datamodule.class_names,
                self.layers.batch_size,
                seed=self.seed,
                corruption=self.layer_corruption,
            )
            layer_results[f"layer{number}"] = self.run_stage(f"layer{number}", model, data, self.layers)
            # The layer as it acts on the raw input (the AE centred its inputs; the classifier does not).
            encoders.append(model.input_layer())
            # The next layer learns from these codes, computed once with the trained encoder.
            splits = {s: (self._codes(model, x), y) for s, (x, y) in splits.items()}
            input_range = self.activation
        return encoders, layer_results

    def classifier_stage(self, name: str, encoders: list[nn.Linear], stage: Stage, freeze: bool) -> dict:
        pl.seed_everything(self.seed, verbose=False)  # the same fresh softmax layer for both stages
        classifier = Classifier(
            hidden_dims=self.hidden_dims,
            activation=self.activation,
            freeze_hidden=freeze,
            dropout=stage.dropout,
            input_dropout=stage.input_dropout,
            optimizer=stage.optimizer,
            scheduler=stage.scheduler,
        )
        classifier.load_hidden_layers(encoders)
        data = ImageDataModule(**self.data_args, batch_size=stage.batch_size)
        return self.run_stage(name, classifier, data, stage)

    def run(self) -> dict[str, Any]:
        # Two pipelines writing one folder would train the same stages over each other: the second is refused.
        with folder_locked(self.output_dir, "a pre-training pipeline"):
            return self._run()

    def _run(self) -> dict[str, Any]:
        self._claim_output_dir()
        encoders, layer_results = self.pretrain_layers()
        # The layers' epochs and times, so that the pipeline's time (a study's run time) counts them too.
        layers = {
            name: {"epochs": results["epochs"], "fit_seconds": results["timings"].get("fit_seconds")}
            for name, results in layer_results.items()
        }
        summary: dict[str, Any] = {
            "status": "tested",
            "model": "LayerwisePretraining",
            "config": self.config,
            "layers": layers,
            "stages": {},
        }
        for name, stage, freeze in (("frozen", self.frozen, True), ("finetune", self.finetune, False)):
            results = self.classifier_stage(name, encoders, stage, freeze)
            summary["stages"][name] = {
                "test/acc": results["model"].get("test/acc"),
                "test/error": results["model"].get("test/error"),
                "epochs": results["epochs"],
                "fit_seconds": results["timings"].get("fit_seconds"),
            }
        write_json(self.output_dir / "results.json", summary)
        return summary
