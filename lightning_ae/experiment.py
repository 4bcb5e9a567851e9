"""Run one config: a fit through the Lightning CLI, or a layer-wise pre-training pipeline.

The `lightning-ae` command (`lightning_ae.cli`) and the study runner (`lightning_ae.study`)
both run configs through this module, which knows neither of them.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lightning_ae.callbacks import PredictionWriter, ResultsJSON, every_run_callbacks, progress_bar
from lightning_ae.callbacks.results import diverged
from lightning_ae.checks import check_path_segment, non_finite_values
from lightning_ae.data import ImageDataModule
from lightning_ae.files import is_complete_checkpoint, resumable_checkpoint
from lightning_ae.pretraining import LayerwisePretraining, StageDiverged  # noqa: F401 (the CLI and the study catch it)
from lightning_ae.strategies import (  # noqa: F401 (REQUEUE_BY_ENGINE: for the study's SLURM engine)
    REQUEUE_BY_ENGINE,
    leave_requeue_to_the_engine,
    use_atomic_checkpoints,
)

DEFAULT_LOG_DIR = "lightning_logs"
TENSORBOARD = "pytorch_lightning.loggers.TensorBoardLogger"
AUTO_NAME = "auto"


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
    """LightningCLI for lightning-ae's models on ImageDataModule; `fit` ends with `test` on the best checkpoint."""

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model's input shape follows from the data's layout.
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        # TensorBoard under lightning_logs/<run name>/version_N; --trainer.logger.init_args.save_dir moves the root.
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": TENSORBOARD,
                    # No `hp_metric = -1` placeholder: HParamsSummary logs the hyper-parameters with the test metrics.
                    "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": AUTO_NAME, "default_hp_metric": False},
                }
            }
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="after fit, run test on the best checkpoint (by val/loss)"
        )

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # YAML reads .inf and .nan as numbers; no setting of lightning-ae's means them, and they would only
        # surface after training, as a diverged run or a results.json that cannot be written.
        if bad := non_finite_values(config):
            raise ValueError(f"{', '.join(bad)}: not a finite number; give a finite value.")
        if self.subcommand == "fit":
            trainer = config.trainer
            for key in ("max_epochs", "max_steps", "limit_train_batches"):
                if trainer.get(key) == 0:  # Lightning accepts it, then tests an untrained model and exits 0
                    raise ValueError(f"trainer.{key}=0 trains nothing; give at least 1 (or leave it out).")
        elif self.subcommand in ("validate", "test", "predict") and config.get("ckpt_path") is None:
            raise ValueError(
                f"{self.subcommand} evaluates a trained model: give --ckpt_path (a checkpoint file, or `last` for the "
                "newest run of this config); without one, the model's random initial weights would be evaluated."
            )
        logger = config.trainer.logger
        if logger in (None, True):
            logger = config.trainer.logger = Namespace(
                class_path=TENSORBOARD, init_args=Namespace(save_dir=DEFAULT_LOG_DIR, default_hp_metric=False)
            )
        if isinstance(logger, Namespace):
            # Each is one folder inside save_dir (empty: none); the folder itself moves with save_dir.
            for key in ("name", "version", "sub_dir"):
                check_path_segment(
                    f"trainer.logger.init_args.{key}", (logger.get("init_args") or Namespace()).get(key), True
                )
        # A TensorBoard run without a name gets one that says what it is.
        is_tensorboard = isinstance(logger, Namespace) and logger.get("class_path") == TENSORBOARD
        if is_tensorboard and logger.init_args.get("name") in (None, AUTO_NAME):
            name = run_name(config.model, config.data)
            logger.init_args.name = check_path_segment("the run name made from the model and data settings", name)
        if config.get("ckpt_path") == "last" and is_tensorboard:
            # Lightning looks for last.ckpt in the new run's own (empty) version folder and, finding
            # none, silently starts afresh: resume the newest run of this name, in its own folder.
            path, version = find_last_checkpoint(logger.init_args)
            config.ckpt_path, logger.init_args.version = str(path), version
        if "weights_only" in config and config.weights_only is None:
            # A checkpoint is a pickle: read only tensors and plain values, so that loading one cannot run code.
            config.weights_only = True
        # A callback's file is one name in the run's folder (Lightning's ModelCheckpoint takes a path: not "..").
        for callback in config.trainer.callbacks or []:
            init_args = callback.get("init_args") if isinstance(callback, Namespace) else None
            for key, value in (init_args or Namespace()).items():
                if key.endswith("filename") and isinstance(value, str) and ".." in Path(value).parts:
                    name = str(callback.get("class_path", "")).rsplit(".", 1)[-1]
                    raise ValueError(f"{name} {key}={value!r} leads outside the run's folder; give a plain name.")
        callbacks = config.trainer.callbacks or []
        has_bar = any("ProgressBar" in str(c.get("class_path", "")) for c in callbacks if isinstance(c, Namespace))
        if config.trainer.enable_progress_bar is not False and not has_bar:
            # On a terminal a bar redrawn in place; in a log or a CI console one line per epoch.
            bar = type(progress_bar())
            config.trainer.callbacks = [*callbacks, Namespace(class_path=f"{bar.__module__}.{bar.__qualname__}")]

    @override
    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)  # a full disk or a kill never leaves a cut-off checkpoint
        leave_requeue_to_the_engine(trainer)
        return trainer

    @override
    def _parse_ckpt_path(self) -> None:
        # For test, validate and predict, Lightning builds the model from the checkpoint's hyper-parameters. For a
        # fit it would also let them silently override the user's (a resume asked with another activation would
        # train the old one): a fit refuses such a resume instead, naming the key (`_check_resume`).
        if self.config.get("subcommand") != "fit":
            super()._parse_ckpt_path()

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        # A run that fails before it trained anything (a refused setting, an optimizer that will not build)
        # leaves no folder behind; one that saved a checkpoint keeps it, to resume from.
        created = first_new_folder(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if (
                created is not None
                and created.is_dir()
                and not any(path.suffix == ".ckpt" or path.name == "results.json" for path in created.rglob("*"))
            ):
                shutil.rmtree(created, ignore_errors=True)
            raise

    def before_fit(self) -> None:
        self._check_checkpoint_path()
        self._check_resume()
        self._give_results_the_config()

    def _check_resume(self) -> None:
        # Before the trainer writes anything (a new version folder, config.yaml, an event file): a resume that
        # Lightning would refuse later leaves nothing behind.
        path = self.config.fit.get("ckpt_path")
        if path in LIGHTNING_CHECKPOINT_NAMES or "://" in str(path):
            return
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if differ := resume_differences(checkpoint, self.model, self.datamodule):
            raise ValueError(
                f"resuming from {path} with other settings than the checkpoint's ({'; '.join(differ)}): resume with "
                "the same settings, or start a new run (without --ckpt_path)."
            )

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


def first_new_folder(trainer: pl.Trainer) -> Path | None:
    """The outermost folder of the run's log folder that does not exist yet (it will hold only this run)."""
    log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None
    if log_dir is None:
        return None
    folder = Path(log_dir).absolute()
    if folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return folder


def resume_differences(
    checkpoint: dict[str, Any], model: pl.LightningModule, datamodule: pl.LightningDataModule | None
) -> list[str]:
    """Where a fit's model (its class and hyper-parameters) and data differ from those `checkpoint` was saved with.

    The optimizer and scheduler may change on resume (a lower learning rate is a common reason to resume).
    """
    saved = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if k != "_instantiator"}
    ours = {k: v for k, v in model.hparams.items() if k != "_instantiator"}
    ours.setdefault("_class_path", f"{type(model).__module__.rsplit('.', 1)[0]}.{type(model).__name__}")

    def plain(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))  # tuples as lists, as a checkpoint may hold them

    differ = [
        f"model.{key.lstrip('_')} {saved.get(key)!r} in the checkpoint, {ours.get(key)!r} now"
        for key in sorted(set(saved) & set(ours) | {"_class_path"} & set(saved))
        if plain(saved.get(key)) != plain(ours.get(key))
    ]
    state = checkpoint.get(type(datamodule).__qualname__) if datamodule is not None else None
    if state is not None and callable(getattr(datamodule, "resume_differences", None)):
        differ += [f"data.{difference}" for difference in datamodule.resume_differences(state)]
    return differ


