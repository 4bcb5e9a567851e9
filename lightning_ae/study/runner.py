"""Running a study: every run once, resumable, safe to kill; in this process, or on an engine (Ray, SLURM).

Layout under the study folder (default `studies/<name>/`):

    runs/<run id>/run.yaml       the resolved config of the run (what `lightning-ae` is given)
    runs/<run id>/spec.json      experiment, grid values, seed, kind
    runs/<run id>/results.json   written atomically when the run has finished: its presence
                                 (complete and valid) means done
    runs/<run id>/.lock          held (flock) while a process works on the run
    sessions.json                one entry per `lightning-ae study` invocation: when, on which commit and
                                 machine, which part, how long, how it ended (the report's provenance)

A run whose `results.json` is valid is skipped. A run that was interrupted resumes from its
`last.ckpt`. A `results.json` that cannot be read or is incomplete is set aside
(`results.json.corrupt`) and the run redone. Two processes never work on the same run: the
second finds the lock held and moves on; the kernel releases a lock when its process dies.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import fcntl
import fnmatch
import gc
import json
import logging
import sys
import time
import uuid
from argparse import ArgumentError
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning_ae.experiment import StageDiverged, config_checkers, is_callback_name, lightning_cli, run_pipeline
from lightning_ae.files import atomic_write, recorded_checkpoint, resumable_checkpoint, set_aside, try_lock, write_json
from lightning_ae.provenance import git_commit, machine
from lightning_ae.study.engines import duration
from lightning_ae.study.hparams import write_study_hparams
from lightning_ae.study.records import damaged_results, read_results, read_sessions, run_seconds
from lightning_ae.study.spec import RunSpec, Study, StudyError, plain_references

__all__ = ["Engine", "read_results", "read_sessions", "run_lock", "run_seconds", "run_status", "run_study"]

log = logging.getLogger(__name__)


def run_status(run_dir: Path) -> str:
    if read_results(run_dir) is not None:
        return "done"
    if (run_dir / "results.json").exists():
        return "corrupt"
    return "partial" if any(run_dir.glob("**/last.ckpt")) else "pending"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Yields True when this process holds the run's lock, False when another process does."""
    handle = try_lock(run_dir / ".lock")
    if handle is None:
        yield False
        return
    try:
        yield True
    finally:
        handle.close()


