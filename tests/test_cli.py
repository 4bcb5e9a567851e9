"""The `lightning-ae` command, run as a user would (subprocess, from another folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_configs import EXPERIMENTS

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_ae", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_data_check_describes_the_splits(tmp_path):
    result = run("data", "--layout", "image", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train:  55000 items, images (55000, 1, 28, 28)" in result.stdout
    assert "test :  10000 items" in result.stdout and "CC BY-SA 3.0" in result.stdout


def test_bad_value_is_one_clear_line_and_nonzero_exit(tmp_path):
    result = run("data", "--val-size", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "lightning-ae: error: val_size=0 is not valid; valid: an integer from 10 to 59990 (the split is "
        "stratified: the validation and the training side each need one image of each of the 10 classes)."
    )
    assert "Traceback" not in result.stderr


def test_a_named_missing_data_folder_is_an_error_and_so_is_an_unknown_command(tmp_path):
    missing = run("data", "--data-dir", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert missing.returncode == 2 and "nothing-here': the folder does not exist" in missing.stderr
    assert run("data", cwd=tmp_path).returncode == 0  # the bundled data, when no folder is named
    result = run("frobnicate", cwd=tmp_path)
    assert result.returncode == 2 and "'frobnicate' is not a command; commands: fit, validate" in result.stderr


def small_copy_of(config_name: str, folder: Path) -> Path:
    """The real config with its evaluation callbacks shrunk, so that a test runs in seconds."""
    from conftest import REPO

    config = yaml.safe_load((REPO / "configs" / config_name).read_text())
    for callback in [*config["trainer"].get("callbacks", []), *config["trainer"].get("callbacks+", [])]:
        name = callback["class_path"].rsplit(".", 1)[-1]
        callback.setdefault("init_args", {}).update(SMALL.get(name, {}))
    path = folder / Path(config_name).name
    path.write_text(yaml.safe_dump(config))
    return path


SMALL = {"TSNEPlot": {"max_points": 200}, "EmbeddingProjector": {"max_items": 300}}


def test_fit_on_a_tiny_slice_trains_tests_and_writes_every_output(tmp_path):
    result = run(
        "fit",
        "--config",
        str(small_copy_of("basic_ae.yaml", tmp_path)),
        "--config",
        str(small_copy_of("fragments/evaluation.yaml", tmp_path)),
        "--data.train_subset",
        "256",
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.code_dim",
        "8",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "Autoencoder-d8-sigmoid" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    [best] = (run_dir / "checkpoints").glob("best-epoch*.ckpt")
    assert list(run_dir.glob("events.out.tfevents.*"))
    for name in ("reconstructions.png", "tsne.png", "projector_config.pbtxt", "config.yaml"):
        assert (run_dir / name).is_file(), name
    assert "test/bce_per_pixel" in result.stdout and "test/pca_knn_acc" in result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "tested" and results["epochs"] == 2
    # The resolved config as the CLI parsed it, overrides included; test ran on the best checkpoint.
    assert results["config"]["model"]["init_args"]["code_dim"] == 8
    assert results["config"]["data"]["train_subset"] == 256
    assert results["best_checkpoint"] == str(best.resolve()) or Path(results["best_checkpoint"]).name == best.name
    assert results["best_val_loss"] == pytest.approx(min(results["best_val_loss"], results["last_epoch"]["val/loss"]))
    assert {"test/knn_acc", "test/bce_per_pixel"} <= set(results["ae"]) & set(results["pca"])

    # predict on the best checkpoint: codes, reconstructions and labels of the test set, as plain tensors.
    predict = run(
        "predict",
        "--config",
        str(tmp_path / "basic_ae.yaml"),
        "--model.init_args.code_dim",
        "8",
        "--ckpt_path",
        str(best),
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    [saved] = (tmp_path / "lightning_logs" / "Autoencoder-d8-sigmoid").glob("version_*/predictions.pt")
    predictions = torch.load(saved, weights_only=True)
    assert predictions["code"].shape == (10000, 8) and predictions["reconstruction"].shape == (10000, 784)
    assert torch.equal(predictions["label"][:5], torch.tensor([7, 2, 1, 0, 4]))  # the first MNIST test labels


def test_describe_prints_every_layer_with_its_shape(capsys):
    from conftest import REPO

    from lightning_ae.cli import main

    assert (
        main(["describe", "--config", str(REPO / "configs" / "conv_ae.yaml"), "--model.init_args.code_dim", "16"]) == 0
    )
    out = capsys.readouterr().out
    assert "(16, 7, 7)" in out and "code" in out and "ConvAutoencoder: " in out
    assert "Linear(in_features=784, out_features=16, bias=True)" in out


def test_make_tensorboard_listens_on_loopback_by_default():
    from conftest import REPO

    dry = subprocess.run(["make", "-n", "tensorboard"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--host 127.0.0.1" in dry.stdout and "--logdir lightning_logs" in dry.stdout
    exposed = subprocess.run(["make", "-n", "tensorboard", "TB_HOST=0.0.0.0"], cwd=REPO, capture_output=True, text=True)
    assert "--host 0.0.0.0" in exposed.stdout


# Every fit experiment as its config files compose (tests/test_configs.py lists them and checks that
# configs/study/standard.yaml composes them alike).
FIT_CONFIGS = EXPERIMENTS


@pytest.mark.parametrize("config", sorted(FIT_CONFIGS))
def test_every_config_parses_and_builds_its_model_and_callbacks(config, capsys):
    from conftest import REPO

    from lightning_ae.callbacks import EmbeddingProjector, KNNEvaluator, PCABaseline, ReconstructionGrid, TSNEPlot
    from lightning_ae.cli import lightning_cli

    cli = lightning_cli([arg for file in FIT_CONFIGS[config] for arg in ("--config", str(REPO / file))], run=False)
    kinds = {type(c) for c in cli.trainer.callbacks}
    if config != "classifier":  # every autoencoder experiment turns the evaluation on
        assert {KNNEvaluator, PCABaseline, ReconstructionGrid, TSNEPlot, EmbeddingProjector} <= kinds
    assert cli.model.input_shape == cli.datamodule.input_shape


@pytest.mark.parametrize("config", ["pretrain_sigmoid.yaml", "pretrain_tanh.yaml", "pretrain_relu.yaml"])
def test_every_pipeline_config_parses(config, capsys, tmp_path):
    from conftest import REPO

    from lightning_ae.cli import main

    # An output folder holding another config's pipeline.json makes the command stop before training.
    (tmp_path / "pipeline.json").write_text('{"config": {"activation": "none"}}')
    configs = ["--config", str(REPO / "configs" / "pretrain.yaml"), "--config", str(REPO / "configs" / config)]
    assert main(["pretrain", *configs, "--output_dir", str(tmp_path)]) == 2
    assert "holds stages of another pipeline config (activation: 'none' there" in capsys.readouterr().err


def test_the_stacked_denoising_variant_masks_only_the_layers_and_writes_its_own_folder(monkeypatch):
    """configs/pretrain_sigmoid_denoising.yaml after the sigmoid pipeline: masked layers (with a longer cap, as they
    learn more slowly), the same classifier stages."""
    from conftest import REPO

    from lightning_ae.cli import main
    from lightning_ae.pretraining import LayerwisePretraining

    runs = []
    monkeypatch.setattr(LayerwisePretraining, "run", lambda self: runs.append(self) or {"stages": {}})
    files = ["pretrain.yaml", "pretrain_sigmoid.yaml", "pretrain_sigmoid_denoising.yaml"]
    assert main(["pretrain", *(a for f in files for a in ("--config", str(REPO / "configs" / f)))]) == 0
    assert main(["pretrain", *(a for f in files[:2] for a in ("--config", str(REPO / "configs" / f)))]) == 0
    denoising, plain = runs
    assert denoising.layers.masking == 0.75 and plain.layers.masking is None
    assert denoising.layers.epochs > plain.layers.epochs and denoising.layers.patience == plain.layers.patience
    assert denoising.layer_corruption is not None and plain.layer_corruption is None
    assert denoising.frozen.masking is None and denoising.finetune.masking is None
    for stage in ("frozen", "finetune"):
        assert denoising.config[stage] == plain.config[stage]
    assert denoising.activation == plain.activation == "sigmoid"
    assert denoising.output_dir != plain.output_dir  # pipeline.json would refuse the other's folder


def test_the_homework_optimizer_is_one_config_file_away(capsys):
    """configs/fragments/homework_sgd.yaml after an experiment's config restores the homework's protocol."""
    from conftest import REPO

    from lightning_ae.cli import lightning_cli

    fragment = REPO / "configs" / "fragments" / "homework_sgd.yaml"
    basic = ["--config", str(REPO / "configs" / "basic_ae.yaml"), "--config", str(REPO / EXPERIMENTS["basic_ae"][1])]
    cli = lightning_cli([*basic, "--config", str(fragment)], run=False)  # as make train ARGS="--config ..." runs it
    optimizer = cli.model.optimizer_factory(cli.model.parameters())
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["lr"] == 1.0
    assert cli.model.scheduler_factory is None and cli.datamodule.batch_size == 32 and cli.trainer.max_epochs == 50
    assert cli.model.hparams.code_dim == 32 and cli.model.hparams.activation == "sigmoid"  # the network stays
    recipe = lightning_cli(["--config", str(REPO / "configs" / "basic_ae.yaml")], run=False)
    assert type(recipe.model.optimizer_factory(recipe.model.parameters())) is torch.optim.Adam


NINE_COMMANDS = ("fit", "validate", "test", "predict", "describe", "data", "pretrain", "study", "report")


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]], ids=["nothing", "--help", "-h"])
def test_the_help_lists_every_command_with_a_line_each(argv, capsys):
    """Before, `lightning-ae --help` was LightningCLI's: fit, validate, test and predict only."""
    from lightning_ae.cli import main

    assert main(argv) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert tuple(listed) == NINE_COMMANDS


