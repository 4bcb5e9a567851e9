"""The `lightning-ae` command: the Lightning CLI (`fit`, `validate`, `test`, `predict`) plus `data`.

lightning-ae fit --config configs/basic_ae.yaml [--model.init_args.code_dim 8 ...]
lightning-ae describe --config configs/conv_ae.yaml   (the shape after every layer)
lightning-ae pretrain --config configs/pretrain_sigmoid.yaml   (homework 2.4 pipeline)
lightning-ae data [--dataset mnist] [--layout image]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import zipfile
from argparse import ArgumentError
from pathlib import Path

import pytorch_lightning as pl
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lightning_ae.callbacks import (
    DivergenceGuard,
    GracefulInterruption,
    PredictionWriter,
    ResultsJSON,
    RunInterrupted,
)
from lightning_ae.callbacks.results import diverged
from lightning_ae.data import DATASETS, MNISTDataModule
from lightning_ae.data.datamodule import LAYOUTS

DEFAULT_LOG_DIR = "lightning_logs"
TENSORBOARD = "pytorch_lightning.loggers.TensorBoardLogger"
AUTO_NAME = "auto"
PROGRESS_BAR = "pytorch_lightning.callbacks.TQDMProgressBar"
PROGRESS_REFRESH_STEPS = 50


def run_name(model_config, data_config=None) -> str:
    """A run name that says what the run is: model, d', activation, and the corruption or pairs mode."""
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
    if data_config is not None and data_config.get("corruption"):
        values = "".join(f"{k}{v}" for k, v in sorted((data_config.get("corruption_args") or {}).items()))
        parts.append(f"{data_config.corruption}{('-' + values) if values else ''}")
    if data_config is not None and data_config.get("pairs"):
        parts.append(f"pairs{data_config.get('sim')}")
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
        if is_tensorboard and logger.init_args.get("name") in (None, AUTO_NAME):
            logger.init_args.name = run_name(config.model, config.data)
        if config.get("ckpt_path") == "last" and is_tensorboard:
            # Lightning looks for last.ckpt in the new run's own (empty) version folder and, finding
            # none, silently starts afresh: resume the newest run of this name, in its own folder.
            path, version = find_last_checkpoint(logger.init_args)
            config.ckpt_path, logger.init_args.version = str(path), version
        if "weights_only" in config and config.weights_only is None:
            # A checkpoint is a pickle: read only tensors and plain values, so that loading one cannot run code.
            config.weights_only = True
        # Redrawing the progress bar every step costs about a quarter of a basic-AE epoch on 2 cores.
        callbacks = config.trainer.callbacks or []
        has_bar = any("ProgressBar" in str(c.get("class_path", "")) for c in callbacks if isinstance(c, Namespace))
        if config.trainer.enable_progress_bar is not False and not has_bar:
            bar = Namespace(class_path=PROGRESS_BAR, init_args=Namespace(refresh_rate=PROGRESS_REFRESH_STEPS))
            config.trainer.callbacks = [*callbacks, bar]

    def before_fit(self) -> None:
        self._check_checkpoint_path()
        self._give_results_the_config()

    def before_validate(self) -> None:
        self._check_checkpoint_path()

    def before_predict(self) -> None:
        self._check_checkpoint_path()

    def _check_checkpoint_path(self) -> None:
        # Before anything is written: Lightning would only find out after setting up the run.
        check_checkpoint_file(self.config[self.subcommand].get("ckpt_path"))

    def before_test(self) -> None:
        self._check_checkpoint_path()
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
        if diverged(self.trainer) is not None:
            return  # nothing to test; main() reports it
        if self.config.fit.test_after_fit and not self.trainer.interrupted:
            checkpoint = self.trainer.checkpoint_callback
            best = "best" if checkpoint is not None and checkpoint.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, weights_only=True)


def find_last_checkpoint(logger_args: Namespace) -> tuple[Path, str]:
    """The newest `version_*/checkpoints/last.ckpt` of a TensorBoard run (or of its given version), and that version."""
    root = Path(logger_args.get("save_dir") or DEFAULT_LOG_DIR) / (logger_args.get("name") or "")
    version = logger_args.get("version")
    if version is not None:
        folder = f"version_{version}" if isinstance(version, int) else str(version)
        candidates = [root / folder / "checkpoints" / "last.ckpt"]
    else:
        folders = [(re.fullmatch(r"version_(\d+)", p.name), p) for p in root.glob("version_*")]
        numbered = [(int(match.group(1)), p) for match, p in folders if match]
        candidates = [p / "checkpoints" / "last.ckpt" for _, p in sorted(numbered)]
    existing = [path for path in candidates if path.is_file()]
    if not existing:
        raise FileNotFoundError(
            f"ckpt_path='last': no checkpoints/last.ckpt under {root}/{'version_*' if version is None else folder}: "
            "nothing to resume; start without --ckpt_path, or give a checkpoint file."
        )
    return existing[-1], existing[-1].parent.parent.name