def _record_session(folder: Path, session: dict[str, Any]) -> None:
    """Add or update (by id) one session in sessions.json; processes sharing the folder take turns (flock)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".sessions.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            sessions = [s for s in read_sessions(folder) if s.get("id") != session["id"]]
            write_json(folder / "sessions.json", sessions + [session])
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def study_session(folder: Path, only: str | None, engine: str) -> Iterator[dict[str, Any]]:
    """Journal one invocation: started, then finished or interrupted, with its wall time and run counts."""
    session: dict[str, Any] = {
        "id": uuid.uuid4().hex[:12],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        "only": only,
        "engine": {"name": engine},  # the engine adds its cluster, nodes and resources per run
        "status": "running",
    }
    _record_session(folder, session)
    start = time.perf_counter()
    try:
        yield session
        session["status"] = "finished"
    except BaseException as err:
        session["status"] = f"interrupted ({type(err).__name__})"
        raise
    finally:
        session["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        session["wall_seconds"] = round(time.perf_counter() - start, 1)
        _record_session(folder, session)


def plain_checkpoint(run: RunSpec, folder: Path) -> str | None:
    """The best checkpoint of the first of the run's plain autoencoders (`RunSpec.plain_runs`: the same seed
    first) that has finished, or None (with a warning) when none has."""
    for run_id in run.plain_runs:
        results_file = folder / "runs" / run_id / "results.json"
        results = read_results(results_file.parent)
        if results is not None and results.get("status") == "tested":
            checkpoint = recorded_checkpoint(results_file, results.get("best_checkpoint"))
            if checkpoint is not None:
                return str(checkpoint.absolute())
    log.warning(
        "Run %s: none of its plain autoencoders (%s) has finished; it is tested without test/plain_ae_*.",
        run.run_id,
        ", ".join(run.plain_runs),
    )
    return None


def _with_reference(config: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """The config with its DenoisingReference given the plain autoencoder's checkpoint, instead of `auto` (which
    would take the newest finished run in the folder: another run each time, under an engine)."""
    config = copy.deepcopy(config)
    for callback in plain_references(config):
        callback["init_args"] = {**(callback.get("init_args") or {}), "plain_checkpoint": checkpoint}
    return config


def _write_run_files(run: RunSpec, run_dir: Path) -> Path:
    import yaml

    config_file = run_dir / "run.yaml"
    config = _with_reference(run.config, plain_checkpoint(run, run_dir.parent.parent)) if run.plain_runs else run.config
    with atomic_write(config_file, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    write_json(
        run_dir / "spec.json",
        {"experiment": run.experiment, "kind": run.kind, "labels": run.labels, "seed": run.seed, "id": run.run_id},
    )
    return config_file


def execute(run: RunSpec, run_dir: Path) -> None:
    """Train, test and evaluate one run in this process; results.json appears in run_dir when it finished."""
    # Absolute, so that a run resumed from another working directory finds its checkpoint folder under the same
    # name (Lightning forgets which checkpoint is best when that name reads differently).
    run_dir = run_dir.absolute()
    config_file = _write_run_files(run, run_dir)
    if run.kind == "pretrain":
        with contextlib.suppress(StageDiverged):  # a finished run: its results.json says diverged
            run_pipeline(["--config", str(config_file), "--output_dir", str(run_dir)])
        return
    args = ["fit", "--config", str(config_file)]
    # Logs, checkpoints and results.json straight into the run's folder (no name/version subfolders).
    args += ["--trainer.logger.init_args.save_dir", str(run_dir), "--trainer.logger.init_args.name", ""]
    args += ["--trainer.logger.init_args.version", "", "--trainer.enable_progress_bar", "false"]
    # The last good checkpoint (cut-off ones set aside), or none: the run starts afresh.
    if (checkpoint := resumable_checkpoint(run_dir / "checkpoints", f"run {run.run_id}")) is not None:
        args += ["--ckpt_path", str(checkpoint)]
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it also sees the study's own arguments
    try:
        lightning_cli(args)
    finally:
        sys.argv = argv


def check_runs(study: Study) -> None:
    """Every run's config checked as the command that runs it will parse it (a key typo'd in an override, a grid
    value of the wrong type, .nan), before anything runs: a bad study is refused as a whole, not run by run."""
    if unknown := [name for name in study.unused_callbacks if not is_callback_name(name)]:
        raise StudyError(
            f"study file {study.source}: callbacks {unknown} are no callback of lightning-ae or Lightning, and in no "
            "experiment's trainer.callbacks; check the spelling."
        )
    checkers = config_checkers()
    checked: set[tuple[str, str]] = set()
    for run in study.runs:
        point = (run.experiment, json.dumps(run.labels, sort_keys=True, default=str))
        if point in checked:  # the other seeds of a grid point differ only in their seed
            continue
        checked.add(point)
        try:
            checkers[run.kind](run.config)
        except ArgumentError as err:
            raise ArgumentError(None, f"study file {study.source}: run {run.describe()}: {err}") from None
        except ValueError as err:
            raise StudyError(f"study file {study.source}: run {run.describe()}: {err}") from None


def select(study: Study, only: str | None = None) -> list[RunSpec]:
    runs = study.runs
    if only:
        runs = [
            run
            for run in runs
            if fnmatch.fnmatch(run.run_id, only) or fnmatch.fnmatch(run.experiment, only) or only in run.describe()
        ]
    return runs


# An engine runs the given runs of a study folder, adding each run's id to `outcome` under done, ran, failed, busy
# (or interrupted), and what it ran on to the session's "engine" record: `sequential` below, `ray_engine.RayEngine`,
# `slurm_engine.SlurmEngine`.
Engine = Callable[[list[RunSpec], Path, dict[str, list[str]], dict[str, Any]], None]


def sequential(runs: list[RunSpec], folder: Path, outcome: dict[str, list[str]], session: dict[str, Any]) -> None:
    """The default engine: every run in this process, one after another, in the study's order."""
    _run_all(runs, folder, outcome)


def run_study(
    study: Study, folder: Path, only: str | None = None, dry_run: bool = False, engine: Engine = sequential
) -> dict[str, list[str]]:
    """Run what is not done yet; returns run ids by outcome (done, ran, failed, busy)."""
    runs = select(study, only)
    outcome: dict[str, list[str]] = {"done": [], "ran": [], "failed": [], "busy": []}
    if dry_run:
        for number, run in enumerate(runs, start=1):
            status = run_status(folder / "runs" / run.run_id)
            print(f"[{number}/{len(runs)}] {status:8s} {run.run_id}  {run.describe()}")
        return outcome
    read_sessions(folder)  # a damaged journal is refused before anything is written (DamagedJournal)
    with study_session(folder, only, getattr(engine, "name", "sequential")) as session:
        try:
            engine(runs, folder, outcome, session)
        finally:  # an interrupted session records the runs it finished too
            session["runs"] = {name: len(ids) for name, ids in outcome.items()}
        # TensorBoard's HParams tab: one table of the study's runs, its grid keys first (after every session, as
        # engines and restarts add runs).
        write_study_hparams(study, folder)
    return outcome


