"""The study report only reads what the runs saved: it imports no data module, no sklearn estimator, no t-SNE."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "lightning_ae" / "study" / "report.py"
# What computing would need: the data, the models, the evaluation (PCA, kNN), sklearn, t-SNE implementations.
FORBIDDEN = (
    "lightning_ae.data",
    "lightning_ae.models",
    "lightning_ae.callbacks",
    "lightning_ae.evaluation",
    "sklearn",
    "openTSNE",
    "torchvision",
)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def forbidden(names) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN) or "TSNE" in n)


def test_the_report_imports_no_data_module_estimator_or_tsne():
    assert not forbidden(imports(REPORT)), forbidden(imports(REPORT))


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """A basic AE and a conv AE at d'=8, one epoch on 500 images, run as a study."""
    from lightning_ae.study.runner import run_study
    from lightning_ae.study.spec import load_study

    folder = tmp_path_factory.mktemp("reads")
    configs, d8 = REPO / "configs", "model.init_args.code_dim: 8"
    evaluation = configs / "fragments" / "evaluation.yaml"  # the t-SNE, PCA and projector callbacks
    study_file = folder / "reads.yaml"
    study_file.write_text(
        "name: reads\n"
        "description: what the report reads\n"
        "every_run: {trainer.max_epochs: 1, data.train_subset: 500, data.batch_size: 50}\n"
        "callbacks:\n"
        "  TSNEPlot: {max_points: 200}\n"
        "  EmbeddingProjector: {max_items: 200}\n"
        "experiments:\n"
        f"  basic_ae: {{config: [{configs / 'basic_ae.yaml'}, {evaluation}], overrides: {{{d8}}}}}\n"
        f"  conv_ae: {{config: [{configs / 'conv_ae.yaml'}, {evaluation}], overrides: {{{d8}}}}}\n"
    )
    study = load_study(study_file)
    outcome = run_study(study, folder / "study")
    assert not outcome["failed"], outcome
    return study_file, folder / "study", {run.experiment: folder / "study" / "runs" / run.run_id for run in study.runs}


def write_report_alone(study_file: Path, folder: Path, output: Path) -> str:
    """Write the report in a fresh interpreter; fail if it loaded anything that computes."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from lightning_ae.study.report import write_report\n"
        "from lightning_ae.study.spec import load_study\n"
        f"write_report(load_study({str(study_file)!r}), Path({str(folder)!r}), Path({str(output)!r}))\n"
        f"print('LOADED', sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout, done.stdout
    return (output / "report.md").read_text()


def test_the_report_shows_the_pca_panel_and_the_layer_trace_the_runs_saved(saved_runs, tmp_path):
    study_file, folder, runs = saved_runs
    assert (runs["basic_ae"] / "pca_tsne.png").is_file()  # TSNEPlot drew PCA beside the codes
    assert (runs["conv_ae"] / "layers.json").is_file()  # ReconstructionGrid saved the layer trace
    text = write_report_alone(study_file, folder, tmp_path / "report")
    assert "PCA with d'=8 components: t-SNE of the same test images" in text
    panel = next((tmp_path / "report" / "figures").glob("*-pca_tsne.png"))
    assert panel.read_bytes() == (runs["basic_ae"] / "pca_tsne.png").read_bytes()  # shown, not recomputed
    assert "How the input is transformed, layer by layer" in text
    assert "| input | (1, 28, 28) |" in text and "| code | (8,) | 8 numbers |" in text
    assert "| basic_ae" in text and "| sigmoid | 8 | 98.0 | 99.0% |" in text  # compression read from results.json


def test_runs_that_saved_no_panel_or_trace_are_reported_as_such(saved_runs, tmp_path):
    study_file, folder, runs = saved_runs
    moved = [(runs["basic_ae"] / "pca_tsne.png"), (runs["conv_ae"] / "layers.json")]
    for path in moved:
        path.rename(path.with_suffix(".bak"))
    try:
        text = write_report_alone(study_file, folder, tmp_path / "report")
    finally:
        for path in moved:
            path.with_suffix(".bak").rename(path)
    assert "No PCA panel:" in text and "saved no `pca_tsne.png`" in text
    assert "No layer trace:" in text and "saved no `layers.json`" in text


def test_the_html_page_renders_the_reports_markdown_and_aligns_text_left(tmp_path):
    """Before, report.html showed the Markdown as typed (backticks, *titles*) and right-aligned every column."""
    from lightning_ae.study.document import Document, Paragraph, Table

    document = Document("t")
    document.add(
        Paragraph("Command: `lightning-ae study x` then *Building Autoencoders in Keras*; 3 * 4 stays."),
        Table(["activation", "test error"], [["sigmoid", "1.57% ± 0.09"]], "*flagged*: not converged"),
    )
    markdown, page = document.write(tmp_path)
    text = page.read_text()
    assert "<code>lightning-ae study x</code>" in text and "<em>Building Autoencoders in Keras</em>" in text
    assert "`" not in text.split("<body>")[1] and "3 * 4 stays" in text
    assert '<td class="text">sigmoid</td>' in text and '<td class="num">1.57% ± 0.09</td>' in text
    assert "<caption><em>flagged</em>: not converged</caption>" in text
    assert "`lightning-ae study x`" in markdown.read_text()  # the Markdown file keeps its Markdown
