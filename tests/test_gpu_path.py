"""The GPU path on a machine without a GPU: the evaluation callbacks on data and a model on a pretend CUDA device.

On a GPU the DataModule moves its splits to the device in `setup` (`data_on_device`), so
the callbacks get CUDA tensors, and two of them crashed at test: one concatenated CPU and
CUDA tensors, one called `.numpy()` on a CUDA tensor. Nothing on the CPU shows that, and
the `meta` device cannot stand in for a GPU here: a meta tensor holds no data, so the
correct code, which copies what it draws to the host, fails on it as well.

`FakeCuda` is a tensor that says `cuda:0` and keeps its values in a CPU tensor inside.
It refuses what CUDA refuses: an operation that mixes it with a CPU tensor of one or more
dimensions (CPU scalars and CPU index tensors are accepted, as CUDA accepts them), and
`.numpy()` (so NumPy, sklearn and matplotlib refuse it too); `.cpu()` gives a plain CPU
tensor. `PretendCuda` turns `.to("cuda")`, `.cuda()` and factories with `device="cuda"`
into FakeCuda tensors, so the DataModule's own `setup` and `model.to("cuda")` put the data
and the weights there. The callbacks then run as a GPU run would call them, and their
numbers are compared with the same callbacks on the CPU.

Also here: `scripts/gpu_check.sh` (`make gpu-check`) refuses with one line without a GPU.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from lightning_ae.callbacks import (
    DenoisingReference,
    EmbeddingProjector,
    KNNEvaluator,
    PairsGrid,
    PCABaseline,
    PredictionWriter,
    ReconstructionGrid,
    TSNEPlot,
)
from lightning_ae.data import ImageDataModule
from lightning_ae.models import Autoencoder

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)


def _is_cuda(device: object) -> bool:
    if device is None or isinstance(device, (bool, torch.dtype, torch.Tensor)):
        return False
    if isinstance(device, int):
        return True  # a device index means a CUDA device
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


class FakeCuda(torch.Tensor):
    """A tensor that says cuda:0; its values live in the CPU tensor `inner`."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> FakeCuda:
        fake = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            device=CUDA,
            requires_grad=inner.requires_grad,
        )
        fake.inner = inner
        return fake

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self) -> str:
        return f"FakeCuda({self.inner!r})"

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor first.")

    def __array__(self, *args, **kwargs):
        return self.numpy()

    def tolist(self):
        return self.inner.tolist()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in (torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default):
            _refuse_cpu_operands(func, (args, kwargs))
        if func is torch.ops.aten._to_copy.default and kwargs.get("device") is not None:
            rest = {k: v for k, v in kwargs.items() if k != "device"}
            copied = func(args[0].inner, **rest)
            return FakeCuda(copied) if _is_cuda(kwargs["device"]) else copied
        unwrapped = func(*_unwrap(args), **_unwrap(kwargs))
        return tree_map(lambda t: FakeCuda(t) if isinstance(t, torch.Tensor) else t, unwrapped)


def _unwrap(tree):
    return tree_map(lambda t: t.inner if isinstance(t, FakeCuda) else t, tree)


# Operations that take CPU tensors beside CUDA ones on a GPU: indexing with CPU indices, copies across devices.
_MAY_MIX = (torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_)


_ABOUT_THE_WRAPPER = (torch._has_compatible_shallow_copy_type,)


