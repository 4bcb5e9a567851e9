"""The study report: one section per homework item, each a table or figure from the measured results and
a sentence or two built from the same numbers.

Experiments are found by name in the study: `basic_ae`, `deep_ae`, `conv_ae`, `denoising`,
`denoising_<corruption>`, `similarity`, `classifier`, `pretrain_<activation>`. A section
whose experiment is missing says so. Every table names the data, epochs and seeds behind it;
several seeds are shown as mean ± standard deviation.

Beside report.md the report writes `summary.json`: one record per run (per stage for the
pre-training pipelines) with what made it, its test figures, PCA's and the trivial predictor's,
and whether it converged and learned (see `summary_record`). The tables read the records.
A run that did not converge or did not learn is marked in every table that lists it and
left out of every sentence that compares runs; a sentence over several seeds gives mean ± sd and n.

The report only reads what the runs saved in their folders; it loads no data and fits nothing:
`results.json` (the figures, the verdicts, the config), the pictures `reconstructions.png`,
`pairs.png` and `tsne.png`, the PCA panel `pca_tsne.png` (both from `TSNEPlot`), and the conv
AE's layer trace `layers.json` (from `ReconstructionGrid`). Its own plots draw those numbers.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure as MplFigure

from lightning_ae.checks import same_network
from lightning_ae.files import read_results_file, write_json
from lightning_ae.provenance import git_commit
from lightning_ae.study.document import Document, Figure, Heading, Paragraph, Table
from lightning_ae.study.records import DamagedJournal, damaged_results, read_results, read_sessions, run_seconds
from lightning_ae.study.spec import RunSpec, Study

log = logging.getLogger(__name__)

ANCHORS = {
    "keras": "F. Chollet, *Building Autoencoders in Keras*, The Keras Blog, 2016: an AE with a 32-unit code "
    "layer between MNIST's pixels and their reconstruction reaches about 0.09 BCE per pixel (Adadelta, 50 epochs).",
    "hinton": "G. E. Hinton and R. R. Salakhutdinov, *Reducing the Dimensionality of Data with Neural Networks*, "
    "Science 313, 2006: a deep AE with encoder layers of 1000, 500, 250 and 30 units on MNIST's pixels, 3.00 "
    "squared error per image (summed over pixels) "
    "against 13.87 for PCA with 30 components.",
    "umap": "T. Sainburg, L. McInnes and T. Q. Gentner, *Parametric UMAP Embeddings for Representation and "
    "Semisupervised Learning*, Neural Computation 33, 2021: 2-D codes of MNIST, 5-NN accuracy 0.79 for an AE "
    "and 0.42 for PCA.",
    "pretraining": "Hinton, Osindero and Teh 2006; Bengio et al. 2007; Erhan et al., *Why Does Unsupervised "
    "Pre-training Help Deep Learning?*, JMLR 11, 2010: pre-trained networks like this one "
    "(two hidden layers of 1000 units) reach about 1.2-1.4% test error on MNIST.",
}


# The figures every summary record carries for the model and for PCA (null when not measured).
SUMMARY_METRICS = (
    "test/bce_per_pixel",
    "test/bce_per_image",
    "test/mse_per_pixel",
    "test/mse_per_image",
    "test/knn_acc",
)
NOT_CONVERGED, NOT_LEARNED, NOT_JUDGED = "not converged", "not learned", "not judged"
# What the callbacks save in a run's folder for the report beside results.json and the pictures.
PCA_TSNE = "pca_tsne.png"  # TSNEPlot: PCA at the run's d' through the same t-SNE
LAYERS = "layers.json"  # ReconstructionGrid: the shape after every layer


def stage_order(name: str | None) -> tuple[int, int, str]:
    """Pipeline stages in the order they run: layer1, layer2, ..., frozen, finetune."""
    if name is None:
        return (0, 0, "")
    if name.startswith("layer") and name[5:].isdigit():
        return (1, int(name[5:]), name)
    return (2, {"frozen": 0, "finetune": 1}.get(name, 2), name)


def verdicts(results: dict[str, Any]) -> tuple[bool | None, bool | None]:
    """(converged, learned) of one run or stage's results; None where its results.json does not say."""
    converged = (results.get("convergence") or {}).get("converged")
    learned = (results.get("learned") or {}).get("learned")
    if results.get("status") == "diverged":
        return False, False
    return converged, learned


def summary_record(
    run: RunSpec, folder: Path, results: dict[str, Any], overrides: dict[str, Any], stage: str | None = None
) -> dict[str, Any]:
    """One run's (or one pipeline stage's) line in summary.json.

    Keys: run_id, experiment, stage (null, or layerN/frozen/finetune for a pipeline), kind, grid (the grid
    values), overrides (every override that made the run: the study's every_run, the experiment's
    overrides and the grid values), seed, model, code_dim, status, converged, learned, flags (why it is
    marked, empty when it is not), model_metrics and pca (every test metric; the five of SUMMARY_METRICS
    always present, null when not measured), trivial (the trivial predictor's figures), epochs,
    wall_seconds, device, device_name, folder (relative to the study folder).
    """
    # results.json holds the metrics under "ae" for an autoencoder, under "model" for anything else.
    model_name, table = results.get("model"), results.get("ae")
    if isinstance(model_name, dict):
        class_path = ((results.get("config") or {}).get("model") or {}).get("class_path") or "Classifier"
        model_name, table = class_path.rsplit(".", 1)[-1], model_name
    metrics = dict(table or {})
    if stage is not None and not metrics:  # a stage known only from the pipeline's own results.json
        metrics = {k: v for k, v in results.items() if k.startswith("test/")}
    pca = dict(results.get("pca") or {})
    for key in SUMMARY_METRICS:
        metrics.setdefault(key, None)
        pca.setdefault(key, None)
    converged, learned = verdicts(results)
    flags = []
    if converged is False:
        flags.append(f"{NOT_CONVERGED}: {(results.get('convergence') or {}).get('reason') or 'diverged'}")
    if learned is False:
        flags.append(f"{NOT_LEARNED}: {(results.get('learned') or {}).get('reason') or 'diverged'}")
    if converged is None or learned is None:
        flags.append(f"{NOT_JUDGED}: its results.json has no convergence or learned verdict")
    environment = results.get("environment") or {}
    return {
        "run_id": run.run_id,
        "experiment": run.experiment,
        "stage": stage,
        "kind": run.kind,
        "grid": dict(run.labels),
        "overrides": overrides,
        "seed": run.seed,
        "model": model_name,
        "code_dim": results.get("code_dim"),
        "status": results.get("status"),
        "converged": converged,
        "learned": learned,
        "flags": flags,
        "verdicts": {"convergence": results.get("convergence"), "learned": results.get("learned")},
        "model_metrics": metrics,
        "pca": pca,
        "trivial": results.get("trivial"),
        "epochs": results.get("epochs"),
        "wall_seconds": run_seconds(results),
        "device": environment.get("device"),
        "device_name": results.get("device_name"),
        "folder": str(folder),
    }


