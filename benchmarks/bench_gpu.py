"""`make bench-gpu`: lightning-ae's training speed on one CUDA device against two plain loops on the same card.

For each model, in one process, on the same card:

- the plainest eager loop: the training images on the device, a fresh permutation per epoch, the
  images indexed per batch, zero_grad, backward, step (`eager_epochs`);
- the same loop with the update captured once in a CUDA graph and replayed: each step copies the
  next batch's indices into a static tensor, then replays (`GraphLoop`, PyTorch's documented
  whole-network capture: 3 warm-up steps on a side stream, then `torch.cuda.graph`);
- lightning-ae: seconds per epoch inside a longer `Trainer.fit` with the configs' speed path
  (`GroupedSteps`, CUDA graphs on; then off), TensorBoard logger and checkpointing, no validation;
  the first epoch (warm-up and capture) is left out, every epoch clocked after a device synchronize;
- a whole `lightning-ae fit` of 12 epochs (process start, validation, checkpoints, no evaluation
  callbacks, no test) against the graph loop's 12 epochs.

Models: the basic AE 784-32-784 (sigmoid, BCE, SGD lr 1.0, batch 32: the homework's) and the deep AE
784-1000-500-250-8 (ReLU, linear code, BCE, Adam lr 1e-3 with capturable=True, batch 128). Both sides
train the model's own layers with no centring and no output bias from the data (the plain loops have
no such step).

Then the evaluation share of `make train` (the basic AE with the evaluation callbacks) run on the
device: the callbacks' own timings from its results.json against the process's wall time.

    python benchmarks/bench_gpu.py [--epochs 5] [--only training,cli,evaluation]
    python benchmarks/bench_gpu.py --device cpu --epochs 1 --train_subset 2000   # tries the script (no graph loop)

Writes benchmarks/results/bench_gpu.json. Medians with min-max over the epochs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (the table's format and the pieces are make bench's)
    MAKE_TRAIN_CONFIGS,
    RESULTS,
    ROWS,
    fit_epoch_seconds,
    homework_fit_command,
    plain_network,
    row,
    synchronize,
)

from lightning_ae.data import ImageDataModule  # noqa: E402
from lightning_ae.models import Autoencoder  # noqa: E402
from lightning_ae.strategies import GroupedSteps  # noqa: E402

CASES: dict[str, tuple[Callable[[], Autoencoder], Callable, int]] = {
    "basic AE 784-32-784, SGD lr 1.0, batch 32": (
        lambda: Autoencoder(code_dim=32, center_inputs=False, init_output_bias=False),
        partial(torch.optim.SGD, lr=1.0),
        32,
    ),
    "deep AE 784-1000-500-250-8, Adam, batch 128": (
        lambda: Autoencoder(
            code_dim=8,
            hidden_dims=[1000, 500, 250],
            activation="relu",
            code_activation="linear",
            decoder_activation="relu",
            optimizer=partial(torch.optim.Adam, lr=1e-3),
            center_inputs=False,
            init_output_bias=False,
        ),
        partial(torch.optim.Adam, lr=1e-3),
        128,
    ),
}


def eager_epochs(
    model: Autoencoder, optimizer_class, images: torch.Tensor, batch_size: int, epochs: int
) -> list[float]:
    """The plainest loop on the device: seconds of each epoch."""
    encode, decode = plain_network(model)
    optimizer = optimizer_class(model.parameters())
    seconds = []
    for _ in range(epochs):
        start = synchronize(images.device)
        order = torch.randperm(len(images), device=images.device)
        for first in range(0, len(images), batch_size):
            x = images[order[first : first + batch_size]]
            loss = F.binary_cross_entropy_with_logits(decode(encode(x)), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(synchronize(images.device) - start)
    return seconds


class GraphLoop:
    """The plain loop with each full-size update captured once in a CUDA graph and replayed.

    The last, smaller batch of an epoch (if any) runs eagerly: a graph has static shapes.
    """

    def __init__(self, model: Autoencoder, optimizer_class, images: torch.Tensor, batch_size: int) -> None:
        self.images, self.batch_size = images, batch_size
        self.encode, self.decode = plain_network(model)
        extra = {"capturable": True} if optimizer_class.func in (torch.optim.Adam, torch.optim.AdamW) else {}
        self.optimizer = optimizer_class(model.parameters(), **extra)
        self.index = torch.randperm(len(images), device=images.device)[:batch_size].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as PyTorch's documentation captures
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self.update(self.index).backward()
                self.optimizer.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = self.update(self.index)
            self.loss.backward()
            self.optimizer.step()

    def update(self, index: torch.Tensor) -> torch.Tensor:
        x = self.images[index]
        return F.binary_cross_entropy_with_logits(self.decode(self.encode(x)), x)

    def epochs(self, epochs: int) -> list[float]:
        seconds = []
        full = len(self.images) // self.batch_size * self.batch_size
        for _ in range(epochs):
            start = synchronize(self.images.device)
            order = torch.randperm(len(self.images), device=self.images.device)
            for first in range(0, full, self.batch_size):
                self.index.copy_(order[first : first + self.batch_size])
                self.graph.replay()
            if full < len(self.images):
                self.optimizer.zero_grad(set_to_none=False)  # the graph's gradient buffers stay in place
                self.update(order[full:]).backward()
                self.optimizer.step()
            seconds.append(synchronize(self.images.device) - start)
        return seconds


def lightning_epochs(
    build: Callable[[], Autoencoder],
    batch_size: int,
    epochs: int,
    device: torch.device,
    graphs: bool,
    images: int | None,
) -> tuple[list[float], str]:
    """Seconds of each epoch after the first in an (epochs + 1)-epoch fit, and what the speed path did."""
    torch.manual_seed(0)
    datamodule = ImageDataModule(batch_size=batch_size, train_subset=images)
    strategy = GroupedSteps(cuda_graphs=graphs)
    seconds, trainer = fit_epoch_seconds(build(), datamodule, epochs + 1, strategy, accelerator=device.type, devices=1)
    static = trainer.strategy._static
    did = f"{static.captures} captures, {static.replays} replays" if static is not None else "eager"
    return seconds[1:], did


def bench_training(epochs: int, device: torch.device, subset: int | None) -> None:
    datamodule = ImageDataModule(train_subset=subset)
    datamodule.setup()
    images = datamodule.split("train").images.to(device)
    for name, (build, optimizer_class, batch_size) in CASES.items():
        torch.manual_seed(0)
        eager = eager_epochs(build().to(device), optimizer_class, images, batch_size, epochs + 1)[1:]
        graph = None
        if device.type == "cuda":
            torch.manual_seed(0)
            try:
                loop = GraphLoop(build().to(device), optimizer_class, images, batch_size)
                graph = loop.epochs(epochs + 1)[1:]
                print(f"           {name}: the graph loop's last loss {loop.loss.item():.4f}")
            except RuntimeError as error:  # the reference failing must not cost the rest of the run
                print(f"           {name}: the CUDA-graph loop failed: {error}")
        ours, did = lightning_epochs(build, batch_size, epochs, device, graphs=True, images=subset)
        eager_ours, _ = lightning_epochs(build, batch_size, epochs, device, graphs=False, images=subset)
        row("gpu", f"{name}: plain eager loop", eager, None, "s/epoch", "measured", None)
        if graph is not None:
            row("gpu", f"{name}: plain CUDA-graph loop", graph, None, "s/epoch", "measured", None)
        reference = graph if graph is not None else eager
        against = "CUDA-graph loop" if graph is not None else "eager loop (no CUDA)"
        print(f"           lightning-ae with CUDA graphs: {did}")
        row(
            "gpu",
            f"  lightning-ae, graphs / {against}",
            ours,
            reference,
            "s/epoch",
            "ratio <= 1.5",
            lambda e: e["ratio"] <= 1.5,
        )
        row("gpu", f"  lightning-ae, no graphs / {against}", eager_ours, reference, "s/epoch", "measured", None)


def bench_cli_fit(device: torch.device) -> None:
    """A whole `lightning-ae fit` of 12 epochs (basic AE, homework SGD, batch 32) against the graph loop's 12."""
    epochs = 12
    with tempfile.TemporaryDirectory() as folder:
        command = homework_fit_command(folder, epochs)
        command += ["--trainer.accelerator", "gpu" if device.type == "cuda" else "cpu"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=folder)
        cli = time.perf_counter() - start
    datamodule = ImageDataModule()
    datamodule.setup()
    images = datamodule.split("train").images.to(device)
    build, optimizer_class, batch_size = CASES["basic AE 784-32-784, SGD lr 1.0, batch 32"]
    torch.manual_seed(0)
    start = synchronize(device)
    if device.type == "cuda":  # the reference includes its capture, as the fit includes its own
        GraphLoop(build().to(device), optimizer_class, images, batch_size).epochs(epochs)
    else:
        eager_epochs(build().to(device), optimizer_class, images, batch_size, epochs)
    reference = synchronize(device) - start
    row("gpu", f"whole CLI fit, {epochs} epochs, batch 32 / plain loop", [cli], [reference], "s", "measured", None)


