"""CUDA graphs in the speed path (`GroupedSteps(cuda_graphs=True)`, `lightning_ae.strategies.graphs`).

On CUDA the inner updates go through a `StaticStep`: each batch is copied into static buffers, then a captured
graph of the whole update (forward, backward, optimizer step) is replayed. Without a GPU the same static step
runs eagerly: `OnCpuToo` admits the CPU, and its weights must equal the ordinary path's exactly (the same
arithmetic on the same values, only through the buffers) and a plain PyTorch loop's. Capturable Adam refuses
CPU tensors (PyTorch: "params and state_steps must be on supported devices"), so Adam is checked here without
`capturable`; the capture itself and capturable Adam are checked by the tests marked for a CUDA GPU.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from test_grouped_steps import QUIET, StepScheduled, autoencoder_loss, plain_loop

from lightning_ae.data import ImageDataModule
from lightning_ae.models import Autoencoder
from lightning_ae.strategies import GroupedSteps
from lightning_ae.strategies.graphs import CaptureFailed, StaticStep, graph_blocker

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU: captures and replays a CUDA graph")
LOGGER = "lightning_ae.strategies.grouped"
EPOCHS, SUBSET, BATCH, GROUP = 2, 512, 32, 5  # 16 batches an epoch: groups of 5, 5, 5, 1


class OnCpuToo(GroupedSteps):
    """The speed path with its static step on the CPU as well: buffers and copy-in, the step called eagerly."""

    static_step_devices = ("cuda", "cpu")


OPTIMIZERS = {
    "sgd": partial(torch.optim.SGD, lr=0.5),
    "sgd_momentum": partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    "adam": partial(torch.optim.Adam, lr=1e-3),  # capturable=False: capturable Adam refuses CPU tensors
}


def fit(strategy, optimizer, epochs: int = EPOCHS, model_class=Autoencoder, accelerator="cpu", **model_args):
    torch.manual_seed(0)
    model = model_class(code_dim=16, optimizer=optimizer, **model_args)
    trainer = pl.Trainer(max_epochs=epochs, strategy=strategy, accelerator=accelerator, limit_val_batches=0, **QUIET)
    trainer.fit(model, datamodule=ImageDataModule(train_subset=SUBSET, batch_size=BATCH))
    return model, trainer


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_static_step_gives_the_ordinary_paths_weights_and_the_plain_loops(name):
    optimizer = OPTIMIZERS[name]
    static_model, trainer = fit(OnCpuToo(GROUP), optimizer)
    static = trainer.strategy._static
    assert static is not None and not static.capture
    assert static.runs == EPOCHS * (GROUP - 1) * 3  # every inner mini-batch: all of a group's but its last
    assert static.replays == static.captures == static.warmed == 0
    eager_model, _ = fit(GroupedSteps(GROUP), optimizer)
    datamodule = ImageDataModule(train_subset=SUBSET, batch_size=BATCH)
    datamodule.setup()
    torch.manual_seed(0)
    reference = Autoencoder(code_dim=16, optimizer=optimizer)
    plain_loop(reference, datamodule, EPOCHS, autoencoder_loss)
    for (param, ours), eager, plain in zip(
        static_model.named_parameters(), eager_model.parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, eager, rtol=0, atol=0, msg=param)  # the same arithmetic, bit for bit
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6, msg=param)


def test_the_static_step_copies_each_batch_in_and_runs_a_short_batch_without_the_buffers():
    seen = []

    def step(inputs):
        seen.append(inputs)
        return inputs[0].sum().clone()

    static = StaticStep(step, capture=False)
    first, second = (torch.full((4, 3), 1.0), torch.arange(4)), (torch.full((4, 3), 2.0), torch.arange(4) + 1)
    assert static(first).item() == 12 and static(second).item() == 24
    assert seen[0] is seen[1] is static.inputs  # the same buffers each time, refilled
    assert static.inputs[0] is not second[0] and torch.equal(static.inputs[1], second[1])
    short = (torch.ones(2, 3), torch.arange(2))
    assert not static.fits(short)  # other shapes: the caller runs it eagerly
    assert not static.fits((torch.ones(4, 3, dtype=torch.float64), torch.arange(4)))
    assert not static.fits({"inputs": torch.ones(4, 3)}) and static.fits(first)


def test_one_tensor_given_twice_fills_one_buffer_and_the_same_must_hold_for_every_later_batch():
    seen = []

    def step(inputs):
        seen.append(inputs)
        return (inputs[0] - inputs[1]).abs().sum().clone()

    static = StaticStep(step, capture=False)
    images = torch.rand(4, 3)
    static((images, images, torch.arange(4)))  # an autoencoder's batch: the input is the target
    assert static.inputs[0] is static.inputs[1] and torch.equal(static.inputs[0], images)
    others = torch.rand(4, 3)
    assert static.fits((others, others, torch.arange(4)))
    assert not static.fits((others, others.clone(), torch.arange(4)))  # two tensors would need two buffers
    static((others, others, torch.arange(4)))
    assert torch.equal(static.inputs[1], others)

    apart = StaticStep(step, capture=False)  # the first batch has two tensors: two buffers, both filled
    assert apart((images, images.clone(), torch.arange(4))).item() == 0
    assert apart.inputs[0] is not apart.inputs[1]
    assert apart.fits((others, others, torch.arange(4))) and apart((others, others, torch.arange(4))).item() == 0


def test_the_settings_are_watched_only_when_asked(monkeypatch):
    fake = FakeCuda(monkeypatch)
    watched = []
    total = torch.zeros(())

    def step(inputs):
        fake.launch(lambda: total.add_(inputs[0].sum()))
        return total

    static = StaticStep(step, capture=True, watch=lambda: watched.append(1) or 0, warmup=0)
    batch = (torch.ones(2, 2),)
    static(batch)  # the capture reads the key
    static(batch, check_settings=False)
    static(batch, check_settings=False)
    assert len(watched) == 1 and static.captures == 1 and static.replays == 3 and total.item() == 12
    static(batch)
    assert len(watched) == 2 and static.captures == 1


def test_an_inner_short_batch_runs_eagerly_and_the_weights_still_match():
    """Any loader is grouped (`GroupedBatches`), and its short batch may come inside a group: that batch skips
    the buffers; the weights are those of the ordinary path all the same."""
    datamodule = ImageDataModule(train_subset=SUBSET, batch_size=BATCH)
    datamodule.setup()
    data = torch.utils.data.TensorDataset(*datamodule.split("train").batch(torch.arange(7 * 8)))
    sizes = [8, 8, 3, 8, 8, 8, 8, 5]  # the short 3 is the third batch of the first group of 4
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=[list(range(a, a + n)) for a, n in zip(starts, sizes, strict=True)]
    )
    models = {}
    for name, strategy in (("static", OnCpuToo(4)), ("eager", GroupedSteps(4))):
        torch.manual_seed(0)
        models[name] = Autoencoder(code_dim=16, optimizer=OPTIMIZERS["sgd_momentum"])
        trainer = pl.Trainer(max_epochs=2, strategy=strategy, accelerator="cpu", **QUIET)
        trainer.fit(models[name], train_dataloaders=loader)
        if name == "static":
            assert trainer.strategy._static.runs == 2 * (3 + 3) - 2  # inner batches, less the short one each epoch
    for (param, ours), theirs in zip(models["static"].named_parameters(), models["eager"].parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=param)


class FakeCuda:
    """torch.cuda's streams and graphs on the CPU, for `StaticStep`'s bookkeeping: a step hands its work to
    `launch`, which runs it, or under a capture records it without running it (as CUDA does); a replay runs
    what was recorded, on the same tensors."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.capturing: FakeCuda.Graph | None = None
        stream = type("Stream", (), {"__init__": lambda self, device=None: None, "wait_stream": lambda self, s: None})
        fake = self

        class Graph:
            def __init__(self) -> None:
                self.work: list = []

            def replay(self) -> None:
                for work in self.work:
                    work()

        @contextmanager
        def graph(g: Graph):
            fake.capturing = g
            try:
                yield
            finally:
                fake.capturing = None

        self.Graph = Graph
        for name, value in {
            "Stream": stream,
            "current_stream": lambda: stream(),
            "stream": lambda s: nullcontext(),
            "CUDAGraph": Graph,
            "graph": graph,
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)

    def launch(self, work) -> None:
        if self.capturing is not None:
            self.capturing.work.append(work)
        else:
            work()


