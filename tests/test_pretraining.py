"""Classifier and greedy layer-wise pre-training (homework 2.4) on a tiny real pipeline."""

from __future__ import annotations

import json
import shutil
import warnings
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_ae.models import Autoencoder, Classifier
from lightning_ae.pretraining import LayerwisePretraining, Stage

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

HIDDEN = [48, 24]


def tiny_pipeline(output_dir, activation: str = "tanh", hidden=HIDDEN) -> LayerwisePretraining:
    adam = partial(torch.optim.Adam, lr=3e-3)
    return LayerwisePretraining(
        activation=activation,
        hidden_dims=hidden,
        layers=Stage(epochs=2, batch_size=50, optimizer=adam),
        frozen=Stage(epochs=2, batch_size=50, optimizer=adam),
        finetune=Stage(epochs=2, batch_size=50, optimizer=adam),
        train_subset=1000,
        output_dir=str(output_dir),
    )


def state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def best(output_dir, stage: str) -> dict[str, torch.Tensor]:
    results = json.loads((output_dir / stage / "results.json").read_text())
    return state(results["best_checkpoint"])


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pretrain")
    summary = tiny_pipeline(output_dir).run()
    return output_dir, summary


def test_classifier_receives_the_encoder_weights_exactly():
    encoders = [Autoencoder(code_dim=48, activation="tanh"), Autoencoder(code_dim=24, input_shape=(48,))]
    layers = [ae.encoder[1] for ae in encoders]
    classifier = Classifier(hidden_dims=HIDDEN, activation="tanh")
    classifier.load_hidden_layers(layers)
    for source, target in zip(layers, classifier.hidden_linears, strict=True):
        assert torch.equal(source.weight, target.weight) and torch.equal(source.bias, target.bias)
    with pytest.raises(ValueError, match=r"pre-trained layer 1 has shape \(24, 784\); hidden layer 1 needs"):
        Classifier(hidden_dims=[48, 24]).load_hidden_layers([Autoencoder(code_dim=24).encoder[1], layers[1]])


def test_the_classifier_computes_the_pretrained_codes_from_raw_images(datamodule):
    """The folded input layer: the classifier's hidden layer gives the centred AE's code of every raw image."""
    ae = Autoencoder(code_dim=48, activation="tanh")
    ae.init_from_data(*datamodule.training_means())
    classifier = Classifier(hidden_dims=[48], activation="tanh")
    classifier.load_hidden_layers([ae.input_layer()])
    classifier.eval()  # the recipe's dropout acts in training only
    images = datamodule.split("test").images[:256]
    torch.testing.assert_close(classifier.encode(images), ae.encode(images), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ae.encoder(images), ae.encode(images))  # the centring matters


def test_pipeline_reports_frozen_and_finetuned_test_accuracy(pipeline_run):
    output_dir, summary = pipeline_run
    assert set(summary["stages"]) == {"frozen", "finetune"}
    for row in summary["stages"].values():
        assert 0.1 < row["test/acc"] <= 1 and row["test/error"] == pytest.approx(1 - row["test/acc"])
    assert json.loads((output_dir / "results.json").read_text())["stages"] == summary["stages"]
    for stage in ("layer1", "layer2", "frozen", "finetune"):
        assert json.loads((output_dir / stage / "results.json").read_text())["status"] == "tested"


def test_a_pipelines_run_time_counts_every_stage_its_layers_included(pipeline_run):
    """A study's run time of a pipeline is the fit time of all four stages (it once left out the layers)."""
    from lightning_ae.study.records import run_seconds

    output_dir, summary = pipeline_run
    stages = ("layer1", "layer2", "frozen", "finetune")
    fit = {s: json.loads((output_dir / s / "results.json").read_text())["timings"]["fit_seconds"] for s in stages}
    assert all(seconds > 0 for seconds in fit.values())
    assert {name: row["fit_seconds"] for name, row in summary["layers"].items()} == {s: fit[s] for s in stages[:2]}
    assert run_seconds(summary) == pytest.approx(sum(fit.values()))
    assert run_seconds(json.loads((output_dir / "results.json").read_text())) == pytest.approx(sum(fit.values()))


def test_layer_two_learns_the_codes_of_layer_one_with_a_fitting_output(pipeline_run):
    output_dir, _ = pipeline_run
    layer1 = json.loads((output_dir / "layer1" / "results.json").read_text())
    layer2 = json.loads((output_dir / "layer2" / "results.json").read_text())
    # tanh codes are in (-1, 1): layer 2 reconstructs them with a tanh output and MSE, so no BCE is reported.
    assert "test/bce_per_pixel" in layer1["ae"] and "test/bce_per_pixel" not in layer2["ae"]
    assert state(layer2["best_checkpoint"])["encoder.1.weight"].shape == (24, 48)