@dataclass
class Result:
    run: RunSpec
    folder: Path
    results: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)  # this run's summary record (a pipeline's: its last stage)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # a pipeline's summary record per stage

    def metric(self, key: str, table: str = "ae") -> float | None:
        """A figure from the summary record: the model's (table "ae" or "model") or PCA's ("pca")."""
        return (self.record.get("pca" if table == "pca" else "model_metrics") or {}).get(key)

    def stage_metric(self, stage: str, key: str) -> float | None:
        return ((self.stages.get(stage) or {}).get("model_metrics") or {}).get(key)

    @property
    def flags(self) -> list[str]:
        """Why this run is marked (empty when it converged and learned); a pipeline's over all its stages."""
        if self.stages:
            return [f"{name}: {flag}" for name, record in self.stages.items() for flag in record["flags"]]
        return list(self.record.get("flags", []))

    def excluded(self, stage: str | None = None) -> bool:
        """Left out of the sentences: it (or the given pipeline stage) did not converge or did not learn."""
        record = self.stages.get(stage, {}) if stage is not None else self.record
        return record.get("converged") is False or record.get("learned") is False

    @property
    def init_args(self) -> dict[str, Any]:
        return self.run.config.get("model", {}).get("init_args", {})

    @property
    def data(self) -> dict[str, Any]:
        return self.run.config.get("data", {})


def collect(study: Study, folder: Path) -> list[Result]:
    """Every run with results (tested or diverged), each with its summary record(s); the sections read only
    tested ones."""
    found = []
    for run in study.runs:
        run_dir = folder / "runs" / run.run_id
        results = read_results(run_dir)
        if results is None:
            continue
        applied = {**run.overrides, **run.labels}
        result = Result(run, run_dir, results)
        if run.kind == "pretrain":
            # Each stage wrote its own results.json (with its verdicts); the pipeline's lists the classifier stages.
            stage_results = {p.parent.name: p for p in run_dir.glob("*/results.json")}
            for name in sorted(set(stage_results) | set(results.get("stages") or {}), key=stage_order):
                stage = read_results_file(stage_results[name])[0] if name in stage_results else None
                if stage is None:  # absent or damaged: the pipeline's own summary of the stage
                    stage = {"status": results.get("status"), **(results.get("stages") or {}).get(name, {})}
                result.stages[name] = summary_record(run, Path("runs", run.run_id, name), stage, applied, name)
            result.record = result.stages[max(result.stages, key=stage_order)] if result.stages else {}
        else:
            result.record = summary_record(run, Path("runs", run.run_id), results, applied)
        found.append(result)
    return found


def summary_records(results: list[Result]) -> list[dict[str, Any]]:
    """Every record of summary.json in the study file's order (experiments, grid points, seeds as it lists them),
    a pipeline's stages in the order they ran."""
    return [record for r in results for record in (r.stages.values() if r.stages else [r.record])]