def test_the_static_step_warms_up_captures_replays_and_captures_again_when_its_key_changes(monkeypatch):
    fake = FakeCuda(monkeypatch)
    hp = {"lr": 2.0}  # a Python number the step reads: baked into a capture
    total = torch.zeros(())  # state updated in place, like a parameter

    def step(inputs):
        lr, out = hp["lr"], torch.empty(())

        def work():
            total.add_(inputs[0].sum() * lr)
            out.copy_(total)

        fake.launch(work)
        return out

    static = StaticStep(step, capture=True, watch=lambda: hp["lr"])
    expected, outputs = 0.0, []
    for number in range(1, 9):
        if number == 6:
            hp["lr"] = 3.0  # as an epoch scheduler would, between steps
        batch = (torch.full((2,), float(number)),)
        outputs.append(static(batch))
        expected += 2 * number * hp["lr"]
        assert outputs[-1].item() == expected  # each batch applied once, with the lr of its time
    assert (static.warmed, static.captures, static.replays, static.runs) == (3, 2, 5, 8)
    assert outputs[3] is outputs[4] and outputs[5] is outputs[6] is outputs[7]  # static outputs, refreshed
    assert outputs[4] is not outputs[5]  # the new capture's
    static.release()
    assert static.graph is None and static.inputs is None and static.outputs is None


