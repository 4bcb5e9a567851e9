"""The `lightning-ae` command: the Lightning CLI (`fit`, `validate`, `test`, `predict`) plus `data`.

lightning-ae fit --config configs/basic_ae.yaml [--model.init_args.code_dim 8 ...]
lightning-ae data [--dataset mnist] [--layout image]
"""

from __future__ import annotations

import argparse
import json
import sys

from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lightning_ae.callbacks import ResultsJSON
from lightning_ae.data import DATASETS, MNISTDataModule
from lightning_ae.data.datamodule import LAYOUTS
from lightning_ae.models import AutoencoderBase

DEFAULT_LOG_DIR = "lightning_logs"
TENSORBOARD = "pytorch_lightning.loggers.TensorBoardLogger"
AUTO_NAME = "auto"


def run_name(model_config) -> str:
    """A run name that says what the run is: model, d', activation."""
    args = model_config.init_args
    kind = model_config.class_path.rsplit(".", 1)[-1]
    parts = [kind]
    hidden = getattr(args, "hidden_dims", None)
    if hidden:
        parts.append("x".join(str(h) for h in hidden))
    if getattr(args, "code_dim", None) is not None:
        parts.append(f"d{args.code_dim}")
    if getattr(args, "activation", None):
        parts.append(args.activation)
    return "-".join(parts)


class AutoencoderCLI(LightningCLI):
    """LightningCLI for lightning-ae's models on MNISTDataModule; `fit` ends with `test` on the best checkpoint."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model's input shape follows from the data's layout.
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # TensorBoard under lightning_logs/<run name>/version_N; --trainer.logger.init_args.save_dir moves the root.
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": TENSORBOARD,
                    "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": AUTO_NAME},
                }
            }
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="after fit, run test on the best checkpoint (by val/loss)"
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        if logger in (None, True):
            logger = config.trainer.logger = Namespace(
                class_path=TENSORBOARD, init_args=Namespace(save_dir=DEFAULT_LOG_DIR)
            )
        # A TensorBoard run without a name gets one that says what it is.
        is_tensorboard = isinstance(logger, Namespace) and logger.get("class_path") == TENSORBOARD
        if is_tensorboard and logger.init_args.get("name") in (None, "", AUTO_NAME):
            logger.init_args.name = run_name(config.model)

    def before_fit(self) -> None:
        self._give_results_the_config()

    def before_test(self) -> None:
        self._give_results_the_config()

    def _give_results_the_config(self) -> None:
        # results.json records the resolved config of the run, as the CLI parsed it.
        config = self.config[self.subcommand].clone()
        config.pop("config", None)
        resolved = json.loads(self._parser(self.subcommand).dump(config, format="json", skip_check=True))
        for callback in self.trainer.callbacks:
            if isinstance(callback, ResultsJSON):
                callback.config = resolved

    def after_fit(self) -> None:
        if self.config.fit.test_after_fit and not self.trainer.interrupted:
            checkpoint = self.trainer.checkpoint_callback
            best = "best" if checkpoint is not None and checkpoint.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)


def lightning_cli(args: list[str]) -> AutoencoderCLI:
    return AutoencoderCLI(
        AutoencoderBase,
        MNISTDataModule,
        subclass_mode_model=True,
        args=args,
        trainer_defaults={
            # Best by validation loss, and last (for resuming); results.json for every run.
            "callbacks": [
                ResultsJSON(),
                ModelCheckpoint(
                    monitor="val/loss",
                    mode="min",
                    save_last=True,
                    filename="best-epoch{epoch}",
                    auto_insert_metric_name=False,
                ),
            ],
        },
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "lightning-ae"},
        auto_configure_optimizers=False,
    )


def data_check(argv: list[str]) -> int:
    """Load, verify and describe a dataset's splits, and draw one batch of each."""
    parser = argparse.ArgumentParser(prog="lightning-ae data", description=data_check.__doc__)
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files (default: bundled data)")
    parser.add_argument("--layout", default="flat", choices=LAYOUTS)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    datamodule = MNISTDataModule(
        dataset=args.dataset, data_dir=args.data_dir, layout=args.layout, val_size=args.val_size, seed=args.seed
    )
    datamodule.prepare_data()
    datamodule.setup()
    print(datamodule.describe())
    loaders = (
        ("train", datamodule.train_dataloader()),
        ("val", datamodule.val_dataloader()),
        ("test", datamodule.test_dataloader()),
    )
    for stage, loader in loaders:
        inputs, targets, labels = next(iter(loader))
        print(
            f"  first {stage} batch: input {tuple(inputs.shape)} in [{inputs.min():.2f}, {inputs.max():.2f}], "
            f"target {tuple(targets.shape)}, labels {tuple(labels.shape)}; {len(loader)} batches"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "data":
            return data_check(argv[1:])
        lightning_cli(argv)
        return 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # A plain user mistake (bad value, missing file) is one line, not a traceback wall.
        print(f"lightning-ae: error: {err}", file=sys.stderr)
        return 2