def find_last_checkpoint(logger_args: Namespace) -> tuple[Path, str]:
    """The newest complete checkpoint of a TensorBoard run's newest `version_*` that has one (or of its given
    version), and that version: `last.ckpt`, `last-v1.ckpt` or any other name Lightning gave it."""
    root = Path(logger_args.get("save_dir") or DEFAULT_LOG_DIR) / (logger_args.get("name") or "")
    version = logger_args.get("version")
    if version is not None:
        folder = f"version_{version}" if isinstance(version, int) else str(version)
        candidates = [root / folder / "checkpoints"]
    else:
        folders = [(re.fullmatch(r"version_(\d+)", p.name), p) for p in root.glob("version_*")]
        numbered = [(int(match.group(1)), p) for match, p in folders if match]
        candidates = [p / "checkpoints" for _, p in sorted(numbered)]
    existing = [path for path in candidates if any(path.glob("*.ckpt"))]
    if not existing:
        raise FileNotFoundError(
            f"ckpt_path='last': no checkpoint under {root}/{'version_*' if version is None else folder}/checkpoints: "
            "nothing to resume; start without --ckpt_path, or give a checkpoint file."
        )
    # Cut-off checkpoints (a full disk under an older version) are set aside: the newest complete one is used.
    checkpoints = existing[-1]
    checkpoint = resumable_checkpoint(checkpoints, f"ckpt_path='last' in {checkpoints.parent}")
    if checkpoint is None:
        raise FileNotFoundError(
            f"ckpt_path='last': {checkpoints} holds no complete checkpoint (cut-off ones were set aside as *.corrupt): "
            "nothing to resume; start without --ckpt_path."
        )
    return checkpoint, checkpoints.parent.name


