"""Study engines: Ray (a local cluster on this machine) and SLURM (submitit's local executor), against the sequential
runner; a Ctrl+C, a run that raises and a killed worker; the settings and a missing extra as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lightning_ae.study.engines import references
from lightning_ae.study.runner import read_results, run_study
from lightning_ae.study.spec import load_study

SMOKE = REPO / "configs" / "study" / "smoke.yaml"


def lightning_ae(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_ae", *args], cwd=REPO, text=True, start_new_session=True, **kwargs
    )


def metrics(results: dict) -> dict:
    """Every metric of a results.json but the timings and where it ran."""
    tables = {name: table for name, table in results.items() if isinstance(table, dict) and name != "config"}
    if "stages" in results:
        tables = {name: stage for name, stage in results["stages"].items()}
    return {
        name: {k: v for k, v in table.items() if isinstance(v, int | float) and "_us_" not in k and "second" not in k}
        for name, table in tables.items()
    }


def small_study(tmp_path: Path, name: str, experiments: str, epochs: int = 2, images: int = 1000) -> Path:
    """A study of basic autoencoders on `images` training images (no evaluation callbacks: the runs are the point)."""
    study = tmp_path / f"{name}.yaml"
    study.write_text(
        f"name: {name}\ndescription: {name}\n"
        f"every_run: {{trainer.max_epochs: {epochs}, data.train_subset: {images}, data.batch_size: 100}}\n"
        f"experiments:\n{experiments}"
    )
    return study


BASIC_AE = REPO / "configs" / "basic_ae.yaml"
BASIC = f"  basic_ae:\n    config: [{BASIC_AE}]\n    grid: {{model.init_args.code_dim: [2, 8]}}\n"


def children_of(folder: Path) -> list[int]:
    """The pids of the run processes (`study ... --run`) working in `folder`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--run" in command and str(folder).encode() in command:
                pids.append(int(entry.name))
    return pids


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_ray_runs_the_smoke_study_with_the_sequential_runners_metrics(tmp_path):
    """A fresh local cluster of this machine's cores; each run a task with as many threads as this process's torch:
    every run's every metric as the sequential runner's, the engine recorded in sessions.json, the report written."""
    study = load_study(SMOKE)
    assert not run_study(study, tmp_path / "sequential")["failed"]
    threads = torch.get_num_threads()
    ray = lightning_ae(
        "study", str(SMOKE), "--engine", "ray", "--cpus-per-run", str(threads), "--folder", str(tmp_path / "ray"),
        "--report", str(tmp_path / "report"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = ray.communicate(timeout=900)[0]
    assert ray.returncode == 0, output
    assert f"{threads:g} CPU(s) and 0 GPU(s) per run" in output and "6 ran, 0 failed" in output
    for run in study.runs:
        ours, theirs = (
            read_results(tmp_path / "ray" / "runs" / run.run_id),
            read_results(tmp_path / "sequential" / "runs" / run.run_id),
        )
        assert metrics(ours) == metrics(theirs), run.describe()
    # The denoising runs waited for their plain autoencoder, and compared with it.
    for run_id in references(study.runs):
        assert "test/plain_ae_bce_per_pixel" in read_results(tmp_path / "ray" / "runs" / run_id)["ae"]
    (session,) = json.loads((tmp_path / "ray" / "sessions.json").read_text())
    assert session["status"] == "finished" and session["runs"]["ran"] == 6
    engine = session["engine"]
    assert engine["name"] == "ray" and engine["address"] == "local" and engine["nodes"] == 1
    assert engine["per_run"] == {"cpus": threads, "gpus": 0.0}
    assert (tmp_path / "report" / "report.md").is_file()
    assert not children_of(tmp_path / "ray")


@pytest.mark.slow
def test_ctrl_c_stops_every_run_with_its_checkpoint_and_a_rerun_resumes(tmp_path):
    study_file = small_study(tmp_path, "stopped", BASIC.replace("[2, 8]", "[2, 8, 16]"), epochs=30, images=2000)
    folder = tmp_path / "study"
    args = ["study", str(study_file), "--engine", "ray", "--cpus-per-run", "1", "--folder", str(folder)]
    args += ["--report", str(tmp_path / "report")]
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = lightning_ae(*args, stdout=out, stderr=subprocess.STDOUT)
        try:
            # Two runs in flight, each with an epoch behind it.
            wait_for(lambda: len(list(folder.glob("runs/*/checkpoints/last.ckpt"))) >= 2, 300, "two runs training")
            running = children_of(folder)
            assert len(running) == 2
            driver.send_signal(signal.SIGINT)
            assert driver.wait(timeout=240) == 130, log.read_text()
        finally:
            driver.kill()
    text = log.read_text()
    assert "stopping 2 run(s): each saves its checkpoint" in text and "Traceback" not in text
    assert not children_of(folder)  # every child ended, none left training as an orphan
    stopped = [p.parent.parent for p in folder.glob("runs/*/checkpoints/last.ckpt")]
    assert len(stopped) == 2 and not [r for r in stopped if (r / "results.json").exists()]
    for run_dir in stopped:
        assert "SIGTERM received" in (run_dir / "engine.log").read_text()  # stopped by its task, not killed
    (session,) = json.loads((folder / "sessions.json").read_text())
    assert session["status"].startswith("interrupted")

    checkpoints = {
        run_dir: torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False) for run_dir in stopped
    }
    rerun = lightning_ae(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, output
    for run_dir, checkpoint in checkpoints.items():
        # It went on from its checkpoint: the epochs before the stop are not trained again.
        log_text = (run_dir / "engine.log").read_text()
        assert "Restored all states from the checkpoint" in log_text or "Restoring states" in log_text, log_text
        assert read_results(run_dir)["status"] == "tested" and checkpoint["epoch"] >= 1


@pytest.mark.slow
def test_a_run_that_raises_fails_alone_and_a_killed_worker_is_retried_and_resumes(tmp_path):
    broken = f"  broken:\n    config: [{BASIC_AE}]\n    overrides: {{data.data_dir: {tmp_path / 'no-such-folder'}}}\n"
    study_file = small_study(tmp_path, "faults", BASIC + broken, epochs=8, images=2000)
    folder = tmp_path / "study"
    args = ["study", str(study_file), "--engine", "ray", "--cpus-per-run", "1", "--folder", str(folder)]
    driver = lightning_ae(*args, "--report", str(tmp_path / "report"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: list(folder.glob("runs/basic_ae-*/checkpoints/last.ckpt")), 300, "a run with a checkpoint")
        run_dir = next(folder.glob("runs/basic_ae-*/checkpoints/last.ckpt")).parent.parent
        (child,) = [
            pid for pid in children_of(folder) if run_dir.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        worker = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent: a Ray worker
        os.kill(worker, signal.SIGKILL)
        output = driver.communicate(timeout=900)[0]
    finally:
        driver.kill()
    assert driver.returncode == 1, output  # one run failed
    study = load_study(study_file)
    broken_run = next(r for r in study.runs if r.experiment == "broken")
    failure = json.loads((folder / "runs" / broken_run.run_id / "failed.json").read_text())
    assert "no-such-folder" in failure["error"] and read_results(folder / "runs" / broken_run.run_id) is None
    assert (folder / "runs" / broken_run.run_id / "engine.log").read_text().count("\n$ ") == 1  # not retried
    for run in study.runs:
        if run.experiment == "basic_ae":
            assert read_results(folder / "runs" / run.run_id)["status"] == "tested"
    killed_log = (run_dir / "engine.log").read_text()
    assert killed_log.count("\n$ ") >= 2, killed_log  # retried
    assert "Restored all states from the checkpoint" in killed_log or "Restoring states" in killed_log, killed_log
    assert "1 failed" in output and not children_of(folder)


@pytest.mark.slow
def test_slurm_engine_runs_two_runs_as_one_array_through_submitits_local_executor(tmp_path):
    study_file = small_study(tmp_path, "array", BASIC, epochs=1, images=500)
    folder = tmp_path / "study"
    args = ["study", str(study_file), "--engine", "slurm", "--slurm-local", "--cpus-per-run", "1"]
    driver = lightning_ae(
        *args, "--folder", str(folder), "--report", str(tmp_path / "report"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = driver.communicate(timeout=600)[0]
    assert driver.returncode == 0, output
    assert "2 run(s) submitted as array" in output and "2 ran, 0 failed" in output
    for run in load_study(study_file).runs:
        assert read_results(folder / "runs" / run.run_id)["status"] == "tested"
    (session,) = json.loads((folder / "sessions.json").read_text())
    engine = session["engine"]
    assert engine["name"] == "slurm" and engine["cluster"] == "local" and len(engine["job_ids"]) == 2
    assert engine["per_run"] == {"cpus": 1, "gpus": 0}


def test_an_engine_that_requeues_turns_lightnings_own_slurm_requeue_off(monkeypatch):
    import pytorch_lightning as pl

    from lightning_ae.strategies import REQUEUE_BY_ENGINE, leave_requeue_to_the_engine

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "lightning-ae-study")
    for by_engine in (False, True):
        if by_engine:
            monkeypatch.setenv(REQUEUE_BY_ENGINE, "submitit")
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
        leave_requeue_to_the_engine(trainer)
        environment = trainer._accelerator_connector.cluster_environment
        assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is not by_engine


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cpus-per-run", "2"], "--cpus-per-run: not a setting of --engine sequential"),
        (["--engine", "ray", "--partition", "gpu"], "--partition: not a setting of --engine ray"),
        (["--engine", "ray", "--cpus-per-run", "0"], "--cpus-per-run 0 is not valid; valid: a number above 0."),
        (["--engine", "slurm", "--slurm-local", "--gpus-per-run", "0.5"], "SLURM allocates whole CPUs and GPUs"),
        (["--engine", "slurm"], "--engine slurm: no `sbatch` on this machine"),
        (["--engine", "ray", "--run", "x"], "--run names one run: give it without --only, --dry-run or --engine."),
    ],
    ids=["sequential-cpus", "ray-partition", "zero-cpus", "slurm-fraction", "no-sbatch", "run-with-engine"],
)
def test_engine_settings_are_checked_in_one_line_before_anything_runs(extra, message, tmp_path, capsys, monkeypatch):
    from lightning_ae.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert main(["study", str(SMOKE), "--folder", str(tmp_path / "study"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "study").exists()


@pytest.mark.parametrize(("engine", "extra"), [("ray", "ray"), ("slurm", "submitit")])
def test_an_engine_without_its_extra_is_one_line_naming_it(engine, extra, tmp_path, capsys, monkeypatch):
    from lightning_ae.cli import main

    monkeypatch.setitem(sys.modules, extra, None)  # as if not installed: import raises ImportError
    args = ["study", str(SMOKE), "--folder", str(tmp_path / "study"), "--engine", engine, "--slurm-local"]
    assert main(args[:-1] if engine == "ray" else args) == 2
    err = capsys.readouterr().err
    assert f"pip install 'lightning-ae[{engine}]'" in err and err.count("\n") == 1
    assert not (tmp_path / "study").exists()


def test_denoising_runs_wait_for_the_plain_autoencoder_of_their_network():
    study = load_study(SMOKE)
    plain = {
        r.run_id for r in study.runs if r.experiment == "basic_ae" and r.config["model"]["init_args"]["code_dim"] == 8
    }
    denoising = {r.run_id for r in study.runs if r.experiment == "denoising"}
    assert references(study.runs) == dict.fromkeys(denoising, plain)


@pytest.mark.slow
def test_each_denoising_run_is_compared_with_the_plain_run_of_its_own_seed(tmp_path):
    """The reference is resolved by the runner (`RunSpec.plain_runs`, the same seed first), not the newest finished
    run in the folder: the same under any engine and in any order."""
    denoising = REPO / "configs" / "denoising_ae.yaml"
    experiments = (
        f"  basic_ae: {{config: [{BASIC_AE}], overrides: {{model.init_args.code_dim: 8}}}}\n"
        f"  denoising: {{config: [{BASIC_AE}, {denoising}], overrides: {{model.init_args.code_dim: 8}}}}\n"
    )
    study_file = small_study(tmp_path, "references", experiments + "seeds: 2\n", epochs=1, images=300)
    study = load_study(study_file)
    plain = {run.seed: run.run_id for run in study.runs if run.experiment == "basic_ae"}
    assert {run.seed: run.plain_runs[0] for run in study.runs if run.experiment == "denoising"} == plain
    outcome = run_study(study, tmp_path / "study")
    assert not outcome["failed"] and len(outcome["ran"]) == 4
    for run in study.runs:
        if run.experiment == "denoising":
            results = read_results(tmp_path / "study" / "runs" / run.run_id)
            (reference,) = [
                c["init_args"]["plain_checkpoint"]
                for c in results["config"]["trainer"]["callbacks"]
                if c["class_path"].endswith("DenoisingReference")
            ]
            assert f"/runs/{plain[run.seed]}/checkpoints/" in reference
            assert "test/plain_ae_bce_per_pixel" in results["ae"]
