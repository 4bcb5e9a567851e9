"""Under Lightning's DDP (2 CPU processes) each rank trains on its own shard of the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_ae.data import MNISTDataModule

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

    dm = MNISTDataModule(train_subset=2000)
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
