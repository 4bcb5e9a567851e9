"""The `lightning-ae` command."""

from __future__ import annotations

import argparse
import sys

from lightning_ae.data import DATASETS, MNISTDataModule
from lightning_ae.data.datamodule import LAYOUTS


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
    for stage, loader in (
        ("train", datamodule.train_dataloader()),
        ("val", datamodule.val_dataloader()),
        ("test", datamodule.test_dataloader()),
    ):
        inputs, targets, labels = next(iter(loader))
        print(
            f"  first {stage} batch: input {tuple(inputs.shape)} in [{inputs.min():.2f}, {inputs.max():.2f}], "
            f"target {tuple(targets.shape)}, labels {tuple(labels.shape)}; {len(loader)} batches"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"data": data_check}
    if not argv or argv[0] not in commands:
        print(f"usage: lightning-ae {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"lightning-ae: error: {err}", file=sys.stderr)
        return 2
