"""The study report: one section per homework item, each a table or figure from the measured results and
a sentence or two built from the same numbers.

Experiments are found by name in the study: `basic_ae`, `deep_ae`, `conv_ae`, `denoising`,
`denoising_<corruption>`, `similarity`, `classifier`, `pretrain_<activation>`. A section
whose experiment is missing says so. Every table names the data, epochs and seeds behind it;
several seeds are shown as mean ± standard deviation.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure as MplFigure

from lightning_ae.provenance import git_commit
from lightning_ae.study.document import Document, Figure, Heading, Paragraph, Table
from lightning_ae.study.runner import read_results, read_sessions, run_seconds
from lightning_ae.study.spec import RunSpec, Study

ANCHORS = {
    "keras": "F. Chollet, *Building Autoencoders in Keras*, The Keras Blog, 2016: a 784-32-784 AE reaches "
    "about 0.09 BCE per pixel on MNIST (Adadelta, 50 epochs).",
    "hinton": "G. E. Hinton and R. R. Salakhutdinov, *Reducing the Dimensionality of Data with Neural Networks*, "
    "Science 313, 2006: a 784-1000-500-250-30 deep AE, 3.00 squared error per image (summed over pixels) "
    "against 13.87 for PCA with 30 components.",
    "umap": "T. Sainburg, L. McInnes and T. Q. Gentner, *Parametric UMAP Embeddings for Representation and "
    "Semisupervised Learning*, Neural Computation 33, 2021: 2-D codes of MNIST, 5-NN accuracy 0.79 for an AE "
    "and 0.42 for PCA.",
    "pretraining": "Hinton, Osindero and Teh 2006; Bengio et al. 2007; Erhan et al., *Why Does Unsupervised "
    "Pre-training Help Deep Learning?*, JMLR 11, 2010: pre-trained 784-1000-1000-10-like networks reach about "
    "1.2-1.4% test error on MNIST.",
}


@dataclass
class Result:
    run: RunSpec
    folder: Path
    results: dict[str, Any]

    def metric(self, key: str, table: str = "ae") -> float | None:
        return (self.results.get(table) or {}).get(key)

    @property
    def init_args(self) -> dict[str, Any]:
        return self.run.config.get("model", {}).get("init_args", {})

    @property
    def data(self) -> dict[str, Any]:
        return self.run.config.get("data", {})


def collect(study: Study, folder: Path) -> list[Result]:
    """Every run with results (tested or diverged); the sections read only tested ones."""
    found = []
    for run in study.runs:
        run_dir = folder / "runs" / run.run_id
        results = read_results(run_dir)
        if results is not None:
            found.append(Result(run, run_dir, results))
    return found


def fmt(values: list[float | None], digits: int = 4) -> str:
    """A value, or mean ± std over seeds; '-' when not measured."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def number(value: float | None, digits: int = 4) -> str:
    """A measured value for a sentence; 'not measured' when the runs did not record it."""
    return "not measured" if value is None else f"{value:.{digits}f}"


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


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
    epochs = sorted({r.results.get("epochs") for r in results if r.results.get("epochs") is not None})
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
        sessions = [s for s in read_sessions(self.folder) if (s.get("runs") or {}).get("ran")]
        if sessions:
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

        failed = [r for r in self.results if r.results.get("status") == "diverged"]
        if failed:
            self.doc.add(
                Table(
                    ["diverged run", "where and why"],
                    [[r.run.describe(), (r.results.get("diverged") or {}).get("message", "")] for r in failed],
                    "Diverged runs have no metric values and are left out of every table below.",
                )
            )

    # -- 2.1 ---------------------------------------------------------------------------------

    def basic(self) -> None:
        self.doc.add(Heading("2.1a-b: the basic autoencoder, compression and reconstruction"))
        runs = self.experiment("basic_ae")
        if not runs:
            return self.missing("basic_ae")
        rows = []
        groups = group(runs, lambda r: (r.init_args.get("activation"), r.init_args.get("code_dim")))
        for (activation, dim), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1])):
            values = {k: [m.metric(f"test/{k}") for m in members] for k in ("bce_per_pixel", "bce_per_image")}
            values |= {k: [m.metric(f"test/{k}") for m in members] for k in ("mse_per_pixel", "mse_per_image")}
            rows.append(
                [activation, str(dim), f"{784 / dim:.1f}", f"{100 * (1 - dim / 784):.1f}%"]
                + [fmt(values[k]) for k in ("bce_per_pixel", "bce_per_image", "mse_per_pixel", "mse_per_image")]
            )
        self.doc.add(
            Table(
                ["encoder", "d'", "784/d'", "size saved", "BCE/pixel", "BCE/image", "MSE/pixel", "MSE/image"],
                rows,
                protocol(runs),
            )
        )
        reference = groups.get(("sigmoid", 32)) or next(iter(groups.values()))
        r = reference[0]
        dim, activation = r.init_args.get("code_dim"), r.init_args.get("activation")
        bce = mean([m.metric("test/bce_per_pixel") for m in reference])
        mse = mean([m.metric("test/mse_per_pixel") for m in reference])
        # BCE scores probabilities: a run with a linear or tanh output has MSE only.
        error = f"test BCE is {bce:.4f} per pixel" if bce is not None else f"test MSE is {number(mse)} per pixel"
        self.doc.add(
            Paragraph(
                f"At d'={dim} ({activation} encoder) the code is {784 / dim:.1f} times smaller than the image and the "
                f"{error}. Published anchor: about 0.09 BCE per pixel for the Keras blog's "
                f"32-d AE ({ANCHORS['keras']})."
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
        series_acc, series_bce, rows, wins = {}, {}, [], []
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
                ae, pca = (
                    mean([m.metric("test/knn_acc") for m in ms]),
                    mean([m.metric("test/knn_acc", "pca") for m in ms]),
                )
                if ae is not None and pca is not None:
                    wins.append((activation, d, ae > pca))
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
                ],
                rows,
                "Times are per test image. " + protocol(runs),
            ),
        )
        better = [f"{d} ({a})" for a, d, win in wins if win]
        worse = [f"{d} ({a})" for a, d, win in wins if not win]
        self.doc.add(
            Paragraph(
                (
                    "kNN on the AE's codes is more accurate than on PCA's at d' = " + ", ".join(better) + "; "
                    if better
                    else "kNN on the AE's codes is at most as accurate as on PCA's at every d' measured. "
                )
                + ("it is less or equally accurate at " + ", ".join(worse) + ". " if better and worse else "")
                + "Whether the AE generalises: its test accuracy is measured on images it never saw, with the "
                "kNN fitted on the training codes only."
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
                ],
                rows,
                protocol(runs),
            )
        )
        # The headline: the deepest network at the smallest and the largest d' (Hinton's 784-1000-500-250-30).
        deepest = max(depth for depth, _ in groups)
        dims = sorted(dim for depth, dim in groups if depth == deepest)
        parts = []
        for dim in dict.fromkeys((dims[0], dims[-1])):
            ms = groups[(deepest, dim)]

            def value(key: str, table: str, ms=ms) -> float:
                return mean([m.metric(key, table) for m in ms])

            parts.append(
                f"at d'={dim} its kNN accuracy is {number(value('test/knn_acc', 'ae'), 3)} against PCA's "
                f"{number(value('test/knn_acc', 'pca'), 3)}, and its squared error per image "
                f"{number(value('test/mse_per_image', 'ae'), 2)} against PCA's "
                f"{number(value('test/mse_per_image', 'pca'), 2)}"
            )
        hidden = groups[(deepest, dims[0])][0].init_args.get("hidden_dims") or []
        shape = "-".join(str(n) for n in [784, *hidden]) + "-d'"
        self.doc.add(
            Paragraph(
                f"The deepest AE measured ({shape}, L={deepest}): " + "; ".join(parts) + ". "
                f"Anchors: {ANCHORS['hinton']} {ANCHORS['umap']}"
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
        # PCA at the same d' as the first AE panel above 2, through the same t-SNE (homework 2.1e compares them).
        reference = next((r for r, _ in chosen if r.init_args.get("code_dim") != 2), None)
        if reference is not None:
            self.doc.add(
                Figure(
                    self.pca_tsne(reference),
                    f"PCA with d'={reference.init_args['code_dim']} components: t-SNE of the same test images.",
                )
            )
        self.doc.add(
            Paragraph("One colour and marker per digit. kNN accuracies of the same codes are in the tables above.")
        )

    def pca_tsne(self, reference: Result) -> Path:
        """t-SNE of the PCA codes of the test images the reference run's TSNEPlot used (same count, same seed)."""
        from lightning_ae.callbacks import TSNEPlot
        from lightning_ae.data import MNISTDataModule
        from lightning_ae.evaluation.pca import as_numpy, fit_pca

        callbacks = reference.run.config.get("trainer", {}).get("callbacks") or []
        args = next((c.get("init_args") or {} for c in callbacks if c.get("class_path", "").endswith("TSNEPlot")), {})
        plot = TSNEPlot(**{k: v for k, v in args.items() if k in ("max_points", "perplexity", "seed")})
        data = {k: v for k, v in reference.data.items() if k in ("dataset", "val_size", "train_subset", "seed")}
        datamodule = MNISTDataModule(**data)
        datamodule.setup()
        train, test = datamodule.split("train"), datamodule.split("test")
        pca, _ = fit_pca(as_numpy(train.images), int(reference.init_args["code_dim"]))
        codes = pca.transform(as_numpy(test.images[: plot.max_points])).astype("float64")
        points, title = plot.embed(codes)
        figure = plot.figure(points, test.labels[: plot.max_points].numpy(), datamodule.class_names, f"PCA: {title}")
        path = self.plots / "pca_tsne.png"
        figure.savefig(path, format="png")
        return path

    def conv(self) -> None:
        self.doc.add(Heading("2.1f: the convolutional autoencoder"))
        runs = self.experiment("conv_ae")
        if not runs:
            return self.missing("conv_ae")
        from lightning_ae.models import ConvAutoencoder

        r = runs[0]
        args = {k: v for k, v in r.init_args.items() if k not in ("optimizer", "scheduler")}
        trace = ConvAutoencoder(**args).describe_rows()
        self.doc.add(Paragraph("How the input is transformed, layer by layer (shape after each layer):"))
        self.doc.add(
            Table(["layer", "shape after it", "note"], [[name, str(shape), note] for name, shape, note in trace])
        )
        rows = [
            [
                m.run.describe(),
                str(m.init_args.get("code_dim") or 784),
                fmt([m.metric("test/bce_per_pixel")]),
                fmt([m.metric("test/knn_acc")]),
                fmt([m.metric("test/knn_acc", "pca")]),
            ]
            for m in runs
        ]
        self.doc.add(Table(["run", "code size", "BCE/pixel", "kNN AE", "kNN PCA"], rows, protocol(runs)))

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
                ["p kept", "BCE dAE", "BCE corrupted", "BCE plain AE", "MSE dAE", "MSE corrupted", "kNN dAE (clean)"],
                rows,
                protocol(runs),
            ),
        )
        gains = [
            (
                p,
                mean([m.metric("test/corrupted_bce_per_pixel") for m in by_p[p]]),
                mean([m.metric("test/bce_per_pixel") for m in by_p[p]]),
            )
            for p in ps
        ]
        text = "; ".join(
            f"p={p}: {c:.4f} corrupted -> {d:.4f} denoised" for p, c, d in gains if c is not None and d is not None
        )
        self.doc.add(
            Paragraph(
                f"Test BCE against the clean images, corrupted input -> denoising AE: {text}. "
                "kNN is measured on the clean test images' codes (2.2c)."
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
            for r in runs
        ]
        self.doc.add(
            Table(
                ["corruption", "parameters", "BCE dAE", "BCE corrupted", "BCE plain AE", "kNN dAE"],
                rows,
                protocol(runs),
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
        runs = self.experiment("similarity")
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
        self.doc.add(
            Paragraph(
                f"Test BCE against a random same-class partner: {fmt([m.metric('test/bce_per_pixel') for m in runs])} "
                f"per pixel; kNN accuracy of the codes: {fmt([m.metric('test/knn_acc') for m in runs])} "
                f"(PCA {fmt([m.metric('test/knn_acc', 'pca') for m in runs])}). "
                "The loss is still minimised by the mean of the possible targets, so the model learns a per-class "
                "average, not a reconstruction (see the README)."
            )
        )

    def pretraining(self) -> None:
        self.doc.add(Heading("2.4: pre-training, before and after fine-tuning"))
        scratch = self.experiment("classifier")
        pipelines = self.experiments("pretrain_")
        if not scratch and not pipelines:
            return self.missing("classifier / pretrain_<activation>")
        activations = sorted(
            {r.init_args.get("activation") for r in scratch} | {r.run.config.get("activation") for r in pipelines}
        )
        rows = []
        for act in activations:
            a = [r.metric("test/error", "model") for r in scratch if r.init_args.get("activation") == act]
            p = [r for r in pipelines if r.run.config.get("activation") == act]
            b = [r.results["stages"]["frozen"]["test/error"] for r in p]
            c = [r.results["stages"]["finetune"]["test/error"] for r in p]
            rows.append([act, fmt(a), fmt(b), fmt(c)])
        self.doc.add(
            Table(
                ["activation", "(a) no pre-training", "(b) pre-trained, frozen", "(c) pre-trained, fine-tuned"],
                rows,
                "Test error. " + protocol(scratch + pipelines),
            ),
            Paragraph(f"Anchor: {ANCHORS['pretraining']}"),
        )

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
        ):
            section()
        try:
            return self.doc.write(self.output)
        finally:
            shutil.rmtree(self.plots, ignore_errors=True)


def write_report(study: Study, folder: Path, output: Path) -> tuple[Path, Path]:
    return ReportBuilder(study, folder, output).build()
