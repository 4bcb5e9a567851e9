"""Bad input, collected: every case is given as a user gives it (a command-line flag, a YAML config, a
data folder, a checkpoint file, a study file) to `lightning-ae`, and must end with a non-zero exit, one
`lightning-ae: error:` line that names the problem, no traceback, and nothing half-written.

Component-level checks of the same validation (the exact exception types) live beside each
component's own tests; this module is the user's view, across the CLI, the configs, the
DataModule, the models, the callbacks, the data files, checkpoints and the study.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import MNIST_DIR, REPO

from lightning_ae.cli import main

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

BASIC = REPO / "configs" / "basic_ae.yaml"
FAST = ["--data.train_subset", "64", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]


def run_cli(folder: Path, monkeypatch, capsys, argv: list[str]) -> tuple[int, str]:
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["lightning-ae"])  # as from a shell: only `argv` holds arguments
    code = main(argv)
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, message: str, folder: Path) -> None:
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("lightning-ae: error:")]
    assert len(errors) == 1, err[-3000:]
    assert message in errors[0], err[-3000:]
    assert "Traceback" not in err and "NoneType" not in err
    # Nothing half-written: no run folder, no results, no study folder.
    for leftover in ("lightning_logs", "studies", "reports"):
        assert not (folder / leftover).exists(), f"{leftover} was written"
    assert not list(folder.rglob("results.json"))


# -- flags on the command line -------------------------------------------------------------------------

FLAGS = [
    # YAML and the CLI read .nan and .inf as numbers: refused before anything trains or is written.
    ("lr-nan", ["--model.init_args.optimizer.init_args.lr", ".nan"], "lr=nan: not a finite number"),
    ("corruption-inf", ["--data.corruption", "gaussian", "--data.corruption_args", "{sigma: .inf}"], "sigma=inf"),
    ("run-name-escapes", ["--trainer.logger.init_args.name", "../../x"], "it holds a path separator"),
    # From the third hostile pass (issue 28): every name that becomes a folder is one plain name.
    ("sub-dir-escapes", ["--trainer.logger.init_args.sub_dir", "../../.."], "sub_dir='../../..' cannot be a file"),
    ("version-escapes", ["--trainer.logger.init_args.version", "../v"], "version='../v' cannot be a file or folder"),
    ("run-name-newline", ["--trainer.logger.init_args.name", "a\nb"], "the control or invisible character '\\n'"),
    ("run-name-rtl", ["--trainer.logger.init_args.name", "x\u202egpj"], "invisible character '\\u202e'"),
    ("run-name-too-long", ["--trainer.logger.init_args.name", "n" * 300], "300 bytes long, over the 255"),
    ("save-dir-name-too-long", ["--trainer.logger.init_args.save_dir", "d" * 300], "a name in that path is too long"),
    (
        "checkpoint-filename-escapes",
        [
            "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
            "--trainer.callbacks.filename",
            "../../{epoch}",
        ],
        "ModelCheckpoint filename='../../{epoch}' leads outside the run's folder",
    ),
    (
        "results-file-escapes",
        ["--trainer.callbacks+=lightning_ae.callbacks.TSNEPlot", "--trainer.callbacks.init_args.filename", "../t.png"],
        "TSNEPlot filename='../t.png' leads outside the run's folder",
    ),
    # Lightning's own refusals, as one line.
    ("max-epochs-negative", ["--trainer.max_epochs", "-5"], "the trainer refused a setting: `max_epochs` must be"),
    ("devices-zero", ["--trainer.devices", "0"], "the trainer refused a setting: `Trainer(devices='0')`"),
    ("code-dim-zero", ["--model.init_args.code_dim", "0"], "code_dim=0 is not valid; valid: a positive integer"),
    (
        "code-dim-word",
        ["--model.init_args.code_dim", "abc"],
        "model.code_dim: Expected a <class 'int'>. Got value: abc",
    ),
    ("code-dim-float", ["--model.init_args.code_dim", "2.5"], "model.code_dim: Expected a <class 'int'>"),
    (
        "activation",
        ["--model.init_args.activation", "swish"],
        "activation='swish' is not valid; valid values: ['sigmoid', 'relu'",
    ),
    ("output-activation", ["--model.init_args.output_activation", "softmax"], "output_activation='softmax'"),
    ("loss", ["--model.init_args.loss", "hinge"], "loss='hinge' is not valid; valid values: ['bce', 'mse']"),
    ("hidden-dims-zero", ["--model.init_args.hidden_dims", "[100, 0]"], "hidden_dims"),
    ("unknown-model-key", ["--model.init_args.cod_dim", "8"], "model: Option 'cod_dim' is not accepted"),
    ("unknown-model-class", ["--model", "lightning_ae.models.Nope"], "model"),
    ("abbreviated-flag", ["--trainer.max_epoch", "3"], "unrecognized arguments: --trainer.max_epoch 3"),
    ("unknown-flag", ["--data.batchsize", "3"], "unrecognized arguments: --data.batchsize 3"),
    ("max-epochs-word", ["--trainer.max_epochs", "ten"], "trainer.max_epochs"),
    ("layout", ["--data.layout", "square"], "layout='square' is not valid; valid values: ['flat', 'image']"),
    ("dataset", ["--data.dataset", "cifar"], "dataset='cifar' is not a known dataset"),
    ("batch-size-zero", ["--data.batch_size", "0"], "batch_size=0 is not valid"),
    ("batch-size-negative", ["--data.batch_size", "-32"], "batch_size=-32 is not valid"),
    ("val-size-too-big", ["--data.val_size", "60000"], "val_size=60000 is not valid"),
    ("val-size-leaves-a-class-out", ["--data.val_size", "59999"], "val_size=59999 is not valid; valid: an integer"),
    ("train-subset-zero", ["--data.train_subset", "0"], "train_subset=0 is not valid"),
    ("corruption", ["--data.corruption", "blur"], "corruption='blur' is not a known corruption"),
    (
        "corruption-p-out-of-range",
        ["--data.corruption", "masking", "--data.corruption_args", "{p: 1.5}"],
        "p=1.5 is out of range",
    ),
    ("corruption-args-alone", ["--data.corruption_args", "{p: 0.5}"], "given without a corruption"),
    (
        "corruption-unknown-arg",
        ["--data.corruption", "gaussian", "--data.corruption_args", "{sigmaa: 0.5}"],
        "sigmaa",
    ),
    (
        "block-too-big",
        ["--data.corruption", "block", "--data.corruption_args", "{size: 40}"],
        "size=40",
    ),
    ("pairs-sim-zero", ["--data.pairs", "true", "--data.sim", "0"], "sim=0 is not valid"),
    (
        "pairs-sim-huge",
        ["--data.pairs", "true", "--data.sim", "100000"],
        "sim=100000 partners for each of up to 2000 objects is 200,000,000 pairs per split, more than 10,000,000",
    ),
    ("data-dir-missing", ["--data.data_dir", "nowhere"], "data_dir='nowhere': the folder does not exist"),
    (
        "yaml-bomb-in-a-flag",
        [
            "--model.init_args.hidden_dims",
            "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
            "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], "
            "[*e,*e,*e,*e,*e,*e,*e,*e,*e]]",
        ],
        "expands to more than 100,000 values",
    ),
    # From the second adversarial pass (issue 15).
    (
        "accelerator-absent",
        ["--trainer.accelerator", "tpu"],
        "needs a package that is not installed: Requirement 'torch_xla",
    ),
    ("lr-negative", ["--model.init_args.optimizer.init_args.lr", "-1"], "Invalid learning rate: -1.0"),
    ("optimizer-unknown", ["--model.init_args.optimizer", "torch.optim.Nope"], "module 'torch.optim' has no attribute"),
    ("eval-batch-zero", ["--data.eval_batch_size", "0"], "eval_batch_size=0 is not valid"),
    (
        "corruption-p-nan",
        ["--data.corruption", "masking", "--data.corruption_args", "{p: .nan}"],
        "data.corruption_args.p=nan: not a finite number",
    ),
    ("save-dir-is-a-file", ["--trainer.logger.init_args.save_dir", "/dev/null"], "a file is in the way"),
    ("seed-word", ["--seed_everything", "abc"], "seed_everything: Expected a <class 'bool'>"),
    ("precision-on-the-speed-path", ["--trainer.precision", "bf16-mixed"], "GroupedSteps trains in float32"),
    ("clipping-on-the-speed-path", ["--trainer.gradient_clip_val", "1"], "GroupedSteps cannot clip gradients"),
    ("accumulation-on-the-speed-path", ["--trainer.accumulate_grad_batches", "2"], "cannot accumulate gradients"),
    (
        "knn-k-above-the-training-images",
        ["--data.train_subset", "5", "--trainer.callbacks+=lightning_ae.callbacks.KNNEvaluator"],
        "KNNEvaluator: k=10 neighbours, but the training split holds 5 images",
    ),
    ("max-epochs-zero", ["--trainer.max_epochs", "0"], "trainer.max_epochs=0 trains nothing"),
    ("max-steps-zero", ["--trainer.max_steps", "0"], "trainer.max_steps=0 trains nothing"),
    ("limit-train-zero", ["--trainer.limit_train_batches", "0"], "trainer.limit_train_batches=0 trains nothing"),
    ("callback-unknown", ["--trainer.callbacks+=lightning_ae.callbacks.Nope"], "has no attribute 'Nope'"),
    ("checkpoint-is-a-folder", ["--ckpt_path", "."], "ckpt_path='.': no such checkpoint file"),
    ("missing-checkpoint", ["--ckpt_path", "missing.ckpt"], "ckpt_path='missing.ckpt': no such checkpoint file"),
    ("missing-config", ["--config", "no-such.yaml"], "config: File does not exist"),
    ("last-with-nothing-to-resume", ["--ckpt_path", "last"], "ckpt_path='last': no checkpoint under"),
]


@pytest.mark.parametrize(("args", "message"), [case[1:] for case in FLAGS], ids=[case[0] for case in FLAGS])
def test_bad_flag(tmp_path, monkeypatch, capsys, args, message):
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["fit", "--config", str(BASIC), *FAST, *args])
    assert code == 2
    assert_refused(code, err, message, tmp_path)


# -- YAML configs ----------------------------------------------------------------------------------------


def edited_config(folder: Path, edit) -> Path:
    config = yaml.safe_load(BASIC.read_text())
    edit(config)
    path = folder / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _callback(name: str, **init_args):
    def edit(config):
        config["trainer"]["callbacks"] = [
            {"class_path": f"lightning_ae.callbacks.{name}", "init_args": init_args},
        ]

    return edit


YAMLS = [
    ("unknown-top-level-key", lambda c: c.update(modle={"init_args": {"code_dim": 8}}), "modle"),
    ("unknown-trainer-key", lambda c: c["trainer"].update(max_epoch=3), "max_epoch"),
    ("wrong-type", lambda c: c["data"].update(batch_size="many"), "data.batch_size"),
    ("model-not-a-mapping", lambda c: c.update(model=[1, 2]), "model"),
    ("knn-k-zero", _callback("KNNEvaluator", k=0), "k=0 is not valid"),
    ("knn-backend", _callback("KNNEvaluator", backend="faiss"), "backend='faiss' is not a known kNN backend"),
    ("pca-dim-zero", _callback("PCABaseline", dim=0), "dim=0 is not valid"),
    ("tsne-perplexity", _callback("TSNEPlot", perplexity=0), "perplexity=0.0 is not valid"),
    ("tsne-filename", _callback("TSNEPlot", filename="tsne.jpg"), "filename='tsne.jpg' is not valid"),
    ("projector-too-many", _callback("EmbeddingProjector", max_items=100000), "max_items=100000 is not valid"),
    ("grid-filename", _callback("ReconstructionGrid", filename="grid.gif"), "filename='grid.gif' is not valid"),
    ("callback-unknown-arg", _callback("KNNEvaluator", kk=3), "kk"),
]


@pytest.mark.parametrize(("edit", "message"), [case[1:] for case in YAMLS], ids=[case[0] for case in YAMLS])
def test_bad_yaml_config(tmp_path, monkeypatch, capsys, edit, message):
    config = edited_config(tmp_path, edit)
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["fit", "--config", str(config), *FAST])
    assert code == 2
    assert_refused(code, err, message, tmp_path)


def _billion_laughs(levels: int) -> str:
    """hidden_dims as nested YAML aliases: `levels` levels of 9, 9**levels values once expanded."""
    text = "model:\n  class_path: lightning_ae.models.Autoencoder\n  init_args:\n    hidden_dims:\n"
    text += "      - &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for level in range(1, levels):
        text += f"      - &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]\n"
    return text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainer: [max_epochs: 3\n", "edited.yaml: not valid YAML (line 2, column 1)"),
        (_billion_laughs(9), "edited.yaml: expands to more than 100,000 values (YAML aliases repeated"),
        (_billion_laughs(5), "model.hidden_dims: Expected a <class 'int'>. Got value: [1, 1, 1, 1, 1, 1, 1, 1, 1]"),
        ("- just\n- a list\n", "edited.yaml: expected a mapping of sections (trainer, model, data), found a list"),
        ("", "edited.yaml: expected a mapping of sections (trainer, model, data), found an empty file"),
    ],
    ids=["malformed-yaml", "yaml-bomb", "yaml-bomb-under-the-limit", "yaml-list", "empty-yaml"],
)
def test_unreadable_yaml_config(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "edited.yaml").write_text(text)
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["fit", "--config", str(tmp_path / "edited.yaml")])
    assert_refused(code, err, message, tmp_path)


# -- data files --------------------------------------------------------------------------------------------


def data_copy(folder: Path) -> Path:
    copy = folder / "mnist-copy"
    copy.mkdir()
    for file in MNIST_DIR.glob("*.gz"):
        shutil.copy(file, copy / file.name)
    return copy


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _tamper(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 0xFF  # one pixel of the last image
    path.write_bytes(gzip.compress(bytes(raw)))


def _bad_header(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[2] = 0x42  # not an IDX type code
    path.write_bytes(gzip.compress(bytes(raw)))


def _short_content(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, "the gzip stream is truncated or corrupted"),
        (_tamper, "SHA-256 of the decompressed content does not match"),
        (_bad_header, "expected an IDX magic number"),
        (_short_content, "file is truncated: expected"),
    ],
    ids=["truncated-gzip", "tampered-pixel", "bad-idx-header", "truncated-idx"],
)
def test_damaged_data_file(tmp_path, monkeypatch, capsys, damage, message):
    folder = data_copy(tmp_path)
    damage(folder / "t10k-images-idx3-ubyte.gz")
    argv = ["fit", "--config", str(BASIC), *FAST, "--data.data_dir", str(folder)]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    assert_refused(code, err, message, tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in err


def _remove(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_remove, "the folder lacks 1 of the MNIST files (t10k-images-idx3-ubyte[.gz] missing)"),
        (lambda path: [file.unlink() for file in path.parent.glob("*.gz")], "the folder holds none of the MNIST"),
    ],
    ids=["one-file-missing", "empty-folder"],
)
def test_named_data_folder_without_the_files(tmp_path, monkeypatch, capsys, damage, message):
    folder = data_copy(tmp_path)
    damage(folder / "t10k-images-idx3-ubyte.gz")
    argv = ["fit", "--config", str(BASIC), *FAST, "--data.data_dir", str(folder)]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    assert code == 2
    assert_refused(code, err, message, tmp_path)


def test_truncated_data_cache_is_rebuilt_not_read(tmp_path, monkeypatch):
    """Not an error: a damaged cache entry costs a re-read of the verified source, never a wrong array."""
    from lightning_ae.data import load_dataset

    cache = tmp_path / "cache"
    first = load_dataset("mnist", cache_dir=cache)
    [entry] = cache.glob("t10k-labels*.npy")
    _truncate(entry)
    again = load_dataset("mnist", cache_dir=cache)
    assert (again.test_labels == first.test_labels).all() and entry.stat().st_size > 5000


# -- checkpoints ---------------------------------------------------------------------------------------------


def lightning_checkpoint(path: Path, state_dict: dict, **extra) -> Path:
    import pytorch_lightning as pl

    torch.save({"state_dict": state_dict, "pytorch-lightning_version": pl.__version__, **extra}, path)
    return path


def test_checkpoint_of_another_models_shape(tmp_path, monkeypatch, capsys):
    from lightning_ae.models import Autoencoder

    other = Autoencoder(code_dim=16)  # the config's model has code_dim 8 below
    checkpoint = lightning_checkpoint(tmp_path / "d16.ckpt", other.state_dict())
    argv = ["test", "--config", str(BASIC), *FAST, "--model.init_args.code_dim", "8", "--ckpt_path", str(checkpoint)]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    assert code == 2 and "size mismatch" in err and "encoder" in err
    assert not list(tmp_path.rglob("results.json"))


def test_truncated_checkpoint(tmp_path, monkeypatch, capsys):
    from lightning_ae.models import Autoencoder

    checkpoint = lightning_checkpoint(tmp_path / "cut.ckpt", Autoencoder(code_dim=8).state_dict())
    _truncate(checkpoint)
    argv = ["test", "--config", str(BASIC), *FAST, "--model.init_args.code_dim", "8", "--ckpt_path", str(checkpoint)]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    assert_refused(code, err, "is not a complete checkpoint (truncated, or not written by torch)", tmp_path)


def test_a_file_that_is_no_checkpoint(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.ckpt").write_text("epoch 3 looked best")
    argv = ["test", "--config", str(BASIC), *FAST, "--ckpt_path", str(tmp_path / "notes.ckpt")]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    assert_refused(code, err, "is not a complete checkpoint (truncated, or not written by torch)", tmp_path)


def test_a_legacy_format_checkpoint_is_read_not_called_truncated(tmp_path, monkeypatch, capsys, caplog):
    """torch.save's pre-1.6 format has no zip directory; it was refused as "truncated"."""
    import pytorch_lightning as pl

    from lightning_ae.models import Autoencoder

    checkpoint = tmp_path / "legacy.ckpt"
    state = {"state_dict": Autoencoder(code_dim=8).state_dict(), "pytorch-lightning_version": pl.__version__}
    torch.save(state, checkpoint, _use_new_zipfile_serialization=False)
    argv = ["test", "--config", str(BASIC), *FAST, "--model.init_args.code_dim", "8", "--ckpt_path", str(checkpoint)]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    # Read and tested: an untrained model's test loss is far above the mean image's, so the run is no result (3).
    assert code == 3, err[-2000:]
    assert "not a complete checkpoint" not in err and "the run is no result" in caplog.text


