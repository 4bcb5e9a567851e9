"""`lightning-ae study FILE --engine slurm`: the pending runs as one SLURM job array, through submitit.

Each array task runs the run's child command (`engines.ChildCommand`). Preempted or timed out, a task stops its
child with SIGTERM (checkpoint saved) and submitit requeues it; the requeued task resumes from that checkpoint.
Lightning's own SLURM requeue is turned off in the child (`strategies.REQUEUE_BY_ENGINE`), so that one preemption
is one requeue. The command waits for the array, printing each run as it ends, then writes the report; Ctrl+C
cancels the array (every run stops with its checkpoint) and ends with 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_ae.experiment import REQUEUE_BY_ENGINE
from lightning_ae.files import write_json
from lightning_ae.study import engines
from lightning_ae.study.spec import RunSpec

POLL_SECONDS = 5.0  # how often the driver asks SLURM (sacct) how the array stands


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise engines.EngineUnavailable(
            "--engine slurm needs submitit: pip install 'lightning-ae[slurm]' (or `make install`, which installs it)."
        ) from None
    return submitit


@dataclass
class RunJob:
    """One array task: the run's child command; on preemption or time-out, the child stopped and the task requeued."""

    command: list[str]
    log_file: str
    threads: int
    _child: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def __call__(self) -> int:
        os.environ[REQUEUE_BY_ENGINE] = "submitit"
        os.environ.setdefault("OMP_NUM_THREADS", str(self.threads))  # SLURM sets no thread count; Ray does
        return engines.run_until_it_ends(self.command, Path(self.log_file), started=self._started)

    def _started(self, child: subprocess.Popen) -> None:
        self._child = child

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on SIGUSR2 (time-out or preemption): the child saves its checkpoint, then the same
        command is requeued, and resumes from it."""
        from submitit.helpers import DelayedSubmission

        if self._child is not None:
            engines.stop(self._child)
        return DelayedSubmission(RunJob(self.command, self.log_file, self.threads))

    def __getstate__(self) -> dict[str, Any]:  # pickled by submitit: without the process
        return {**self.__dict__, "_child": None}


@dataclass
class SlurmEngine:
    """Submits the pending runs as one job array and waits for it; `cluster="local"` runs the same array through
    submitit's local executor (a check of a study's setup on a machine without SLURM)."""

    command: engines.ChildCommand
    partition: str | None = None
    time_min: int = 240
    max_parallel: int | None = None
    cpus_per_run: int = 4
    gpus_per_run: int = 0
    cluster: str = "slurm"

    name = "slurm"

    def __call__(self, runs: list[RunSpec], folder: Path, outcome: dict[str, list[str]], session: dict) -> None:
        submitit = import_submitit()
        pending = engines.pending_runs(runs, folder, outcome)
        if not pending:
            return
        executor = submitit.AutoExecutor(folder=folder / "slurm" / "%j", cluster=self.cluster)
        executor.update_parameters(
            name=f"lightning-ae-{folder.name}",
            timeout_min=self.time_min,
            cpus_per_task=self.cpus_per_run,
            gpus_per_node=self.gpus_per_run,
            stderr_to_stdout=True,
        )
        if self.cluster == "slurm":
            executor.update_parameters(
                slurm_partition=self.partition,
                slurm_array_parallelism=self.max_parallel or len(pending),
                slurm_signal_delay_s=engines.STOP_GRACE_SECONDS,  # SIGUSR2 this long before the time limit
            )
        session["engine"] = {
            "name": "slurm",
            "cluster": self.cluster,
            "partition": self.partition,
            "time_min": self.time_min,
            "max_parallel": self.max_parallel,
            "per_run": {"cpus": self.cpus_per_run, "gpus": self.gpus_per_run},
            "job_ids": [],
        }
        waits_for = engines.references(pending)
        # Two arrays when some runs compare with others (a denoising run with its plain autoencoder): those first.
        waves = [[r for r in pending if r.run_id not in waits_for], [r for r in pending if r.run_id in waits_for]]
        progress = engines.Progress(total=len(runs), done=len(outcome["done"]), slots=self.max_parallel or len(pending))
        for wave in (w for w in waves if w):
            self._run_array(executor, wave, folder, outcome, session, progress)

    def _run_array(
        self,
        executor: Any,
        runs: list[RunSpec],
        folder: Path,
        outcome: dict[str, list[str]],
        session: dict,
        progress: engines.Progress,
    ) -> None:
        jobs: dict[Any, RunSpec] = {}
        with engines.signals_deferred() as received, executor.batch():
            for run in runs:
                log_file = folder / "runs" / run.run_id / engines.ENGINE_LOG
                jobs[executor.submit(RunJob(self.command(run.run_id), str(log_file), self.cpus_per_run))] = run
        if received:
            self._stop(jobs)
            signal.raise_signal(received[0])
        session["engine"]["job_ids"] += [job.job_id for job in jobs]
        print(f"submitit ({self.cluster}): {len(jobs)} run(s) submitted as array {next(iter(jobs)).job_id}", flush=True)
        for run in runs:
            progress.started(run)
        try:
            with engines.signals_raise_interrupt():
                while jobs:
                    for job in [job for job in jobs if job.done()]:
                        run = jobs.pop(job)
                        result = self._outcome(job, run, folder)
                        outcome.setdefault(result, []).append(run.run_id)
                        progress.ended(run, result)
                    if jobs:
                        time.sleep(POLL_SECONDS if self.cluster == "slurm" else 0.5)
        except KeyboardInterrupt as interrupt:
            self._stop(jobs)
            signal.raise_signal(interrupt.args[0] if interrupt.args else signal.SIGINT)
            raise

    @staticmethod
    def _outcome(job: Any, run: RunSpec, folder: Path) -> str:
        try:
            code = job.result()
        except Exception as err:  # the task was lost (ChildLost), cancelled or ran out of requeues
            message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            write_json(folder / "runs" / run.run_id / "failed.json", {"error": f"job {job.job_id}: {message}"})
            return "failed"
        return engines.OUTCOME_OF_EXIT[code]

    @staticmethod
    def _stop(jobs: dict) -> None:
        """scancel: SLURM sends SIGTERM to each task's processes, the run's child among them: it saves its
        checkpoint and exits."""
        print(f"cancelling {len(jobs)} run(s): each saves its checkpoint...", flush=True)
        with engines.signals_deferred():
            for job in jobs:
                job.cancel(check=False)
            deadline = time.monotonic() + engines.STOP_GRACE_SECONDS
            while any(not job.done() for job in jobs) and time.monotonic() < deadline:
                time.sleep(1.0)