EVALUATION_TIMINGS = ("knn_seconds", "pca_seconds", "tsne_seconds", "pca_tsne_seconds", "projector_seconds")


def bench_evaluation_share(device: torch.device, extra: list[str]) -> None:
    """`make train` on the device: the evaluation callbacks' seconds against the whole process's."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "lightning_ae", "fit", *MAKE_TRAIN_CONFIGS]
        command += ["--trainer.accelerator", "gpu" if device.type == "cuda" else "cpu"]
        command += ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", folder, *extra]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=folder)
        wall = time.perf_counter() - start
        results = json.loads(next(Path(folder).rglob("results.json")).read_text())
    timings = results["timings"]
    evaluation = sum(timings.get(key, 0.0) for key in EVALUATION_TIMINGS)
    parts = ", ".join(f"{key} {timings[key]:.2f}" for key in (*EVALUATION_TIMINGS, "fit_seconds") if key in timings)
    print(f"           make train: {results.get('epochs')} epochs, process {wall:.1f} s; {parts}")
    row(
        "gpu",
        "make train: evaluation / whole process",
        [evaluation],
        [wall],
        "s",
        "ratio <= 0.25",
        lambda e: e["ratio"] <= 0.25,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed per measurement (after a warm-up one)")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the script")
    parser.add_argument("--train_subset", type=int, default=None, help="training images (default: all 55,000)")
    parser.add_argument(
        "--train_args", default="", help='added to make train\'s command, e.g. "--trainer.max_epochs 2"'
    )
    parser.add_argument("--only", default="training,cli,evaluation", help="comma-separated: training,cli,evaluation")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench_gpu: no CUDA device (torch.cuda.is_available() is False); use --device cpu to try it.\n")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    machine = f"{card}, torch {torch.__version__}, pytorch-lightning {pl.__version__}"
    print(f"lightning-ae GPU benchmarks: {machine}; median of {args.epochs} epochs after a warm-up one")
    print(f"{'section':10s} {'what':46s} {'ours':>9s} {'reference':>9s} {'ratio':>6s}  {'unit':8s} {'target':14s}")
    sections = set(args.only.split(","))
    if "training" in sections:
        bench_training(args.epochs, device, args.train_subset)
    if "cli" in sections:
        bench_cli_fit(device)
    if "evaluation" in sections:
        bench_evaluation_share(device, args.train_args.split())
    RESULTS.mkdir(parents=True, exist_ok=True)
    from lightning_ae.files import write_json

    name = "bench_gpu.json" if device.type == "cuda" else "bench_gpu_cpu_trial.json"
    write_json(RESULTS / name, {"machine": machine, "epochs": args.epochs, "rows": ROWS})
    print(f"written: {RESULTS / name}")


if __name__ == "__main__":
    main()
