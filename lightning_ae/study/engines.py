"""What the parallel study engines (Ray, SLURM) share: one child process per run, its exit codes, the order of runs
that need another's results, and the progress lines.

An engine never trains in its own process: each run is `lightning-ae study FILE --run RUN_ID` in a child process
(the lock, the damaged files set aside, the resume and `failed.json` are that command's), so that memory and GPU
memory go back to the system when a run ends and a signal reaches exactly the run it is meant for.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_ae.study.spec import RunSpec

EXIT_BUSY = 75  # EX_TEMPFAIL (sysexits.h): another process holds the run's lock; try again later
EXIT_INTERRUPTED = (130, 143)  # the child stopped on SIGINT or SIGTERM, its checkpoint saved: resumable
BUSY_WAIT_SECONDS = 150.0  # how long a task waits for a run's lock (a killed task's child still saving) to free
STOP_GRACE_SECONDS = 120.0  # how long a stopped child may take to save its checkpoint before it is killed
ENGINE_LOG = "engine.log"  # in each run's folder: the child's output, every attempt appended


class EngineUnavailable(ValueError):
    """The engine's extra is not installed, or its settings cannot work on its cluster: one line that says how."""


class ChildLost(RuntimeError):
    """The run's process ended without an outcome (killed by a signal, out of memory): the engine retries it, and
    the retry resumes from its newest complete checkpoint."""


@dataclass(frozen=True)
class ChildCommand:
    """`lightning-ae study FILE --run RUN_ID` for one study: what an engine starts for each run."""

    study_file: Path
    folder: Path
    seeds: int | None = None

    def __call__(self, run_id: str) -> list[str]:
        command = [sys.executable, "-m", "lightning_ae", "study", str(self.study_file.absolute())]
        command += ["--folder", str(self.folder.absolute()), "--run", run_id]
        return command + (["--seeds", str(self.seeds)] if self.seeds is not None else [])


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (a killed Ray worker), so that the
    run saves its checkpoint and frees its lock instead of training on as an orphan."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the child outlives a killed worker
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(child: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> int:
    """SIGTERM: the run saves its checkpoint and exits 143; killed if it has not within `grace` seconds."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


def run_child(command: list[str], log_file: Path, started: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Run `command` to its end, its output appended to `log_file`; returns its exit status.

    It polls rather than blocks in `wait()`: a cancelled Ray task learns of it by a KeyboardInterrupt raised between
    two Python instructions, which a blocking wait would never reach. On that, or any exception, the child is stopped
    with SIGTERM (checkpoint saved) before the exception goes on."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        # Its own session: a Ctrl+C on the terminal reaches the engine, which stops each run once, not twice.
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        if started is not None:
            started(child)
        try:
            while child.poll() is None:
                time.sleep(0.2)
        except BaseException:
            stop(child)
            raise
    return child.returncode


# What a child's exit status says of its run; 130/143: stopped from outside (not by the engine), resumable.
OUTCOME_OF_EXIT = {0: "ran", 1: "failed", EXIT_BUSY: "busy"} | dict.fromkeys(EXIT_INTERRUPTED, "interrupted")


def run_until_it_ends(command: list[str], log_file: Path, **kwargs) -> int:
    """One run's child, started again while another process holds its lock (exit 75) for up to BUSY_WAIT_SECONDS:
    a retried task can start while the child of the attempt before is still saving. Returns 0 (finished), 1
    (failed.json written), 75 (still busy) or 130/143 (stopped by a signal, resumable); raises `ChildLost` for a
    child that was killed, for the engine to retry."""
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while True:
        code = run_child(command, log_file, **kwargs)
        if code == EXIT_BUSY and time.monotonic() < deadline:
            time.sleep(2.0)
            continue
        if code in OUTCOME_OF_EXIT:
            return code
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit status {code}"
        raise ChildLost(f"the run's process was {how}; its output is in {log_file}")


def references(runs: list[RunSpec]) -> dict[str, set[str]]:
    """For each run, the runs of the same study it reads the results of, which a parallel engine must end first:
    a denoising run's plain autoencoders (`RunSpec.plain_runs`). The sequential runner needs no such order: studies
    list the plain runs first."""
    return {run.run_id: set(run.plain_runs) for run in runs if run.plain_runs}


def longest_first(runs: list[RunSpec]) -> list[RunSpec]:
    """The pre-training pipelines (several trainings each) first, the rest in the study's order: when runs share
    the cores, a long run started last would leave the other cores idle while it ends alone."""
    return sorted(runs, key=lambda run: run.kind != "pretrain")


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """The engine's lines on the terminal: each run started and ended, with the counts done / running / pending, and
    an estimate of the time left from the runs finished so far and the runs in flight."""

    def __init__(self, total: int, done: int, slots: int) -> None:
        self.total, self.done, self.slots = total, done, slots
        self.running: dict[str, float] = {}
        self.durations: list[float] = []

    def counts(self) -> str:
        pending = self.total - self.done - len(self.running)
        text = f"{self.done} done, {len(self.running)} running, {pending} pending"
        if self.durations and pending + len(self.running):
            mean = sum(self.durations) / len(self.durations)
            text += f", ETA {duration(mean * (pending + len(self.running)) / max(1, self.slots))}"
        return text

    def started(self, run: RunSpec) -> None:
        self.running[run.run_id] = time.perf_counter()
        print(f"[{self.counts()}] started {run.describe()} ({run.run_id})", flush=True)

    def ended(self, run: RunSpec, outcome: str) -> None:
        seconds = time.perf_counter() - self.running.pop(run.run_id)
        self.done += 1
        if outcome == "ran":
            self.durations.append(seconds)
        print(f"[{self.counts()}] {outcome} {run.describe()} ({run.run_id}) in {duration(seconds)}", flush=True)


def pending_runs(runs: list[RunSpec], folder: Path, outcome: dict[str, list[str]]) -> list[RunSpec]:
    """The runs without a valid results.json (the others are counted done)."""
    from lightning_ae.study.records import read_results

    pending = []
    for run in runs:
        if read_results(folder / "runs" / run.run_id) is not None:
            outcome["done"].append(run.run_id)
        else:
            pending.append(run)
    return pending


def default_cpus_per_run(cpus: float, pending: int) -> float:
    """What keeps every core busy: the cores spread over the pending runs, at least one each (whole cores: torch
    runs one thread per core)."""
    return float(max(1, int(cpus // max(1, pending))))


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted, not acted on, while the block runs (starting a cluster, submitting an array,
    stopping the runs): a Ctrl+C then never leaves a half-started cluster or runs without their stop."""
    received: list[int] = []
    previous = {number: signal.signal(number, lambda n, f: received.append(n)) for number in _SIGNALS}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def signals_raise_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt(signal number) in the driver's loop; afterwards the command's own
    handlers are back, so that the engine, having stopped its runs, raises the signal again and the command ends as
    any interrupted one (130, 143)."""

    def interrupt(number: int, frame: Any) -> None:
        raise KeyboardInterrupt(number)

    previous = {number: signal.signal(number, interrupt) for number in _SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