class PretendCuda(TorchFunctionMode):
    """Runs every torch function of FakeCuda tensors on their CPU values (CUDA's own bindings would look for a
    driver), refusing CPU operands as CUDA does; `.to("cuda")`, `.cuda()` and factories on "cuda" make FakeCuda."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source = args[0] if args else None
        if func is torch.Tensor.cuda:
            return source if isinstance(source, FakeCuda) else FakeCuda(source.clone())
        if func is torch.Tensor.cpu and isinstance(source, FakeCuda):
            return source.inner.clone()
        if func is torch.Tensor.to:
            rest, options, device = list(args[1:]), dict(kwargs), kwargs.get("device")
            if "device" in options:
                options["device"] = "cpu"
            for i, arg in enumerate(rest):
                if isinstance(arg, (str, torch.device, int)) and not isinstance(arg, bool):
                    device, rest[i] = arg, "cpu"
            if isinstance(source, FakeCuda) and device is not None:
                moved = source.inner.to(*rest, **options)
                return FakeCuda(moved) if _is_cuda(device) else (moved.clone() if moved is source.inner else moved)
            if _is_cuda(device):
                moved = func(source, *rest, **options)
                return FakeCuda(moved.clone() if moved is source else moved)
        if _is_cuda(kwargs.get("device")):
            return FakeCuda(func(*args, **dict(kwargs, device="cpu")))
        fakes = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, FakeCuda)]
        # Attributes (shape, device) and the bookkeeping of module conversion: the wrapper's own.
        if not fakes or getattr(func, "__name__", None) == "__get__" or func in _ABOUT_THE_WRAPPER:
            return func(*args, **kwargs)
        if func in _MAY_MIX:
            if not isinstance(source, FakeCuda):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        else:
            _refuse_cpu_operands(func, (args, kwargs))
        result = func(*_unwrap(args), **_unwrap(kwargs))
        wrappers = {id(fake.inner): fake for fake in fakes}  # an in-place operation returns its own tensor
        return tree_map(lambda t: wrappers.get(id(t), FakeCuda(t)) if isinstance(t, torch.Tensor) else t, result)


def _refuse_cpu_operands(func, tree) -> None:
    on_cpu = [
        t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor) and not isinstance(t, FakeCuda) and t.dim() > 0
    ]
    if on_cpu:
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
            f"(in {getattr(func, '__name__', func)}, with CPU tensors of shapes {[tuple(t.shape) for t in on_cpu]})"
        )


@contextmanager
def pretend_cuda(monkeypatch):
    """Inside: CUDA tensors are FakeCuda; waiting for the GPU is a no-op; modules swap in FakeCuda weights."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with PretendCuda():
            yield
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)


def test_the_pretend_device_refuses_what_cuda_refuses_and_accepts_what_it_accepts(monkeypatch):
    with pretend_cuda(monkeypatch):
        x = torch.arange(6.0).reshape(2, 3).to(CUDA)
        assert isinstance(x, FakeCuda) and x.device == CUDA
        with pytest.raises(RuntimeError, match="same device"):
            torch.cat([x, torch.zeros(1, 3)])
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(2, 3)
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        with pytest.raises(TypeError, match="numpy"):
            np.asarray(x)
        assert (x + torch.tensor(1.0)).device == CUDA  # a CPU scalar is fine, as on CUDA
        assert x[torch.tensor([1])].tolist() == [[3.0, 4.0, 5.0]]  # so is a CPU index
        back = x.cpu()
        assert type(back) is torch.Tensor and back.device.type == "cpu" and back.numpy().sum() == 15
        assert torch.zeros(2, device=x.device).device == CUDA
        model = torch.nn.Linear(3, 2).to(CUDA)
        assert isinstance(model.weight, FakeCuda) and isinstance(model.weight, torch.nn.Parameter)
        with torch.no_grad():
            assert model(x).cpu().shape == (2, 2)


def _stub_trainer(datamodule, root: Path, name: str):
    logger = TensorBoardLogger(root, name=name, version=0)
    return SimpleNamespace(
        datamodule=datamodule,
        loggers=[logger],
        logger=logger,
        is_global_zero=True,
        sanity_checking=False,
        current_epoch=0,
        global_step=0,
        world_size=1,
        global_rank=0,
        default_root_dir=str(root),
        callbacks=[],  # no PCABaseline: TSNEPlot fits PCA for its panel itself
    )


def _datamodule(on_cuda: bool, **kwargs) -> ImageDataModule:
    datamodule = ImageDataModule(train_subset=300, val_size=300, **kwargs)
    device = CUDA if on_cuda else torch.device("cpu")
    datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=device), global_rank=0, world_size=1)
    datamodule.setup()  # on "cuda" it moves the splits there, as on a GPU
    # A few seconds: the first 300 test images (every class is among them).
    test = datamodule.splits["test"]
    short = {
        name: getattr(test, name)[:300]
        for name in ("images", "labels", "fixed_inputs")
        if getattr(test, name) is not None
    }
    datamodule.splits["test"] = replace(test, **short)
    return datamodule


