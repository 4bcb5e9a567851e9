"""The config files compose without repeating themselves, and every experiment's files compose to one run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BLOCK = 5  # no block of this many consecutive lines may appear in two config files

BASIC, EVALUATION = "configs/basic_ae.yaml", "configs/fragments/evaluation.yaml"
DENOISING = [BASIC, "configs/denoising_ae.yaml"]
# Every fit experiment and its config files in the order they compose, as the Makefile, the README,
# scripts/gpu_check.sh and configs/study/standard.yaml give them.
EXPERIMENTS = {
    "basic_ae": [BASIC, EVALUATION],
    "deep_ae": [BASIC, "configs/deep_ae.yaml", EVALUATION],
    "conv_ae": ["configs/conv_ae.yaml", EVALUATION],
    "denoising_ae": [*DENOISING, EVALUATION],
    **{
        f"denoising_{name}": [*DENOISING, f"configs/fragments/corruption_{name}.yaml", EVALUATION]
        for name in ("gaussian", "salt_and_pepper", "block", "strokes")
    },
    "similarity_ae": [BASIC, "configs/similarity_ae.yaml", EVALUATION],
    "similarity_deep_ae": [
        BASIC,
        "configs/deep_ae.yaml",
        "configs/similarity_ae.yaml",
        "configs/similarity_deep_ae.yaml",
        EVALUATION,
    ],
    "sparse_ae": [BASIC, "configs/sparse_ae.yaml", EVALUATION],
    "classifier": [BASIC, "configs/classifier.yaml"],
}
ACTIVATIONS = ("sigmoid", "tanh", "relu")
PIPELINES = {f"pretrain_{a}": ["configs/pretrain.yaml", f"configs/pretrain_{a}.yaml"] for a in ACTIVATIONS}
# The stacked denoising variant goes after its activation's pipeline (scripts/gpu_check.sh composes it so).
PIPELINES["pretrain_sigmoid_denoising"] = [*PIPELINES["pretrain_sigmoid"], "configs/pretrain_sigmoid_denoising.yaml"]


def content_lines(path: Path) -> list[str]:
    """The lines that say something: stripped, without blank lines and whole-line comments."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def repeated_blocks(files: list[Path]) -> dict[tuple[str, ...], list[str]]:
    """Every block of BLOCK consecutive content lines that appears in two or more of the files."""
    where: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for path in files:
        lines = content_lines(path)
        for start in range(len(lines) - BLOCK + 1):
            where[tuple(lines[start : start + BLOCK])].add(str(path))
    return {block: sorted(paths) for block, paths in where.items() if len(paths) > 1}


def test_no_block_of_five_lines_appears_in_two_config_files():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) > 10
    repeated = repeated_blocks(files)
    assert not repeated, "\n\n".join(f"{paths}:\n  " + "\n  ".join(block) for block, paths in repeated.items())


def test_the_check_finds_a_copied_block_whatever_its_comments_and_indentation(tmp_path):
    block = "\n".join(content_lines(CONFIGS / "fragments" / "evaluation.yaml")[:BLOCK])
    (a := tmp_path / "a.yaml").write_text("seed_everything: 0\n" + block + "\n")
    (b := tmp_path / "b.yaml").write_text("# a comment\n\n  " + block.replace("\n", "\n\n  # note\n  ") + "\n")
    assert list(repeated_blocks([a, b]).values()) == [[str(a), str(b)]]
    block_of_four = "\n".join(content_lines(CONFIGS / "fragments" / "evaluation.yaml")[: BLOCK - 1])
    b.write_text(block_of_four + "\n")
    assert not repeated_blocks([a, b])


def test_every_config_file_is_used_by_an_experiment_a_pipeline_or_a_study():
    used = {file for files in [*EXPERIMENTS.values(), *PIPELINES.values()] for file in files}
    from lightning_ae.models.presets import HOMEWORK_CLASSIFIER, HOMEWORK_SGD

    used |= {HOMEWORK_SGD.config, HOMEWORK_CLASSIFIER.config}  # the presets' fragments (tests/test_python_api.py)
    present = {str(p.relative_to(REPO)) for p in CONFIGS.rglob("*.yaml") if p.parent.name != "study"}
    assert present == used


