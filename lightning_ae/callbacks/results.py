"""`ResultsJSON`: one `results.json` per run with the config, every metric (AE and PCA side by side), the timings,
and whether the run converged and learned (against the trivial predictor, whose figures are stored too)."""

from __future__ import annotations

import json
import logging
import platform
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import sklearn
import torch
from pytorch_lightning.callbacks import EarlyStopping
from typing_extensions import override

import lightning_ae
from lightning_ae.callbacks.base import EvaluationCallback
from lightning_ae.callbacks.divergence import DivergenceGuard
from lightning_ae.callbacks.trivial import finite_number, learned_metric, trivial_predictor
from lightning_ae.checks import check_path_segment
from lightning_ae.evaluation.verdicts import (
    MARGIN,
    TOLERANCE,
    WINDOW,
    check_margin,
    check_tolerance,
    check_window,
    convergence,
    learned,
)
from lightning_ae.files import lock_folder, write_json
from lightning_ae.models import AutoencoderBase
from lightning_ae.provenance import git_commit, machine

log = logging.getLogger(__name__)

PCA_PREFIX = "pca_"


# A test loss this many times the trivial predictor's is no result, even when training never exploded.
WORSE_THAN_TRIVIAL = 1.5


def diverged(trainer: pl.Trainer) -> DivergenceGuard | None:
    """The run's DivergenceGuard when it stopped the run, else None."""
    for callback in trainer.callbacks:
        if isinstance(callback, DivergenceGuard) and callback.diverged is not None:
            return callback
    return None


def failure_record(trainer: pl.Trainer) -> dict[str, Any] | None:
    """Where and why the run's numbers are no result (it diverged in training, or its test metrics are not finite
    or far worse than the trivial predictor's), with its `message`; None when they are a result. Its results.json
    then says "diverged" and holds this record."""
    if (guard := diverged(trainer)) is not None:
        return {**guard.diverged, "message": guard.message}
    for callback in trainer.callbacks:
        if isinstance(callback, ResultsJSON) and callback.test_failure is not None:
            return callback.test_failure
    return None


def run_failure(trainer: pl.Trainer) -> str | None:
    """The message of `failure_record`, or None."""
    record = failure_record(trainer)
    return None if record is None else record["message"]


def failed_test_record(
    metrics: dict[str, float | None], metric: str, trivial: dict[str, Any] | None, epoch: int, step: int
) -> dict[str, Any] | None:
    """A record of why tested `metrics` are no result: a loss that is not finite, or `metric` over
    WORSE_THAN_TRIVIAL times the trivial predictor's; None when they are a result."""
    losses = [key for key, value in metrics.items() if value is None and key.startswith("test/") and "loss" in key]
    if metric in metrics and metrics[metric] is None:
        losses.append(metric)
    what = None
    if losses:
        what = f"the test {', '.join(dict.fromkeys(losses))} is not finite (NaN or infinite weights or outputs)"
    elif trivial and isinstance(trivial.get(metric), float) and isinstance(metrics.get(metric), float):
        ratio = metrics[metric] / trivial[metric] if trivial[metric] > 0 else float("inf")
        if ratio > WORSE_THAN_TRIVIAL:
            what = (
                f"the test {metric} {metrics[metric]:.4g} is {ratio:.3g} times the {trivial.get('predictor')}'s "
                f"{trivial[metric]:.4g}: the model ends far worse than a constant prediction"
            )
    if what is None:
        return None
    advice = "Try a lower learning rate (e.g. --model.init_args.optimizer.lr 0.1) or Adam, or test another checkpoint."
    message = f"the run is no result: {what}. {advice}"
    return {"epoch": epoch, "step": step, "what": what, "stage": "test", "message": message}


def split_ae_and_pca(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """`test/pca_knn_acc` goes to the PCA table as `test/knn_acc`; everything else to the AE table."""
    ae, pca = {}, {}
    for key, value in metrics.items():
        stage, _, name = key.partition("/")
        if name.startswith(PCA_PREFIX):
            pca[f"{stage}/{name[len(PCA_PREFIX) :]}"] = value
        else:
            ae[key] = value
    return ae, pca


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU's model on the CPU (what a timing was measured on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return str(machine()["processor"])
    return str(device)


def early_stopping(trainer: pl.Trainer) -> EarlyStopping | None:
    """The run's EarlyStopping callback, if it has one."""
    return next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)