def test_a_failing_capture_is_reported_as_such(monkeypatch):
    fake = FakeCuda(monkeypatch)

    def step(inputs):
        if fake.capturing is not None:
            raise RuntimeError("operation not permitted when stream is capturing")
        return inputs[0].sum()

    static = StaticStep(step, capture=True, warmup=1)
    assert static((torch.ones(3),)).item() == 3
    with pytest.raises(CaptureFailed, match="RuntimeError: operation not permitted"):
        static((torch.ones(3),))
    assert static.graph is None and static.captures == 0


SCHEDULED = {"model_class": StepScheduled, "scheduler": partial(torch.optim.lr_scheduler.StepLR, step_size=4)}


class LogsANumber(Autoencoder):
    def training_step(self, batch, batch_idx):
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    ("strategy", "model_args", "level", "reason"),
    [
        (GroupedSteps(GROUP, cuda_graphs=False), {}, logging.INFO, "turned off (cuda_graphs=False)"),
        (GroupedSteps(GROUP), {}, logging.INFO, "the device is cpu, not CUDA"),
        (OnCpuToo(GROUP), SCHEDULED, logging.INFO, "a 'step' scheduler changes the learning rate"),
        (OnCpuToo(GROUP), {"model_class": LogsANumber}, logging.WARNING, "logs values a graph cannot refresh"),
    ],
    ids=["turned-off", "not-cuda", "step-scheduler", "logs-a-number"],
)
def test_each_fallback_is_logged_once_with_its_reason(caplog, strategy, model_args, level, reason):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _, trainer = fit(strategy, OPTIMIZERS["sgd"], **model_args)
    lines = [r for r in caplog.records if r.name == LOGGER and "GroupedSteps" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert reason in lines[0].getMessage() and "inner updates run eagerly" in lines[0].getMessage()
    assert lines[0].levelno == level
    assert trainer.strategy._static is None


def test_the_static_step_logs_one_info_line_when_it_runs(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        fit(OnCpuToo(GROUP), OPTIMIZERS["sgd"])
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == ["GroupedSteps: inner updates through static buffers (eager)."]


def test_a_logged_number_is_still_logged_after_the_fallback():
    model, trainer = fit(OnCpuToo(GROUP), OPTIMIZERS["sgd"], model_class=LogsANumber, epochs=1)
    assert trainer.callback_metrics["train/lr"].item() == pytest.approx(0.5)


def blocker(optimizer, **changes):
    args = {
        "enabled": True,
        "device": torch.device("cuda", 0),  # only inspected: no GPU needed
        "precision": "32-true",
        "num_devices": 1,
        "optimizers": [optimizer],
        "step_schedulers": 0,
    }
    return graph_blocker(**{**args, **changes})


def test_what_a_capture_needs_is_checked_with_the_reason():
    params = [torch.nn.Parameter(torch.zeros(2))]
    capturable = torch.optim.Adam(params, capturable=True)
    assert blocker(torch.optim.SGD(params, lr=0.1, momentum=0.9)) is None
    assert blocker(capturable) is None and blocker(torch.optim.AdamW(params, capturable=True)) is None
    assert "Adam needs capturable=True" in blocker(torch.optim.Adam(params))
    assert "AdamW needs capturable=True" in blocker(torch.optim.AdamW(params))
    assert "not one this path captures" in blocker(torch.optim.RMSprop(params))
    assert "fused=True" in blocker(torch.optim.SGD(params, lr=0.1, fused=True))
    assert "not float32" in blocker(capturable, precision="bf16-mixed")
    assert "2 devices" in blocker(capturable, num_devices=2)
    assert "2 optimizers" in blocker(capturable, optimizers=[capturable, capturable])
    assert "'step' scheduler" in blocker(capturable, step_schedulers=1)
    assert "not CUDA" in blocker(capturable, device=torch.device("cpu"))
    # Without a capture (the static step run eagerly) neither the device nor the optimizer matters.
    assert blocker(torch.optim.Adam(params), device=torch.device("cpu"), capture=False) is None


def test_cuda_graphs_must_be_a_bool():
    with pytest.raises(ValueError, match="cuda_graphs"):
        GroupedSteps(cuda_graphs="yes")


# On a CUDA GPU: the capture and its replays for real.

GPU_OPTIMIZERS = {
    "sgd_momentum": OPTIMIZERS["sgd_momentum"],
    "adam_capturable": partial(torch.optim.Adam, lr=1e-3, capturable=True),
    "adamw_capturable": partial(torch.optim.AdamW, lr=1e-3, capturable=True),
}


def close_on_gpu(model, reference) -> None:
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


@needs_cuda
@pytest.mark.parametrize("name", sorted(GPU_OPTIMIZERS))
def test_on_a_gpu_the_graph_gives_the_eager_weights(name):
    optimizer = GPU_OPTIMIZERS[name]
    graphed, trainer = fit(GroupedSteps(GROUP), optimizer, accelerator="gpu")
    static = trainer.strategy._static
    assert static is not None and static.capture and static.captures == 1
    assert static.warmed == 3 and static.replays == EPOCHS * (GROUP - 1) * 3 - 3
    eager, _ = fit(GroupedSteps(GROUP, cuda_graphs=False), optimizer, accelerator="gpu")
    close_on_gpu(graphed, eager)


@needs_cuda
def test_on_a_gpu_an_epoch_scheduler_is_captured_again_when_the_lr_changes():
    optimizer = OPTIMIZERS["sgd_momentum"]
    scheduler = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    graphed, trainer = fit(GroupedSteps(GROUP), optimizer, epochs=3, accelerator="gpu", scheduler=scheduler)
    assert trainer.strategy._static.captures == 3  # one per learning rate
    eager, _ = fit(GroupedSteps(GROUP, cuda_graphs=False), optimizer, epochs=3, accelerator="gpu", scheduler=scheduler)
    close_on_gpu(graphed, eager)


@needs_cuda
def test_on_a_gpu_the_configs_plain_adam_is_made_capturable_and_gives_the_eager_weights(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        graphed, trainer = fit(GroupedSteps(GROUP), OPTIMIZERS["adam"], epochs=1, accelerator="gpu")
    assert "Adam made capturable" in caplog.text and "needs capturable" not in caplog.text
    assert trainer.strategy._static is not None and trainer.strategy._static.captures == 1
    eager, _ = fit(GroupedSteps(GROUP, cuda_graphs=False), OPTIMIZERS["adam"], epochs=1, accelerator="gpu")
    close_on_gpu(graphed, eager)


@needs_cuda
def test_on_a_gpu_the_static_step_replays_and_skips_a_short_batch():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 1).cuda()
    reference = torch.nn.Linear(6, 1).cuda()
    reference.load_state_dict(layer.state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (layer, reference)]

    def update(model, optimizer, batch):
        loss = torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    static = StaticStep(partial(update, layer, optimizers[0]), capture=True)
    batches = [(torch.randn(8, 6, device="cuda"), torch.randn(8, 1, device="cuda")) for _ in range(9)]
    batches.insert(6, (torch.randn(3, 6, device="cuda"), torch.randn(3, 1, device="cuda")))  # a short one
    for batch in batches:
        loss = static(batch) if static.fits(batch) else update(layer, optimizers[0], batch)
        expected = update(reference, optimizers[1], batch)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert static.warmed == 3 and static.captures == 1 and static.replays == 6
    close_on_gpu(layer, reference)


def test_a_fresh_adam_is_made_capturable_and_a_resumed_one_or_sgd_is_left_alone():
    from lightning_ae.strategies.graphs import make_capturable, optimizer_problem

    weights = [torch.nn.Parameter(torch.ones(3))]
    fresh = torch.optim.AdamW(weights, lr=1e-3)
    assert optimizer_problem(fresh) is not None and make_capturable(fresh)
    assert optimizer_problem(fresh) is None and not make_capturable(fresh)  # already capturable

    resumed = torch.optim.Adam(weights, lr=1e-3)
    weights[0].grad = torch.ones(3)
    resumed.step()  # state on the host now: a capture would need it on the device
    assert not make_capturable(resumed) and optimizer_problem(resumed) is not None
    assert not make_capturable(torch.optim.SGD(weights, lr=0.1))
