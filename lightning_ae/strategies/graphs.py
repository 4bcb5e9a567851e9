"""CUDA graphs for the speed path's inner updates: record one mini-batch's update once, replay it for the next ones.

Why: `GroupedSteps` pays Lightning's per-step cost once per group, so what is left per inner update of a
small model is launching its kernels (forward, backward, optimizer: dozens of small ones) one by one from
Python. A CUDA graph records that sequence once and launches all of it with one call. Whether that pays
depends on the model and the GPU; `scripts/gpu_check.sh` times a fit with and without.

A graph replays the same kernels on the same memory, with the Python around them run once, at capture:

- inputs: the step reads static buffers; every batch is copied into them before a replay. A batch of
  other shapes (an epoch's short last batch) cannot use them and runs eagerly;
- outputs: what the step returned at capture (its logged values) are static tensors that the next replay
  overwrites: read them before;
- numbers: a hyperparameter the optimizer reads as a Python number (its `lr`) is baked in. `StaticStep`
  watches a key (the optimizer's hyperparameters) and captures again when it changes (an epoch scheduler:
  once per epoch); what changes every step (a step scheduler) is not graphed at all (`graph_blocker`);
- lazily made state (momentum buffers, Adam's moments and step counts) must exist before the capture, or
  it would be allocated inside the graph and reset at every replay: a few eager warm-up steps run first,
  on a side stream, as PyTorch's CUDA-graph notes do (docs: notes/cuda.html#cuda-graphs).

The same `StaticStep` runs without a GPU too: buffers, copy-in, then the step called eagerly. That is what
the CPU tests check against the ordinary path (equal weights); only the capture and replay need CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class CaptureFailed(RuntimeError):
    """Recording the graph raised (the message is the cause's); the batch was not applied, and can run eagerly."""


WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's notes use 3; DDP would need 11)


def optimizer_problem(optimizer: torch.optim.Optimizer) -> str | None:
    """Why this optimizer's `step` cannot be captured, or None.

    Exact types only: a subclass may do anything in `step`. SGD (with or without momentum) keeps its state
    in tensors updated in place; Adam and AdamW do so only with `capturable=True` (else their step count is
    a CPU number, read on the host, and PyTorch refuses the capture).
    """
    kind = type(optimizer)
    if kind is torch.optim.SGD:
        if any(group.get("fused") for group in optimizer.param_groups):
            return "SGD with fused=True is not supported here (use the default, fused=None)"
        return None
    if kind in (torch.optim.Adam, torch.optim.AdamW):
        if not all(group.get("capturable") for group in optimizer.param_groups):
            return f"{kind.__name__} needs capturable=True to be captured (give it in the optimizer's init_args)"
        return None
    return (
        f"{kind.__module__}.{kind.__qualname__} is not one this path captures (SGD; Adam, AdamW with capturable=True)"
    )


def make_capturable(optimizer: torch.optim.Optimizer) -> bool:
    """Give a fresh Adam or AdamW `capturable=True`, so that its step can be captured; True if it was changed.

    The arithmetic is the same; only its step count lives on the device instead of the host. The configs
    leave it out because capturable Adam refuses CPU tensors, and the same config must run on a CPU. An
    optimizer that has state already (a resumed fit) keeps its setting: its step counts sit on the host.
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or optimizer.state:
        return False
    if all(group.get("capturable") for group in optimizer.param_groups):
        return False
    for group in optimizer.param_groups:
        group["capturable"] = True
    return True


def graph_blocker(
    *,
    enabled: bool,
    device: torch.device,
    precision: str,
    num_devices: int,
    optimizers: Sequence[torch.optim.Optimizer],
    step_schedulers: int,
    capture: bool = True,
) -> str | None:
    """The first reason the inner updates cannot go through a `StaticStep`, or None. (The speed path itself
    already refuses other precisions, several devices, clipping and accumulation; the checks here stand on their
    own.) `capture=False`: the static step is to run eagerly (the CPU tests); what only a capture needs, a CUDA
    device and a capturable optimizer, is not asked."""
    if not enabled:
        return "turned off (cuda_graphs=False)"
    if capture and device.type != "cuda":
        return f"the device is {device.type}, not CUDA"
    if precision not in ("32-true", "32"):
        return f"the precision is {precision!r}, not float32"
    if num_devices != 1:
        return f"{num_devices} devices: graphs are captured on one"
    if len(optimizers) != 1:
        return f"{len(optimizers)} optimizers: one is captured"
    problem = optimizer_problem(optimizers[0]) if capture else None
    if problem:
        return problem
    if step_schedulers:
        return "a 'step' scheduler changes the learning rate after every update, and a graph bakes it in"
    return None


def hyperparameters(optimizer: torch.optim.Optimizer) -> object:
    """What a captured `optimizer.step` baked in: every param group's settings but its parameters.

    Checked before every replay, so kept cheap. A tensor setting (a tensor `lr`) is read from memory at every
    replay, so only its identity counts (comparing its value would also wait for the GPU).
    """
    return tuple(
        tuple(id(v) if isinstance(v, Tensor) else v for k, v in group.items() if k != "params")
        for group in optimizer.param_groups
    )


class StaticStep(Generic[T]):
    """`step(inputs)` run on static input buffers: captured in a CUDA graph and replayed, or called eagerly.

    Args:
        step: one update; it reads only the tensors it is given (the buffers) and returns what the caller
            needs afterwards (at capture: static tensors, valid until the next call).
        capture: record and replay a CUDA graph (the buffers must be on a CUDA device); False: call `step`
            eagerly on the buffers every time (the same data flow, anywhere).
        watch: a key of everything `step` bakes in besides tensors (see `hyperparameters`); when it changes,
            the graph is captured again before the next replay.
        warmup: eager steps before the capture.
    """

    def __init__(
        self,
        step: Callable[[tuple[Tensor, ...]], T],
        capture: bool,
        watch: Callable[[], object] = lambda: None,
        warmup: int = WARMUP_STEPS,
    ) -> None:
        self.step, self.capture, self.watch, self.warmup = step, capture, watch, warmup
        self.inputs: tuple[Tensor, ...] | None = None
        # Position -> the first position holding the same tensor object in the first batch (an autoencoder's
        # input is its target): such positions share one buffer, copied once.
        self.sources: tuple[int, ...] = ()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: T | None = None  # what `step` returned at capture: refreshed in place by every replay
        self.key: object = None
        self.runs = 0  # updates through the buffers, however run
        self.warmed = 0  # eager warm-up steps run so far
        self.captures = 0
        self.replays = 0

    def fits(self, batch: object) -> bool:
        """Whether `batch` (a tuple or list of tensors) can go through the buffers: the same number of tensors,
        shapes, dtypes and devices as the first batch (any such batch, before there are buffers)."""
        if not isinstance(batch, (tuple, list)) or not all(isinstance(t, Tensor) for t in batch):
            return False
        if self.inputs is None:
            return len(batch) > 0
        return (
            len(batch) == len(self.inputs)
            and all(
                t.shape == s.shape and t.dtype == s.dtype and t.device == s.device
                for t, s in zip(batch, self.inputs, strict=True)
            )
            and all(batch[i] is batch[source] for i, source in enumerate(self.sources) if source != i)
        )

    def __call__(self, batch: Sequence[Tensor], check_settings: bool = True) -> T:
        """One update on `batch`, which must fit (`fits`). `check_settings=False` skips `watch` (the caller
        knows nothing it watches has changed since the last call: the rest of a group of updates)."""
        if self.inputs is None:
            self.sources = tuple(next(j for j in range(i + 1) if batch[j] is batch[i]) for i in range(len(batch)))
            buffers: dict[int, Tensor] = {}
            for i, source in enumerate(self.sources):
                if source == i:
                    buffers[i] = torch.empty_like(batch[i], memory_format=torch.contiguous_format)
            self.inputs = tuple(buffers[source] for source in self.sources)
        for i, source in enumerate(self.sources):
            if source == i:
                self.inputs[i].copy_(batch[i])
        self.runs += 1
        if not self.capture:
            return self.step(self.inputs)
        if self.warmed < self.warmup:
            return self._warm_up()
        key = self.watch() if check_settings or self.graph is None else self.key
        if self.graph is None or key != self.key:
            self._capture(key)  # records the update without running it; the replay below runs it
        assert self.graph is not None
        self.graph.replay()
        self.replays += 1
        return self.outputs  # type: ignore[return-value]

    def release(self) -> None:
        """Drop the graph, its outputs and the buffers (their memory); the counts stay. A later call makes new
        buffers and captures again (the optimizer's state, made by the warm-up, is still there)."""
        self.graph = self.outputs = self.inputs = None
        self.sources = ()

    def _warm_up(self) -> T:
        # On a side stream, as PyTorch's notes do: the lazy initialisations (optimizer state, cuBLAS
        # workspaces, autograd's streams) then happen outside the capture, on the real batch.
        side = torch.cuda.Stream(device=self.inputs[0].device)  # type: ignore[index]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            result = self.step(self.inputs)  # type: ignore[arg-type]
        torch.cuda.current_stream().wait_stream(side)
        self.warmed += 1
        return result

    def _capture(self, key: object) -> None:
        self.graph = self.outputs = None  # the old graph's memory goes back before the new one is recorded
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs = self.step(self.inputs)  # type: ignore[arg-type]
        except Exception as error:  # its kernels were recorded, not run: the batch is not applied
            raise CaptureFailed(f"{type(error).__name__}: {error}") from error
        self.graph, self.outputs, self.key = graph, outputs, key
        self.captures += 1