def _evaluate_at_test(on_cuda: bool, root: Path, plain_checkpoint: Path) -> dict[str, float]:
    """What a GPU run's test does after its test loop: every evaluation callback, on the test split."""
    datamodule = _datamodule(on_cuda, corruption="masking", corruption_args={"p": 0.5})
    if on_cuda:
        assert isinstance(datamodule.split("test").images, FakeCuda)
        assert isinstance(datamodule.split("test").fixed_inputs, FakeCuda)
    pl.seed_everything(0)
    model = Autoencoder(code_dim=2)  # at d'=2 TSNEPlot plots the codes: no t-SNE to wait for
    model.load_state_dict(torch.load(plain_checkpoint, weights_only=True)["state_dict"])
    if on_cuda:
        model = model.to(CUDA)
        assert model.device == CUDA and isinstance(next(model.parameters()), FakeCuda)
    logged: dict[str, float] = {}
    trainer = _stub_trainer(datamodule, root, "cuda" if on_cuda else "cpu")
    callbacks = [
        KNNEvaluator(),  # "auto": the torch backend on CUDA, sklearn on the CPU
        KNNEvaluator(backend="sklearn"),
        PCABaseline(cache_dir="none"),
        DenoisingReference(plain_checkpoint=str(plain_checkpoint)),
        ReconstructionGrid(per_class=1),
        TSNEPlot(max_points=60, perplexity=5),
        EmbeddingProjector(max_items=100),
    ]
    for number, callback in enumerate(callbacks):
        model.log_dict = lambda metrics, number=number, **kwargs: logged.update(
            {f"{number}:{name}": value for name, value in metrics.items()}
        )
        callback.setup(trainer, model, "test")
        callback.on_validation_epoch_end(trainer, model)
        callback.on_test_epoch_end(trainer, model)
        callback.on_test_end(trainer, model)
    return logged


def test_the_test_time_callbacks_run_on_cuda_data_and_give_the_cpu_numbers(tmp_path, monkeypatch):
    pl.seed_everything(0)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": Autoencoder(code_dim=2).state_dict()}, plain)
    on_cpu = _evaluate_at_test(False, tmp_path, plain)
    with pretend_cuda(monkeypatch):
        on_cuda = _evaluate_at_test(True, tmp_path, plain)
    expected = {"0:test/knn_acc", "1:test/knn_acc", "2:test/pca_knn_acc", "3:test/plain_ae_bce_per_pixel"}
    assert expected <= set(on_cuda)
    assert set(on_cuda) == set(on_cpu)
    for name, value in on_cpu.items():
        if "_us_per_image" in name:
            continue  # timings
        # kNN backends are exact; which of several equidistant k-th neighbours is taken may differ.
        tolerance = 2e-3 if "knn" in name else 1e-9
        assert float(on_cuda[name]) == pytest.approx(float(value), abs=tolerance), name
    for device in ("cpu", "cuda"):
        folder = tmp_path / device / "version_0"
        assert Image.open(folder / "reconstructions.png").size == (10 * 30 + 2, 3 * 30 + 2)  # clean, noisy, output
        assert Image.open(folder / "tsne.png").format == "PNG"
        assert len((next(folder.glob("*/codes")) / "tensors.tsv").read_text().splitlines()) == 100
    same = [np.asarray(Image.open(tmp_path / d / "version_0" / "reconstructions.png")) for d in ("cpu", "cuda")]
    np.testing.assert_array_equal(*same)


def test_pairs_grid_and_prediction_writer_on_cuda_data(tmp_path, monkeypatch):
    with pretend_cuda(monkeypatch):
        datamodule = _datamodule(True, pairs=True, pair_objects=100)
        trainer = _stub_trainer(datamodule, tmp_path, "pairs")
        model = Autoencoder(code_dim=8).to(CUDA)
        grids = PairsGrid(objects=3)
        grids.setup(trainer, model, "fit")
        grids.on_fit_start(trainer, model)
        split = datamodule.split("test")
        predictions = [
            {"codes": model.encode(split.images[i : i + 4]), "labels": split.labels[i : i + 4]} for i in (0, 4)
        ]
        PredictionWriter().write_on_epoch_end(trainer, model, predictions, [])
    assert Image.open(tmp_path / "pairs" / "version_0" / "pairs.png").size == (11 * 30 + 2, 3 * 30 + 2)
    saved = torch.load(tmp_path / "pairs" / "version_0" / "predictions.pt", weights_only=True)
    assert saved["codes"].shape == (8, 8) and type(saved["labels"]) is torch.Tensor


@pytest.mark.slow
def test_gpu_check_refuses_in_one_line_without_a_gpu():
    python = REPO / ".venv" / "bin" / "python"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=str(python) if python.exists() else "python3")
    env.pop("GPU_CHECK_ACCELERATOR", None)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], lines