def test_the_standard_study_composes_every_experiment_as_listed_here():
    """configs/study/standard.yaml runs every experiment with the same files in the same order."""
    study = OmegaConf.to_container(OmegaConf.load(CONFIGS / "study" / "standard.yaml"))
    composed = {name: spec.get("config", spec.get("pipeline")) for name, spec in study["experiments"].items()}
    expected = {**EXPERIMENTS, **PIPELINES}
    renamed = {"denoising": "denoising_ae", "similarity": "similarity_ae", "similarity_deep": "similarity_deep_ae"}
    assert {renamed.get(name, name): files for name, files in composed.items()} == expected


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_the_study_composition_matches_the_cli(name, capsys):
    """A study's config list resolves (spec.py) to what `lightning-ae fit --config ... --config ...` parses."""
    from lightning_ae.cli import lightning_cli
    from lightning_ae.study.spec import _compose, _load_yaml

    files = [REPO / file for file in EXPERIMENTS[name]]
    composed = _compose([_load_yaml(path, name) for path in files])
    args = [arg for path in files for arg in ("--config", str(path))]
    config = lightning_cli(args, run=False).config
    listed = [entry["class_path"] for entry in composed["trainer"]["callbacks"]]
    assert [c.class_path for c in config.trainer.callbacks][: len(listed)] == listed
    assert config.model.class_path == composed["model"]["class_path"]
    for key, value in composed["model"]["init_args"].items():
        parsed = config.model.init_args[key]
        if isinstance(value, dict):  # an optimizer or scheduler spec: the given init_args, and defaults
            assert parsed.class_path == value["class_path"], key
            assert {k: parsed.init_args[k] for k in value["init_args"]} == value["init_args"], key
        else:
            assert parsed == value, key
    for section in ("data", "trainer"):
        for key, value in composed[section].items():
            if isinstance(value, dict) and "class_path" in value:  # e.g. the strategy: the class, and defaults
                assert config[section][key].class_path == value["class_path"], f"{section}.{key}"
            elif key != "callbacks":
                assert config[section][key] == value, f"{section}.{key}"
    assert config.seed_everything == composed["seed_everything"]


def test_the_finite_check_finds_nan_and_inf_at_any_depth_and_no_config_has_any():
    from jsonargparse import Namespace

    from lightning_ae.checks import non_finite_values
    from lightning_ae.study.spec import _compose, _load_yaml

    nested = {"a": Namespace(b=float("inf"), c=[1.0, float("nan")]), "d": 0.5, "e": "nan"}
    assert non_finite_values(nested) == ["a.b=inf", "a.c.1=nan"]
    for files in EXPERIMENTS.values():
        assert non_finite_values(_compose([_load_yaml(REPO / file, "test") for file in files])) == []


def test_atomically_written_files_get_the_mode_open_gives(tmp_path):
    """mkstemp makes a file only its owner can read; results.json and the pictures must be as readable as the
    checkpoints beside them (0666 less the umask)."""
    from lightning_ae.files import write_json

    write_json(tmp_path / "results.json", {"a": 1})
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_evaluation_callbacks_in_python_are_the_evaluation_fragment_of_the_cli():
    """`evaluation_callbacks()` (for a Trainer built in Python) and configs/fragments/evaluation.yaml (for the CLI)
    list the same callbacks with the same settings, in the same order."""
    import yaml
    from conftest import REPO

    from lightning_ae.callbacks import ResultsJSON, evaluation_callbacks

    fragment = yaml.safe_load((REPO / "configs" / "fragments" / "evaluation.yaml").read_text())
    entries = fragment["trainer"]["callbacks+"]
    python = evaluation_callbacks(results=False)
    assert [type(c).__name__ for c in python] == [e["class_path"].rsplit(".", 1)[-1] for e in entries]
    for callback, entry in zip(python, entries, strict=True):
        for key, value in (entry.get("init_args") or {}).items():
            assert getattr(callback, key) == value, (type(callback).__name__, key)
    assert isinstance(evaluation_callbacks()[0], ResultsJSON)
