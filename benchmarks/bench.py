"""`make bench`: lightning-ae against its references, side by side in one process, one table.

Sections (each row: lightning-ae, the reference, their ratio, the target):

- trainer: one epoch of the basic AE 784-32-784 (sigmoid, BCE, SGD lr 1.0) on the 55,000
  training images at batch 32 and 256, `Trainer.fit` as the CLI sets it up (the GroupedSteps
  strategy, TensorBoard logger, checkpoint, no progress bar, no validation) against the
  plainest PyTorch loop (the images indexed per batch, zero_grad, backward, step: nothing
  else) over the same batches in the same order; both end at the same weights (checked).
  Then per epoch inside a longer fit, and a whole `lightning-ae fit` of 12 epochs (process
  start, validation, checkpoints) against the plainest loop's 12 epochs.
- compute: achieved training FLOP/s of the deep AE 784-1000-500-250-32 at batch 256 and of
  the classifier 784-1000-1000-10 at batch 25, over the FLOP/s of a 2048x2048 float32
  matrix product measured in the same run.
- evaluation: kNN (k=10) of the 10,000 test codes against the 55,000 training codes at
  d' = 2, 32, 784 (PCA codes), lightning-ae's `knn_predict` against sklearn's
  `KNeighborsClassifier(10)` with its defaults (identical predictions, checked); PCA fit +
  transform at d' = 2, 32, sklearn fresh against lightning-ae's cached fit; the whole
  evaluation of a basic AE (kNN + PCA + reconstructions + projector) against its 50
  epochs of training; t-SNE of 5,000 codes.
- data: one epoch of batches from the DataModule against DataLoader(TensorDataset).
- memory (with --memory): peak RSS of `lightning-ae fit --config configs/basic_ae.yaml`
  after 1 and after 20 epochs (training only), and for 2 epochs with test and evaluation;
  RSS after each of 20 smoke-study runs in one process (5 runs x 4 seeds).

    python benchmarks/bench.py [--repeats 5] [--only trainer,compute,...] [--memory]

Medians with min-max over interleaved repeats; written to benchmarks/results/bench.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from lightning_ae.callbacks import EmbeddingProjector, KNNEvaluator, PCABaseline, ReconstructionGrid, TSNEPlot
from lightning_ae.data import ImageDataModule
from lightning_ae.data.loader import EpochBatchSampler
from lightning_ae.evaluation.knn import knn_predict
from lightning_ae.evaluation.pca import fit_pca
from lightning_ae.models import Autoencoder, Classifier
from lightning_ae.strategies import GroupedSteps

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ROWS: list[dict] = []


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def row(section: str, name: str, ours: list[float], reference: list[float] | None, unit: str, target: str, met) -> None:
    entry = {"section": section, "name": name, "unit": unit, "ours": summary(ours), "target": target}
    if reference is not None:
        entry["reference"] = summary(reference)
        entry["ratio"] = entry["ours"]["median"] / entry["reference"]["median"]
    entry["met"] = met(entry) if callable(met) else met
    ROWS.append(entry)
    ref = f"{entry['reference']['median']:9.3f}" if reference is not None else f"{'':9s}"
    ratio = f"{entry['ratio']:6.2f}" if reference is not None else f"{'':6s}"
    status = {True: "met", False: "MISSED", None: ""}[entry["met"]]
    print(
        f"{section:10s} {name:46s} {entry['ours']['median']:9.3f} {ref} {ratio}  {unit:8s} {target:14s} {status}",
        flush=True,
    )


def interleaved(functions: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):  # interleaved, so that machine noise hits all alike
        for name, function in functions.items():
            times[name].append(function())
    return times


# -- trainer overhead ----------------------------------------------------------------------------


def homework_ae() -> Autoencoder:
    """The homework's basic AE as both sides train it: no centring and no output-bias start from the data
    (the trainer sets both at fit start; the plain loop has no such step, and the weights must match)."""
    return Autoencoder(code_dim=32, center_inputs=False, init_output_bias=False)


def plain_network(model: Autoencoder) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model's own encoder (without its Flatten: the images are flat already) and decoder, for plain loops."""
    encoder = [m for m in model.encoder if not isinstance(m, torch.nn.Flatten)]
    return torch.nn.Sequential(*encoder), model.decoder


