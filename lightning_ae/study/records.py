"""Reading what a study's runs left behind: results, the session journal, run times.

Kept apart from the runner, which imports the trainer: the report reads runs through this
module alone, so writing a report loads no data, model or evaluation code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_ae.files import read_results_file


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's results when they are complete and valid; None when absent or unusable (see results_problem)."""
    results, _ = read_results_file(run_dir / "results.json")
    if results is None or results.get("status") not in ("tested", "diverged"):
        return None
    return results


def damaged_results(run_dir: Path) -> str | None:
    """What is wrong with the run's results.json when it is there but unusable (damaged, NaN, wrong types)."""
    _, problem = read_results_file(run_dir / "results.json")
    return problem


class DamagedJournal(ValueError):
    """sessions.json is there but unreadable: replacing it would lose the study's wall time and provenance."""


def read_sessions(folder: Path) -> list[dict[str, Any]]:
    """The study's session journal ([] when there is none yet); DamagedJournal when it is damaged."""
    path = folder / "sessions.json"
    try:
        sessions = json.loads(path.read_text(), parse_constant=lambda name: float("nan"))
    except FileNotFoundError:
        return []
    except (UnicodeDecodeError, ValueError) as err:  # another OSError (a file where the folder should be) is no damage
        problem = f"not readable JSON ({err})"
    else:
        if isinstance(sessions, list) and all(isinstance(s, dict) for s in sessions):
            return sessions
        problem = "not a list of sessions"
    raise DamagedJournal(
        f"{path} is damaged: {problem}. It is the study's session journal (its wall time and provenance); repair "
        f"it, or move it aside (e.g. to {path.name}.damaged) to start a new journal, which counts only later sessions."
    )


def run_seconds(results: dict[str, Any]) -> float | None:
    """A finished run's training and evaluation time: its wall time, or a pipeline's stages summed (its layers
    included; a pipeline's results.json written before they were recorded lacks them)."""
    seconds = (results.get("timings") or {}).get("wall_seconds")
    if seconds is None and "stages" in results:
        stages = [*(results.get("layers") or {}).values(), *results["stages"].values()]
        seconds = sum((stage.get("fit_seconds") or 0) for stage in stages)
    return seconds