def test_frozen_stage_leaves_the_pretrained_layers_unchanged_and_trains_the_softmax(pipeline_run):
    output_dir, _ = pipeline_run
    layer1, layer2, frozen = best(output_dir, "layer1"), best(output_dir, "layer2"), best(output_dir, "frozen")
    assert torch.equal(frozen["hidden.1.weight"], layer1["encoder.1.weight"])
    # The AE centred its inputs; the classifier sees raw ones, so the shift is folded into the bias.
    folded = layer1["encoder.1.bias"] - layer1["encoder.1.weight"] @ layer1["input_shift"]
    torch.testing.assert_close(frozen["hidden.1.bias"], folded)
    assert layer1["input_shift"].abs().sum() > 0 and layer2["input_shift"].abs().sum() > 0
    assert torch.equal(frozen["hidden.3.weight"], layer2["encoder.1.weight"])
    pl.seed_everything(0, verbose=False)
    fresh = Classifier(hidden_dims=HIDDEN, activation="tanh")
    assert not torch.equal(frozen["output.weight"], fresh.output.weight)


def test_finetuned_stage_changes_the_pretrained_layers(pipeline_run):
    output_dir, _ = pipeline_run
    layer1, finetune = best(output_dir, "layer1"), best(output_dir, "finetune")
    assert not torch.equal(finetune["hidden.1.weight"], layer1["encoder.1.weight"])


def test_running_again_skips_finished_stages_and_resumes_an_interrupted_one(pipeline_run):
    output_dir, summary = pipeline_run
    files = {stage: output_dir / stage / "results.json" for stage in ("layer1", "layer2", "frozen", "finetune")}
    before = {stage: path.stat().st_mtime_ns for stage, path in files.items()}
    finetune_steps = json.loads(files["finetune"].read_text())["global_step"]
    files["finetune"].unlink()  # as if killed after training, before its test finished
    again = tiny_pipeline(output_dir).run()
    for stage in ("layer1", "layer2", "frozen"):
        assert files[stage].stat().st_mtime_ns == before[stage], f"{stage} ran again"
    resumed = json.loads(files["finetune"].read_text())
    assert resumed["global_step"] == finetune_steps  # resumed from last.ckpt at the end: no step repeated
    assert again["stages"]["frozen"] == summary["stages"]["frozen"]
    assert again["stages"]["finetune"]["test/acc"] == pytest.approx(summary["stages"]["finetune"]["test/acc"])


def test_a_pipeline_run_into_a_relative_folder_resumes_from_another_working_directory(tmp_path, monkeypatch):
    """A study resumes its pipelines with the folder spelled another way (an absolute --folder, another working
    directory): finished stages load, and an interrupted stage keeps its best checkpoint so far."""
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    summary = tiny_pipeline("pipe").run()
    files = sorted((tmp_path / "project" / "pipe").glob("*/results.json"))
    before = {path: path.stat().st_mtime_ns for path in files}
    monkeypatch.chdir(tmp_path)
    again = tiny_pipeline(tmp_path / "project" / "pipe").run()
    assert {path: path.stat().st_mtime_ns for path in files} == before  # every stage loaded, none retrained
    assert again["stages"] == summary["stages"]
    # Lightning forgets which checkpoint is best (and may test a worse one) when the checkpoint folder's path
    # reads differently from the one it saved: the stages use absolute paths.
    (tmp_path / "project" / "pipe" / "finetune" / "results.json").unlink()  # killed before its test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_pipeline(tmp_path / "project" / "pipe").run()
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]


def test_a_moved_pipeline_folder_loads_its_finished_stages_from_their_own_folders(pipeline_run, tmp_path):
    """Stages record their checkpoints where they ran; moved (or recorded relative to another working directory
    by an older version), a finished stage's checkpoint is found in its own checkpoints folder."""
    output_dir, _ = pipeline_run
    moved = tmp_path / "moved"
    shutil.copytree(output_dir, moved)
    summary = json.loads((moved / "results.json").read_text())
    for results_file in moved.glob("*/results.json"):  # as recorded from a working directory that is not here
        results = json.loads(results_file.read_text())
        results["best_checkpoint"] = str(Path("elsewhere") / Path(results["best_checkpoint"]).name)
        results_file.write_text(json.dumps(results))
    files = sorted(moved.glob("*/results.json"))
    before = {path: path.stat().st_mtime_ns for path in files}
    again = tiny_pipeline(moved).run()
    assert {path: path.stat().st_mtime_ns for path in files} == before  # every stage loaded, none retrained
    assert again["stages"] == summary["stages"]
    for checkpoint in (moved / "layer1" / "checkpoints").glob("best-*.ckpt"):
        checkpoint.unlink()  # a finished stage's checkpoint deleted: say so and how to fix it
    with pytest.raises(FileNotFoundError, match=r"stage 'layer1' finished, but its best checkpoint .* Delete"):
        tiny_pipeline(moved).run()