def find_run(study: Study, run_id: str) -> RunSpec:
    for run in study.runs:
        if run.run_id == run_id:
            return run
    raise StudyError(
        f"--run {run_id!r} is no run of study {study.name!r}; `lightning-ae study {study.source} --dry-run` lists "
        "every run id."
    )


def run_one(run: RunSpec, folder: Path) -> str:
    """Run `run` as `run_study` runs each of its runs (lock, damaged results set aside, resume from the newest
    complete checkpoint, failed.json), in this process, without a session or a report: what an engine starts for
    each run, one child process per run. Returns its outcome: done, ran, failed or busy."""
    outcome: dict[str, list[str]] = {"done": [], "ran": [], "failed": [], "busy": []}
    _run_all([run], folder, outcome)
    return next(name for name, ids in outcome.items() if ids)


def release_memory() -> None:
    """Give the memory of a finished run back to the system before the next run in this process.

    glibc keeps the freed heap pages of large allocations: measured here, a process running the
    smoke runs one after another grew by about 85 MB per run without this and stayed flat with it.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _run_all(runs: list[RunSpec], folder: Path, outcome: dict[str, list[str]]) -> None:
    durations: list[float] = []
    for number, run in enumerate(runs, start=1):
        run_dir = folder / "runs" / run.run_id
        if read_results(run_dir) is not None:
            outcome["done"].append(run.run_id)
            continue
        with run_lock(run_dir) as mine:
            if not mine:
                print(f"[{number}/{len(runs)}] {run.describe()}: another process is running it; skipped")
                outcome["busy"].append(run.run_id)
                continue
            if read_results(run_dir) is not None:  # finished by another process since the check above
                outcome["done"].append(run.run_id)
                continue
            # Only under the lock: an unlocked look could take another process's results.json mid-run for a bad one.
            if (run_dir / "results.json").exists():  # unreadable or incomplete: never read it, redo the run
                set_aside(run_dir / "results.json", damaged_results(run_dir) or "incomplete: never tested")
            remaining = sum(1 for r in runs[number - 1 :] if read_results(folder / "runs" / r.run_id) is None)
            eta = f", ETA {duration(remaining * sum(durations) / len(durations))}" if durations else ""
            print(f"[{number}/{len(runs)}] {run.describe()} ({run.run_id}){eta}", flush=True)
            start = time.perf_counter()
            try:
                execute(run, run_dir)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # one failed run must not stop the study; it is reported
                log.exception("Run %s failed", run.run_id)
                write_json(run_dir / "failed.json", {"error": f"{type(err).__name__}: {err}"})
                print(f"    failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                outcome["failed"].append(run.run_id)
                continue
            finally:
                release_memory()
            durations.append(time.perf_counter() - start)
            (run_dir / "failed.json").unlink(missing_ok=True)
            outcome["ran"].append(run.run_id)
            print(f"    done in {duration(durations[-1])}", flush=True)


HEADLINES = ("test/bce_per_pixel", "test/mse_per_pixel", "test/error")


def headline(results: dict[str, Any]) -> str:
    """The one number that says how a finished run did: its test reconstruction error or classification error."""
    if results.get("status") == "diverged":
        return "diverged"
    if "stages" in results:  # a pre-training pipeline: the fine-tuned classifier
        error = (results["stages"].get("finetune") or {}).get("test/error")
        return f"finetune test/error {error:.4f}" if error is not None else ""
    table = results.get("ae") or results.get("model") or {}
    for key in HEADLINES:
        if table.get(key) is not None:
            return f"{key} {table[key]:.4f}"
    return ""


def summary_table(runs: list[RunSpec], folder: Path) -> str:
    """One line per run: its state, wall time and headline number (printed when a study ends)."""
    lines = [f"{'run':60s} {'state':8s} {'minutes':>7s}  result"]
    for run in runs:
        results = read_results(folder / "runs" / run.run_id)
        state = run_status(folder / "runs" / run.run_id)
        if results is None:
            lines.append(f"{run.describe()[:60]:60s} {state:8s} {'':>7s}")
            continue
        seconds = run_seconds(results)
        minutes = f"{seconds / 60:7.1f}" if seconds is not None else f"{'':>7s}"
        lines.append(f"{run.describe()[:60]:60s} {state:8s} {minutes}  {headline(results)}")
    return "\n".join(lines)
