"""Under Lightning's DDP (2 CPU processes) each rank trains on its own shard of the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_ae.data import ImageDataModule

SCRIPT = Path(__file__).parent / "scripts" / "ddp_shards.py"


@pytest.mark.slow
def test_two_process_ddp_ranks_see_disjoint_shards_covering_the_data(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)

    dm = ImageDataModule(train_subset=2000)
    dm.setup()
    fingerprint = torch.randn(784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def ids(values: list[float], images: torch.Tensor) -> list[int]:
        table = {round(v, 6): i for i, v in enumerate((images.double() @ fingerprint).tolist())}
        assert len(table) == len(images)  # fingerprints identify images uniquely
        return [table[round(v, 6)] for v in values]

    train = [ids(r["seen"]["train"], dm.split("train").images) for r in ranks]
    assert len(train[0]) == len(train[1]) == 1000
    assert not set(train[0]) & set(train[1]) and set(train[0]) | set(train[1]) == set(range(2000))
    val = [ids(r["seen"]["val"], dm.split("val").images) for r in ranks]
    # Validation is sharded without padding: every image exactly once across the ranks.
    assert sorted(val[0] + val[1]) == list(range(5000))
    assert len(val[0]) == len(val[1]) == 2500
    # DDP kept the replicas in sync.
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-9)


def fit_basic_ae(folder: Path, *extra: str) -> dict:
    """The basic AE (d'=8) on 2,048 images for 2 epochs, with counting kNN and PCA callbacks; its results.json."""
    from conftest import REPO

    config = yaml.safe_load((REPO / "configs" / "basic_ae.yaml").read_text())
    config["trainer"]["callbacks"] = [
        {"class_path": "counting_callbacks.CountingKNN"},
        {"class_path": "counting_callbacks.CountingPCA"},
    ]
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "EVALUATION_LOG": str(folder / "evaluations.log"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "scripts"), str(REPO)]),
    }
    args = ["--config", str(config_file), "--data.train_subset", "2048", "--trainer.max_epochs", "2"]
    args += [
        "--model.init_args.code_dim",
        "8",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.accelerator",
        "cpu",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "lightning_ae", "fit", *args, *extra],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [results] = folder.glob("lightning_logs/*/version_*/results.json")
    return json.loads(results.read_text())


@pytest.mark.slow
def test_ddp_fit_matches_one_process_and_evaluates_once_on_rank_0(tmp_path):
    """2 ranks x batch 32 average the gradients of the same 64 images as one process at batch 64
    (rank r takes every 2nd image of the shared permutation), so the runs agree to float tolerance."""
    (tmp_path / "single").mkdir()
    # Lightning's default strategy on one process too (not the configs' grouped steps): one step per update on both.
    single = fit_basic_ae(tmp_path / "single", "--data.batch_size", "64", "--trainer.strategy", "auto")
    ddp_folder = tmp_path / "ddp"
    ddp_folder.mkdir()
    ddp = fit_basic_ae(ddp_folder, "--data.batch_size", "32", "--trainer.strategy", "ddp", "--trainer.devices", "2")

    assert ddp["environment"]["world_size"] == 2 and single["environment"]["world_size"] == 1
    assert ddp["epochs"] == single["epochs"] == 2 and ddp["global_step"] == single["global_step"]
    tolerance = 1e-3  # relative: the same updates, summed in a different order
    assert ddp["last_epoch"]["val/loss"] == pytest.approx(single["last_epoch"]["val/loss"], rel=tolerance)
    for key in ("test/bce_per_pixel", "test/mse_per_pixel", "test/knn_acc"):
        assert ddp["ae"][key] == pytest.approx(single["ae"][key], rel=tolerance, abs=2e-3), key
    # Every evaluation ran once, on rank 0, never on rank 1.
    lines = (ddp_folder / "evaluations.log").read_text().splitlines()
    assert sorted(lines) == ["knn 0 val,test", "pca 0 val,test"], lines