def test_another_config_in_the_same_folder_is_refused(pipeline_run):
    output_dir, _ = pipeline_run
    with pytest.raises(ValueError, match=r"holds stages of another pipeline config \(hidden_dims: \[48, 24\] there"):
        tiny_pipeline(output_dir, hidden=[40, 24]).run()


def test_a_stage_checkpoint_of_another_shape_is_a_clear_error(pipeline_run, tmp_path):
    output_dir, _ = pipeline_run
    pipeline = tiny_pipeline(tmp_path)
    with pytest.raises(ValueError, match=r"stage 'layer1': its checkpoint .* does not fit .* Delete"):
        pipeline._load(
            Autoencoder(code_dim=10),
            json.loads((output_dir / "layer1" / "results.json").read_text())["best_checkpoint"],
            "layer1",
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_dims": []}, r"hidden_dims is empty: layer-wise pre-training needs at least one hidden layer"),
        ({"activation": "softplus"}, r"activation='softplus' is not valid"),
        ({"hidden_dims": [100, 0]}, r"hidden_dims=0 is not valid"),
        ({"frozen": Stage(epochs=0)}, r"frozen.epochs=0 is not valid"),
        ({"finetune": Stage(dropout=1.0)}, r"finetune.dropout=1.0 is not valid; valid: a probability in \[0, 1\)"),
        ({"layers": Stage(input_dropout=0.2)}, r"layers.dropout and layers.input_dropout must be 0"),
        ({"layers": Stage(masking=0.0)}, r"layers.masking=0.0 is not valid; valid: 0 < masking <= 1"),
        ({"layers": Stage(masking=True)}, r"layers.masking=True is not valid"),
        ({"finetune": Stage(masking=0.5)}, r"finetune.masking=0.5: masking noise is the layers'"),
    ],
)
def test_bad_pipeline_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerwisePretraining(output_dir=str(tmp_path), **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written


def test_classifier_bad_input():
    with pytest.raises(ValueError, match=r"freeze_hidden=True needs at least one hidden layer"):
        Classifier(hidden_dims=[], freeze_hidden=True)
    with pytest.raises(ValueError, match=r"activation='swish' is not a known activation"):
        Classifier(activation="swish")
    for bad in (-0.1, 1.0, "half", True):
        with pytest.raises(ValueError, match=r"dropout=.* is not valid; valid: a probability in \[0, 1\)"):
            Classifier(dropout=bad)


def test_dropout_acts_in_training_only_and_without_it_the_network_is_the_homeworks():
    torch.manual_seed(0)
    plain = Classifier(hidden_dims=[50, 40], dropout=0.0, input_dropout=0.0)
    with_dropout = Classifier(hidden_dims=[50, 40])  # the recipe's dropout, 0.5 and 0.2 on the inputs
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())  # the same checkpoints as before
    assert [m.p for m in with_dropout.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.5, 0.5]
    with_dropout.load_hidden_layers(plain.hidden_linears)
    with_dropout.output.load_state_dict(plain.output.state_dict())
    x = torch.rand(64, 784)
    plain.eval(), with_dropout.eval()
    assert torch.equal(with_dropout(x), plain(x))  # evaluation: dropout is the identity
    with_dropout.train()
    first, second = with_dropout(x), with_dropout(x)
    assert not torch.allclose(first, second) and not torch.allclose(first, plain(x))


def _copy_pipeline(source, target, stages=("layer1", "layer2", "frozen", "finetune")):
    import shutil

    target.mkdir(exist_ok=True)
    shutil.copy(source / "pipeline.json", target / "pipeline.json")
    for stage in stages:
        shutil.copytree(source / stage, target / stage)
        # results.json names its checkpoints by absolute path: point them at the copy
        results = target / stage / "results.json"
        results.write_text(results.read_text().replace(str(source), str(target)))


