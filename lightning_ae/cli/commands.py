"""The `lightning-ae` command: the Lightning CLI (`fit`, `validate`, `test`, `predict`) plus its own commands.

lightning-ae fit --config configs/basic_ae.yaml [--model.init_args.code_dim 8 ...]
lightning-ae describe --config configs/conv_ae.yaml   (the shape after every layer)
lightning-ae pretrain --config configs/pretrain_sigmoid.yaml   (homework 2.4 pipeline)
lightning-ae study configs/study/quick.yaml   (a grid of runs, then its report)
lightning-ae report configs/study/quick.yaml   (the report from the runs present)
lightning-ae data [--dataset mnist] [--layout image]
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from typing_extensions import override

from lightning_ae.callbacks.interruption import RESUME_FIT, RESUME_RERUN
from lightning_ae.callbacks.results import ResultsJSON, run_failure
from lightning_ae.checks import non_finite_values
from lightning_ae.cli.errors import check_files, translated
from lightning_ae.data import DATASETS, ImageDataModule
from lightning_ae.data.datamodule import LAYOUTS
from lightning_ae.experiment import StageDiverged, lightning_cli, run_pipeline
from lightning_ae.study.engines import EXIT_BUSY, ChildCommand, EngineUnavailable
from lightning_ae.study.report import write_report
from lightning_ae.study.runner import (
    Engine,
    check_runs,
    find_run,
    run_one,
    run_study,
    select,
    sequential,
    summary_table,
)
from lightning_ae.study.spec import Study, load_study


def fit_and_friends(argv: list[str] | None) -> int:
    """Lightning's own subcommands (fit, validate, test, predict) on a config."""
    # argv=None lets LightningCLI read sys.argv itself (passing both makes it warn).
    cli = lightning_cli(argv)
    if cli.subcommand in ("fit", "test"):
        print(where_it_went(cli.trainer), flush=True)
    # A diverged run, or one whose test metrics are no result, has already said where and what to try.
    if run_failure(cli.trainer) is not None:
        return 3
    metrics = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
    if cli.subcommand == "validate" and (bad := non_finite_values(metrics)):
        print(
            f"lightning-ae: the validation is no result: {', '.join(bad)} not finite (NaN weights?).", file=sys.stderr
        )
        return 3
    return 0