def test_a_mistyped_command_names_every_command_and_the_closest(capsys):
    from lightning_ae.cli import main

    assert main(["pretrian", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(name in err for name in NINE_COMMANDS) and "Did you mean 'pretrain'?" in err


def test_describe_prints_no_warning_about_its_arguments(monkeypatch, recwarn, capsys):
    """Before, `describe` handed LightningCLI its arguments while sys.argv held them too, and LightningCLI warned."""
    from conftest import REPO

    from lightning_ae.cli import main

    argv = ["describe", "--config", str(REPO / "configs" / "basic_ae.yaml")]
    monkeypatch.setattr(sys, "argv", ["lightning-ae", *argv])
    assert main(argv) == 0
    assert not [w for w in recwarn if "args parameter is intended" in str(w.message)]


def test_a_fit_whose_output_is_not_a_terminal_prints_a_line_per_epoch_and_where_its_results_are(tmp_path):
    """Before, a fit into a log file wrote every redraw of the progress bar (65 KB for make train's 72 s) and never
    said where results.json and the best checkpoint were."""
    from conftest import REPO

    result = run(
        "fit", "--config", str(REPO / "configs" / "basic_ae.yaml"), "--data.train_subset", "512",
        "--trainer.max_epochs", "3", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "val/loss" in epochs[-1] and "train/loss" in epochs[-1]
    last = result.stdout.strip().splitlines()[-1]
    [results_file] = tmp_path.glob("lightning_logs/*/version_0/results.json")
    assert last.startswith("lightning-ae: results ") and str(results_file.relative_to(tmp_path)) in last
    assert "best checkpoint lightning_logs/" in last and "tensorboard --logdir lightning_logs" in last
    assert "\r" not in result.stdout + result.stderr, "no bar redrawn in place"
    assert "deprecated" not in result.stderr, result.stderr[-3000:]
    assert len(result.stdout) + len(result.stderr) < 10_000