class ResultsJSON(pl.Callback):
    """Writes `filename` into the run's log folder after fit and again after test, atomically.

    `config` is the run's resolved configuration; the CLI sets it, otherwise the model's
    and the DataModule's hyperparameters stand in.

    Besides the metrics it records `val_loss_history` (val/loss after every epoch) and two verdicts:

    - `convergence`: converged when an EarlyStopping callback stopped the run, or when val/loss over
      the last `window` epochs stayed within `tolerance` (relative to its last value); fewer epochs
      cannot be judged (not converged);
    - `learned`: the model's test loss (BCE or MSE per pixel for an autoencoder, as it is trained;
      cross-entropy for a classifier) at least `margin` (relative) below the trivial predictor's
      (the mean training image; the class prior), whose figures are stored under `trivial`.

    Args:
        filename: the file in the run's log folder.
        tolerance: relative change of val/loss over the window below which training counts as converged.
        window: the number of last epochs judged (at least 2).
        margin: how far below the trivial predictor's loss the model's must be, relative (0.1: 10%).
    """

    def __init__(
        self, filename: str = "results.json", tolerance: float = TOLERANCE, window: int = WINDOW, margin: float = MARGIN
    ) -> None:
        super().__init__()
        if not filename.endswith(".json"):
            raise ValueError(f"filename={filename!r} is not valid; valid: a name ending in .json.")
        self.filename = check_path_segment("filename", filename)
        self.tolerance, self.window, self.margin = (
            check_tolerance(tolerance),
            check_window(window),
            check_margin(margin),
        )
        self.val_loss_history: list[float | None] = []
        # Judged when fit ends: testing the best checkpoint restores the callbacks' states (this history,
        # EarlyStopping's stopped_epoch) as they were at that epoch, which must not change the verdict.
        self.fit_convergence: dict[str, Any] | None = None
        self.trivial: dict[str, Any] | None = None
        self.config: dict[str, Any] | None = None
        self.started: float | None = None
        self.phase_started = 0.0
        # Fit time spent before the last checkpoint of an interrupted run: a resumed run's times include it.
        self.checkpointed_fit_seconds = 0.0
        self.earlier_fit_seconds = 0.0
        self.fitting = False
        self.timings: dict[str, float] = {}
        self.fit_metrics: dict[str, float | None] = {}
        self.test_metrics: dict[str, float | None] | None = None  # gathered when the test ends, written at teardown
        self.test_failure: dict[str, Any] | None = None  # why the test metrics are no result (failed_test_record)
        # This run's identity, kept in its checkpoints: a resumed run may overwrite its own results.json only.
        self.run_id, self.resumed, self.claimed = uuid.uuid4().hex[:12], False, False
        self._lock: IO | None = None
        self.epochs = 0

    # -- one run per folder: a lock while this process works there, and a results.json that is this run's --

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self._lock is None:
            self._lock = lock_folder(self.path(trainer).parent, "a run")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._write_test_results(trainer, pl_module, stage)
        self._unlock()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _check_results_file(self, trainer: pl.Trainer) -> None:
        """Refuse to overwrite another run's results.json (two runs given one folder, e.g. without a logger)."""
        if not trainer.is_global_zero or self.claimed:
            return
        path = self.path(trainer)
        if path.exists():
            try:
                previous = json.loads(path.read_text())
                owner = previous.get("run_id") if isinstance(previous, dict) else None
            except (OSError, ValueError):
                owner = None  # damaged: still another run's file, not to be lost
            if owner != self.run_id and not (owner is None and self.resumed):
                raise ValueError(
                    f"{path} holds the results of another run: each run needs a folder of its own. Keep the "
                    "TensorBoard logger (it makes a version folder per run), give --trainer.default_root_dir a new "
                    "folder, or move that file away; to go on with that run, resume it with --ckpt_path."
                )
        self.claimed = True

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning restores the callbacks' states before this hook: a resumed fit continues the timing.
        self._check_results_file(trainer)
        self.earlier_fit_seconds, self.fitting = self.checkpointed_fit_seconds, True
        self.started = self.phase_started = time.perf_counter()

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self.val_loss_history.append(finite_number(trainer.callback_metrics["val/loss"]))

    # Saved in every checkpoint, so that a resumed run still judges its whole history and counts its whole time.
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "val_loss_history": list(self.val_loss_history),
            "fit_seconds": self.fit_seconds_so_far(),
            "run_id": self.run_id,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.fit_convergence is None:  # resuming, or testing a checkpoint alone; not the test after our fit
            self.val_loss_history = list(state_dict.get("val_loss_history", []))
            self.checkpointed_fit_seconds = float(state_dict.get("fit_seconds", 0.0))
            self.run_id, self.resumed = str(state_dict.get("run_id") or self.run_id), True

    def fit_seconds_so_far(self) -> float:
        """Training time up to now, the time before an interruption included (to its last checkpoint)."""
        running = time.perf_counter() - self.phase_started if self.fitting else 0.0
        return self.earlier_fit_seconds + running

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timings["fit_seconds"] = self.fit_seconds_so_far()
        self.fitting = False
        self.epochs = trainer.current_epoch
        self.fit_metrics = {
            key: finite_number(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(("train/", "val/"))
        }
        guard = diverged(trainer)
        if guard is None:
            self.fit_convergence = self.judge_convergence(trainer)
        self.write(trainer, pl_module, status="diverged" if guard else "fitted", test_metrics={})

    def judge_convergence(self, trainer: pl.Trainer) -> dict[str, Any]:
        stopper = early_stopping(trainer)
        stopped = stopper is not None and stopper.stopped_epoch > 0
        return convergence(
            self.val_loss_history,
            self.tolerance,
            self.window,
            early_stopped=stopped,
            stopped_epoch=stopper.stopped_epoch if stopped else None,
            monitor=getattr(stopper, "monitor", "val/loss"),
        )

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_results_file(trainer)
        self.phase_started = time.perf_counter()
        if self.started is None:
            self.started = self.phase_started

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timings["test_seconds"] = time.perf_counter() - self.phase_started
        metrics = {
            key: finite_number(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")
        }
        # Validation kNN measured at test time belongs with the test metrics.
        metrics.update(
            {k: finite_number(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/knn", "val/pca"))}
        )
        if self.trivial is None and trainer.is_global_zero:
            started = time.perf_counter()
            self.trivial = trivial_predictor(trainer, pl_module)
            self.timings["trivial_seconds"] = time.perf_counter() - started
        self.test_metrics = metrics

    def _write_test_results(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Written at teardown, after every callback's on_test_end: the evaluation callbacks (t-SNE, the projector) run
        # there, and a run stopped during them must not read "tested". Lightning skips teardown after an exception.
        if stage == "test" and self.test_metrics is not None:
            metrics, self.test_metrics = self.test_metrics, None
            model_metrics, _ = split_ae_and_pca(metrics)
            self.test_failure = failed_test_record(
                model_metrics, learned_metric(pl_module), self.trivial, trainer.current_epoch, trainer.global_step
            )
            if self.test_failure is not None:
                log.error("lightning-ae: %s", self.test_failure["message"])
                self.write(trainer, pl_module, status="diverged", test_metrics={})
            else:
                self.write(trainer, pl_module, status="tested", test_metrics=metrics)

    def collect_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        datamodule = trainer.datamodule
        return {
            "model": {"class_path": type(pl_module).__qualname__, "init_args": dict(pl_module.hparams)},
            "data": dict(datamodule.hparams) if datamodule is not None else None,
        }

    def write(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str, test_metrics: dict[str, float | None]
    ) -> None:
        if not trainer.is_global_zero:
            return
        model_metrics, pca = split_ae_and_pca(test_metrics)
        # "ae" for an autoencoder, "model" for anything else (the classifier), beside "pca".
        table = "ae" if isinstance(pl_module, AutoencoderBase) else "model"
        timings = dict(self.timings)
        for callback in trainer.callbacks:
            if isinstance(callback, EvaluationCallback):
                timings.update(callback.timings)
        timings["wall_seconds"] = time.perf_counter() - (self.started or self.phase_started) + self.earlier_fit_seconds
        checkpoint = trainer.checkpoint_callback
        best_score = getattr(checkpoint, "best_model_score", None)
        record = failure_record(trainer)
        if record is not None:
            # Nothing beyond "no" can be said of a diverged run: it has no metric values.
            because = record["message"].split(":")[0]  # "training diverged at epoch E, step S"
            converged = {
                "converged": False,
                "reason": because,
                "early_stopped": False,
                "stopped_epoch": None,
                "tolerance": self.tolerance,
                "window": self.window,
                "relative_change": None,
            }
            verdict = {"learned": False, "reason": f"{because}: no test metrics", "loss": None, "trivial_loss": None}
        else:
            converged = self.fit_convergence or self.judge_convergence(trainer)
            verdict = None  # not tested yet
            if status == "tested":
                metric = learned_metric(pl_module)
                trivial = self.trivial or {}
                verdict = learned(
                    model_metrics.get(metric),
                    trivial.get(metric),
                    trivial.get("predictor", "trivial predictor"),
                    metric,
                    self.margin,
                    floor=(trivial.get("class_mean") or {}).get(metric),
                    floor_name="mean image of the object's class" if "class_mean" in trivial else None,
                )
        results = {
            "status": status,
            "run_id": self.run_id,
            # A diverged run has no metric values (never a NaN to average); where and why it stopped instead.
            "diverged": record,
            "model": type(pl_module).__name__,
            "code_dim": getattr(pl_module, "code_dim", None),
            table: model_metrics,
            "pca": pca,
            "epochs": self.epochs,
            "last_epoch": self.fit_metrics,  # train/val loss of the last epoch (test uses the best checkpoint)
            "global_step": trainer.global_step,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "best_val_loss": None if best_score is None else finite_number(best_score),
            "val_loss_history": list(self.val_loss_history),
            "convergence": converged,
            "learned": verdict,
            "trivial": self.trivial,
            "device_name": device_name(pl_module.device),
            "timings": timings,
            "config": self.collect_config(trainer, pl_module),
            "environment": {
                "lightning_ae": lightning_ae.__version__,
                "torch": torch.__version__,
                "pytorch_lightning": pl.__version__,
                "sklearn": sklearn.__version__,
                "python": platform.python_version(),
                "commit": git_commit(),
                "device": str(pl_module.device),
                "world_size": trainer.world_size,
            },
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.path(trainer), results)

    def path(self, trainer: pl.Trainer) -> Path:
        return EvaluationCallback.output_dir(trainer) / self.filename
