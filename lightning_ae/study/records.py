"""Reading what a study's runs left behind: results, the session journal, run times.

Kept apart from the runner, which imports the trainer: the report reads runs through this
module alone, so writing a report loads no data, model or evaluation code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's results when they are complete and valid; None when absent or unusable."""
    path = run_dir / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("status") not in ("tested", "diverged"):
        return None
    return results


def read_sessions(folder: Path) -> list[dict[str, Any]]:
    """The study's session journal; an unreadable journal reads as empty (it is provenance, not results)."""
    try:
        sessions = json.loads((folder / "sessions.json").read_text())
    except (OSError, ValueError):
        return []
    return sessions if isinstance(sessions, list) else []


def run_seconds(results: dict[str, Any]) -> float | None:
    """A finished run's training and evaluation time: its wall time, or a pipeline's stages summed (its layers
    included; a pipeline's results.json written before they were recorded lacks them)."""
    seconds = (results.get("timings") or {}).get("wall_seconds")
    if seconds is None and "stages" in results:
        stages = [*(results.get("layers") or {}).values(), *results["stages"].values()]
        seconds = sum((stage.get("fit_seconds") or 0) for stage in stages)
    return seconds
