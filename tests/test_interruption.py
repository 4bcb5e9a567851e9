"""Interrupted runs: SIGTERM/SIGINT save a checkpoint and exit cleanly; SIGKILL loses at most the epoch in
progress; either way the resumed run ends with the same weights and metrics as a run never interrupted.

The interruption comes from a callback that signals its own process at a fixed optimizer step
(tests/scripts/signal_at_step.py), so "the middle of epoch 2" is the same point on every machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from lightning_ae.study.spec import _compose, _load_yaml

pytestmark = pytest.mark.slow

# 2,048 images at batch 32 on the speed path in groups of 4 batches: 16 Lightning steps (64 updates) per epoch.
STEPS_PER_EPOCH = 16
GROUPED = '{"class_path": "lightning_ae.strategies.GroupedSteps", "init_args": {"batches_per_step": 4}}'
COMMON_ARGS = ["--data.train_subset", "2048", "--trainer.strategy", GROUPED, "--trainer.max_epochs", "4"]
COMMON_ARGS += ["--trainer.enable_progress_bar", "false", "--data.batch_size", "32"]
ARGS = [*COMMON_ARGS, "--model.init_args.code_dim", "8"]
# The classifier, small, with its dropout: its masks come from the global random state.
CLASSIFIER_ARGS = [*COMMON_ARGS, "--model.init_args.hidden_dims", "[64, 32]"]


def write_config(
    folder: Path,
    source: str,
    signal_step: int | None = None,
    signal_name: str = "SIGTERM",
    stage: str = "train",
    times: int = 1,
    evaluation: list[str] = (),
) -> Path:
    """The real config (an experiment's files composed, as a study composes them) without its evaluation callbacks
    (seconds, not minutes), plus the signalling one."""
    files = dict.fromkeys(["basic_ae.yaml", source])  # every experiment but the conv AE builds on the basic AE
    config = _compose([_load_yaml(REPO / "configs" / name, source) for name in files])
    config["trainer"]["callbacks"] = []
    if signal_step is not None:
        config["trainer"]["callbacks"] = [
            {
                "class_path": "signal_at_step.SignalAtStep",
                "init_args": {"step": signal_step, "signal_name": signal_name, "stage": stage, "times": times},
            }
        ]
    config["trainer"]["callbacks"] += [{"class_path": f"lightning_ae.callbacks.{name}"} for name in evaluation]
    path = folder / f"{Path(source).stem}-{f'{signal_name}-{stage}' if signal_step is not None else 'plain'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(config: Path, cwd: Path, *extra: str, args: list[str] = ARGS) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "scripts"), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "lightning_ae", "fit", "--config", str(config), *args, *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def finished_run(root: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    [results_file] = root.glob("lightning_logs/*/version_*/results.json")
    [last] = root.glob("lightning_logs/*/version_*/checkpoints/last.ckpt")
    return json.loads(results_file.read_text()), torch.load(last, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, tuple[dict, dict[str, torch.Tensor]]]:
    """The reference: each config run straight through, same seed."""
    runs = {}
    for source in ("basic_ae.yaml", "denoising_ae.yaml"):
        folder = tmp_path_factory.mktemp(f"straight-{Path(source).stem}")
        result = fit(write_config(folder, source), folder)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[source] = finished_run(folder)
    return runs


def assert_same_run(resumed: tuple[dict, dict], reference: tuple[dict, dict]) -> None:
    (results, weights), (expected_results, expected_weights) = resumed, reference
    assert results["status"] == "tested" and results["global_step"] == expected_results["global_step"]
    table = "ae" if "ae" in expected_results else "model"  # an autoencoder's metrics, or the classifier's
    for key, value in expected_results[table].items():
        assert results[table][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(("source", "signal_name"), [("basic_ae.yaml", "SIGTERM"), ("denoising_ae.yaml", "SIGINT")])
def test_a_signal_mid_epoch_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(
    tmp_path, uninterrupted, source, signal_name
):
    step = STEPS_PER_EPOCH + 5  # a third of the way into epoch 2 (epoch 1 in Lightning's count)
    result = fit(write_config(tmp_path, source, step, signal_name), tmp_path)
    assert result.returncode == 128 + getattr(signal, signal_name), result.stderr[-3000:]
    assert f"{signal_name} received: stopped in epoch 1" in result.stderr
    assert "--ckpt_path last" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("lightning_logs/*/version_*/results.json")), "an interrupted run has no results"
    [checkpoint] = tmp_path.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    # Saved mid-epoch, at the end of the Lightning step (a group of 4 updates) during which the signal came.
    assert saved["epoch"] == 1 and STEPS_PER_EPOCH < saved["global_step"] < 2 * STEPS_PER_EPOCH

    resumed = fit(write_config(tmp_path, source), tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning for a loader it cannot restore
    # The resumed run continued in the interrupted run's folder, not in a new version.
    assert [p.name for p in tmp_path.glob("lightning_logs/*/version_*")] == ["version_0"]
    assert_same_run(finished_run(tmp_path), uninterrupted[source])


def test_a_classifier_with_dropout_stopped_mid_epoch_resumes_exactly(tmp_path):
    """Dropout draws its masks from the global random state: the checkpoint holds it, so training after the
    resume draws the masks a run never stopped would have drawn."""
    (tmp_path / "straight").mkdir()
    straight = fit(write_config(tmp_path, "classifier.yaml"), tmp_path / "straight", args=CLASSIFIER_ARGS)
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = fit(write_config(tmp_path, "classifier.yaml", STEPS_PER_EPOCH + 5), tmp_path, args=CLASSIFIER_ARGS)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    resumed = fit(write_config(tmp_path, "classifier.yaml"), tmp_path, "--ckpt_path", "last", args=CLASSIFIER_ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(finished_run(tmp_path), finished_run(tmp_path / "straight"))


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_a_signal_during_the_last_validation_or_the_test_stops_before_any_result_and_resumes_exactly(
    tmp_path, uninterrupted, stage
):
    """Before, the signal was acted on only after a training step: sent during the last epoch's validation or the
    test after the fit, it was ignored, and the run went on to write its results."""
    last_epoch_start = 3 * STEPS_PER_EPOCH + 1  # the validation after the last epoch (step 64) is the first past it
    result = fit(write_config(tmp_path, "basic_ae.yaml", last_epoch_start, "SIGTERM", stage), tmp_path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    said = (
        "stopped in epoch 3 after optimizer step 64; checkpoint saved"
        if stage == "validation"
        else "stopped during test; no test results were written"
    )
    assert f"SIGTERM received: {said}" in result.stderr, result.stderr[-3000:]
    results = list(tmp_path.glob("lightning_logs/*/version_*/results.json"))
    assert all(json.loads(path.read_text())["status"] != "tested" for path in results), "no test results"

    resumed = fit(write_config(tmp_path, "basic_ae.yaml"), tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(finished_run(tmp_path), uninterrupted["basic_ae.yaml"])


def test_a_hard_kill_loses_only_the_epoch_in_progress_and_resumes_to_the_same_result(tmp_path, uninterrupted):
    step = 2 * STEPS_PER_EPOCH + 8  # in the middle of epoch 3
    killed = fit(write_config(tmp_path, "basic_ae.yaml", step, "SIGKILL"), tmp_path)
    assert killed.returncode == -signal.SIGKILL
    [checkpoint] = tmp_path.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH  # the last epoch end

    resumed = fit(write_config(tmp_path, "basic_ae.yaml"), tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(finished_run(tmp_path), uninterrupted["basic_ae.yaml"])


def test_resuming_with_nothing_to_resume_says_so(tmp_path):
    result = fit(write_config(tmp_path, "basic_ae.yaml"), tmp_path, "--ckpt_path", "last")
    assert result.returncode == 2
    assert "ckpt_path='last': no checkpoint under lightning_logs/Autoencoder-d8-sigmoid" in result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_the_same_config_and_seed_give_the_same_results_twice(tmp_path):
    """Determinism on the CPU: every metric in results.json (kNN and PCA included) and every weight, bit for bit."""
    runs = []
    for attempt in ("first", "second"):
        folder = tmp_path / attempt
        folder.mkdir()
        config = write_config(folder, "basic_ae.yaml")
        evaluation = ["--trainer.callbacks+=lightning_ae.callbacks.KNNEvaluator"]
        evaluation += ["--trainer.callbacks+=lightning_ae.callbacks.PCABaseline"]
        result = fit(config, folder, *evaluation)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(finished_run(folder))
    (first, first_weights), (second, second_weights) = runs
    assert "test/knn_acc" in first["ae"] and "test/knn_acc" in first["pca"]
    for table in ("ae", "pca"):
        measured = {key: value for key, value in first[table].items() if "_us_per_image" not in key}  # timings vary
        assert measured == {key: second[table][key] for key in measured}, table
    assert first["last_epoch"] == second["last_epoch"] and first["global_step"] == second["global_step"]
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)


def test_the_signal_handlers_are_given_back_after_each_fit_and_test(tmp_path, monkeypatch):
    """A process that runs several fits (a study) must stop on SIGTERM between them. Giving Lightning's handler back
    after Lightning had restored the original one left a handler that only sets a flag: SIGTERM was then ignored."""
    from lightning_ae.cli import main

    monkeypatch.chdir(tmp_path)
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    argv = ["fit", "--config", str(REPO / "configs" / "basic_ae.yaml"), "--data.train_subset", "64"]
    argv += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    assert main(argv) == 0  # a fit, then the test after it
    assert {number: signal.getsignal(number) for number in before} == before
    assert main([*argv, "--model.init_args.optimizer.init_args.lr", "-1"]) == 2  # a fit that fails in setup
    assert {number: signal.getsignal(number) for number in before} == before


def test_a_signal_during_the_evaluation_after_the_test_stops_it_at_once(tmp_path):
    """Before, the flag was looked at only after batches: t-SNE, PCA and the projector ran on after the signal, and
    the run ended "tested" with exit 0."""
    evaluation = ["PCABaseline", "TSNEPlot", "EmbeddingProjector"]
    config = write_config(tmp_path, "basic_ae.yaml", 0, "SIGTERM", "evaluation", evaluation=evaluation)
    result = fit(config, tmp_path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "SIGTERM received: stopped during test; no test results were written" in result.stderr
    assert "Traceback" not in result.stderr
    [results_file] = tmp_path.glob("lightning_logs/*/version_0/results.json")
    assert json.loads(results_file.read_text())["status"] == "fitted", "the test did not finish: not recorded as done"
    assert not list(tmp_path.glob("lightning_logs/**/*tsne*")) and not list(tmp_path.glob("lightning_logs/**/*.tsv"))

    resumed = fit(write_config(tmp_path, "basic_ae.yaml"), tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(results_file.read_text())["status"] == "tested"


def test_a_signal_in_a_long_validation_stops_after_the_batch_not_at_the_end_of_the_validation(tmp_path):
    """Before, a fit's validation ran to its end (230 s with 20,000 images) before the signal was acted on."""
    config = write_config(tmp_path, "basic_ae.yaml", STEPS_PER_EPOCH, "SIGTERM", "validation")
    result = fit(config, tmp_path, "--data.val_size", "5000", "--data.eval_batch_size", "100")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    [checkpoint] = tmp_path.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    progress = torch.load(checkpoint, weights_only=True)["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
    assert progress["current"]["processed"] <= 1, "saved in the validation's first batches, not after its 50"


def test_a_second_signal_stops_at_once_without_waiting_for_the_step(tmp_path):
    config = write_config(tmp_path, "basic_ae.yaml", STEPS_PER_EPOCH + 5, "SIGTERM", times=2)
    result = fit(config, tmp_path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "SIGTERM received again: stopped at once in epoch 1" in result.stderr
    [checkpoint] = tmp_path.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    assert torch.load(checkpoint, weights_only=True)["global_step"] == STEPS_PER_EPOCH  # the last epoch end's


def test_a_signal_outside_any_run_stops_the_command_with_its_exit_code_and_one_line(tmp_path):
    """Before, SIGTERM outside a fit (loading data, between a study's runs, writing a report) killed the process
    where it stood (status -15), and Ctrl+C printed a traceback."""
    code = (
        "import os, signal, sys\n"
        "from lightning_ae.data import ImageDataModule\n"
        "ImageDataModule.describe = lambda self: os.kill(os.getpid(), signal.SIGTERM)\n"
        "from lightning_ae.cli import main\n"
        "sys.exit(main(['data']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("lightning-ae: SIGTERM received: stopped at once")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["pretrain", "study"])
def test_pretrain_and_study_are_told_to_run_again_not_to_add_ckpt_path_which_they_refuse(
    tmp_path, monkeypatch, capsys, command
):
    from lightning_ae.callbacks import RunInterrupted
    from lightning_ae.cli import commands

    def stopped(*args, **kwargs):
        raise RunInterrupted("SIGTERM", signal.SIGTERM, tmp_path / "frozen" / "checkpoints" / "last.ckpt", 0, 3)

    monkeypatch.setattr(commands, "run_pipeline", stopped)
    monkeypatch.setattr(commands, "run_study", stopped)
    study_file = REPO / "configs" / "study" / "smoke.yaml"
    argv = ["pretrain", "--config", str(REPO / "configs" / "pretrain.yaml")] if command == "pretrain" else []
    argv = argv or ["study", str(study_file), "--folder", str(tmp_path)]
    assert commands.main(argv) == 128 + signal.SIGTERM
    said = capsys.readouterr().err
    assert "checkpoint saved" in said and "Run the same command again: it resumes from there." in said
    assert "--ckpt_path" not in said


def test_a_second_resume_uses_the_newest_state_not_the_first_interruptions_checkpoint(tmp_path, uninterrupted):
    """Before, a resumed run saved its newer states as last-v1.ckpt, and the next --ckpt_path last restored the old
    last.ckpt of the first interruption and silently trained again from there."""
    from jsonargparse import Namespace

    from lightning_ae.experiment import find_last_checkpoint

    stopped = fit(write_config(tmp_path, "basic_ae.yaml", 5, "SIGTERM"), tmp_path)  # in epoch 0
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    config = write_config(tmp_path, "basic_ae.yaml", 2 * STEPS_PER_EPOCH + 8, "SIGKILL")
    killed = fit(config, tmp_path, "--ckpt_path", "last")  # resumed, then killed in epoch 2
    assert killed.returncode == -signal.SIGKILL
    logger = Namespace(save_dir=str(tmp_path / "lightning_logs"), name="Autoencoder-d8-sigmoid", version=None)
    newest, version = find_last_checkpoint(logger)
    assert version == "version_0" and torch.load(newest, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH

    resumed = fit(write_config(tmp_path, "basic_ae.yaml"), tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(finished_run(tmp_path), uninterrupted["basic_ae.yaml"])
