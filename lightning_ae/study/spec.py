"""A study: experiments as a base config plus a grid of overrides, expanded into runs with stable ids.

A study file (OmegaConf YAML):

    name: quick
    description: ...
    every_run:                      # dotted overrides applied to every fit run
      trainer.max_epochs: 3
      data.train_subset: 5000
    callbacks:                      # init_args merged into the named callbacks of every fit run
      TSNEPlot: {max_points: 1000}
    experiments:
      basic_ae:                     # the experiment's name (a report section uses it)
        config: [configs/basic_ae.yaml, configs/fragments/evaluation.yaml]   # or one file
        grid:                       # every combination is one run
          model.init_args.code_dim: [2, 4, 8]
          model.init_args.activation: [sigmoid, relu]
        overrides: {trainer.max_epochs: 5}   # fixed, after every_run
        seeds: {count: 3, where: {model.init_args.code_dim: [32]}}   # more seeds for headline rows
      pretrain_sigmoid:
        pipeline: [configs/pretrain.yaml, configs/pretrain_sigmoid.yaml]   # a `lightning-ae pretrain` pipeline
        overrides: {train_subset: 5000}

An experiment's `seeds` is a count for all its grid points, or `{count, where}` for the grid
points whose values are among `where`'s (the others keep the study's seeds); never fewer than the study's.

`config` (and `pipeline`) is one file or a list of files, composed as `lightning-ae fit --config A
--config B` composes them: a later file's mappings merge into the earlier ones, its lists and
values replace theirs, a `key+:` list is appended to `key` (jsonargparse's list append, e.g.
`trainer: {callbacks+: [...]}`), a `class_path` that changes replaces the whole class spec, and a
dict-typed value (`data.corruption_args`) is replaced, not merged.

Each run's config is resolved here (the composed YAML with the overrides applied) and its id
is a hash of that resolved config and the seed: the same config always gets the same
id, a changed one a new id, so results of different configs never mix.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_ae.checks import check_expansion, check_path_segment, same_network

KINDS = ("fit", "pretrain")
MAX_SEEDS = 1000
MAX_RUNS = 10_000  # a study this big is a typo, or several studies
STUDY_KEYS = {"name", "description", "every_run", "callbacks", "experiments", "seeds"}
EXPERIMENT_KEYS = {"config", "pipeline", "grid", "overrides", "description", "seeds"}


class StudyError(ValueError):
    """A study file that cannot be used as it is; the message says what and where."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: what to train, fully resolved."""

    experiment: str
    kind: str  # "fit" or "pretrain"
    config: dict[str, Any]
    seed: int
    labels: dict[str, Any] = field(default_factory=dict)  # the grid values that make this run
    # The study's fixed overrides of the run (every_run for fits, then the experiment's own): the report lists them.
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)
    # For a denoising run compared with its plain autoencoder (`DenoisingReference`, `plain_checkpoint: auto`): the
    # clean runs of the same network in this study, the one of the same seed first. The runner hands the first that
    # has finished to the run (`runner.execute`), whichever engine runs it and in whatever order.
    plain_runs: tuple[str, ...] = field(default=(), compare=False)

    @property
    def run_id(self) -> str:
        text = json.dumps({"kind": self.kind, "config": self.config, "seed": self.seed}, sort_keys=True)
        return f"{self.experiment}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    def describe(self) -> str:
        labels = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.labels.items())
        return f"{self.experiment}[{labels}] seed={self.seed}" if labels else f"{self.experiment} seed={self.seed}"


@dataclass
class Study:
    name: str
    description: str
    runs: list[RunSpec]
    source: Path
    unused_callbacks: list[str] = field(default_factory=list)  # names under `callbacks:` that no experiment has


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


_ABSENT = object()