def pretrain(argv: list[str]) -> int:
    """Greedy layer-wise pre-training, then frozen and fine-tuned classifiers (homework 2.4); resumable."""
    try:
        summary = run_pipeline(argv)
    except StageDiverged as err:
        print(f"lightning-ae: {err}", file=sys.stderr)
        return 3  # as a diverged fit
    print(f"{'stage':10s} {'test acc':>9s} {'test error':>11s} {'epochs':>7s}")
    for name, row in summary["stages"].items():
        print(f"{name:10s} {row['test/acc']:9.4f} {row['test/error']:11.4f} {row['epochs']:7d}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that raises its errors (one `lightning-ae: error:` line, like every other), instead of exiting."""

    @override
    def error(self, message: str) -> NoReturn:
        raise argparse.ArgumentError(None, f"{self.prog}: {message}")


def _study_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments `study` and `report` share: which study, its seeds, where its runs and report go."""
    parser = _Parser(prog=f"lightning-ae {name}", description=description)
    parser.add_argument("study_file", help="e.g. configs/study/quick.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="repeat every run with seeds 0..N-1")
    parser.add_argument("--folder", default=None, help="where the runs go (default: studies/<name>)")
    parser.add_argument("--report", default=None, help="where the report goes (default: reports/<name>)")
    return parser


def _load_study(args: argparse.Namespace) -> tuple[Study, Path]:
    spec = load_study(args.study_file, seeds=args.seeds)
    return spec, Path(args.folder or Path("studies") / spec.name)


def _write_report(spec: Study, folder: Path, args: argparse.Namespace) -> None:
    markdown, page = write_report(spec, folder, Path(args.report or Path("reports") / spec.name))
    print(f"report: {markdown} and {page}")


ENGINES = ("sequential", "ray", "slurm")


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engines (docs/studies.md#running-a-study-on-a-cluster)")
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default="sequential",
        help="sequential: every run in this process (default); ray: each run a Ray task, on a local cluster of this "
        "machine's cores or the one at --ray-address (extra [ray]); slurm: the runs as one SLURM job array through "
        "submitit (extra [slurm])",
    )
    group.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else local)")
    group.add_argument(
        "--cpus-per-run",
        type=float,
        default=None,
        help="CPU cores (and torch threads) per run; ray default: the cores spread over the pending runs, at least "
        "1; slurm default: 4",
    )
    group.add_argument(
        "--gpus-per-run", type=float, default=0.0, help="GPUs per run (ray: fractions share a GPU, e.g. 0.5)"
    )
    group.add_argument("--partition", default=None, help="slurm: the partition (default: the cluster's)")
    group.add_argument("--time-min", type=int, default=240, help="slurm: each run's time limit in minutes")
    group.add_argument("--max-parallel", type=int, default=None, help="slurm: at most this many runs at once")
    group.add_argument(
        "--slurm-local",
        action="store_true",
        help="slurm: run the array through submitit's local executor (a check of the setup without SLURM)",
    )


# Which of the engine options each engine takes (the others, given, are refused).
SETTINGS_OF_ENGINE = {
    "sequential": set(),
    "ray": {"ray_address", "cpus_per_run", "gpus_per_run"},
    "slurm": {"cpus_per_run", "gpus_per_run", "partition", "time_min", "max_parallel", "slurm_local"},
}


def _engine(args: argparse.Namespace, parser: argparse.ArgumentParser, folder: Path) -> Engine:
    """The engine the arguments ask for, its settings checked before anything starts."""
    settings = sorted(set().union(*SETTINGS_OF_ENGINE.values()))
    given = [name for name in settings if getattr(args, name) != parser.get_default(name)]
    if stray := [name for name in given if name not in SETTINGS_OF_ENGINE[args.engine]]:
        options = ", ".join("--" + name.replace("_", "-") for name in stray)
        raise ValueError(f"{options}: not a setting of --engine {args.engine}; see `lightning-ae study --help`.")
    for name in ("cpus_per_run", "gpus_per_run", "time_min", "max_parallel"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (value == 0 and name != "gpus_per_run")):
            raise ValueError(f"--{name.replace('_', '-')} {value:g} is not valid; valid: a number above 0.")
    if args.engine == "sequential":
        return sequential
    command = ChildCommand(Path(args.study_file), folder, args.seeds)
    if args.engine == "ray":
        from lightning_ae.study.ray_engine import RayEngine, import_ray

        import_ray()  # without the extra: one line naming it, before a session is recorded
        address = args.ray_address or os.environ.get("RAY_ADDRESS") or None
        return RayEngine(command, address=address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run)
    from lightning_ae.study.slurm_engine import SlurmEngine, import_submitit

    import_submitit()
    for name in ("cpus_per_run", "gpus_per_run"):
        value = getattr(args, name)
        if value is not None and value != int(value):
            raise ValueError(f"--{name.replace('_', '-')} {value:g}: SLURM allocates whole CPUs and GPUs per run.")
    if not args.slurm_local and shutil.which("sbatch") is None:
        raise EngineUnavailable(
            "--engine slurm: no `sbatch` on this machine; run the study from a SLURM login node, or add --slurm-local "
            "to run the same array through submitit's local executor here."
        )
    return SlurmEngine(
        command,
        partition=args.partition,
        time_min=args.time_min,
        max_parallel=args.max_parallel,
        cpus_per_run=int(args.cpus_per_run or 4),
        gpus_per_run=int(args.gpus_per_run),
        cluster="local" if args.slurm_local else "slurm",
    )


def study(argv: list[str]) -> int:
    """Run a study (experiments x grids x seeds), resumable, in this process or on Ray or SLURM, then write its
    report."""
    parser = _study_parser("study", study.__doc__)
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state; run nothing")
    parser.add_argument("--only", default=None, help="run only runs whose id or experiment matches this pattern")
    parser.add_argument(
        "--run",
        default=None,
        metavar="RUN_ID",
        help="run exactly this run (an id from --dry-run) in this process, with no session or report: the command "
        "an engine starts for each run; exit 0 when it is done, 1 when it failed (failed.json), "
        f"{EXIT_BUSY} when another process is running it",
    )
    _add_engine_arguments(parser)
    args = parser.parse_args(argv)
    spec, folder = _load_study(args)
    if args.run is not None:
        if args.only or args.dry_run or args.engine != "sequential":
            raise ValueError("--run names one run: give it without --only, --dry-run or --engine.")
        return study_run(spec, folder, args.run)
    engine = _engine(args, parser, folder)
    if args.only and not select(spec, args.only):
        experiments = ", ".join(dict.fromkeys(run.experiment for run in spec.runs))
        raise ValueError(
            f"--only {args.only!r} matches no run of study {spec.name!r} (its experiments: {experiments}); "
            "`--dry-run` lists every run id."
        )
    check_runs(spec)  # every run's config parses, before any runs
    print(f"study {spec.name}: {len(spec.runs)} runs; folder {folder}; engine {args.engine}")
    outcome = run_study(spec, folder, only=args.only, dry_run=args.dry_run, engine=engine)
    if args.dry_run:
        return 0
    print(summary_table(select(spec, args.only), folder))
    print(f"study {spec.name}: " + ", ".join(f"{len(ids)} {name}" for name, ids in outcome.items()))
    if not args.only:
        _write_report(spec, folder, args)
    return 1 if outcome["failed"] else 0


def study_run(spec: Study, folder: Path, run_id: str) -> int:
    """`study FILE --run RUN_ID`: one run, checked first as the whole study is (only its own config)."""
    run = find_run(spec, run_id)
    check_runs(dataclasses.replace(spec, runs=[run]))
    outcome = run_one(run, folder)
    print(f"run {run_id}: {outcome}")
    return {"done": 0, "ran": 0, "failed": 1, "busy": EXIT_BUSY}[outcome]


def report(argv: list[str]) -> int:
    """Write the report of a study from whatever results are present (while it runs, or after --only parts)."""
    args = _study_parser("report", report.__doc__).parse_args(argv)
    spec, folder = _load_study(args)
    if not (folder / "runs").is_dir():
        raise FileNotFoundError(
            f"{folder} holds no runs of study {spec.name!r}: run `lightning-ae study {args.study_file}` first, or "
            "give the study's folder with --folder."
        )
    _write_report(spec, folder, args)
    return 0


def where_it_went(trainer) -> str:
    """One line: where the run's results.json, best checkpoint and TensorBoard logs are."""
    parts = []
    results = next((c for c in trainer.callbacks if isinstance(c, ResultsJSON)), None)
    if results is not None and results.path(trainer).is_file():
        parts.append(f"results {results.path(trainer)}")
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best:
        parts.append(f"best checkpoint {best}")
    logger = trainer.logger
    if logger is not None and getattr(logger, "save_dir", None):
        parts.append(f"TensorBoard: tensorboard --logdir {logger.save_dir}")
    return "lightning-ae: " + ("; ".join(parts) if parts else "nothing was written")


def describe(argv: list[str]) -> int:
    """Print the model of a config layer by layer: the shape after every layer and its parameters."""
    saved, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it sees arguments it was not given
    try:
        cli = lightning_cli(argv, run=False)
    finally:
        sys.argv = saved
    print(cli.model.describe())
    total = sum(p.numel() for p in cli.model.parameters())
    print(f"{type(cli.model).__name__}: {total:,} parameters; input {cli.datamodule.input_shape}")
    return 0


def data_check(argv: list[str]) -> int:
    """Load, verify and describe a dataset's splits, and draw one batch of each."""
    parser = _Parser(prog="lightning-ae data", description=data_check.__doc__)
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files (default: bundled data)")
    parser.add_argument("--layout", default="flat", choices=LAYOUTS)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    datamodule = ImageDataModule(
        dataset=args.dataset, data_dir=args.data_dir, layout=args.layout, val_size=args.val_size, seed=args.seed
    )
    datamodule.prepare_data()
    datamodule.setup()
    print(datamodule.describe())
    loaders = (
        ("train", datamodule.train_dataloader()),
        ("val", datamodule.val_dataloader()),
        ("test", datamodule.test_dataloader()),
    )
    for stage, loader in loaders:
        inputs, targets, labels = next(iter(loader))
        print(
            f"  first {stage} batch: input {tuple(inputs.shape)} in [{inputs.min():.2f}, {inputs.max():.2f}], "
            f"target {tuple(targets.shape)}, labels {tuple(labels.shape)}; {len(loader)} batches"
        )
    return 0


COMMANDS = {"data": data_check, "describe": describe, "pretrain": pretrain, "study": study, "report": report}
# Every command, with what it does (`lightning-ae --help`); fit, validate, test and predict are Lightning's.
OVERVIEW = {
    "fit": "train a config, then test its best checkpoint (results.json, checkpoints, TensorBoard logs)",
    "validate": "score a checkpoint on the validation split",
    "test": "score a checkpoint on the test split, with the config's evaluation (results.json)",
    "predict": "write the codes and reconstructions of the test split (predictions.pt)",
    "describe": "print a config's model layer by layer: shapes and parameters",
    "data": "load, verify and describe a dataset's splits",
    "pretrain": "greedy layer-wise pre-training, then frozen and fine-tuned classifiers (homework 2.4)",
    "study": "run a grid of runs (resumable; in this process, or on Ray or SLURM), then write its report",
    "report": "write a study's report from the runs present",
}


def overview() -> str:
    lines = ["usage: lightning-ae COMMAND [options]   (lightning-ae COMMAND --help: every option)", "", "commands:"]
    lines += [f"  {name:9s} {text}" for name, text in OVERVIEW.items()]
    lines += ["", "e.g. lightning-ae fit --config configs/basic_ae.yaml --config configs/fragments/evaluation.yaml"]
    return "\n".join(lines)


def unknown_command(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(OVERVIEW), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"{name!r} is not a command; commands: {', '.join(OVERVIEW)}.{hint}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv

    def dispatch() -> int:
        if not args or args[0] in ("-h", "--help"):
            print(overview())
            return 0
        if not args[0].startswith("-") and args[0] not in OVERVIEW:
            raise unknown_command(args[0])
        check_files(args)
        if args[0] in COMMANDS:
            return COMMANDS[args[0]](args[1:])
        return fit_and_friends(argv)

    # Deprecations inside Lightning's and jsonargparse's own code, which no user setting can act on.
    warnings.filterwarnings("ignore", message=r".*was deprecated in v4\.\d+.* will be removed in v5")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

    # pretrain and study find their own checkpoints: they resume by running again, not with --ckpt_path.
    return translated(dispatch, RESUME_RERUN if args and args[0] in ("pretrain", "study") else RESUME_FIT)
