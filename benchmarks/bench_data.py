"""Benchmark: one epoch of training batches from MNISTDataModule vs DataLoader(TensorDataset).

Both iterate the same 55,000 flat float32 images at the same batch size, shuffled,
yielding (input, target, label); nothing is computed on the batches. Repeated; the
median and min-max of each are printed and written to benchmarks/results/data.json.

    python benchmarks/bench_data.py [--batch-size 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_ae.data import MNISTDataModule

RESULTS = Path(__file__).resolve().parent / "results"


def time_epoch(loader) -> float:
    start = time.perf_counter()
    batches = 0
    for _batch in loader:
        batches += 1
    elapsed = time.perf_counter() - start
    assert batches == len(loader)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    datamodule = MNISTDataModule(batch_size=args.batch_size)
    datamodule.setup()
    split = datamodule.split("train")
    ours = datamodule.train_dataloader()
    # The usual baseline: the same tensors behind a DataLoader (per-item __getitem__ + collate).
    baseline = DataLoader(
        TensorDataset(split.images, split.images, split.labels), batch_size=args.batch_size, shuffle=True
    )
    noisy_module = MNISTDataModule(batch_size=args.batch_size, corruption="masking", corruption_args={"p": 0.5})
    noisy_module.setup()
    noisy = noisy_module.train_dataloader()
    rows = {
        "MNISTDataModule (index slices)": ours,
        "DataLoader(TensorDataset)": baseline,
        "MNISTDataModule + fresh masking": noisy,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for epoch in range(args.repeats):  # interleaved, so that machine noise hits both alike
        ours.sampler.set_epoch(epoch)
        noisy.sampler.set_epoch(epoch)
        for name, loader in rows.items():
            times[name].append(time_epoch(loader))

    print(
        f"One epoch of {len(split)} flat images, batch {args.batch_size}, {args.repeats} repeats, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'loader':34s} {'median s':>9s} {'min-max s':>15s} {'batches/s':>10s}")
    result = {"batch_size": args.batch_size, "images": len(split), "repeats": args.repeats, "rows": {}}
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:34s} {median:9.3f} {min(values):7.3f}-{max(values):<7.3f} {len(rows[name]) / median:10.0f}")
        result["rows"][name] = {"median_s": median, "min_s": min(values), "max_s": max(values)}
    speedup = (
        result["rows"]["DataLoader(TensorDataset)"]["median_s"]
        / result["rows"]["MNISTDataModule (index slices)"]["median_s"]
    )
    print(f"speed-up of the DataModule over the baseline: {speedup:.1f}x")
    result["speedup"] = speedup
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / "data.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(target)


if __name__ == "__main__":
    main()