def _set(config: DictConfig, dotted: str, value: Any, where: str) -> None:
    """Set `a.b.c` with OmegaConf.update; the parent keys must exist (a typo must not create a new key)."""
    *parents, _ = dotted.split(".")
    for depth in range(1, len(parents) + 1):
        parent = ".".join(parents[:depth])
        node = OmegaConf.select(config, parent, default=_ABSENT)
        if node is _ABSENT:
            raise StudyError(f"{where}: override {dotted!r}: {parent!r} is not in the config.")
        if node is None:  # e.g. `corruption_args: null` receiving `corruption_args.p`
            OmegaConf.update(config, parent, {}, merge=False)
        elif not isinstance(node, DictConfig):
            raise StudyError(f"{where}: override {dotted!r}: {parent!r} is not a mapping.")
    # merge=False: the value replaces what is there, as a config file would. OmegaConf copies it into
    # this run's config, so a later override that edits inside it never reaches another run.
    OmegaConf.update(config, dotted, value, merge=False)


def _compose(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Config files in order, as `--config A --config B` composes them (see the module docstring)."""
    composed: dict[str, Any] = {}
    for layer in layers:
        _merge_into(composed, layer)
    return composed


def _merge_into(base: dict[str, Any], layer: dict[str, Any], top: bool = True) -> None:
    for key, value in layer.items():
        if isinstance(key, str) and key.endswith("+"):  # append, e.g. trainer.callbacks+
            key = key[:-1]
            present = base.get(key)
            value = [*(present if isinstance(present, list) else []), *(value if isinstance(value, list) else [value])]
            base[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and _merges(base.get(key), value, top or key == "init_args"):
            _merge_into(base[key], value, top=False)
        else:
            base[key] = copy.deepcopy(value)


def _merges(present: Any, new: dict[str, Any], section: bool) -> bool:
    """Whether a mapping merges into the present one, as jsonargparse does: into a section (trainer,
    model, data, a pipeline stage), init_args, or a class spec of the same class_path; a new class_path
    replaces the whole spec, and any other mapping (a dict-typed value such as data.corruption_args)
    replaces the present one."""
    if not isinstance(present, dict):
        return False
    if "class_path" in present or "class_path" in new:
        return present.get("class_path") == new.get("class_path", present.get("class_path"))
    return section


def _apply_callbacks(config: dict[str, Any], callbacks: dict[str, dict[str, Any]], where: str) -> set[str]:
    """Merge the study's `callbacks:` init_args into the run's callbacks of those names; the names it has."""
    present = config.get("trainer", {}).get("callbacks") or []
    names = {entry.get("class_path", "").rsplit(".", 1)[-1]: entry for entry in present if isinstance(entry, dict)}
    for name, args in callbacks.items():
        if name in names:
            if not isinstance(args, dict | None):
                raise StudyError(f"{where}: callbacks.{name} must map init_args to values; got {args!r}.")
            names[name].setdefault("init_args", {}).update(args or {})
    return set(names)


def _load_configs(paths: list[Path], where: str) -> dict[str, Any]:
    return _compose([_load_yaml(path, where) for path in paths])


def _load_yaml(path: Path, where: str) -> dict[str, Any]:
    if not path.is_file():
        raise StudyError(f"{where}: config {str(path)!r} does not exist.")
    try:
        check_expansion(yaml.safe_load(path.read_text()), f"{where}: config {path}")  # before OmegaConf expands it
        loaded = _plain(OmegaConf.load(path))
    except ValueError as err:
        raise StudyError(str(err)) from err
    except Exception as err:  # OmegaConf raises several YAML/grammar errors
        raise StudyError(f"{where}: config {path} cannot be read: {err}") from err
    if not isinstance(loaded, dict):
        raise StudyError(f"{where}: config {path} is not a mapping.")
    return loaded


def load_study(path: str | Path, seeds: int | None = None) -> Study:
    """Read and check a study file and expand it into runs; every mistake is a StudyError naming it."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {str(path)!r} does not exist.")
    try:
        check_expansion(yaml.safe_load(path.read_text()), f"study file {path}")  # before OmegaConf expands it
        raw = _plain(OmegaConf.load(path))
    except ValueError as err:
        raise StudyError(str(err)) from err
    except Exception as err:
        raise StudyError(f"study file {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict) or not raw:
        raise StudyError(f"study file {path} is empty or not a mapping; it needs 'name' and 'experiments'.")
    if unknown := set(raw) - STUDY_KEYS:
        raise StudyError(f"study file {path}: unknown keys {sorted(unknown)}; valid: {sorted(STUDY_KEYS)}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise StudyError(f"study file {path}: 'name' must be a word (letters, digits, - or _); got {name!r}.")
    experiments = raw.get("experiments")
    if not isinstance(experiments, dict) or not experiments:
        raise StudyError(f"study file {path}: 'experiments' must be a non-empty mapping of name -> experiment.")
    seeds = seeds if seeds is not None else raw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 0 < seeds <= MAX_SEEDS:
        raise StudyError(f"study file {path}: seeds={seeds!r} is not valid; valid: an integer from 1 to {MAX_SEEDS}.")
    every_run, callbacks = raw.get("every_run") or {}, raw.get("callbacks") or {}
    for key, value in (("every_run", every_run), ("callbacks", callbacks)):
        if not isinstance(value, dict):
            raise StudyError(f"study file {path}: {key!r} must be a mapping; got {value!r}.")
    _check_size(path, experiments, seeds)
    callback_names: set[str] = set()
    root = path.resolve().parent
    runs: list[RunSpec] = []
    for experiment, spec in experiments.items():
        where = f"{path}: experiment {experiment!r}"
        try:  # its runs' folders are named after it
            check_path_segment(f"{path}: experiment name", experiment)
        except ValueError as err:
            raise StudyError(str(err)) from None
        if not isinstance(spec, dict):
            raise StudyError(f"{where} must be a mapping with 'config' or 'pipeline'.")
        if unknown := set(spec) - EXPERIMENT_KEYS:
            raise StudyError(f"{where}: unknown keys {sorted(unknown)}; valid: {sorted(EXPERIMENT_KEYS)}.")
        if ("config" in spec) == ("pipeline" in spec):
            raise StudyError(f"{where} needs exactly one of 'config' (a fit) or 'pipeline' (a pretrain pipeline).")
        kind = "fit" if "config" in spec else "pretrain"
        key = "config" if kind == "fit" else "pipeline"
        files = spec[key] if isinstance(spec[key], list) else [spec[key]]
        if not files or not all(isinstance(f, str) for f in files):
            raise StudyError(f"{where}: {key!r} must be a config file or a non-empty list of config files.")
        base = [_find(f, root) for f in files]
        grid = spec.get("grid") or {}
        if not isinstance(spec.get("overrides") or {}, dict):
            raise StudyError(f"{where}: 'overrides' must map dotted keys to values; got {spec.get('overrides')!r}.")
        if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
            raise StudyError(f"{where}: 'grid' must map each dotted key to a non-empty list of values.")
        seeds_for = _seeds_rule(spec.get("seeds"), seeds, grid, where)
        for values in itertools.product(*grid.values()):
            labels = dict(zip(grid.keys(), values, strict=True))
            for seed in range(seeds_for(labels)):
                config = OmegaConf.create(_load_configs(base, where))
                fixed = {**(every_run if kind == "fit" else {}), **(spec.get("overrides") or {})}
                for dotted, value in {**fixed, **labels}.items():
                    _set(config, dotted, value, where)
                if kind == "fit":
                    _set(config, "seed_everything", seed, where)
                    _set(config, "data.seed", seed, where)
                else:
                    _set(config, "seed", seed, where)
                config = _plain(config)
                if kind == "fit":
                    callback_names |= _apply_callbacks(config, callbacks, where)
                runs.append(RunSpec(experiment, kind, config, seed, labels, fixed))
    runs = _with_plain_runs(runs)
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise StudyError(f"study file {path}: two runs resolve to the same config; remove the duplicate grid values.")
    # Names no experiment has: checked against the callback classes when the study runs (a typo is refused there).
    return Study(name, raw.get("description", ""), runs, path, sorted(set(callbacks) - callback_names))


def plain_references(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config's `DenoisingReference` callbacks that look for their plain autoencoder (`plain_checkpoint: auto`):
    in a study the runner names that run instead (`runner.execute`)."""
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    return [
        c
        for c in callbacks
        if isinstance(c, dict)
        and str(c.get("class_path", "")).rsplit(".", 1)[-1] == "DenoisingReference"
        and (c.get("init_args") or {}).get("plain_checkpoint", "auto") == "auto"
    ]


def _clean_autoencoder(run: RunSpec) -> bool:
    data = run.config.get("data") or {}
    return run.kind == "fit" and data.get("corruption") is None and not data.get("pairs")


def _with_plain_runs(runs: list[RunSpec]) -> list[RunSpec]:
    """Each denoising run with the clean runs of the same network it can be compared with (`RunSpec.plain_runs`)."""
    clean = [run for run in runs if _clean_autoencoder(run)]
    found = []
    for run in runs:
        if run.kind == "fit" and plain_references(run.config):
            twins = sorted(
                (r for r in clean if same_network(r.config, run.config)), key=lambda r: (r.seed != run.seed, r.seed)
            )
            run = replace(run, plain_runs=tuple(r.run_id for r in twins))
        found.append(run)
    return found


def _check_size(path: Path, experiments: dict[str, Any], seeds: int) -> None:
    """Refuse a study of more than MAX_RUNS runs before expanding it (a typo'd seed count would spin for hours)."""
    total = 0
    for spec in experiments.values():
        grid = spec.get("grid") if isinstance(spec, dict) else None
        points = 1
        for values in (grid or {}).values() if isinstance(grid, dict) else ():
            points *= len(values) if isinstance(values, list) else 1
        rule = spec.get("seeds") if isinstance(spec, dict) else None
        count = rule.get("count") if isinstance(rule, dict) else rule
        per_point = max(count, seeds) if isinstance(count, int) and not isinstance(count, bool) else seeds
        total += points * per_point
        if total > MAX_RUNS:
            raise StudyError(
                f"study file {path}: it expands to more than {MAX_RUNS:,} runs (grid points times seeds); split it "
                "into several studies, or check the seed counts and grids for a typo."
            )


def _seeds_rule(rule: Any, default: int, grid: dict[str, list], where: str):
    """How many seeds a grid point gets: the experiment's `seeds` (a count, or {count, where}), else the study's."""
    if rule is None:
        return lambda labels: default
    if isinstance(rule, int) and not isinstance(rule, bool) and 0 < rule <= MAX_SEEDS:
        return lambda labels: max(rule, default)
    valid = "a positive integer, or {count: N, where: {grid key: [values]}}"
    if not isinstance(rule, dict) or set(rule) != {"count", "where"}:
        raise StudyError(f"{where}: seeds={rule!r} is not valid; valid: {valid}.")
    count, selected = rule["count"], rule["where"]
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_SEEDS:
        raise StudyError(f"{where}: seeds.count={count!r} is not valid; valid: an integer from 1 to {MAX_SEEDS}.")
    if not isinstance(selected, dict) or not selected or any(not isinstance(v, list) for v in selected.values()):
        raise StudyError(f"{where}: seeds.where must map grid keys to lists of values; got {selected!r}.")
    if unknown := set(selected) - set(grid):
        raise StudyError(f"{where}: seeds.where names {sorted(unknown)}, which are not grid keys: {sorted(grid)}.")
    return lambda labels: max(count, default) if all(labels[k] in v for k, v in selected.items()) else default


def _find(config: str, root: Path) -> Path:
    """A config path as written: relative to the current folder, else to the study file's folder's parents."""
    candidate = Path(config)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for folder in (root, *root.parents):
        if (folder / config).exists():
            return folder / config
    return candidate