def plainest_epochs(model: Autoencoder, images: torch.Tensor, batches: list[torch.Tensor], epochs: int = 1) -> None:
    """The plainest loop a PyTorch user writes: the images indexed per batch, zero_grad, backward, step.

    It trains `model`'s own layers (so both sides end at comparable weights) on the flat images,
    in the given batch order, with nothing else: no DataModule, no centring, no hooks.
    """
    encode, decode = plain_network(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(epochs):
        for index in batches:
            x = images[index]
            loss = F.binary_cross_entropy_with_logits(decode(encode(x)), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def training_order(datamodule: ImageDataModule, epoch: int = 0) -> list[torch.Tensor]:
    """The batches of indices the DataModule's sampler gives in `epoch` (drawn before any timing)."""
    sampler = EpochBatchSampler(len(datamodule.split("train")), datamodule.batch_size, True, datamodule.seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def plain_epoch(model: Autoencoder, datamodule: ImageDataModule, order: list[torch.Tensor]) -> None:
    plainest_epochs(model, datamodule.split("train").images, order)


def lightning_epoch(model: pl.LightningModule, datamodule: pl.LightningDataModule, folder: str) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=1,
        strategy=GroupedSteps(),  # the configs' speed path
        logger=TensorBoardLogger(folder, name="bench"),
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    with contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(model, datamodule=datamodule)
    return trainer


def bench_trainer(repeats: int) -> float:
    """Returns the median seconds of one lightning-ae epoch at batch 32 (for the evaluation budget)."""
    epoch_32 = 0.0
    for batch_size in (32, 256):
        datamodule = ImageDataModule(batch_size=batch_size)
        datamodule.setup()
        models = {}
        order = training_order(datamodule)  # epoch 0's batches, as the trainer's first epoch draws them

        def timed(
            kind: str, datamodule: ImageDataModule = datamodule, models: dict = models, order: list = order
        ) -> float:
            torch.manual_seed(0)
            model = homework_ae()
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                if kind == "plain":
                    plain_epoch(model, datamodule, order)
                else:
                    lightning_epoch(model, datamodule, folder)
                elapsed = time.perf_counter() - start
            models[kind] = model
            return elapsed

        times = interleaved({"lightning": lambda: timed("lightning"), "plain": lambda: timed("plain")}, repeats)
        for ours, theirs in zip(models["lightning"].parameters(), models["plain"].parameters(), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # the same updates
        row(
            "trainer",
            f"basic AE epoch, batch {batch_size}: fit / plainest loop",
            times["lightning"],
            times["plain"],
            "s",
            "ratio <= 1.10",
            lambda e: e["ratio"] <= 1.10,
        )
        if batch_size == 32:
            epoch_32 = statistics.median(times["lightning"])
        steady_state(datamodule, batch_size, repeats)
    bench_cli_fit(repeats)
    return epoch_32


def homework_fit_command(folder: str, epochs: int) -> list[str]:
    """`lightning-ae fit` of the homework's basic AE (SGD lr 1.0, batch 32), as the plain loops train it (no
    centring, no output bias from the data), validation and checkpoints, no evaluation callbacks, no test."""
    command = [sys.executable, "-m", "lightning_ae", "fit", "--config", str(REPO / "configs" / "basic_ae.yaml")]
    command += ["--config", str(REPO / "configs" / "fragments" / "homework_sgd.yaml"), "--trainer.callbacks", "[]"]
    command += ["--trainer.max_epochs", str(epochs), "--test_after_fit", "false"]
    command += ["--model.init_args.center_inputs", "false", "--model.init_args.init_output_bias", "false"]
    return command + ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", folder]


def bench_cli_fit(repeats: int) -> None:
    """A whole `lightning-ae fit` (process start, 12 epochs at batch 32 with validation and checkpointing, no
    evaluation callbacks, no test) against the plainest loop's 12 epochs over the same batches."""
    datamodule = ImageDataModule(batch_size=32)
    datamodule.setup()
    epochs = 12
    orders = [training_order(datamodule, epoch) for epoch in range(epochs)]

    def cli() -> float:
        with tempfile.TemporaryDirectory() as folder:
            command = homework_fit_command(folder, epochs)
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=folder)
            return time.perf_counter() - start

    def plainest() -> float:
        torch.manual_seed(0)
        model = homework_ae()
        start = time.perf_counter()
        for order in orders:
            plainest_epochs(model, datamodule.split("train").images, order)
        return time.perf_counter() - start

    times = interleaved({"cli": cli, "plainest": plainest}, max(1, repeats // 2))
    row(
        "trainer",
        f"whole CLI fit, {epochs} epochs, batch 32 / plainest loop",
        times["cli"],
        times["plainest"],
        "s",
        "ratio <= 1.25",
        lambda e: e["ratio"] <= 1.25,
    )


def synchronize(device: torch.device) -> float:
    """The time after the device has finished its queued work (a CUDA GPU runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class EpochTimer(pl.Callback):
    """Wall time of each training epoch, hooks included, Trainer setup and teardown excluded."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = synchronize(pl_module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(synchronize(pl_module.device) - self.start)


def fit_epoch_seconds(
    model: pl.LightningModule, datamodule: pl.LightningDataModule, epochs: int, strategy: GroupedSteps, **trainer_args
) -> tuple[list[float], pl.Trainer]:
    """Seconds of each epoch of an `epochs`-epoch fit on the configs' speed path (TensorBoard logger, checkpoints,
    no validation), and its Trainer."""
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            max_epochs=epochs,
            strategy=strategy,
            logger=TensorBoardLogger(folder, name="bench"),
            callbacks=[timer],
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            **trainer_args,
        )
        with contextlib.redirect_stderr(io.StringIO()):
            trainer.fit(model, datamodule=datamodule)
    return timer.seconds, trainer


def steady_state(datamodule: ImageDataModule, batch_size: int, repeats: int) -> None:
    """The per-epoch cost inside a longer fit (what a 50-epoch run pays per epoch) against the plain loop."""
    torch.manual_seed(0)
    seconds, _ = fit_epoch_seconds(homework_ae(), datamodule, repeats + 1, GroupedSteps())
    plain = []
    for _ in range(repeats):
        model = homework_ae()
        start = time.perf_counter()
        plain_epoch(model, datamodule, training_order(datamodule))
        plain.append(time.perf_counter() - start)
    row(
        "trainer",
        f"  same, per epoch inside a {repeats + 1}-epoch fit / plainest",
        seconds[1:],
        plain,
        "s",
        "ratio <= 1.10",
        lambda e: e["ratio"] <= 1.10,
    )


# -- compute efficiency --------------------------------------------------------------------------


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def training_flops_per_image(model: torch.nn.Module) -> float:
    """Forward 2*in*out per Linear layer; backward 4*in*out (weight and input gradients), 2*in*out for the first."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total = 0.0
    for number, layer in enumerate(linears):
        macs = layer.in_features * layer.out_features
        total += 2 * macs + (2 if number == 0 else 4) * macs
    return total


def bench_compute(repeats: int) -> None:
    cases = {
        "deep AE 784-1000-500-250-32, batch 256": (
            lambda: Autoencoder(code_dim=32, hidden_dims=[1000, 500, 250], activation="relu", code_activation="linear"),
            256,
            256 * 60,
        ),
        "classifier 784-1000-1000-10, batch 25": (lambda: Classifier(), 25, 25 * 400),
    }
    for name, (build, batch_size, images) in cases.items():
        datamodule = ImageDataModule(batch_size=batch_size, train_subset=images)
        datamodule.setup()
        flops_per_image = training_flops_per_image(build())

        def achieved(build=build, datamodule=datamodule, flops_per_image=flops_per_image, images=images) -> float:
            torch.manual_seed(0)
            model = build()
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                lightning_epoch(model, datamodule, folder)
                return flops_per_image * images / (time.perf_counter() - start)

        times = interleaved({"model": achieved, "matmul": matmul_flops}, repeats)
        fraction = [m / p for m, p in zip(times["model"], times["matmul"], strict=True)]
        row(
            "compute",
            f"{name}: GFLOP/s",
            [v / 1e9 for v in times["model"]],
            [v / 1e9 for v in times["matmul"]],
            "GFLOP/s",
            "ratio >= 0.70",
            lambda e, fraction=fraction: statistics.median(fraction) >= 0.70,
        )


# -- evaluation ----------------------------------------------------------------------------------


def timed_call(function: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def bench_evaluation(repeats: int, epoch_seconds: float) -> None:
    datamodule = ImageDataModule()
    datamodule.setup()
    train, test = datamodule.split("train"), datamodule.split("test")
    train_x, test_x = train.images.numpy(), test.images.numpy()
    for dim in (2, 32, 784):
        if dim < 784:
            pca = PCA(dim, random_state=0).fit(train_x)
            train_codes, test_codes = (
                pca.transform(train_x).astype(np.float32),
                pca.transform(test_x).astype(np.float32),
            )
        else:
            train_codes, test_codes = train_x, test_x
        predictions = {}

        def ours(train_codes=train_codes, test_codes=test_codes, predictions=predictions) -> float:
            result, seconds = timed_call(
                lambda: knn_predict(torch.from_numpy(train_codes), train.labels, torch.from_numpy(test_codes))
            )
            predictions["ours"] = result.numpy()
            return seconds

        def sklearn_knn(train_codes=train_codes, test_codes=test_codes, predictions=predictions) -> float:
            result, seconds = timed_call(
                lambda: KNeighborsClassifier(10).fit(train_codes, train.labels.numpy()).predict(test_codes)
            )
            predictions["sklearn"] = result
            return seconds

        times = interleaved({"ours": ours, "sklearn": sklearn_knn}, repeats if dim < 784 else max(1, repeats // 2))
        assert np.array_equal(predictions["ours"], predictions["sklearn"]), f"kNN predictions differ at d'={dim}"
        row(
            "evaluation",
            f"kNN 10,000 x 55,000, d'={dim}",
            times["ours"],
            times["sklearn"],
            "s",
            "ratio <= 1.00",
            lambda e: e["ratio"] <= 1.0,
        )

    with tempfile.TemporaryDirectory() as cache:
        for dim in (2, 32):
            cache_file = Path(cache) / f"pca-{dim}.npz"
            fit_pca(train_x, dim, cache_file)  # the first run fits and caches; later runs read it

            def ours(dim=dim, cache_file=cache_file) -> float:
                return timed_call(lambda: fit_pca(train_x, dim, cache_file)[0].transform(test_x))[1]

            def fresh(dim=dim) -> float:
                return timed_call(lambda: PCA(dim).fit(train_x).transform(test_x))[1]

            times = interleaved({"ours": ours, "fresh": fresh}, repeats)
            row(
                "evaluation",
                f"PCA fit + transform, d'={dim} (cached / fresh)",
                times["ours"],
                times["fresh"],
                "s",
                "ratio <= 1.00",
                lambda e: e["ratio"] <= 1.0,
            )

        # The whole evaluation of a basic AE run, with the callbacks make train uses (t-SNE apart).
        model = Autoencoder(code_dim=32)
        with tempfile.TemporaryDirectory() as folder:
            trainer = lightning_epoch(model, ImageDataModule(train_subset=320), folder)
            trainer.datamodule = datamodule
            callbacks = {
                "kNN": lambda: KNNEvaluator().evaluate(trainer, model, ("val", "test")),
                "PCA": lambda: PCABaseline(cache_dir=cache).evaluate(trainer, model),
                "reconstructions": lambda: ReconstructionGrid().grid(trainer, model),
                "projector": lambda: EmbeddingProjector().on_test_end(trainer, model),
            }
            PCABaseline(cache_dir=cache).evaluate(trainer, model)  # fills the cache, as make train's first run
            seconds = [sum(timed_call(c)[1] for c in callbacks.values()) for _ in range(max(1, repeats // 2))]
            training = 50 * epoch_seconds
            row(
                "evaluation",
                "kNN+PCA+reconstructions+projector / 50 epochs",
                seconds,
                [training],
                "s",
                "ratio < 0.10",
                lambda e: e["ratio"] < 0.10,
            )
            codes = model.encode(test.images[:5000]).detach().double().numpy()
            tsne = [timed_call(lambda: TSNEPlot().embed(codes))[1]]
            row("evaluation", "t-SNE of 5,000 codes (sklearn)", tsne, None, "s", "measured", None)


# -- data and memory -------------------------------------------------------------------------------


def bench_data(repeats: int) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    datamodule = ImageDataModule(batch_size=32)
    datamodule.setup()
    split = datamodule.split("train")
    ours = datamodule.train_dataloader()
    baseline = DataLoader(TensorDataset(split.images, split.images, split.labels), batch_size=32, shuffle=True)

    def epoch(loader) -> float:
        return timed_call(lambda: sum(1 for _ in loader))[1]

    times = interleaved({"ours": lambda: epoch(ours), "baseline": lambda: epoch(baseline)}, repeats)
    row(
        "data",
        "epoch of batches, batch 32: DataModule / DataLoader",
        times["ours"],
        times["baseline"],
        "s",
        "ratio < 1.00",
        lambda e: e["ratio"] < 1.0,
    )

    # Every cached load checks the arrays against the pinned SHA-256 (issue 15): it must stay cheap.
    from lightning_ae.data import load_dataset

    with tempfile.TemporaryDirectory() as cache:
        load_dataset("mnist", cache_dir=Path(cache))  # the first load verifies the files and fills the cache
        loads = [timed_call(lambda: load_dataset("mnist", cache_dir=Path(cache)))[1] for _ in range(repeats)]
    row(
        "data",
        "MNIST load from the verified cache (all four arrays)",
        loads,
        None,
        "s",
        "< 0.30 s",
        lambda e: e["ours"]["median"] < 0.3,
    )


def peak_rss_mib(command: list[str], cwd: str) -> tuple[float, float]:
    """Peak RSS (MiB) of one child process, by its own rusage (not the maximum over all children), and seconds."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


SMOKE_RUNS_IN_ONE_PROCESS = """
import json, resource, sys
from pathlib import Path
from lightning_ae.study.runner import run_study
from lightning_ae.study.spec import load_study

study = load_study(sys.argv[1], seeds=4)  # the 5 smoke runs x 4 seeds = 20 runs
rss = []
for run in study.runs:
    run_study(study, Path(sys.argv[2]), only=run.run_id)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    rss.append(pages * resource.getpagesize() / 2**20)
print(json.dumps({"rss_mib": rss, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


RSS_PER_EPOCH = """
import json, sys
from pathlib import Path
import pytorch_lightning as pl
from lightning_ae.cli import lightning_cli

class EpochRSS(pl.Callback):
    def __init__(self):
        self.rss = []
    def on_train_epoch_end(self, trainer, pl_module):
        self.rss.append(int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20)

cli = lightning_cli(sys.argv[1:], run=False)
probe = EpochRSS()
cli.trainer.callbacks.append(probe)
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
print(json.dumps(probe.rss))
"""


# What `make train` runs: the basic AE with the evaluation callbacks.
MAKE_TRAIN_CONFIGS = ["--config", str(REPO / "configs" / "basic_ae.yaml")]
MAKE_TRAIN_CONFIGS += ["--config", str(REPO / "configs" / "fragments" / "evaluation.yaml")]


def bench_memory() -> None:
    """Memory stays flat over long runs: peak RSS after 1 and 20 epochs, and RSS across 20 runs in one process."""
    fit = [sys.executable, "-m", "lightning_ae", "fit", *MAKE_TRAIN_CONFIGS]
    fit += ["--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]
    with tempfile.TemporaryDirectory() as folder:
        one, one_s = peak_rss_mib([*fit, "--trainer.max_epochs", "1"], folder)
        twenty, twenty_s = peak_rss_mib([*fit, "--trainer.max_epochs", "20"], folder)
        full, full_s = peak_rss_mib(
            [*fit[:-2], "--trainer.max_epochs", "2"], folder
        )  # with test and the whole evaluation, as make train
    row(
        "memory",
        f"peak RSS, basic_ae.yaml fit: 20 epochs ({twenty_s:.0f} s) / 1 epoch ({one_s:.0f} s)",
        [twenty],
        [one],
        "MiB",
        "ratio <= 1.05",
        lambda e: e["ratio"] <= 1.05,
    )
    row(
        "memory",
        f"peak RSS, basic_ae.yaml 2 epochs with test and evaluation ({full_s:.0f} s)",
        [full],
        None,
        "MiB",
        "measured",
        None,
    )
    # The peak is set while the data is loaded; the RSS at each epoch's end shows whether training grows.
    with tempfile.TemporaryDirectory() as folder:
        args = [*MAKE_TRAIN_CONFIGS, "--trainer.max_epochs", "20"]
        args += ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", folder]
        command = [sys.executable, "-c", RSS_PER_EPOCH, *args]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
    epochs = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"           RSS at the end of each of the 20 epochs (MiB): {' '.join(f'{r:.0f}' for r in epochs)}")
    row(
        "memory",
        "RSS after epoch 20 / after epoch 1, basic_ae.yaml",
        [epochs[-1]],
        [epochs[0]],
        "MiB",
        "ratio <= 1.05",
        lambda e: e["ratio"] <= 1.05,
    )
    with tempfile.TemporaryDirectory() as folder:
        script = [sys.executable, "-c", SMOKE_RUNS_IN_ONE_PROCESS, str(REPO / "configs/study/smoke.yaml"), folder]
        result = subprocess.run(script, cwd=REPO, capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    rss = measured["rss_mib"]
    print(f"           RSS after each of the 20 smoke runs (MiB): {' '.join(f'{r:.0f}' for r in rss)}")
    row(
        "memory",
        "RSS after smoke run 20 / after run 5, one process",
        [rss[-1]],
        [rss[4]],
        "MiB",
        "ratio <= 1.05",
        lambda e: e["ratio"] <= 1.05,
    )


SECTIONS = ("trainer", "compute", "evaluation", "data", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="trainer,compute,evaluation,data", help=f"comma-separated: {SECTIONS}")
    parser.add_argument("--memory", action="store_true", help="also measure memory over long runs (about 2 min)")
    args = parser.parse_args()
    sections = set(args.only.split(",")) | ({"memory"} if args.memory else set())
    if unknown := sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; valid: {SECTIONS}")
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"lightning-ae benchmarks: {machine}; median of {args.repeats} interleaved repeats")
    print(f"{'section':10s} {'what':46s} {'ours':>9s} {'reference':>9s} {'ratio':>6s}  {'unit':8s} {'target':14s}")
    if "memory" in sections:
        # First, while this process is small: a child's peak RSS counts from the fork, which copies the
        # parent's resident pages (after the other sections it is 2.7 GB, and every child would report that).
        bench_memory()
    epoch_seconds = bench_trainer(args.repeats) if "trainer" in sections else 3.0
    if "compute" in sections:
        bench_compute(args.repeats)
    if "evaluation" in sections:
        bench_evaluation(args.repeats, epoch_seconds)
    if "data" in sections:
        bench_data(args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from lightning_ae.files import write_json

    write_json(RESULTS / "bench.json", {"machine": machine, "repeats": args.repeats, "rows": ROWS})
    print(f"written: {RESULTS / 'bench.json'}")


if __name__ == "__main__":
    main()