class ConfigChecker(AutoencoderCLI):
    """Parses and checks a fit config as `lightning-ae fit` would (unknown keys, types, the CLI's own checks) and
    stops there: nothing is instantiated, seeded or run. One parser checks any number of configs (`check`)."""

    @override
    def _set_seed(self) -> None:
        pass

    @override
    def instantiate_classes(self) -> None:
        pass

    @override
    def _parse_ckpt_path(self) -> None:
        pass

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        pass

    def check(self, config: dict[str, Any]) -> None:
        self.parse_arguments(self.parser, {"fit": config})
        self.subcommand = "fit"
        self.before_instantiate_classes()


def lightning_cli(args: list[str] | dict | None, run: bool = True, cli_class: type = AutoencoderCLI) -> AutoencoderCLI:
    return cli_class(
        pl.LightningModule,
        ImageDataModule,
        subclass_mode_model=True,
        args=args,
        trainer_defaults={
            # Best by validation loss, and last (for resuming); results.json for every run.
            "callbacks": [
                ResultsJSON(),
                *every_run_callbacks(),  # HParams, divergence guard, clean Ctrl+C/SIGTERM, exact resumption
                PredictionWriter(),  # only acts in `predict`
                ModelCheckpoint(
                    monitor="val/loss",
                    mode="min",
                    save_last=True,
                    filename="best-epoch{epoch}",
                    auto_insert_metric_name=False,
                    enable_version_counter=False,  # a resumed run overwrites its own last.ckpt, never last-v1.ckpt
                ),
            ],
        },
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "lightning-ae", "exit_on_error": False, "allow_abbrev": False},
        auto_configure_optimizers=False,
        run=run,
    )


def run_pipeline(argv: list[str]) -> dict[str, Any]:
    """Greedy layer-wise pre-training, then frozen and fine-tuned classifiers (homework 2.4); resumable.

    Raises StageDiverged when a stage diverges (its results.json and the pipeline's say so).

    `argv`: `--config PIPELINE.yaml` and overrides such as `--output_dir DIR`. Returns the pipeline's summary.
    """
    parser = pipeline_parser()
    config = parser.parse_args(argv)
    if bad := non_finite_values(config):
        raise ValueError(f"{', '.join(bad)}: not a finite number; give a finite value.")
    resolved = json.loads(parser.dump(config, format="json", skip_check=True))
    resolved.pop("config", None)
    init = parser.instantiate_classes(config)
    arguments = {key: init[key] for key in resolved}
    return LayerwisePretraining(**arguments, resolved_config=resolved).run()


