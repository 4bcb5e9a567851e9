"""`lightning-ae study FILE --engine ray`: every pending run one Ray task, on a local cluster or a running one.

Each task runs the run's child command (`engines.ChildCommand`) and returns its exit status. Ray gives each task the
threads (`OMP_NUM_THREADS`) and GPUs (`CUDA_VISIBLE_DEVICES`) it asked for. A task whose worker or child was killed
is retried and resumes from the run's checkpoint; a run that raised wrote `failed.json` and is not retried. On Ctrl+C
or SIGTERM every task is cancelled, each stops its child with SIGTERM (checkpoint saved) and the command ends with
130 or 143, every run resumable.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_ae.files import write_json
from lightning_ae.study import engines
from lightning_ae.study.spec import RunSpec

TASK_RETRIES = 3  # a lost worker or child, retried this many times before the run counts as failed
STOP_SECONDS = engines.STOP_GRACE_SECONDS + 30  # how long the driver waits for cancelled tasks to stop their runs


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise engines.EngineUnavailable(
            "--engine ray needs Ray: pip install 'lightning-ae[ray]' (or `make install`, which installs it)."
        ) from None
    return ray


def _task(command: list[str], log_file: str) -> int:
    """One run, in a Ray worker: its child's exit status, or `ChildLost` (which Ray retries)."""
    return engines.run_until_it_ends(command, Path(log_file))


@dataclass
class RayEngine:
    """Runs a study's pending runs as Ray tasks; `address` None starts a local cluster on this machine's cores."""

    command: engines.ChildCommand
    address: str | None = None
    cpus_per_run: float | None = None
    gpus_per_run: float = 0.0

    name = "ray"

    def __call__(self, runs: list[RunSpec], folder: Path, outcome: dict[str, list[str]], session: dict) -> None:
        ray = import_ray()
        pending = engines.pending_runs(runs, folder, outcome)
        if not pending:
            return
        with engines.signals_deferred() as received:
            # Ray's own processes (GCS, raylet, dashboard) say nothing unless something goes wrong.
            ray.init(address=self.address, log_to_driver=False, logging_level="WARNING", include_dashboard=False)
        try:
            if received:  # a Ctrl+C while the cluster was starting: stop now, nothing ran
                signal.raise_signal(received[0])
            self._run(ray, pending, folder, outcome, session)
        finally:
            ray.shutdown()

    def _run(self, ray: Any, runs: list[RunSpec], folder: Path, outcome: dict[str, list[str]], session: dict) -> None:
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1))
        cpus_per_run = self.cpus_per_run or engines.default_cpus_per_run(cpus, len(runs))
        if cpus_per_run > cpus:
            raise engines.EngineUnavailable(
                f"--cpus-per-run {cpus_per_run:g} is more than the cluster's {cpus:g} CPUs: no run could start."
            )
        if self.gpus_per_run > float(resources.get("GPU", 0)):
            raise engines.EngineUnavailable(
                f"--gpus-per-run {self.gpus_per_run:g} is more than the cluster's {resources.get('GPU', 0):g} GPUs: "
                "no run could start."
            )
        slots = int(cpus // cpus_per_run)
        if self.gpus_per_run:
            slots = min(slots, int(float(resources["GPU"]) // self.gpus_per_run))
        session["engine"] = {
            "name": "ray",
            "address": self.address or "local",
            "nodes": len([node for node in ray.nodes() if node.get("Alive")]),
            "cpus": cpus,
            "gpus": float(resources.get("GPU", 0)),
            "per_run": {"cpus": cpus_per_run, "gpus": self.gpus_per_run},
            "parallel_runs": slots,
        }
        print(
            f"ray: {session['engine']['nodes']} node(s), {cpus:g} CPUs, {resources.get('GPU', 0):g} GPUs; "
            f"{cpus_per_run:g} CPU(s) and {self.gpus_per_run:g} GPU(s) per run, {slots} at a time",
            flush=True,
        )
        task = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=[engines.ChildLost])(_task)
        task = task.options(num_cpus=cpus_per_run, num_gpus=self.gpus_per_run)
        waits_for = engines.references(runs)
        progress = engines.Progress(total=len(runs) + len(outcome["done"]), done=len(outcome["done"]), slots=slots)
        queue, in_flight = engines.longest_first(runs), {}
        finished: set[str] = set()
        try:
            with engines.signals_raise_interrupt():
                while queue or in_flight:
                    for run in [r for r in queue if not (waits_for.get(r.run_id, set()) - finished)]:
                        if len(in_flight) >= slots:
                            break
                        queue.remove(run)
                        log_file = folder / "runs" / run.run_id / engines.ENGINE_LOG
                        in_flight[task.remote(self.command(run.run_id), str(log_file))] = run
                        progress.started(run)
                    ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                    for ref in ready:
                        run = in_flight.pop(ref)
                        result = self._outcome(ray, ref, run, folder)
                        outcome.setdefault(result, []).append(run.run_id)
                        finished.add(run.run_id)
                        progress.ended(run, result)
        except KeyboardInterrupt as interrupt:
            self._stop(ray, in_flight)
            signal.raise_signal(interrupt.args[0] if interrupt.args else signal.SIGINT)
            raise

    @staticmethod
    def _outcome(ray: Any, ref: Any, run: RunSpec, folder: Path) -> str:
        try:
            code = ray.get(ref)
        except ray.exceptions.RayError as err:  # lost TASK_RETRIES + 1 times: the run failed, say why
            cause = err.cause if isinstance(getattr(err, "cause", None), engines.ChildLost) else err
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            write_json(
                folder / "runs" / run.run_id / "failed.json",
                {"error": f"lost {TASK_RETRIES + 1} times: {message}"},
            )
            return "failed"
        return engines.OUTCOME_OF_EXIT[code]

    @staticmethod
    def _stop(ray: Any, in_flight: dict) -> None:
        """Cancel every task: each stops its child with SIGTERM, which saves a checkpoint and exits 143."""
        print(f"stopping {len(in_flight)} run(s): each saves its checkpoint...", flush=True)
        for ref in in_flight:
            ray.cancel(ref)
        deadline = time.monotonic() + STOP_SECONDS
        with engines.signals_deferred():  # a second Ctrl+C must not leave the children without their stop
            remaining = list(in_flight)
            while remaining and time.monotonic() < deadline:
                _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=1.0)