class Payload:
    """Unpickling this runs `Path.touch(marker)`: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("command", ["test", "fit", "predict"])
def test_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, monkeypatch, capsys, command):
    from lightning_ae.models import Autoencoder

    marker = tmp_path / "the-payload-ran"
    checkpoint = lightning_checkpoint(
        tmp_path / "evil.ckpt", Autoencoder(code_dim=8).state_dict(), hyper_parameters={"x": Payload(marker)}
    )
    torch.load(checkpoint, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()
    marker.unlink()

    argv = [command, "--config", str(BASIC), *FAST, "--model.init_args.code_dim", "8", "--ckpt_path", str(checkpoint)]
    code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
    assert code == 2
    assert "a safe load refuses (it could run code when loaded)" in err and "--weights_only false" in err
    assert not marker.exists(), "the checkpoint's code ran"
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("predictions.pt"))


# -- studies --------------------------------------------------------------------------------------------------

STUDIES = [
    ("empty", "", "is empty or not a mapping"),
    ("no-experiments", "name: x\nexperiments: {}\n", "'experiments' must be a non-empty mapping"),
    ("unknown-key", "name: x\nexperiment: {a: {config: CONFIG}}\n", "unknown keys ['experiment']"),
    ("missing-config", "name: x\nexperiments: {a: {config: nowhere.yaml}}\n", "config 'nowhere.yaml' does not exist"),
    ("config-and-pipeline", "name: x\nexperiments: {a: {config: CONFIG, pipeline: p.yaml}}\n", "exactly one of"),
    ("grid-not-a-list", "name: x\nexperiments: {a: {config: CONFIG, grid: {model.init_args.code_dim: 8}}}\n", "list"),
    ("override-typo", "name: x\nexperiments: {a: {config: CONFIG, overrides: {modle.x: 1}}}\n", "'modle' is not in"),
    ("malformed-yaml", "name: [x\n", "not valid YAML"),
    (
        "yaml-bomb",
        "name: x\nexperiments: {a: {config: CONFIG}}\nz: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(f"z{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 10)}]\n" for i in range(5)),
        "expands to more than 100,000 values",
    ),
    ("seeds-zero", "name: x\nseeds: 0\nexperiments: {a: {config: CONFIG}}\n", "seeds=0 is not valid"),
    ("name-with-slash", "name: ../x\nexperiments: {a: {config: CONFIG}}\n", "'name' must be a word"),
    # From the third hostile pass (issue 28): an experiment names its runs' folders.
    (
        "experiment-escapes",
        "name: x\nexperiments: {../../../../escaped_exp: {config: CONFIG}}\n",
        "experiment name='../../../../escaped_exp' cannot be a file or folder name: it holds a path separator",
    ),
    ("experiment-newline", 'name: x\nexperiments: {"a\\nb": {config: CONFIG}}\n', "invisible character '\\n'"),
    # From the third hostile pass (issue 28): refused when the study loads, not run by run with tracebacks.
    (
        "override-key-typo",
        "name: x\nexperiments: {a: {config: CONFIG, overrides: {model.init_args.cod_dim: 8}}}\n",
        "Option 'cod_dim' is not accepted",
    ),
    (
        "override-nan",
        "name: x\nexperiments: {a: {config: CONFIG, overrides: {model.init_args.optimizer.init_args.lr: .nan}}}\n",
        "lr=nan: not a finite number",
    ),
    (
        "grid-value-type",
        "name: x\nexperiments: {a: {config: CONFIG, grid: {model.init_args.code_dim: [8, two]}}}\n",
        "Expected a <class 'int'>. Got value: two",
    ),
    ("seeds-billion", "name: x\nseeds: 1000000000\nexperiments: {a: {config: CONFIG}}\n", "an integer from 1 to 1000"),
    (
        "grid-too-big",
        "name: x\nseeds: 1000\nexperiments: {a: {config: CONFIG, grid: {model.init_args.code_dim: "
        + str(list(range(1, 12)))
        + "}}}\n",
        "expands to more than 10,000 runs",
    ),
    (
        "callback-name-typo",
        "name: x\ncallbacks: {TSNEPlott: {max_points: 10}}\nexperiments: {a: {config: CONFIG}}\n",
        "callbacks ['TSNEPlott'] are no callback of lightning-ae or Lightning, and in no experiment's",
    ),
    (
        "overrides-not-a-mapping",
        "name: x\nexperiments: {a: {config: CONFIG, overrides: [1]}}\n",
        "'overrides' must map",
    ),
    (
        "duplicate-runs",
        "name: x\nexperiments: {a: {config: CONFIG, grid: {model.init_args.code_dim: [8, 8]}}}\n",
        "two runs resolve to the same config",
    ),
]


@pytest.mark.parametrize(("text", "message"), [case[1:] for case in STUDIES], ids=[case[0] for case in STUDIES])
def test_bad_study_file(tmp_path, monkeypatch, capsys, text, message):
    study = tmp_path / "study.yaml"
    study.write_text(text.replace("CONFIG", str(BASIC)))
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["study", str(study)])
    assert code == 2
    assert_refused(code, err, message, tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "1/2"], "lightning-ae study: unrecognized arguments: --shard 1/2"),
        (["--seeds", "0"], "seeds=0 is not valid"),
        (["--only", "no_such_experiment"], "--only 'no_such_experiment' matches no run of study 'smoke'"),
    ],
    ids=["shard-is-gone", "seeds-flag-zero", "only-matches-nothing"],
)
def test_bad_study_flag(tmp_path, monkeypatch, capsys, args, message):
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["study", str(REPO / "configs/study/smoke.yaml"), *args])
    assert code == 2
    assert_refused(code, err, message, tmp_path)


OTHER_COMMANDS = [
    ("data-val-size-word", ["data", "--val-size", "abc"], "lightning-ae data: argument --val-size: invalid int"),
    ("data-unknown-option", ["data", "--valsize", "5"], "lightning-ae data: unrecognized arguments: --valsize 5"),
    ("report-of-no-runs", ["report", "SMOKE", "--folder", "nothing"], "nothing holds no runs of study 'smoke'"),
    ("predict-untrained", ["predict", "--config", "BASIC"], "predict evaluates a trained model: give --ckpt_path"),
    ("test-untrained", ["test", "--config", "BASIC"], "test evaluates a trained model: give --ckpt_path"),
    ("validate-untrained", ["validate", "--config", "BASIC"], "validate evaluates a trained model"),
    ("subcommand-typo", ["fitt", "--config", "BASIC"], "'fitt' is not a command; commands: fit, validate, test"),
    ("pretrain-missing-config", ["pretrain", "--config", "nope.yaml"], "config: File does not exist"),
    ("pretrain-output-is-a-file", ["pretrain", "--config", "PRETRAIN", "--output_dir", "FILE"], "a file is in the way"),
    ("study-folder-is-a-file", ["study", "SMOKE", "--folder", "FILE"], "a file is in the way"),
    (
        "pretrain-hidden-dims-zero",
        ["pretrain", "--config", "PRETRAIN", "--hidden_dims", "[100, 0]"],
        "hidden_dims=0 is not valid",
    ),
]


@pytest.mark.parametrize(
    ("argv", "message"), [case[1:] for case in OTHER_COMMANDS], ids=[case[0] for case in OTHER_COMMANDS]
)
def test_bad_input_to_the_other_commands(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "a-file").write_text("in the way")
    places = {
        "BASIC": str(BASIC),
        "SMOKE": str(REPO / "configs/study/smoke.yaml"),
        "PRETRAIN": str(REPO / "configs/pretrain.yaml"),
        "FILE": "a-file",
    }
    code, err = run_cli(tmp_path, monkeypatch, capsys, [places.get(arg, arg) for arg in argv])
    assert code == 2
    assert_refused(code, err, message, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], "something was written"


def test_study_file_missing(tmp_path, monkeypatch, capsys):
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["study", str(tmp_path / "nope.yaml")])
    assert_refused(code, err, "does not exist", tmp_path)


def test_a_full_or_read_only_folder_is_one_line_that_says_what_to_do(capsys):
    """(Running as root, a chmod'ed folder stays writable, so the error is raised as the OS would raise it.)"""
    import errno

    from lightning_ae.cli.errors import translated

    def full_disk() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/results.json")

    assert translated(full_disk) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write runs/x/results.json: No space left on device" in err
    assert "--ckpt_path last" in err

    def other_os_error() -> int:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError):  # not a folder problem: the traceback stays
        translated(other_os_error)


