"""A whole study, sequential against `--engine ray`, side by side in one session on this machine.

    python benchmarks/study_engines.py [--study configs/study/quick.yaml] [--engines sequential,ray]

Each engine runs the study from nothing: its own empty folder and its own empty cache of verified data and PCA
fits (`LIGHTNING_AE_CACHE_DIR`), so neither profits from the other. Ray's threads per run are what the engine
chooses (`--cpus-per-run` left out). Prints one markdown row per engine and writes
`benchmarks/results/study_engines.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_ae.provenance import machine  # noqa: E402
from lightning_ae.study.records import read_results, run_seconds  # noqa: E402
from lightning_ae.study.runner import headline  # noqa: E402
from lightning_ae.study.spec import load_study  # noqa: E402


def run_engine(study_file: Path, engine: str, workdir: Path) -> dict:
    folder, cache = workdir / engine / "study", workdir / engine / "cache"
    command = [sys.executable, "-m", "lightning_ae", "study", str(study_file), "--folder", str(folder)]
    command += ["--report", str(workdir / engine / "report"), "--engine", engine]
    env = {**__import__("os").environ, "LIGHTNING_AE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (workdir / f"{engine}.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise SystemExit(f"{engine}: exit {finished.returncode}; its output: {workdir / f'{engine}.log'}")
    study = load_study(study_file)
    results = {run.run_id: read_results(folder / "runs" / run.run_id) for run in study.runs}
    (session,) = json.loads((folder / "sessions.json").read_text())
    return {
        "engine": engine,
        "wall_seconds": round(wall, 1),
        "runs": len(results),
        "run_seconds_summed": round(sum(run_seconds(r) or 0 for r in results.values()), 1),
        "session_engine": session.get("engine"),
        "headlines": {run_id: headline(r) for run_id, r in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="configs/study/quick.yaml")
    parser.add_argument("--engines", default="sequential,ray")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "study_engines.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="study-engines-") as workdir:
        rows = [run_engine(REPO / args.study, engine, Path(workdir)) for engine in args.engines.split(",")]
    base = rows[0]["wall_seconds"]
    print(f"{machine()}; study {args.study}")
    print("| engine | per run | wall time | / first | runs' own time summed |")
    print("|---|---|---|---|---|")
    for row in rows:
        per_run = (row["session_engine"] or {}).get("per_run")
        threads = f"{per_run['cpus']:g} CPU(s)" if per_run else "in-process, torch's default threads"
        print(
            f"| {row['engine']} | {threads} | {row['wall_seconds']:.1f} s | "
            f"{row['wall_seconds'] / base:.2f} | {row['run_seconds_summed'] / 60:.1f} min |"
        )
    if len(rows) == 2:  # the same runs, other thread counts: how far their headline numbers moved
        shifts = []
        for run_id, text in rows[0]["headlines"].items():
            other = rows[1]["headlines"].get(run_id, "")
            if text and other and text.split()[-1] != "diverged":
                shifts.append(abs(float(text.split()[-1]) - float(other.split()[-1])))
        if shifts:
            print(f"headline numbers: median |difference| {statistics.median(shifts):.4f}, max {max(shifts):.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "study": args.study, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