def lightning_cli(args: list[str] | None, run: bool = True) -> AutoencoderCLI:
    return AutoencoderCLI(
        pl.LightningModule,
        MNISTDataModule,
        subclass_mode_model=True,
        args=args,
        trainer_defaults={
            # Best by validation loss, and last (for resuming); results.json for every run.
            "callbacks": [
                ResultsJSON(),
                DivergenceGuard(),  # stops a run whose loss or weights stop being finite
                GracefulInterruption(),  # Ctrl+C / SIGTERM: checkpoint after the current step, then stop
                PredictionWriter(),  # only acts in `predict`
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
        parser_kwargs={"prog": "lightning-ae", "exit_on_error": False, "allow_abbrev": False},
        auto_configure_optimizers=False,
        run=run,
    )


def pretrain(argv: list[str]) -> int:
    """Greedy layer-wise pre-training, then frozen and fine-tuned classifiers (homework 2.4); resumable."""
    from lightning_ae.pretraining import LayerwisePretraining  # only this command needs it

    parser = ArgumentParser(prog="lightning-ae pretrain", description=pretrain.__doc__, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a pipeline YAML, e.g. configs/pretrain_sigmoid.yaml")
    parser.add_class_arguments(LayerwisePretraining, skip={"resolved_config"})
    config = parser.parse_args(argv)
    resolved = json.loads(parser.dump(config, format="json", skip_check=True))
    resolved.pop("config", None)
    init = parser.instantiate_classes(config)
    arguments = {key: init[key] for key in resolved}
    summary = LayerwisePretraining(**arguments, resolved_config=resolved).run()
    print(f"{'stage':10s} {'test acc':>9s} {'test error':>11s} {'epochs':>7s}")
    for name, row in summary["stages"].items():
        print(f"{name:10s} {row['test/acc']:9.4f} {row['test/error']:11.4f} {row['epochs']:7d}")
    return 0


def _study_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments `study` and `report` share: which study, its seeds, where its runs and report go."""
    parser = argparse.ArgumentParser(prog=f"lightning-ae {name}", description=description)
    parser.add_argument("study_file", help="e.g. configs/study/quick.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="repeat every run with seeds 0..N-1")
    parser.add_argument("--folder", default=None, help="where the runs go (default: studies/<name>)")
    parser.add_argument("--report", default=None, help="where the report goes (default: reports/<name>)")
    return parser


def _load_study(args: argparse.Namespace):
    from lightning_ae.study.spec import load_study

    spec = load_study(args.study_file, seeds=args.seeds)
    return spec, Path(args.folder or Path("studies") / spec.name)


def _write_report(spec, folder: Path, args: argparse.Namespace) -> None:
    from lightning_ae.study.report import write_report

    markdown, page = write_report(spec, folder, Path(args.report or Path("reports") / spec.name))
    print(f"report: {markdown} and {page}")


def study(argv: list[str]) -> int:
    """Run a study (experiments x grids x seeds), resumable and shardable, then write its report."""
    from lightning_ae.study.runner import Shard, run_study, select, summary_table

    parser = _study_parser("study", study.__doc__)
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state; run nothing")
    parser.add_argument("--only", default=None, help="run only runs whose id or experiment matches this pattern")
    parser.add_argument("--shard", default=None, help="K/N: run the K-th of N disjoint parts (e.g. a SLURM array)")
    args = parser.parse_args(argv)
    spec, folder = _load_study(args)
    shard = Shard.parse(args.shard) if args.shard else None
    print(f"study {spec.name}: {len(spec.runs)} runs{f', shard {args.shard}' if shard else ''}; folder {folder}")
    outcome = run_study(spec, folder, shard=shard, only=args.only, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    print(summary_table(select(spec, shard, args.only), folder))
    print(f"study {spec.name}: " + ", ".join(f"{len(ids)} {name}" for name, ids in outcome.items()))
    if shard is None and not args.only:
        _write_report(spec, folder, args)
    return 1 if outcome["failed"] else 0


def report(argv: list[str]) -> int:
    """Write the report of a study from whatever results are present (after shards, or while it runs)."""
    args = _study_parser("report", report.__doc__).parse_args(argv)
    spec, folder = _load_study(args)
    _write_report(spec, folder, args)
    return 0


def describe(argv: list[str]) -> int:
    """Print the model of a config layer by layer: the shape after every layer and its parameters."""
    cli = lightning_cli(argv, run=False)
    print(cli.model.describe())
    total = sum(p.numel() for p in cli.model.parameters())
    print(f"{type(cli.model).__name__}: {total:,} parameters; input {cli.datamodule.input_shape}")
    return 0


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


_PARSE_NOISE = (
    "Given value",
    "Subtypes:",
    "Errors:",
    "Does not validate against any",
    "- Expected a <class 'NoneType'>",
    "- Problem with given class_path",
    "Given value type:",
    # why a value is not some other kind of callback/model entry: never the user's problem
    "Not a valid subclass of",
    "Subclass types expect one of",
    "- a class path (str)",
    "- a dict with",
    "- a dict without",
)


def concise_error(message: str) -> str:
    """The part of a (jsonargparse) error message that names the problem, on one line.

    For a subclass-typed key such as `model`, jsonargparse lists why each candidate type
    failed (including "Expected a <class 'NoneType'>") and repeats the whole given value;
    keep the keys and the reasons. A one-line message passes through unchanged.
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    reasons = []
    for line in (line.strip() for line in message.splitlines()):
        line = re.sub(r'^Parser key "[^"]+":\s*', "", line)  # the key is named once, in front
        if line and not line.startswith(_PARSE_NOISE):
            reasons.append(line.removeprefix("- "))
    where = ".".join(dict.fromkeys(keys))
    text = "; ".join(dict.fromkeys(reasons)) or message.strip().splitlines()[0]
    return f"{where}: {text}" if where else text


# ckpt_path values that name a checkpoint Lightning finds itself, not a file.
LIGHTNING_CHECKPOINT_NAMES = (None, "last", "best", "hpc", "registry")


def check_checkpoint_file(path: str | None) -> None:
    """A ckpt_path that names a file must be a complete checkpoint; Lightning's names and URLs pass."""
    if path in LIGHTNING_CHECKPOINT_NAMES or "://" in str(path):
        return
    if not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path!r}: no such checkpoint file.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no directory
        raise ValueError(f"ckpt_path={path!r} is not a complete checkpoint (truncated, or not written by torch).")


def flag_values(args: list[str], flag: str) -> list[str]:
    values = [value for name, value in zip(args, args[1:], strict=False) if name == flag]
    return values + [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{flag}=")]


def check_files(args: list[str]) -> None:
    """Config and checkpoint files named on the command line, checked before Lightning opens them.

    LightningCLI reads a checkpoint while it parses (for its hyperparameters), so a truncated
    one would otherwise fail with a bare OSError.
    """
    for path in flag_values(args, "--ckpt_path"):
        check_checkpoint_file(path)
    check_config_files(flag_values(args, "--config"))


def check_config_files(files: list[str]) -> None:
    """Each `--config FILE` must be a YAML mapping; say which file and where, before Lightning sees it."""
    import yaml

    for name in files:
        path = Path(name)
        if not path.is_file():
            continue  # the parser names a missing file itself
        try:
            content = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            where = getattr(err, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"config {name}: not valid YAML{at}: {problem}.") from None
        if not isinstance(content, dict):
            found = "an empty file" if content is None else f"a {type(content).__name__}"
            raise ValueError(f"config {name}: expected a mapping of sections (trainer, model, data), found {found}.")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        check_files(args)
        if args and args[0] == "data":
            return data_check(args[1:])
        if args and args[0] == "describe":
            return describe(args[1:])
        if args and args[0] == "pretrain":
            return pretrain(args[1:])
        if args and args[0] == "study":
            return study(args[1:])
        if args and args[0] == "report":
            return report(args[1:])
        # argv=None lets LightningCLI read sys.argv itself (passing both makes it warn).
        cli = lightning_cli(argv)
        # A diverged run has already said where and what to try (DivergenceGuard logs it).
        return 3 if diverged(cli.trainer) is not None else 0
    except RunInterrupted as err:
        print(f"lightning-ae: {err}", file=sys.stderr)
        return err.exit_code
    except pickle.UnpicklingError as err:
        print(
            "lightning-ae: error: the checkpoint holds Python objects that a safe load refuses (it could run code "
            f"when loaded): {str(err).strip().splitlines()[-1]}. Load only checkpoints written by lightning-ae; "
            "for a file you trust, pass --weights_only false.",
            file=sys.stderr,
        )
        return 2
    except ArgumentError as err:
        print(f"lightning-ae: error: {concise_error(str(err))}", file=sys.stderr)
        print("  (see `lightning-ae <subcommand> --help` for every option)", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        # A plain user mistake (bad value, missing file) is one line, not a traceback wall.
        print(f"lightning-ae: error: {concise_error(str(err))}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if os.environ.get("LIGHTNING_AE_DEBUG"):
            raise
        print(f"lightning-ae: error: {err}", file=sys.stderr)
        print("  (set LIGHTNING_AE_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2
