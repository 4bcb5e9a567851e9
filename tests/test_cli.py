"""The `lightning-ae` command, run as a user would (subprocess, from another folder)."""

from __future__ import annotations

import subprocess
import sys


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
        "lightning-ae: error: val_size=0 is not valid; valid: an integer with 0 < val_size < 60000 "
        "(the number of training images)."
    )
    assert "Traceback" not in result.stderr


def test_missing_dataset_folder_falls_back_to_bundled_data_and_unknown_command_fails(tmp_path):
    assert run("data", "--data-dir", str(tmp_path / "nothing-here"), cwd=tmp_path).returncode == 0
    result = run("frobnicate", cwd=tmp_path)
    assert result.returncode == 2 and "usage: lightning-ae" in result.stderr and "'frobnicate'" in result.stderr


def test_fit_on_a_tiny_slice_trains_tests_and_logs(tmp_path):
    from conftest import REPO

    result = run(
        "fit",
        "--config",
        str(REPO / "configs" / "basic_ae.yaml"),
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
    assert list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert "test/bce_per_pixel" in result.stdout and "test/compression_ratio" in result.stdout


def test_fit_with_a_bad_value_or_missing_checkpoint_exits_nonzero_with_the_reason(tmp_path):
    from conftest import REPO

    config = str(REPO / "configs" / "basic_ae.yaml")
    bad = run("fit", "--config", config, "--model.init_args.code_dim", "0", cwd=tmp_path)
    assert bad.returncode != 0 and "code_dim=0 is not valid" in bad.stderr
    missing = run(
        "fit", "--config", config, "--data.train_subset", "64", "--ckpt_path", str(tmp_path / "no.ckpt"), cwd=tmp_path
    )
    assert missing.returncode == 2 and "no.ckpt" in missing.stderr and "Traceback" not in missing.stderr