RESUMES = [
    ("train-subset", ["--data.train_subset", "320"], "data.train_subset 640 in the checkpoint, 320 now"),
    ("batch-size", ["--data.batch_size", "32"], "data.batch_size 64 in the checkpoint, 32 now"),
    ("seed", ["--data.seed", "1"], "data.seed 0 in the checkpoint, 1 now"),
    (
        "corruption",
        ["--data.corruption", "masking", "--data.corruption_args", "{p: 0.3}"],
        "data.corruption None in the checkpoint, 'masking' now; data.corruption_args None in the checkpoint",
    ),
    (
        "activation",
        ["--model.init_args.activation", "relu"],
        "model.activation 'sigmoid' in the checkpoint, 'relu' now",
    ),
    ("code-dim", ["--model.init_args.code_dim", "16"], "model.code_dim 32 in the checkpoint, 16 now"),
    (
        "model-class",
        ["--model", "lightning_ae.models.SparseAutoencoder"],
        "model.class_path 'lightning_ae.models.Autoencoder' in the checkpoint, 'lightning_ae.models.SparseAutoencoder'",
    ),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One finished 1-epoch fit, to resume from."""
    folder = tmp_path_factory.mktemp("to-resume")
    cwd = Path.cwd()
    try:
        os.chdir(folder)
        assert main(["fit", "--config", str(BASIC), *RESUME_BASE]) == 0
    finally:
        os.chdir(cwd)
    return folder


RESUME_BASE = ["--data.train_subset", "640", "--data.batch_size", "64", "--trainer.max_epochs", "1"]
RESUME_BASE += ["--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]


@pytest.mark.parametrize(("change", "said"), [case[1:] for case in RESUMES], ids=[case[0] for case in RESUMES])
def test_resuming_with_other_data_corruption_or_model_is_refused_before_anything_is_written(
    trained_run, tmp_path, monkeypatch, capsys, change, said
):
    """A checkpoint's place in an epoch means "the first k batches": with other items or another batch size it
    would silently mean other batches; with another model, Lightning's CLI used to put the checkpoint's settings
    in place of the user's without a word."""
    folder = tmp_path / "run"
    shutil.copytree(trained_run, folder)
    [checkpoint] = folder.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    again = ["fit", "--config", str(BASIC), *RESUME_BASE, "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint)]
    code, err = run_cli(folder, monkeypatch, capsys, [*again, *change])
    assert code == 2 and "with other settings than the checkpoint's" in err and said in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before, "a file or folder was written"


def test_resuming_with_the_same_settings_and_another_learning_rate_is_allowed(trained_run, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(trained_run, folder)
    monkeypatch.chdir(folder)
    again = ["fit", "--config", str(BASIC), *RESUME_BASE, "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    assert main([*again, "--model.init_args.optimizer.init_args.lr", "1e-4"]) == 0


def test_resuming_from_a_cut_off_last_checkpoint_goes_back_to_the_last_good_one(
    trained_run, tmp_path, monkeypatch, caplog
):
    """`--ckpt_path last` on a last.ckpt cut short (a full disk under an older version): set aside with a warning,
    and the run resumes from the newest complete checkpoint beside it (here the best of epoch 0)."""
    folder = tmp_path / "run"
    shutil.copytree(trained_run, folder)
    [last] = folder.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    monkeypatch.chdir(folder)
    again = ["fit", "--config", str(BASIC), *RESUME_BASE, "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    with caplog.at_level("INFO"):
        assert main(again) == 0
    assert last.with_name("last.ckpt.corrupt").exists() and "is not a complete checkpoint" in caplog.text
    assert "Restored all states from the checkpoint at" in caplog.text and "best-epoch0.ckpt" in caplog.text
    assert [p.name for p in folder.glob("lightning_logs/*/version_*")] == ["version_0"]


# -- the third hostile pass (issue 28): no silent wrong number, no lost result --------------------------


def _copy_of(trained_run: Path, folder: Path) -> tuple[Path, Path]:
    shutil.copytree(trained_run, folder)
    [checkpoint] = folder.glob("lightning_logs/*/version_0/checkpoints/last.ckpt")
    return folder, checkpoint


@pytest.mark.parametrize(
    ("damage", "said"),
    [("nan", "is not finite"), ("far-off", "times the mean training image's")],
    ids=["nan-weights", "far-worse-than-the-mean-image"],
)
def test_testing_weights_that_give_no_result_is_never_a_clean_tested_run(
    trained_run, tmp_path, monkeypatch, capsys, caplog, damage, said
):
    """Before, a checkpoint with NaN weights tested "tested", exit 0, every loss null; a model far worse than the
    mean image (lr 1e6 that stayed under the divergence guard's factor) was "tested", exit 0, too."""
    folder, checkpoint = _copy_of(trained_run, tmp_path / "run")
    state = torch.load(checkpoint, weights_only=True)
    for name, tensor in state["state_dict"].items():
        if damage == "nan" and name.endswith("weight"):
            tensor[0] = float("nan")
        elif damage == "far-off" and "decoder" in name and name.endswith("bias"):
            tensor += 8.0  # every pixel predicted nearly white
    torch.save(state, checkpoint)
    argv = ["test", "--config", str(BASIC), *RESUME_BASE[:4], "--ckpt_path", str(checkpoint)]
    code, err = run_cli(folder, monkeypatch, capsys, argv)
    assert code == 3, err[-3000:]
    assert "the run is no result" in caplog.text and said in caplog.text
    [results_file] = folder.glob("lightning_logs/*/version_1/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "diverged" and said in results["diverged"]["message"]


def test_a_second_run_without_a_logger_in_the_same_folder_is_refused_and_the_first_results_kept(
    tmp_path, monkeypatch, capsys
):
    """Before, the second `--trainer.logger false` run overwrote ./results.json without a word."""
    no_logger = ["fit", "--config", str(BASIC), *FAST, "--trainer.logger", "false"]
    code, err = run_cli(tmp_path, monkeypatch, capsys, no_logger)
    assert code == 0, err[-3000:]
    first = (tmp_path / "results.json").read_text()
    code, err = run_cli(tmp_path, monkeypatch, capsys, [*no_logger, "--model.init_args.code_dim", "8"])
    assert code == 2 and "results.json holds the results of another run" in err, err[-3000:]
    assert (tmp_path / "results.json").read_text() == first


def test_a_run_that_another_process_is_writing_is_refused(trained_run, tmp_path, monkeypatch, capsys):
    """Before, two simultaneous `--ckpt_path last` resumes of one run both wrote version_0, with no lock."""
    import subprocess

    folder, checkpoint = _copy_of(trained_run, tmp_path / "run")
    holder = subprocess.Popen(  # another process holding the run folder, as a running resume does
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from lightning_ae.files import lock_folder; "
            f"lock = lock_folder(Path({str(checkpoint.parent.parent)!r}), 'a run'); print('held', flush=True); "
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        again = ["fit", "--config", str(BASIC), *RESUME_BASE, "--trainer.max_epochs", "2", "--ckpt_path", "last"]
        code, err = run_cli(folder, monkeypatch, capsys, again)
    finally:
        holder.kill()
    assert code == 2 and f"is in use: another process (pid {holder.pid})" in err, err[-3000:]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 0, "the run was not trained on"


def test_a_damaged_session_journal_is_refused_not_silently_replaced(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "sessions.json").write_text('[{"id": "a", "wall_seconds": 600}')  # cut off
    smoke = str(REPO / "configs/study/smoke.yaml")
    code, err = run_cli(tmp_path, monkeypatch, capsys, ["study", smoke, "--folder", str(folder)])
    assert code == 2 and "sessions.json is damaged" in err and "move it aside" in err, err[-3000:]
    assert (folder / "sessions.json").read_text() == '[{"id": "a", "wall_seconds": 600}'
    assert sorted(p.name for p in folder.iterdir()) == ["sessions.json"]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ({"epoch": 3, "weights": [1.0]}, "it holds no 'state_dict'"),
        ("bare", "it holds bare weights"),
        ({"state_dict": {}, "hyper_parameters": "code_dim=8"}, "its 'hyper_parameters' is a str, not a mapping"),
        ({"state_dict": {"encoder.0.weight": [1.0]}}, "its 'state_dict' holds values that are not tensors"),
    ],
    ids=["no-state-dict", "bare-state-dict", "hyper-parameters-text", "state-dict-of-lists"],
)
def test_a_checkpoint_that_is_not_a_lightning_checkpoint(tmp_path, monkeypatch, capsys, content, said):
    """Before: a KeyError traceback."""
    from lightning_ae.models import Autoencoder

    checkpoint = tmp_path / "model.ckpt"
    torch.save(Autoencoder(code_dim=8).state_dict() if content == "bare" else content, checkpoint)
    for command in ("test", "fit"):
        argv = [command, "--config", str(BASIC), *FAST, "--ckpt_path", str(checkpoint)]
        code, err = run_cli(tmp_path, monkeypatch, capsys, argv)
        assert code == 2
        assert_refused(code, err, f"is not a Lightning checkpoint: {said}", tmp_path)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"status": "tested", "model": "Autoencoder", "ae": {"test/bce_per_pixel": NaN}}', "holds NaN"),
        ('{"status": "tested", "model": "Autoencoder", "ae": {"test/bce_per_pixel": "low"}}', "is 'low', not a number"),
        ('{"status": "tested", "epochs": "ten"}', "'epochs' is 'ten', not a whole number"),
        ("[1, 2]", "it holds a JSON list"),
    ],
    ids=["nan", "text-for-a-number", "text-for-a-count", "a-list"],
)
def test_a_damaged_results_file_is_named_and_left_out_not_blocking_the_report(
    tmp_path, monkeypatch, capsys, caplog, text, said
):
    """Before, one NaN (or a wrong-typed value) in one run's results.json stopped the report with an error naming
    no file."""
    from lightning_ae.study.spec import load_study

    smoke = REPO / "configs/study/smoke.yaml"
    folder = tmp_path / "study"
    run = load_study(smoke).runs[0]
    (folder / "runs" / run.run_id).mkdir(parents=True)
    (folder / "runs" / run.run_id / "results.json").write_text(text)
    with caplog.at_level("WARNING"):
        code, err = run_cli(tmp_path, monkeypatch, capsys, ["report", str(smoke), "--folder", str(folder)])
    assert code == 0, err[-3000:]
    assert f"{run.run_id}/results.json is damaged" in caplog.text and said in caplog.text
    page = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    assert "run with a damaged results.json" in page and run.describe() in page


def test_a_pipeline_stage_whose_results_file_is_a_list_is_set_aside_and_redone(tmp_path):
    """Before: `AttributeError: 'list' object has no attribute 'get'`, a traceback."""
    from lightning_ae.pretraining import LayerwisePretraining

    stage = tmp_path / "layer1"
    stage.mkdir()
    (stage / "results.json").write_text("[1, 2]")
    assert LayerwisePretraining._finished(stage) is None
    assert sorted(p.name for p in stage.iterdir()) == ["results.json.corrupt"]


def test_validating_nan_weights_is_no_result(trained_run, tmp_path, monkeypatch, capsys):
    folder, checkpoint = _copy_of(trained_run, tmp_path / "run")
    state = torch.load(checkpoint, weights_only=True)
    next(iter(v for k, v in state["state_dict"].items() if k.endswith("weight")))[0] = float("nan")
    torch.save(state, checkpoint)
    argv = ["validate", "--config", str(BASIC), *RESUME_BASE[:4], "--ckpt_path", str(checkpoint)]
    code, err = run_cli(folder, monkeypatch, capsys, argv)
    assert code == 3 and "the validation is no result: val/loss" in err, err[-3000:]
