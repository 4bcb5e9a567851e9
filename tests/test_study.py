"""Studies: the smoke study end to end with its report, restart, corrupt results, locks, bad files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from lightning_ae.study.report import write_report
from lightning_ae.study.runner import read_results, run_lock, run_status, run_study
from lightning_ae.study.spec import load_study

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

SECTIONS = ("2.1a-b", "2.1c", "2.1d", "2.1e", "2.1f", "2.2a-c", "2.2d", "2.3", "2.4")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from conftest import REPO

    folder = tmp_path_factory.mktemp("smoke")
    study = load_study(REPO / "configs" / "study" / "smoke.yaml")
    outcome = run_study(study, folder)
    return study, folder, outcome


def test_smoke_study_runs_every_run_and_reports_every_section(smoke, tmp_path):
    study, folder, outcome = smoke
    assert not outcome["failed"] and len(outcome["ran"]) == len(study.runs)
    for run in study.runs:
        results = read_results(folder / "runs" / run.run_id)
        assert results is not None and results["status"] == "tested"
    (tmp_path / "report" / "figures").mkdir(parents=True)
    stale = tmp_path / "report" / "figures" / "099-tsne.png"  # a figure of an earlier report
    stale.write_bytes(b"old")
    markdown, page = write_report(study, folder, tmp_path / "report")
    text = markdown.read_text()
    shown = sorted(figure.split(")")[0] for figure in text.split("](figures/")[1:])
    assert sorted(p.name for p in (tmp_path / "report" / "figures").iterdir()) == shown and not stale.exists()
    for section in SECTIONS:
        assert f"## {section}" in text, section
    for figure in text.split("](figures/")[1:]:
        assert (tmp_path / "report" / "figures" / figure.split(")")[0]).is_file()
    assert "Training images: 500; epochs run: 1; seeds: [0]" in text
    assert "PCA with d'=8 components: t-SNE of the same test images" in text  # 2.1e compares AE and PCA
    html = page.read_text()
    assert html.count("data:image/png;base64,") == text.count("](figures/")  # self-contained
    # The denoising runs found the plain basic AE of the same shape in the same study.
    denoising = [r for r in study.runs if r.experiment == "denoising"]
    assert all("test/plain_ae_bce_per_pixel" in read_results(folder / "runs" / r.run_id)["ae"] for r in denoising)


@pytest.mark.parametrize("logdir", ["runs", "."])  # `tensorboard --logdir` given the study's runs or its folder
def test_tensorboard_shows_the_study_in_one_hparams_table(smoke, logdir):
    from conftest import tensorboard_hparams

    study, folder, _ = smoke
    experiment, groups = tensorboard_hparams(folder / logdir)  # as TensorBoard's HParams plugin computes the tab
    columns = [info.name for info in experiment.hparam_infos]
    # The grid's keys first (the dashboard shows the first five), then every setting of every kind of run.
    assert columns[:2] == ["code_dim", "data.corruption_args.p"]
    assert {"activation", "data.corruption", "data.pair_objects", "optimizer.lr"} <= set(columns)
    assert not [name for name in columns if name.rsplit(".", 1)[-1].startswith("_")]  # no _class_path, _instantiator
    assert [info.name.tag for info in experiment.metric_infos] == ["test/knn_acc", "test/bce_per_pixel", "test/error"]
    rows = {group.name.removeprefix("runs/"): group for group in groups}
    denoising = [rows[run.run_id] for run in study.runs if run.experiment == "denoising"]
    assert sorted(group.hparams["data.corruption_args.p"].number_value for group in denoising) == [0.25, 0.75]
    basic = [rows[run.run_id] for run in study.runs if run.experiment == "basic_ae"]
    assert sorted(group.hparams["code_dim"].number_value for group in basic) == [2, 8]  # d'=2 and d'=8 apart
    assert all({m.name.tag for m in group.metric_values} == {"test/knn_acc", "test/bce_per_pixel"} for group in basic)
    # An unset setting has no value, not the text 'none' (which would turn a numeric column into text).
    assert not [(g.name, k) for g in groups for k, v in g.hparams.items() if v.string_value.lower() == "none"]


def test_starting_again_skips_every_finished_run(smoke):
    study, folder, _ = smoke
    again = run_study(study, folder)
    assert sorted(again["done"]) == sorted(r.run_id for r in study.runs) and not again["ran"]


def test_a_corrupt_results_file_is_set_aside_and_the_run_redone(smoke):
    study, folder, _ = smoke
    run = next(r for r in study.runs if r.experiment == "basic_ae")
    run_dir = folder / "runs" / run.run_id
    (run_dir / "results.json").write_text('{"status": "tested", "ae": {"test/bce')  # truncated mid-write
    assert run_status(run_dir) == "corrupt"
    outcome = run_study(study, folder, only=run.run_id)
    assert outcome["ran"] == [run.run_id]
    assert (run_dir / "results.json.corrupt").exists() and read_results(run_dir)["status"] == "tested"


def test_an_interrupted_run_resumes_from_its_last_checkpoint(smoke, tmp_path):
    study, folder, _ = smoke
    run = next(r for r in study.runs if r.experiment == "denoising")
    copy = tmp_path / "study"
    shutil.copytree(folder / "runs" / run.run_id, copy / "runs" / run.run_id)
    steps = read_results(copy / "runs" / run.run_id)["global_step"]
    (copy / "runs" / run.run_id / "results.json").unlink()  # killed after its last checkpoint, before the end
    assert run_status(copy / "runs" / run.run_id) == "partial"
    outcome = run_study(study, copy, only=run.run_id)
    assert outcome["ran"] == [run.run_id]
    assert read_results(copy / "runs" / run.run_id)["global_step"] == steps  # no step trained twice


def test_a_run_locked_by_another_process_is_left_alone(smoke, tmp_path):
    study, _, _ = smoke
    run = study.runs[0]
    with run_lock(tmp_path / "runs" / run.run_id) as mine:
        assert mine
        outcome = run_study(study, tmp_path, only=run.run_id)
    assert outcome["busy"] == [run.run_id] and not outcome["ran"]


def test_another_process_in_progress_results_are_left_alone(smoke, tmp_path):
    """A run's results.json while its fit is tested ("fitted") belongs to the process holding the run's lock:
    a second process skips the run and does not set that file aside."""
    study, folder, _ = smoke
    run = next(r for r in study.runs if r.experiment == "basic_ae")
    copy = tmp_path / "study"
    shutil.copytree(folder / "runs" / run.run_id, copy / "runs" / run.run_id)
    results = copy / "runs" / run.run_id / "results.json"
    results.write_text(json.dumps({**read_results(copy / "runs" / run.run_id), "status": "fitted"}))
    results.with_suffix(".json.corrupt").unlink(missing_ok=True)  # left by another test in the shared folder
    with run_lock(copy / "runs" / run.run_id) as mine:
        assert mine
        outcome = run_study(study, copy, only=run.run_id)
    assert outcome["busy"] == [run.run_id] and results.exists() and not results.with_suffix(".json.corrupt").exists()


def test_a_truncated_last_checkpoint_is_set_aside_and_the_run_goes_back_to_the_last_good_one(smoke, tmp_path):
    """A last.ckpt cut short (a full disk) would fail every rerun the same way: it is set aside instead."""
    study, folder, _ = smoke
    run = next(r for r in study.runs if r.experiment == "basic_ae")
    copy = tmp_path / "study"
    shutil.copytree(folder / "runs" / run.run_id, copy / "runs" / run.run_id)
    run_dir = copy / "runs" / run.run_id
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: 48 * 1024])
    (run_dir / "results.json").unlink()
    outcome = run_study(study, copy, only=run.run_id)
    assert outcome["ran"] == [run.run_id], outcome
    assert read_results(run_dir)["status"] == "tested" and (run_dir / "checkpoints" / "last.ckpt.corrupt").exists()


def test_a_lock_is_released_when_its_process_dies(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom lightning_ae.study.runner import run_lock\n"
            "with run_lock(Path(sys.argv[1])) as mine:\n    print(mine, flush=True)\n    time.sleep(600)\n",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        with run_lock(tmp_path / "run") as mine:
            assert not mine  # held by the other process
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait(timeout=30)
        with run_lock(tmp_path / "run") as mine:
            assert mine  # the kernel released it with the process
    finally:
        holder.kill()


@pytest.mark.slow
def test_two_study_processes_on_one_folder_run_every_run_exactly_once(tmp_path):
    """A user starting the study twice on the same results folder."""
    from conftest import REPO

    def start(name: str) -> subprocess.Popen:
        args = [str(REPO / "configs" / "study" / "smoke.yaml"), "--folder", str(tmp_path / "study")]
        return subprocess.Popen(
            [sys.executable, "-m", "lightning_ae", "study", *args, "--report", str(tmp_path / name)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    processes = [start("report-a"), start("report-b")]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    study = load_study(REPO / "configs" / "study" / "smoke.yaml")
    started = [set(re.findall(r"^\[\d+/\d+\] .* \(([\w-]+)\)", out, re.MULTILINE)) for out in outputs]
    assert not started[0] & started[1], "a run was started by both processes"
    assert started[0] | started[1] == {run.run_id for run in study.runs}
    for run in study.runs:
        assert read_results(tmp_path / "study" / "runs" / run.run_id)["status"] == "tested"


def test_run_ids_are_stable_and_follow_the_config(tmp_path):
    from conftest import REPO

    first = load_study(REPO / "configs" / "study" / "smoke.yaml")
    second = load_study(REPO / "configs" / "study" / "smoke.yaml")
    assert [r.run_id for r in first.runs] == [r.run_id for r in second.runs]
    seeded = load_study(REPO / "configs" / "study" / "smoke.yaml", seeds=2)
    assert len(seeded.runs) == 2 * len(first.runs) and len({r.run_id for r in seeded.runs}) == len(seeded.runs)


def _section(text: str, number: str) -> str:
    return text.split(f"## {number}")[1].split("\n## ")[0]


def test_the_flag_legend_stands_only_under_tables_with_a_flagged_run(smoke, tmp_path):
    """Before, the legend of ⚑ stood under every table, in a study with no flagged run too."""
    study, folder, _ = smoke
    legend = "Flagged runs stay in the tables and out of every sentence."
    markdown, _ = write_report(study, folder, tmp_path / "flagged")  # one epoch each: every run is flagged
    assert markdown.read_text().count(legend) >= 3
    copy = tmp_path / "study"
    shutil.copytree(folder / "runs", copy / "runs")
    for path in (copy / "runs").rglob("results.json"):
        results = json.loads(path.read_text())
        if "convergence" in results:
            results["convergence"].update(converged=True, reason="declared converged by the test")
            results["learned"].update(learned=True, reason="declared learned by the test")
            path.write_text(json.dumps(results))
    markdown, _ = write_report(study, copy, tmp_path / "clean")
    text = markdown.read_text()
    assert legend not in text and "⚑" not in text and "|---|" in text  # tables, no legend


def test_the_report_marks_runs_that_did_not_converge_or_learn_and_leaves_them_out_of_sentences(smoke, tmp_path):
    """One epoch cannot be judged (every smoke run is flagged); declared sound, d'=2 enters the sentences, d'=8 not."""
    study, folder, _ = smoke
    copy = tmp_path / "study"
    shutil.copytree(folder / "runs", copy / "runs")
    by_dim = {r.labels["model.init_args.code_dim"]: r for r in study.runs if r.experiment == "basic_ae"}
    sound = copy / "runs" / by_dim[2].run_id / "results.json"
    results = json.loads(sound.read_text())
    assert results["convergence"]["converged"] is False and "too few epochs" in results["convergence"]["reason"]
    results["convergence"].update(converged=True, reason="declared converged by the test")
    results["learned"].update(learned=True, reason="declared learned by the test")
    sound.write_text(json.dumps(results))
    markdown, _ = write_report(study, copy, tmp_path / "report")
    text = markdown.read_text()
    rows = {
        line.split("|")[2].strip(): line for line in _section(text, "2.1c").splitlines() if line.startswith("| sig")
    }
    assert "⚑" not in rows["2"] and "⚑ not converged" in rows["8"] and "⚑ not learned" in rows["8"]
    sentence = next(p for p in _section(text, "2.1c").split("\n\n") if p.startswith("kNN on the AE's codes"))
    knn = results["ae"]["test/knn_acc"]
    assert f"d'=2 (sigmoid: AE {knn:.4f} against PCA {results['pca']['test/knn_acc']:.4f})" in sentence
    assert "d'=8 (" not in sentence and "Left out as not converged or not learned (⚑): basic_ae[code_dim=8]" in sentence
    # The flagged runs are listed with their reasons at the top, and their records say why.
    assert "| basic_ae[code_dim=8] seed=0 | not converged: too few epochs to judge" in text
    assert "| basic_ae[code_dim=2] seed=0 |" not in text.split("## 2.1a-b")[0]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    flagged = {r["run_id"]: r["flags"] for r in summary["records"]}
    assert flagged[by_dim[2].run_id] == [] and len(flagged[by_dim[8].run_id]) == 2


def test_the_similarity_section_sets_each_run_beside_the_plain_ae_of_the_same_network(smoke, tmp_path):
    """2.3 compares kNN on the similarity AE's codes with the plain basic AE of the same d' (here 8), not d'=2's."""
    study, folder, _ = smoke
    copy = tmp_path / "study"
    shutil.copytree(folder / "runs", copy / "runs")
    basic = {r.labels["model.init_args.code_dim"]: r for r in study.runs if r.experiment == "basic_ae"}
    similarity = next(r for r in study.runs if r.experiment == "similarity")
    sound = {}
    for run in (basic[8], similarity):  # one epoch cannot be judged: declared sound, as above
        path = copy / "runs" / run.run_id / "results.json"
        results = json.loads(path.read_text())
        results["convergence"].update(converged=True, reason="declared converged by the test")
        results["learned"].update(learned=True, reason="declared learned by the test")
        path.write_text(json.dumps(results))
        sound[run.experiment] = results["ae"]["test/knn_acc"]
    markdown, _ = write_report(study, copy, tmp_path / "report")
    section = _section(markdown.read_text(), "2.3")
    row = next(line for line in section.splitlines() if line.startswith("| similarity |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[4] == f"{sound['similarity']:.4f}" and cells[5] == f"{sound['basic_ae']:.4f}"
    assert f"the plain AE of the same network (trained on its own images, no labels) {sound['basic_ae']:.4f}" in section
    assert "weak supervision" in section


def test_a_pipeline_with_denoising_layers_is_its_own_row_in_the_pretraining_table(smoke, tmp_path):
    """Stacked denoising layers (layers.masking) are another recipe: never averaged with the plain pipeline."""
    from conftest import REPO

    study, folder, _ = smoke
    configs = REPO / "configs"
    variant = (
        "  pretrain_sigmoid_denoising:\n"
        f"    pipeline: [{configs / 'pretrain.yaml'}, {configs / 'pretrain_sigmoid.yaml'},\n"
        f"               {configs / 'pretrain_sigmoid_denoising.yaml'}]\n"
        "    overrides: {hidden_dims: [32, 16], train_subset: 500, layers.epochs: 1, frozen.epochs: 1, "
        "finetune.epochs: 1}\n"
    )
    study_file = tmp_path / "smoke_variant.yaml"
    study_file.write_text((configs / "study" / "smoke.yaml").read_text() + variant)
    with_variant = load_study(study_file)
    plain = next(r for r in with_variant.runs if r.experiment == "pretrain_sigmoid")
    masked = next(r for r in with_variant.runs if r.experiment == "pretrain_sigmoid_denoising")
    assert masked.config["layers"]["masking"] == 0.75 and plain.run_id in {r.run_id for r in study.runs}
    # The plain pipeline's results stand in for the variant's, with (b) and (c) set apart to tell the rows apart.
    shutil.copytree(folder, tmp_path / "study")
    shutil.copytree(tmp_path / "study" / "runs" / plain.run_id, tmp_path / "study" / "runs" / masked.run_id)
    for stage, error in (("frozen", 0.0123), ("finetune", 0.0456)):
        results_file = tmp_path / "study" / "runs" / masked.run_id / stage / "results.json"
        results = json.loads(results_file.read_text())
        results["model"]["test/error"] = error
        results_file.write_text(json.dumps(results))
    markdown, _ = write_report(with_variant, tmp_path / "study", tmp_path / "report")
    table = markdown.read_text().split("## 2.4")[1].split("\n\n")[1]
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert sorted(rows) == ["sigmoid", "sigmoid, denoising layers (masking p=0.75)"]
    assert "0.0123" in rows["sigmoid, denoising layers (masking p=0.75)"] and "0.0123" not in rows["sigmoid"]
    assert " ± " not in table  # one run per row: nothing averaged across the two recipes


def test_the_deep_section_names_the_depth_with_the_lowest_error_at_each_code_size(tmp_path):
    """The deepest net is not always the best: the sentence names the depth whose squared error is lowest."""
    from conftest import REPO

    configs = REPO / "configs"
    study_file = tmp_path / "depths.yaml"
    study_file.write_text(
        "name: depths\n"
        "every_run: {trainer.max_epochs: 1, data.train_subset: 500, data.batch_size: 50}\n"
        "experiments:\n"
        "  deep_ae:\n"
        f"    config: [{configs / 'basic_ae.yaml'}, {configs / 'deep_ae.yaml'}]\n"
        "    overrides: {model.init_args.code_dim: 4}\n"
        "    grid: {model.init_args.hidden_dims: [[16], [16, 8]]}\n"
    )
    study = load_study(study_file)
    assert not run_study(study, tmp_path / "study")["failed"]
    # Make the shallower net (L=2) the better one, whatever one epoch gave.
    for run, error in zip(study.runs, (12.5, 20.0), strict=True):
        results_file = tmp_path / "study" / "runs" / run.run_id / "results.json"
        results = json.loads(results_file.read_text())
        results["ae"]["test/mse_per_image"] = error
        results["convergence"]["converged"], results["learned"]["learned"] = True, True
        results_file.write_text(json.dumps(results))
    markdown, _ = write_report(study, tmp_path / "study", tmp_path / "report")
    text = markdown.read_text()
    assert "The deepest AE measured (784-16-8-d', L=3)" in text
    assert "The lowest squared error per image at each d' (by depth): d'=4: L=2, 12.50." in text


SUMMARY_FIELDS = {
    "run_id", "experiment", "stage", "kind", "grid", "overrides", "seed", "model", "code_dim", "status",
    "converged", "learned", "flags", "verdicts", "model_metrics", "pca", "trivial", "epochs", "wall_seconds",
    "device", "device_name", "folder",
}  # fmt: skip


def test_the_summary_json_has_a_record_per_run_and_pipeline_stage_with_every_field(smoke, tmp_path):
    study, folder, _ = smoke
    write_report(study, folder, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    records = summary["records"]
    assert summary["study"] == "smoke" and summary["runs"] == len(study.runs)
    pipeline = next(r for r in study.runs if r.kind == "pretrain")
    stages = [r["stage"] for r in records if r["run_id"] == pipeline.run_id]
    assert stages == ["layer1", "layer2", "frozen", "finetune"]
    assert len(records) == len(study.runs) - 1 + len(stages)
    study_order = list(dict.fromkeys(run.run_id for run in study.runs))
    assert list(dict.fromkeys(r["run_id"] for r in records)) == study_order  # in the study file's order
    for record in records:
        assert set(record) == SUMMARY_FIELDS, set(record) ^ SUMMARY_FIELDS
        assert record["status"] == "tested" and record["epochs"] == 1 and record["wall_seconds"] > 0
        assert record["device"] == "cpu" and record["device_name"] and record["folder"].startswith("runs/")
        assert isinstance(record["converged"], bool) and isinstance(record["learned"], bool)
        assert record["trivial"]["predictor"] in ("mean training image", "class prior")
        for key in ("test/bce_per_pixel", "test/bce_per_image", "test/mse_per_pixel", "test/mse_per_image"):
            assert key in record["model_metrics"] and key in record["pca"]
    for run in study.runs:
        if run.kind == "pretrain":
            continue
        record = next(r for r in records if r["run_id"] == run.run_id)
        results = read_results(folder / "runs" / run.run_id)
        assert record["grid"] == run.labels and record["seed"] == run.seed
        assert record["overrides"]["trainer.max_epochs"] == 1 and record["overrides"]["data.train_subset"] == 500
        assert record["code_dim"] == results["code_dim"] == record["overrides"].get("model.init_args.code_dim", 8)
        for key in ("test/bce_per_pixel", "test/mse_per_image", "test/knn_acc"):
            assert record["model_metrics"][key] == results["ae"][key] and record["pca"][key] == results["pca"][key]
        assert record["trivial"] == results["trivial"]
        assert record["converged"] is results["convergence"]["converged"]
    finetune = next(r for r in records if r["stage"] == "finetune")
    assert finetune["model"] == "Classifier" and finetune["trivial"]["predictor"] == "class prior"
    assert finetune["model_metrics"]["test/error"] is not None


def test_a_sentence_states_the_spread_of_several_seeds():
    from lightning_ae.study.report import spread

    assert spread([0.1, 0.2, 0.3]) == "0.2000 ± 0.1000 (n=3)"
    assert spread([0.25, None]) == "0.2500" and spread([None]) == "not measured"


def test_an_experiment_can_give_its_headline_grid_points_more_seeds(tmp_path):
    from conftest import REPO

    study_file = tmp_path / "seeds.yaml"
    study_file.write_text(
        f"name: seeds\n"
        f"experiments:\n"
        f"  basic_ae:\n"
        f"    config: {REPO / 'configs' / 'basic_ae.yaml'}\n"
        f"    grid: {{model.init_args.code_dim: [2, 32], model.init_args.activation: [sigmoid, relu]}}\n"
        f"    seeds: {{count: 3, where: {{model.init_args.code_dim: [32]}}}}\n"
    )
    runs = load_study(study_file).runs
    counts = {}
    for run in runs:
        point = (run.labels["model.init_args.code_dim"], run.labels["model.init_args.activation"])
        counts.setdefault(point, []).append(run.seed)
    assert counts == {(2, "sigmoid"): [0], (2, "relu"): [0], (32, "sigmoid"): [0, 1, 2], (32, "relu"): [0, 1, 2]}
    assert len(load_study(study_file, seeds=4).runs) == 4 * 4  # never fewer than the study's own seeds
    study_file.write_text(study_file.read_text().replace("code_dim: [32]", "hidden_dims: [[]]"))
    with pytest.raises(ValueError, match=r"seeds.where names \['model.init_args.hidden_dims'\], which are not grid"):
        load_study(study_file)


def test_an_override_inside_a_value_another_override_set_stays_with_its_own_run(tmp_path):
    """every_run sets a whole optimizer; a grid value edits inside it: each run keeps its own copy."""
    from conftest import REPO

    study_file = tmp_path / "nested.yaml"
    study_file.write_text(
        f"name: nested\n"
        f"every_run:\n"
        f"  model.init_args.optimizer: {{class_path: torch.optim.SGD, init_args: {{lr: 1.0}}}}\n"
        f"experiments:\n"
        f"  basic_ae:\n"
        f"    config: {REPO / 'configs' / 'basic_ae.yaml'}\n"
        f"    grid: {{model.init_args.optimizer.init_args.lr: [0.01, 100]}}\n"
    )
    runs = load_study(study_file).runs
    assert [r.config["model"]["init_args"]["optimizer"]["init_args"]["lr"] for r in runs] == [0.01, 100]


def test_an_experiment_composes_a_list_of_config_files_as_the_cli_does(tmp_path):
    """`config:` takes one file or several: mappings merge, `callbacks+` appends, a dict value replaces."""
    from conftest import REPO

    from lightning_ae.study.spec import StudyError

    configs = REPO / "configs"
    study_file = tmp_path / "composed.yaml"
    study_file.write_text(
        f"name: composed\n"
        f"callbacks: {{TSNEPlot: {{max_points: 100}}}}\n"
        f"experiments:\n"
        f"  one_file: {{config: {configs / 'basic_ae.yaml'}}}\n"
        f"  evaluated: {{config: [{configs / 'basic_ae.yaml'}, {configs / 'fragments/evaluation.yaml'}]}}\n"
        f"  gaussian:\n"
        f"    config: [{configs / 'basic_ae.yaml'}, {configs / 'denoising_ae.yaml'},\n"
        f"             {configs / 'fragments/corruption_gaussian.yaml'}]\n"
        f"    overrides: {{data.corruption_args.sigma: 0.5}}\n"
        f"  pipeline: {{pipeline: [{configs / 'pretrain.yaml'}, {configs / 'pretrain_tanh.yaml'}]}}\n"
    )
    one, evaluated, gaussian, pipeline = load_study(study_file).runs
    names = [[c["class_path"].rsplit(".", 1)[-1] for c in r.config["trainer"]["callbacks"]] for r in (one, evaluated)]
    assert names[0] == ["EarlyStopping", "ReconstructionGrid"]
    assert names[1] == [*names[0], "KNNEvaluator", "PCABaseline", "TSNEPlot", "EmbeddingProjector"]
    assert evaluated.config["trainer"]["callbacks"][4]["init_args"] == {"max_points": 100}  # the study's callbacks
    assert one.config["model"] == evaluated.config["model"] and "trainer.callbacks+" not in json.dumps(evaluated.config)
    # The corruption fragment replaces the masking noise's arguments (no `p` left over), as jsonargparse does.
    assert gaussian.config["data"]["corruption"] == "gaussian"
    assert gaussian.config["data"]["corruption_args"] == {"sigma": 0.5}
    assert gaussian.config["trainer"]["callbacks"][-1]["class_path"].endswith("DenoisingReference")
    assert pipeline.config["activation"] == "tanh" and pipeline.config["finetune"]["epochs"] == 50
    assert pipeline.config["frozen"] == {**pipeline.config["layers"], "epochs": 60}
    assert pipeline.config["finetune"]["patience"] == 5

    # A typo in an override is still an error that names it, never a new key.
    study_file.write_text(study_file.read_text().replace("data.corruption_args.sigma", "data.coruption_args.sigma"))
    with pytest.raises(StudyError, match=r"override 'data.coruption_args.sigma': 'data.coruption_args' is not in"):
        load_study(study_file)
    study_file.write_text(study_file.read_text().replace("data.coruption_args.sigma", "data.corruption.sigma"))
    with pytest.raises(StudyError, match=r"'data.corruption' is not a mapping"):
        load_study(study_file)


def test_sigterm_stops_the_whole_study_and_a_rerun_resumes(tmp_path):
    """A signal stops the study, not just its current run: exit 143, no run recorded as failed, no report, the
    session journal says interrupted; running the study again resumes it and finishes every run."""
    from conftest import REPO

    (tmp_path / "signal.yaml").write_text(
        "trainer:\n  callbacks+:\n    - {class_path: signal_at_step.SignalAtStep, init_args: {step: 2}}\n"
    )
    basic = REPO / "configs" / "basic_ae.yaml"
    study_file = tmp_path / "stop.yaml"
    study_file.write_text(
        "name: stop\n"
        "every_run: {trainer.max_epochs: 2, data.train_subset: 500, data.batch_size: 50}\n"
        "experiments:\n"
        f"  first: {{config: [{basic}, {tmp_path / 'signal.yaml'}]}}\n"
        f"  second: {{config: [{basic}]}}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "scripts"), str(REPO)])}
    command = [sys.executable, "-m", "lightning_ae", "study", str(study_file), "--folder", str(tmp_path / "runs")]
    command += ["--report", str(tmp_path / "report")]
    stopped = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "SIGTERM received" in stopped.stderr and "Traceback" not in stopped.stderr
    assert "failed" not in stopped.stdout and not (tmp_path / "report").exists()
    [session] = json.loads((tmp_path / "runs" / "sessions.json").read_text())
    assert session["status"].startswith("interrupted")
    assert session["runs"] == {"done": 0, "ran": 0, "failed": 0, "busy": 0} and session["wall_seconds"] > 0
    study = load_study(study_file)
    assert [run_status(tmp_path / "runs" / "runs" / run.run_id) for run in study.runs] == ["partial", "pending"]

    # The signal came at the first run's last step (one group per epoch, 2 epochs), so its resume has no step
    # left for the signalling callback: it tests, and the second run runs.
    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert all(run_status(tmp_path / "runs" / "runs" / run.run_id) == "done" for run in study.runs)
    # The interrupted session's time is part of the study's wall time: both sessions are counted.
    sessions = json.loads((tmp_path / "runs" / "sessions.json").read_text())
    wall = sum(s["wall_seconds"] for s in sessions) / 60
    assert (
        f"2 study session(s) from {session['started']}, wall time {wall:.1f} min"
        in (tmp_path / "report" / "report.md").read_text()
    )


def test_run_runs_exactly_one_run_with_the_sequential_runners_metrics(smoke, tmp_path, capsys):
    """`study FILE --run RUN_ID` (the command an engine starts per run): that run alone, the same numbers as the
    sequential runner's, no session or report; a finished run is left as it is; a busy one exits 75."""
    from conftest import REPO

    from lightning_ae.cli import main

    study, folder, _ = smoke
    smoke_file = str(REPO / "configs" / "study" / "smoke.yaml")
    run = next(r for r in study.runs if r.experiment == "basic_ae")
    assert main(["study", smoke_file, "--folder", str(tmp_path), "--run", run.run_id]) == 0
    assert f"run {run.run_id}: ran" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.run_id]  # the others are not started
    assert not (tmp_path / "sessions.json").exists()
    ours, sequential = read_results(tmp_path / "runs" / run.run_id), read_results(folder / "runs" / run.run_id)
    for table in ("ae", "pca"):  # every metric but the timings
        assert {k: v for k, v in ours[table].items() if "_us_" not in k} == {
            k: v for k, v in sequential[table].items() if "_us_" not in k
        }

    written = (tmp_path / "runs" / run.run_id / "results.json").stat().st_mtime_ns
    assert main(["study", smoke_file, "--folder", str(tmp_path), "--run", run.run_id]) == 0
    assert f"run {run.run_id}: done" in capsys.readouterr().out
    assert (tmp_path / "runs" / run.run_id / "results.json").stat().st_mtime_ns == written

    other = next(r for r in study.runs if r.experiment == "denoising")
    with run_lock(tmp_path / "runs" / other.run_id) as mine:
        assert mine
        assert main(["study", smoke_file, "--folder", str(tmp_path), "--run", other.run_id]) == 75
    assert read_results(tmp_path / "runs" / other.run_id) is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run", "basic_ae-0000000000"], "is no run of study 'smoke'; `lightning-ae study"),
        (["--run", "x", "--only", "basic_ae"], "--run names one run: give it without --only, --dry-run or --engine."),
    ],
    ids=["unknown id", "with --only"],
)
def test_run_with_an_unknown_id_or_a_selection_is_one_line(extra, message, tmp_path, capsys):
    from conftest import REPO

    from lightning_ae.cli import main

    assert main(["study", str(REPO / "configs" / "study" / "smoke.yaml"), "--folder", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "runs").exists()