def fmt(values: list[float | None], digits: int = 4) -> str:
    """A value, or mean ± std over seeds; '-' when not measured."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def spread(values: list[float | None], digits: int = 4) -> str:
    """A figure for a sentence: the value of one run, or mean ± sd over several with their count n."""
    values = [v for v in values if v is not None]
    if not values:
        return "not measured"
    return fmt(values, digits) if len(values) == 1 else f"{fmt(values, digits)} (n={len(values)})"


def usable(results: list[Result], stage: str | None = None) -> list[Result]:
    """The runs a sentence may compare: those not flagged as not converged or not learned."""
    return [r for r in results if not r.excluded(stage)]


def flag_cell(results: list[Result], stage: str | None = None) -> str:
    """The flags column of a table row: which of its runs did not converge or did not learn (k of n)."""
    # One record per run, or for a pipeline without a stage named, each of its stages.
    records = [
        rec
        for r in results
        for rec in ([r.stages.get(stage, {})] if stage else (list(r.stages.values()) or [r.record]))
    ]
    marks = []
    for word, key in ((NOT_CONVERGED, "converged"), (NOT_LEARNED, "learned"), (NOT_JUDGED, None)):
        if key is None:
            count = sum(1 for rec in records if rec.get("converged") is None or rec.get("learned") is None)
        else:
            count = sum(1 for rec in records if rec.get(key) is False)
        if count:
            marks.append(f"⚑ {word}" + (f" ({count}/{len(records)})" if len(records) > 1 else ""))
    return "; ".join(marks)


def flags_note(results: list[Result]) -> str:
    """The footnote of a table with a flags column: what ⚑ means, with the tolerance, window and margin used; ''
    when no run of the table is flagged (the legend once repeated itself under every table of a clean study)."""
    if not any(r.flags for r in results):
        return ""
    verdicts_seen = [rec.get("verdicts") or {} for r in results for rec in (list(r.stages.values()) or [r.record])]
    convergence = next((v["convergence"] for v in verdicts_seen if (v.get("convergence") or {}).get("window")), {})
    learned = next((v["learned"] for v in verdicts_seen if (v.get("learned") or {}).get("margin") is not None), {})
    tolerance, window = convergence.get("tolerance"), convergence.get("window")
    margin = learned.get("margin")
    flat = f"within {100 * tolerance:g}% over its last {window} epochs" if tolerance and window else "flat"
    below = f"at least {100 * margin:g}%" if margin is not None else "clearly"
    return (
        f"⚑ {NOT_CONVERGED}: not stopped by early stopping and val/loss not {flat}; ⚑ {NOT_LEARNED}: test loss not "
        f"{below} below the trivial predictor's (the mean training image for an AE, the class prior for a "
        "classifier); (k/n): k of the row's n runs. Flagged runs stay in the tables and out of every sentence."
    )


def left_out(results: list[Result], stage: str | None = None) -> str:
    """A closing clause naming the flagged runs a sentence left out ('' when none was)."""
    flagged = [r.run.describe() for r in results if r.excluded(stage)]
    return f" Left out as not converged or not learned (⚑): {', '.join(flagged)}." if flagged else ""


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def input_size(results: list[Result]) -> int | None:
    """The input size (pixels) of the runs, from what they saved (compression ratio x d'); None when they did not
    save it or do not agree."""
    sizes = set()
    for r in results:
        ratio, dim = r.metric("test/compression_ratio"), r.record.get("code_dim")
        if ratio is None or not dim:
            return None
        sizes.add(round(ratio * dim))
    return sizes.pop() if len(sizes) == 1 else None


def smaller(results: list[Result], dim: int) -> str:
    """'N.N times smaller' for a code of `dim` against the runs' input size, read from what they saved."""
    size = input_size(results)
    return f"{size / dim:.1f} times smaller" if size else "smaller"


def read_layers(folder: Path) -> list[tuple[str, tuple[int, ...], str]] | None:
    """The layer trace a run saved (`ReconstructionGrid`'s `layers.json`); None when it saved none."""
    try:
        saved = json.loads((folder / LAYERS).read_text())
        return [(row["layer"], tuple(row["shape"]), row["note"]) for row in saved["layers"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def group(results: list[Result], key) -> dict[Any, list[Result]]:
    groups: dict[Any, list[Result]] = defaultdict(list)
    for result in results:
        groups[key(result)].append(result)
    return dict(sorted(groups.items(), key=lambda item: str(item[0])))


def protocol(results: list[Result]) -> str:
    """What the numbers stand on: data, epochs, seeds."""
    if not results:
        return ""
    subsets = {r.data.get("train_subset") for r in results}
    images = "all 55,000" if subsets == {None} else "/".join(str(s or 55000) for s in sorted(subsets, key=str))
    epochs = sorted({r.record.get("epochs") for r in results if r.record.get("epochs") is not None})
    seeds = sorted({r.run.seed for r in results})
    epoch_text = ", ".join(str(e) for e in epochs) if epochs else "see config"
    return (
        f"Training images: {images}; epochs run: {epoch_text}; seeds: {seeds}; test set: the 10,000 MNIST test images."
    )


def line_plot(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list, list]], logx=True):
    fig = MplFigure(figsize=(6.5, 4), dpi=110)
    ax = fig.subplots()
    for label, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def describe_machine(facts: dict[str, Any]) -> str:
    gpu = facts.get("gpu")
    return (
        f"{facts.get('processor', '?')} ({facts.get('cpus', '?')} cores, {facts.get('torch_threads', '?')} torch "
        f"threads), {facts.get('system', '?')}, Python {facts.get('python', '?')}, torch {facts.get('torch', '?')}, "
        + (f"GPU {gpu}" if gpu else "no GPU")
    )


class ReportBuilder:
    def __init__(self, study: Study, folder: Path, output: Path) -> None:
        self.study, self.folder, self.output = study, folder, output
        self.results = collect(study, folder)
        self.plots = Path(tempfile.mkdtemp(prefix="lightning-ae-plots-"))  # copied into figures/ by Document
        self.doc = Document(f"lightning-ae study report: {study.name}")

    @property
    def tested(self) -> list[Result]:
        return [r for r in self.results if r.results.get("status") == "tested"]

    def experiment(self, name: str) -> list[Result]:
        return [r for r in self.tested if r.run.experiment == name]

    def experiments(self, prefix: str) -> list[Result]:
        return [r for r in self.tested if r.run.experiment.startswith(prefix)]

    def missing(self, name: str) -> None:
        self.doc.add(Paragraph(f"Not in this study (no finished `{name}` runs)."))

    # -- header ------------------------------------------------------------------------------

    def header(self) -> None:
        run_time = sum(run_seconds(r.results) or 0 for r in self.results)
        # Provenance from the study's journal: the commits and machines the runs ran on, not this checkout's.
        # The sessions that trained: those that finished runs, and those interrupted during one (its time is
        # part of the study's: the run resumes from its checkpoint in a later session).
        try:
            journal, damaged_journal = read_sessions(self.folder), None
        except DamagedJournal as err:
            journal, damaged_journal = [], str(err).split(". It is")[0]
            log.warning("%s; the report says its wall time is unknown.", damaged_journal)
        sessions = [
            s for s in journal if (s.get("runs") or {}).get("ran") or str(s.get("status", "")).startswith("interrupted")
        ]
        if damaged_journal:
            provenance = f"Wall time and provenance unknown: {damaged_journal}."
        elif sessions:
            commits = ", ".join(dict.fromkeys(str(s.get("commit")) for s in sessions))
            machines = "; ".join(dict.fromkeys(describe_machine(s.get("machine") or {}) for s in sessions))
            study_wall = sum(s.get("wall_seconds") or 0 for s in sessions)
            started = min(s["started"] for s in sessions)
            provenance = (
                f"Ran on commit {commits}, {machines}; {len(sessions)} study session(s) from {started}, "
                f"wall time {study_wall / 60:.1f} min."
            )
        else:
            provenance = f"No study session is on record in {self.folder} (runs copied from elsewhere?)."
        self.doc.add(
            Paragraph(
                f"Study `{self.study.name}` ({self.study.description}). Command: "
                f"`lightning-ae study {self.study.source}` then `lightning-ae report {self.study.source}`. "
                f"{provenance} {len(self.results)} of {len(self.study.runs)} runs finished; "
                f"training and evaluation time summed over the finished runs: {run_time / 60:.1f} min. "
                f"Report written {datetime.now(timezone.utc).isoformat(timespec='minutes')} from commit "
                f"{git_commit()}."
            )
        )

        damaged = [
            (run, problem)
            for run in self.study.runs
            if (problem := damaged_results(self.folder / "runs" / run.run_id)) is not None
        ]
        for run, problem in damaged:
            log.warning(
                "%s is damaged (%s): the run is left out of the report; `lightning-ae study` sets the file aside and "
                "redoes the run.",
                self.folder / "runs" / run.run_id / "results.json",
                problem,
            )
        if damaged:
            self.doc.add(
                Table(
                    ["run with a damaged results.json", "what is wrong"],
                    [[run.describe(), problem] for run, problem in damaged],
                    "Left out of every table below; `lightning-ae study` sets each file aside and redoes the run.",
                )
            )

        failed = [r for r in self.results if r.results.get("status") == "diverged"]
        if failed:
            self.doc.add(
                Table(
                    ["diverged run", "where and why"],
                    [[r.run.describe(), (r.results.get("diverged") or {}).get("message", "")] for r in failed],
                    "Diverged runs have no metric values and are left out of every table below.",
                )
            )
        flagged = [r for r in self.tested if r.flags]
        if flagged:
            self.doc.add(
                Paragraph(
                    f"{len(flagged)} of {len(self.tested)} tested runs are marked ⚑: they did not converge or did "
                    "not learn (their test loss is not clearly below the trivial predictor's). They are shown, "
                    "marked, in the tables and left out of every sentence that compares runs. "
                    "Every run's figures and verdicts are in `summary.json` beside this report."
                ),
                Table(
                    ["marked run", "why"],
                    [[r.run.describe(), "; ".join(r.flags)] for r in flagged],
                    flags_note(self.tested),
                ),
            )

    # -- 2.1 ---------------------------------------------------------------------------------

    def basic(self) -> None:
        self.doc.add(Heading("2.1a-b: the basic autoencoder, compression and reconstruction"))
        runs = self.experiment("basic_ae")
        if not runs:
            return self.missing("basic_ae")
        rows = []
        groups = group(runs, lambda r: (r.init_args.get("activation"), r.init_args.get("code_dim")))
        keys = ("bce_per_pixel", "bce_per_image", "mse_per_pixel", "mse_per_image")
        for (activation, dim), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1])):
            values = {k: [m.metric(f"test/{k}") for m in members] for k in keys}
            size = input_size(members)
            rows.append(
                [activation, str(dim)]
                + ([f"{size / dim:.1f}", f"{100 * (1 - dim / size):.1f}%"] if size else ["-", "-"])
                + [fmt(values[k]) for k in keys]
                + [
                    fmt([(m.record.get("trivial") or {}).get("test/bce_per_pixel") for m in members]),
                    flag_cell(members),
                ]
            )
        self.doc.add(
            Table(
                ["encoder", "d'", f"{input_size(runs) or 'input'}/d'", "size saved"]
                + ["BCE/pixel", "BCE/image", "MSE/pixel", "MSE/image"]
                + ["BCE/pixel mean image", "flags"],
                rows,
                "The mean training image, output for every test image, is the trivial predictor. "
                + protocol(runs)
                + " "
                + flags_note(runs),
            )
        )
        reference = groups.get(("sigmoid", 32)) or next(iter(groups.values()))
        r = reference[0]
        dim, activation = r.init_args.get("code_dim"), r.init_args.get("activation")
        good = usable(reference)
        bce = [m.metric("test/bce_per_pixel") for m in good]
        mse = [m.metric("test/mse_per_pixel") for m in good]
        trivial = [(m.record.get("trivial") or {}).get("test/bce_per_pixel") for m in good]
        if not good:
            finding = (
                f"no run at d'={dim} ({activation} encoder) converged and learned, so no reconstruction error is "
                "quoted for it (see the ⚑ rows above)"
            )
        elif any(v is not None for v in bce):  # BCE scores probabilities: a linear or tanh output has MSE only
            finding = (
                f"at d'={dim} ({activation} encoder) the code is {smaller(reference, dim)} than the image and the "
                f"test BCE is {spread(bce)} per pixel, against {spread(trivial)} for the mean training image"
            )
        else:
            finding = (
                f"at d'={dim} ({activation} encoder) the code is {smaller(reference, dim)} than the image and the "
                f"test MSE is {spread(mse)} per pixel"
            )
        self.doc.add(
            Paragraph(
                f"{finding[0].upper()}{finding[1:]}. Published anchor: about 0.09 BCE per pixel for the Keras "
                f"blog's 32-d AE ({ANCHORS['keras']}).{left_out(reference)}"
            )
        )
        grid = r.folder / "reconstructions.png"
        if grid.exists():
            self.doc.add(Figure(grid, f"Test digits (top) and their reconstructions (bottom), d'={dim}, {activation}."))

    def versus_pca(self) -> None:
        self.doc.add(Heading("2.1c: AE against PCA at the same d' (kNN accuracy, reconstruction, time)"))
        runs = self.experiment("basic_ae")
        if not runs:
            return self.missing("basic_ae")
        dims = sorted({r.init_args.get("code_dim") for r in runs})
        series_acc, series_bce, rows, comparisons = {}, {}, [], []
        for activation, members in group(runs, lambda r: r.init_args.get("activation")).items():
            by_dim = group(members, lambda r: r.init_args.get("code_dim"))
            series_acc[f"AE ({activation})"] = (
                dims,
                [mean([m.metric("test/knn_acc") for m in by_dim.get(d, [])]) for d in dims],
            )
            series_bce[f"AE ({activation})"] = (
                dims,
                [mean([m.metric("test/bce_per_pixel") for m in by_dim.get(d, [])]) for d in dims],
            )
            for d in dims:
                ms = by_dim.get(d, [])
                good = usable(ms)
                ae_acc = [m.metric("test/knn_acc") for m in good]
                pca_acc = [m.metric("test/knn_acc", "pca") for m in good]
                if mean(ae_acc) is not None and mean(pca_acc) is not None:
                    comparisons.append((activation, d, mean(ae_acc) > mean(pca_acc), spread(ae_acc), spread(pca_acc)))
                if not ms:
                    continue
                rows.append(
                    [
                        activation,
                        str(d),
                        fmt([m.metric("test/knn_acc") for m in ms]),
                        fmt([m.metric("test/knn_acc", "pca") for m in ms]),
                    ]
                    + [
                        fmt([m.metric("test/encode_us_per_image") for m in ms], 2),
                        fmt([m.metric("test/encode_us_per_image", "pca") for m in ms], 2),
                    ]
                    + [
                        fmt([m.metric("test/knn_predict_us_per_image") for m in ms], 1),
                        fmt([m.metric("test/knn_predict_us_per_image", "pca") for m in ms], 1),
                        flag_cell(ms),
                    ]
                )
        by_dim_all = group(runs, lambda r: r.init_args.get("code_dim"))
        series_acc["PCA"] = (dims, [mean([m.metric("test/knn_acc", "pca") for m in by_dim_all[d]]) for d in dims])
        series_bce["PCA"] = (dims, [mean([m.metric("test/bce_per_pixel", "pca") for m in by_dim_all[d]]) for d in dims])
        self.doc.add(
            Figure(
                line_plot(self.plots / "knn_vs_dim.png", "kNN (k=10) test accuracy", "d'", "accuracy", series_acc),
                "kNN test accuracy of the codes against d'.",
            ),
            Figure(
                line_plot(
                    self.plots / "bce_vs_dim.png", "Reconstruction BCE per pixel (test)", "d'", "BCE", series_bce
                ),
                "Test reconstruction BCE against d'.",
            ),
            Table(
                [
                    "encoder",
                    "d'",
                    "kNN acc AE",
                    "kNN acc PCA",
                    "encode µs AE",
                    "encode µs PCA",
                    "kNN µs AE",
                    "kNN µs PCA",
                    "flags",
                ],
                rows,
                "Times are per test image. " + protocol(runs) + " " + flags_note(runs),
            ),
        )

        def listed(items: list[tuple]) -> str:
            return ", ".join(f"d'={d} ({a}: AE {ae} against PCA {pca})" for a, d, _, ae, pca in items)

        better = [c for c in comparisons if c[2]]
        worse = [c for c in comparisons if not c[2]]
        if not comparisons:
            text = "No AE run converged and learned, so kNN on its codes is not compared with PCA's here. "
        else:
            text = (
                f"kNN on the AE's codes is more accurate than on PCA's at {listed(better)}. "
                + (f"It is less or equally accurate at {listed(worse)}. " if worse else "")
                if better
                else f"kNN on the AE's codes is at most as accurate as on PCA's at every d' compared: {listed(worse)}. "
            )
        self.doc.add(
            Paragraph(
                text + "Whether the AE generalises: its test accuracy is measured on images it never saw, with the "
                "kNN fitted on the training codes only." + left_out(runs)
            )
        )

    def deep(self) -> None:
        self.doc.add(Heading("2.1d: deep autoencoders against PCA"))
        runs = self.experiment("deep_ae")
        if not runs:
            return self.missing("deep_ae")
        rows = []
        groups = group(runs, lambda r: (len(r.init_args.get("hidden_dims") or []) + 1, r.init_args.get("code_dim")))
        for (depth, dim), ms in sorted(groups.items()):
            rows.append(
                [str(depth), str(dim)]
                + [
                    fmt([m.metric(k, t) for m in ms])
                    for k, t in (("test/bce_per_pixel", "ae"), ("test/bce_per_pixel", "pca"))
                ]
                + [fmt([m.metric("test/mse_per_image", t) for m in ms], 2) for t in ("ae", "pca")]
                + [fmt([m.metric("test/knn_acc", t) for m in ms]) for t in ("ae", "pca")]
                + [flag_cell(ms)]
            )
        self.doc.add(
            Table(
                [
                    "encoder layers L",
                    "d'",
                    "BCE/pixel AE",
                    "BCE/pixel PCA",
                    "MSE/image AE",
                    "MSE/image PCA",
                    "kNN AE",
                    "kNN PCA",
                    "flags",
                ],
                rows,
                protocol(runs) + " " + flags_note(runs),
            )
        )
        # The headline: the deepest network at the smallest and the largest d' (Hinton's 1000-500-250-30 encoder).
        deepest = max(depth for depth, _ in groups)
        dims = sorted(dim for depth, dim in groups if depth == deepest)
        parts = []
        for dim in dict.fromkeys((dims[0], dims[-1])):
            ms = usable(groups[(deepest, dim)])
            if not ms:
                parts.append(f"at d'={dim} no run converged and learned")
                continue

            def value(key: str, table: str, digits: int, ms=ms) -> str:
                return spread([m.metric(key, table) for m in ms], digits)

            parts.append(
                f"at d'={dim} its kNN accuracy is {value('test/knn_acc', 'ae', 3)} against PCA's "
                f"{value('test/knn_acc', 'pca', 3)}, and its squared error per image "
                f"{value('test/mse_per_image', 'ae', 2)} against PCA's {value('test/mse_per_image', 'pca', 2)}"
            )
        hidden = groups[(deepest, dims[0])][0].init_args.get("hidden_dims") or []
        shape = "-".join(str(n) for n in [input_size(groups[(deepest, dims[0])]) or "input", *hidden]) + "-d'"
        headline = [m for dim in dict.fromkeys((dims[0], dims[-1])) for m in groups[(deepest, dim)]]
        # The deepest net is not always the best one: name the depth with the lowest error at each d'.
        errors_by_dim: dict[int, dict[int, list[float]]] = defaultdict(dict)
        for (depth, dim), ms in groups.items():
            values = [m.metric("test/mse_per_image", "ae") for m in usable(ms)]
            if values := [v for v in values if v is not None]:
                errors_by_dim[dim][depth] = values
        best = []
        for dim, errors in sorted(errors_by_dim.items()):
            depth = min(errors, key=lambda k: statistics.mean(errors[k]))
            best.append(f"d'={dim}: L={depth}, {spread(errors[depth], 2)}")
        lowest = f" The lowest squared error per image at each d' (by depth): {'; '.join(best)}." if best else ""
        self.doc.add(
            Paragraph(
                f"The deepest AE measured ({shape}, L={deepest}): " + "; ".join(parts) + "."
                f"{lowest}{left_out(headline)} Anchors: {ANCHORS['hinton']} {ANCHORS['umap']}"
            )
        )

    def tsne(self) -> None:
        self.doc.add(Heading("2.1e: the code space (t-SNE, and the 2-D code itself)"))
        panels = []
        for name in ("basic_ae", "deep_ae", "similarity"):
            for r in self.experiment(name):
                if (r.folder / "tsne.png").exists():
                    panels.append(
                        (
                            r,
                            f"{r.run.describe()}: "
                            + ("the 2-D code itself" if r.init_args.get("code_dim") == 2 else "t-SNE of the codes"),
                        )
                    )
        if not panels:
            return self.missing("basic_ae or deep_ae with TSNEPlot")
        chosen = [p for p in panels if p[0].init_args.get("code_dim") == 2][:2] + [
            p for p in panels if p[0].init_args.get("code_dim") != 2
        ][:2]
        for r, caption in chosen:
            self.doc.add(Figure(r.folder / "tsne.png", caption))
        # PCA at the same d' as the first AE panel above 2, through the same t-SNE (homework 2.1e compares them):
        # drawn by that run's TSNEPlot, beside its own panel.
        reference = next((r for r, _ in chosen if r.init_args.get("code_dim") != 2), None)
        if reference is not None:
            if (reference.folder / PCA_TSNE).exists():
                self.doc.add(
                    Figure(
                        reference.folder / PCA_TSNE,
                        f"PCA with d'={reference.init_args['code_dim']} components: t-SNE of the same test images.",
                    )
                )
            else:
                self.doc.add(
                    Paragraph(
                        f"No PCA panel: {reference.run.describe()} saved no `{PCA_TSNE}` (TSNEPlot draws it beside "
                        "`tsne.png` since the report stopped computing it; rerun that run to get it)."
                    )
                )
        self.doc.add(
            Paragraph("One colour and marker per digit. kNN accuracies of the same codes are in the tables above.")
        )

    def conv(self) -> None:
        self.doc.add(Heading("2.1f: the convolutional autoencoder"))
        runs = self.experiment("conv_ae")
        if not runs:
            return self.missing("conv_ae")
        r = runs[0]
        trace = read_layers(r.folder)
        if trace is None:
            self.doc.add(
                Paragraph(
                    f"No layer trace: {r.run.describe()} saved no `{LAYERS}` (ReconstructionGrid writes it at test "
                    "since the report stopped building the model; `lightning-ae describe --config "
                    "configs/conv_ae.yaml` prints it)."
                )
            )
        else:
            self.doc.add(Paragraph("How the input is transformed, layer by layer (shape after each layer):"))
            self.doc.add(
                Table(["layer", "shape after it", "note"], [[name, str(shape), note] for name, shape, note in trace])
            )
        rows = [
            [
                m.run.describe(),
                str(m.record.get("code_dim") or m.init_args.get("code_dim") or "-"),
                fmt([m.metric("test/bce_per_pixel")]),
                fmt([m.metric("test/knn_acc")]),
                fmt([m.metric("test/knn_acc", "pca")]),
                flag_cell([m]),
            ]
            for m in runs
        ]
        self.doc.add(
            Table(
                ["run", "code size", "BCE/pixel", "kNN AE", "kNN PCA", "flags"],
                rows,
                protocol(runs) + " " + flags_note(runs),
            )
        )

    # -- 2.2 ---------------------------------------------------------------------------------

    def denoising(self) -> None:
        self.doc.add(Heading("2.2a-c: denoising masking noise"))
        runs = self.experiment("denoising")
        if not runs:
            return self.missing("denoising")
        by_p = group(runs, lambda r: (r.data.get("corruption_args") or {}).get("p"))
        ps = sorted(by_p)
        series = {
            "denoising AE": (ps, [mean([m.metric("test/bce_per_pixel") for m in by_p[p]]) for p in ps]),
            "corrupted input": (ps, [mean([m.metric("test/corrupted_bce_per_pixel") for m in by_p[p]]) for p in ps]),
            "plain AE": (ps, [mean([m.metric("test/plain_ae_bce_per_pixel") for m in by_p[p]]) for p in ps]),
        }
        rows = [
            [str(p)]
            + [
                fmt([m.metric(k) for m in by_p[p]])
                for k in (
                    "test/bce_per_pixel",
                    "test/corrupted_bce_per_pixel",
                    "test/plain_ae_bce_per_pixel",
                    "test/mse_per_pixel",
                    "test/corrupted_mse_per_pixel",
                    "test/knn_acc",
                )
            ]
            + [flag_cell(by_p[p])]
            for p in ps
        ]
        self.doc.add(
            Figure(
                line_plot(
                    self.plots / "denoising_vs_p.png",
                    "Test BCE per pixel against the clean image",
                    "p (probability a pixel is kept)",
                    "BCE",
                    series,
                    logx=False,
                ),
                "Denoising error against p.",
            ),
            Table(
                [
                    "p kept",
                    "BCE dAE",
                    "BCE corrupted",
                    "BCE plain AE",
                    "MSE dAE",
                    "MSE corrupted",
                    "kNN dAE (clean)",
                    "flags",
                ],
                rows,
                protocol(runs) + " " + flags_note(runs),
            ),
        )
        parts = []
        for p in ps:
            good = usable(by_p[p])
            if not good:
                parts.append(f"p={p}: no run converged and learned")
                continue
            corrupted, denoised = ([m.metric(f"test/{k}bce_per_pixel") for m in good] for k in ("corrupted_", ""))
            plain = [m.metric("test/plain_ae_bce_per_pixel") for m in good]
            parts.append(
                f"p={p}: {spread(corrupted)} corrupted -> {spread(denoised)} denoised"
                + (f" (the plain AE on the same inputs: {spread(plain)})" if any(v is not None for v in plain) else "")
            )
        self.doc.add(
            Paragraph(
                f"Test BCE per pixel against the clean images, corrupted input -> denoising AE: {'; '.join(parts)}. "
                f"kNN is measured on the clean test images' codes (2.2c).{left_out(runs)}"
            )
        )
        middle = by_p[ps[len(ps) // 2]][0]
        if (middle.folder / "reconstructions.png").exists():
            self.doc.add(
                Figure(
                    middle.folder / "reconstructions.png",
                    f"Clean / corrupted (p={ps[len(ps) // 2]}) / denoised test digits.",
                )
            )

    def other_corruptions(self) -> None:
        self.doc.add(Heading("2.2d: other corruptions"))
        runs = [r for r in self.experiments("denoising_")]
        if not runs:
            return self.missing("denoising_<corruption>")
        rows = [
            [r.data.get("corruption"), json.dumps(r.data.get("corruption_args"))]
            + [
                fmt([r.metric(k)])
                for k in (
                    "test/bce_per_pixel",
                    "test/corrupted_bce_per_pixel",
                    "test/plain_ae_bce_per_pixel",
                    "test/knn_acc",
                )
            ]
            + [flag_cell([r])]
            for r in runs
        ]
        self.doc.add(
            Table(
                ["corruption", "parameters", "BCE dAE", "BCE corrupted", "BCE plain AE", "kNN dAE", "flags"],
                rows,
                protocol(runs) + " " + flags_note(runs),
            )
        )
        parts = []
        for corruption, members in group(usable(runs), lambda r: r.data.get("corruption")).items():
            values = {k: [m.metric(f"test/{k}bce_per_pixel") for m in members] for k in ("", "corrupted_", "plain_ae_")}
            parts.append(
                f"{corruption}: {spread(values['corrupted_'])} corrupted -> {spread(values[''])} denoised"
                + (
                    f", plain AE {spread(values['plain_ae_'])}"
                    if any(v is not None for v in values["plain_ae_"])
                    else ""
                )
            )
        self.doc.add(
            Paragraph(
                (
                    f"Test BCE per pixel against the clean images: {'; '.join(parts)}."
                    if parts
                    else "No run of another corruption converged and learned, so none is compared here."
                )
                + left_out(runs)
            )
        )
        for r in runs[:2]:
            if (r.folder / "reconstructions.png").exists():
                self.doc.add(
                    Figure(r.folder / "reconstructions.png", f"Clean / {r.data.get('corruption')} / restored.")
                )

    # -- 2.3, 2.4 ----------------------------------------------------------------------------

    def similarity(self) -> None:
        self.doc.add(Heading("2.3: similarity reconstruction"))
        # `similarity` (the homework's: the basic AE, 2,000 objects) and its variants (`similarity_deep`, ...).
        runs = self.experiments("similarity")
        if not runs:
            return self.missing("similarity")
        r = runs[0]
        for name, caption in (
            ("pairs.png", "Training objects, each followed by its 10 same-class partners (the targets)."),
            ("reconstructions.png", "Objects / a partner target / the model's output."),
            ("tsne.png", "t-SNE of the codes."),
        ):
            if (r.folder / name).exists():
                self.doc.add(Figure(r.folder / name, caption))
        rows, parts = [], []
        for name, members in group(runs, lambda m: m.run.experiment).items():
            plain = self.plain_twins(members[0])
            rows.append(
                [
                    name,
                    ", ".join(sorted({m.run.describe() for m in members})),
                    fmt([m.metric("test/bce_per_pixel") for m in members]),
                    fmt([(m.record.get("trivial") or {}).get("test/bce_per_pixel") for m in members]),
                    fmt([m.metric("test/knn_acc") for m in members]),
                    fmt([m.metric("test/knn_acc") for m in plain]),
                    fmt([m.metric("test/knn_acc", "pca") for m in members]),
                    flag_cell(members),
                ]
            )
            good, good_plain = usable(members), usable(plain)
            if not good:
                continue
            knn = [m.metric("test/knn_acc") for m in good]
            if good_plain:
                knn_plain = [m.metric("test/knn_acc") for m in good_plain]
                versus = f"the plain AE of the same network (trained on its own images, no labels) {spread(knn_plain)}"
                if mean(knn) is not None and mean(knn_plain) is not None:
                    versus += f": {'at least as high' if mean(knn) >= mean(knn_plain) else 'lower'}"
            else:
                versus = "no usable plain AE of the same network in this study"
            parts.append(
                f"`{name}`: test BCE against a random same-class partner "
                f"{spread([m.metric('test/bce_per_pixel') for m in good])} per pixel; kNN accuracy of the codes "
                f"{spread(knn)}, against {versus}, and PCA's "
                f"{spread([m.metric('test/knn_acc', 'pca') for m in good])}"
            )
        self.doc.add(
            Table(
                ["experiment", "runs", "BCE/pixel", "BCE/pixel mean partner"]
                + ["kNN", "kNN plain AE", "kNN PCA", "flags"],
                rows,
                protocol(runs) + " kNN plain AE: the autoencoder of the same network and d' (basic_ae or deep_ae in "
                "this study) trained to reconstruct its input. " + flags_note(runs),
            )
        )
        finding = (
            "; ".join(parts) + ". " if parts else "No similarity run converged and learned, so none is quoted here. "
        )
        self.doc.add(
            Paragraph(
                finding + "The pairs are drawn by class, so these codes are learned from the labels (weak "
                "supervision), unlike every other autoencoder here. The loss is still minimised by the mean of the "
                "possible targets, so the model learns a per-class average, not a reconstruction (see the README)."
                f"{left_out(runs)}"
            )
        )

    def plain_twins(self, similarity_run: Result) -> list[Result]:
        """The plain AEs (basic_ae or deep_ae) of the same network (`same_network`, as a denoising run's reference)
        as a similarity run."""
        plain = self.experiment("basic_ae") + self.experiment("deep_ae")
        return [m for m in plain if same_network(m.run.config, similarity_run.run.config)]

    def pretraining(self) -> None:
        self.doc.add(Heading("2.4: pre-training, before and after fine-tuning"))
        scratch = self.experiment("classifier")
        pipelines = self.experiments("pretrain_")
        if not scratch and not pipelines:
            return self.missing("classifier / pretrain_<activation>")

        # One row per activation and layer recipe: plain layers, or stacked denoising ones (layers.masking).
        def masking(r: Result) -> float | None:
            return (r.run.config.get("layers") or {}).get("masking")

        variants = sorted(
            {(r.init_args.get("activation"), None) for r in scratch}
            | {(r.run.config.get("activation"), masking(r)) for r in pipelines},
            key=lambda v: (str(v[0]), v[1] or 0.0),
        )
        rows, parts = [], []
        for act, mask in variants:
            # (a) has no layers: it is quoted once, on the plain row.
            a = [r for r in scratch if r.init_args.get("activation") == act] if mask is None else []
            p = [r for r in pipelines if r.run.config.get("activation") == act and masking(r) == mask]
            if mask is not None:
                act = f"{act}, denoising layers (masking p={mask:g})"
            b = [r.stage_metric("frozen", "test/error") for r in p]
            c = [r.stage_metric("finetune", "test/error") for r in p]
            trivial = [(r.record.get("trivial") or {}).get("test/error") for r in [*a, *p]]
            rows.append(
                [act, fmt([r.metric("test/error", "model") for r in a]), fmt(b), fmt(c), fmt(trivial)]
                + ["; ".join(f for f in (flag_cell(a), flag_cell(p)) if f)]
            )
            a_good, b_good, c_good = usable(a), usable(p, "frozen"), usable(p, "finetune")
            figures = [
                f"{label} {spread(values) if good else 'no run converged and learned'}"
                for label, runs_in, good, values in (
                    ("(a)", a, a_good, [r.metric("test/error", "model") for r in a_good]),
                    ("(b)", p, b_good, [r.stage_metric("frozen", "test/error") for r in b_good]),
                    ("(c)", p, c_good, [r.stage_metric("finetune", "test/error") for r in c_good]),
                )
                if runs_in
            ]
            parts.append(f"{act}: " + ", ".join(f for f in figures if f))
        left = [r.run.describe() for r in scratch if r.excluded()] + [
            f"{r.run.describe()} ({stage})" for r in pipelines for stage in ("frozen", "finetune") if r.excluded(stage)
        ]
        self.doc.add(
            Table(
                [
                    "activation",
                    "(a) no pre-training",
                    "(b) pre-trained, frozen",
                    "(c) pre-trained, fine-tuned",
                    "majority class",
                    "flags",
                ],
                rows,
                "Test error; the majority class of the training labels, answered for every test image, is the "
                "trivial predictor. " + protocol(scratch + pipelines) + " " + flags_note(scratch + pipelines),
            ),
            Paragraph(
                "Test error of the runs that converged and learned: "
                + "; ".join(parts)
                + "."
                + (f" Left out as not converged or not learned (⚑): {', '.join(left)}." if left else "")
                + f" Anchor: {ANCHORS['pretraining']}"
            ),
        )

    def write_summary(self) -> Path:
        """summary.json beside report.md: every run's (and pipeline stage's) record, written atomically."""
        path = self.output / "summary.json"
        write_json(
            path,
            {
                "study": self.study.name,
                "source": str(self.study.source),
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "commit": git_commit(),
                "runs": len(self.study.runs),
                "records": summary_records(self.results),
            },
        )
        return path

    # Experiments the sections above read (by name, or by prefix for "denoising_" and "pretrain_").
    NAMED = ("basic_ae", "deep_ae", "conv_ae", "denoising", "similarity", "classifier")
    PREFIXES = ("denoising_", "pretrain_")

    def others(self) -> None:
        """Any other experiment (a new variant, e.g. the sparse AE): its test figures beside PCA's at the same d'."""
        runs = [
            r
            for r in self.tested
            if r.run.experiment not in self.NAMED and not r.run.experiment.startswith(self.PREFIXES)
        ]
        if not runs:
            return
        self.doc.add(Heading("Other experiments"))
        rows = []
        for (name, labels), members in group(runs, lambda r: (r.run.experiment, str(r.run.labels or ""))).items():
            rows.append(
                [name, labels or "-", str(members[0].results.get("code_dim"))]
                + [
                    fmt([m.metric(key, table) for m in members])
                    for key in ("test/bce_per_pixel", "test/knn_acc")
                    for table in ("ae", "pca")
                ]
                + [flag_cell(members)]
            )
        header = ["experiment", "grid", "d'", "BCE/pixel", "BCE/pixel PCA", "kNN acc", "kNN acc PCA", "flags"]
        self.doc.add(Table(header, rows, protocol(runs) + " " + flags_note(runs)))

    def build(self) -> tuple[Path, Path]:
        self.header()
        for section in (
            self.basic,
            self.versus_pca,
            self.deep,
            self.tsne,
            self.conv,
            self.denoising,
            self.other_corruptions,
            self.similarity,
            self.pretraining,
            self.others,
        ):
            section()
        try:
            written = self.doc.write(self.output)
            self.write_summary()
            return written
        finally:
            shutil.rmtree(self.plots, ignore_errors=True)


def write_report(study: Study, folder: Path, output: Path) -> tuple[Path, Path]:
    return ReportBuilder(study, folder, output).build()