def test_sigterm_stops_the_pipeline_with_a_checkpoint_and_a_rerun_finishes_it_as_if_never_stopped(
    pipeline_run, tmp_path, monkeypatch
):
    import signal

    from conftest import REPO

    from lightning_ae.callbacks import GracefulInterruption, RunInterrupted

    monkeypatch.syspath_prepend(str(REPO / "tests" / "scripts"))
    from signal_at_step import SignalAtStep

    output_dir, summary = pipeline_run
    copy = tmp_path / "pipeline"
    _copy_pipeline(output_dir, copy, stages=("layer1", "layer2"))
    original = LayerwisePretraining._trainer

    def with_signal(self, name, stage, results):
        trainer = original(self, name, stage, results)
        if name == "frozen":
            trainer.callbacks.insert(0, SignalAtStep(step=1))
        return trainer

    monkeypatch.setattr(LayerwisePretraining, "_trainer", with_signal)
    with pytest.raises(RunInterrupted) as stopped:
        tiny_pipeline(copy).run()
    assert stopped.value.exit_code == 128 + signal.SIGTERM and "stopped in epoch 0 after optimizer step 1" in str(
        stopped.value
    )
    assert stopped.value.checkpoint == copy / "frozen" / "checkpoints" / "last.ckpt"
    assert not (copy / "frozen" / "results.json").exists() and not (copy / "results.json").exists()
    handler = signal.getsignal(signal.SIGTERM)  # given back: the next stage or command gets the usual handling
    assert not isinstance(getattr(handler, "__self__", None), GracefulInterruption)

    monkeypatch.setattr(LayerwisePretraining, "_trainer", original)
    again = tiny_pipeline(copy).run()
    assert again["stages"]["frozen"]["test/acc"] == pytest.approx(summary["stages"]["frozen"]["test/acc"])
    assert again["stages"]["finetune"]["test/acc"] == pytest.approx(summary["stages"]["finetune"]["test/acc"])


def test_a_cut_off_stage_checkpoint_is_set_aside_and_the_stage_goes_back_to_the_last_good_one(pipeline_run, tmp_path):
    output_dir, _ = pipeline_run
    copy = tmp_path / "pipeline"
    _copy_pipeline(output_dir, copy)
    last = copy / "finetune" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (copy / "finetune" / "results.json").unlink()
    again = tiny_pipeline(copy).run()
    assert (copy / "finetune" / "checkpoints" / "last.ckpt.corrupt").exists()
    assert json.loads((copy / "finetune" / "results.json").read_text())["status"] == "tested"
    assert again["stages"]["finetune"]["test/error"] is not None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"other": 1}'], ids=["malformed", "a-list", "no-config"])
def test_an_unreadable_pipeline_record_is_named(tmp_path, text):
    (tmp_path / "pipeline.json").write_text(text)
    with pytest.raises(ValueError, match=r"pipeline.json: not a readable pipeline record .* delete the folder"):
        tiny_pipeline(tmp_path).run()


def test_a_diverging_stage_stops_the_pipeline_and_its_results_say_diverged(tmp_path):
    from lightning_ae.pretraining import StageDiverged

    pipeline = tiny_pipeline(tmp_path)
    pipeline.layers = Stage(epochs=2, batch_size=50, optimizer=partial(torch.optim.Adam, lr=1e6))
    with pytest.raises(StageDiverged, match=r"stage 'layer1': training diverged at epoch 0"):
        pipeline.run()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "diverged" and results["diverged"]["stage"] == "layer1"
    assert json.loads((tmp_path / "layer1" / "results.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "frozen").exists()


def test_masked_layers_learn_to_denoise_their_inputs_and_pass_on_the_codes_of_clean_ones(tmp_path):
    """Stacked denoising AEs: each layer's input masked (fresh per batch, fixed for evaluation), its target
    clean, and the next layer's data the codes of the clean inputs."""
    pipeline = LayerwisePretraining(
        activation="tanh", hidden_dims=HIDDEN, layers=Stage(masking=0.75), train_subset=1000, output_dir=str(tmp_path)
    )
    seen = []

    def record(name, model, data, stage):
        seen.append((model, data))
        return {}

    pipeline.run_stage = record  # the wiring only: no training
    pipeline.pretrain_layers()
    assert len(seen) == 2
    (layer1, data1), (_, data2) = seen
    for data in (data1, data2):
        inputs, target, _ = next(iter(data.train_dataloader()))
        kept, nonzero = inputs != 0, target != 0  # (most pixels of an image are 0 before masking)
        assert torch.equal(inputs[kept], target[kept]) and 0.6 < kept.sum() / nonzero.sum() < 0.9
        val = data.split("val")
        assert val.fixed_inputs is not None and not torch.equal(val.fixed_inputs, val.images)
    with torch.no_grad():  # layer 2 learns from the codes of the clean images, not of masked ones
        torch.testing.assert_close(data2.split("val").images, layer1.encode(data1.split("val").images))