def is_callback_name(name: str) -> bool:
    """Whether `name` is a callback class of lightning-ae or Lightning (as a study's `callbacks:` names them)."""
    import pytorch_lightning.callbacks

    import lightning_ae.callbacks

    return any(
        isinstance(getattr(module, name, None), type) and issubclass(getattr(module, name), pl.Callback)
        for module in (lightning_ae.callbacks, pytorch_lightning.callbacks)
    )


def pipeline_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-ae pretrain", description=run_pipeline.__doc__, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a pipeline YAML, e.g. configs/pretrain_sigmoid.yaml")
    parser.add_class_arguments(LayerwisePretraining, skip={"resolved_config"})
    return parser


def config_checkers() -> dict[str, Callable[[dict[str, Any]], None]]:
    """For each kind of run ("fit", "pretrain"), a function that checks a composed config as the command that runs
    it would parse it, raising that command's error; nothing is built or run. Each parser is made when first used."""
    made: dict[str, Any] = {}

    def check_fit(config: dict[str, Any]) -> None:
        config = copy.deepcopy(config)  # parsing puts namespaces into the mapping it is given
        argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it also sees the command's own arguments
        try:
            if "fit" not in made:
                made["fit"] = lightning_cli({"fit": config}, cli_class=ConfigChecker)
            else:
                made["fit"].check(config)
        finally:
            sys.argv = argv

    def check_pipeline(config: dict[str, Any]) -> None:
        parser = made.setdefault("pretrain", pipeline_parser())
        parsed = parser.parse_object(copy.deepcopy(config))
        if bad := non_finite_values(parsed):
            raise ValueError(f"{', '.join(bad)}: not a finite number; give a finite value.")

    return {"fit": check_fit, "pretrain": check_pipeline}


# ckpt_path values that name a checkpoint Lightning finds itself, not a file.
LIGHTNING_CHECKPOINT_NAMES = (None, "last", "best", "hpc", "registry")


def check_checkpoint_file(path: str | None) -> None:
    """A ckpt_path that names a file must be a complete checkpoint; Lightning's names and URLs pass."""
    if path in LIGHTNING_CHECKPOINT_NAMES or "://" in str(path):
        return
    if not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path!r}: no such checkpoint file.")
    if not is_complete_checkpoint(path):
        raise ValueError(f"ckpt_path={path!r} is not a complete checkpoint (truncated, or not written by torch).")
    if (problem := not_a_lightning_checkpoint(path)) is not None:
        raise ValueError(f"ckpt_path={path!r} is not a Lightning checkpoint: {problem}.")


def not_a_lightning_checkpoint(path: str | Path) -> str | None:
    """What a torch file lacks to be a checkpoint of a lightning-ae run (a bare `model.state_dict()`, a dict
    without weights), or None. Python objects a safe load refuses are left to the load that follows, which
    says so (and takes --weights_only false for a trusted file)."""
    import pickle

    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        return None
    if not isinstance(content, dict) or not isinstance(content.get("state_dict"), dict):
        if isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
            return (
                "it holds bare weights (torch.save(model.state_dict())); a run's checkpoint (checkpoints/*.ckpt, or "
                "trainer.save_checkpoint) also holds the model's settings"
            )
        keys = f"keys {sorted(map(str, content))[:8]}" if isinstance(content, dict) else type(content).__name__
        return f"it holds no 'state_dict' (found {keys}); give a checkpoint written by lightning-ae or Lightning"
    if not all(isinstance(value, torch.Tensor) for value in content["state_dict"].values()):
        return "its 'state_dict' holds values that are not tensors"
    for key in ("hyper_parameters", "callbacks", "loops"):
        if content.get(key) is not None and not isinstance(content[key], dict):
            return f"its {key!r} is a {type(content[key]).__name__}, not a mapping"
    return None
