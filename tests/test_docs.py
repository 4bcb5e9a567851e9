"""The docs stay true: README.md and docs/*.md link only to files and headings that exist, and the
README names every make target.

A relative Markdown link `[text](path)` must point at an existing file or folder (relative to the page
it is on); a link `path.md#anchor` or `#anchor` must name a heading of that page, with the anchor made
as GitHub makes it (lowercase, punctuation removed, spaces to '-', '-1', '-2', ... for repeats).
Links inside code blocks and code spans are not links and are skipped.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
TARGET = re.compile(r"^([a-z][a-z0-9_-]*)\s*:(?!=)", re.MULTILINE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: Markdown links and emphasis reduced to their text, lowercase,
    every character but letters, digits, '_', '-' and spaces dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
                links.append((number, target))
    return links


def broken_links(pages: list[Path], root: Path = ROOT) -> list[str]:
    broken = []
    for page in pages:
        for number, target in relative_links(page):
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)}:{number}: ({target})"
            if not file.exists():
                broken.append(f"{where} {path} does not exist")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{where} {file.relative_to(root)} has no heading with anchor #{anchor}")
    return broken


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(TARGET.findall(makefile))
    for phony in re.findall(r"^\.PHONY\s*:(.*)$", makefile, re.MULTILINE):
        targets.update(phony.split())
    return targets


GITHUB_ANCHORS = {
    "Denoising (2.2) and similarity reconstruction (2.3)": "denoising-22-and-similarity-reconstruction-23",
    "The standard study (with the recipes; all 66 runs)": "the-standard-study-with-the-recipes-all-66-runs",
    "Extending: a new 28x28 IDX dataset": "extending-a-new-28x28-idx-dataset",
    "How long `make train` takes": "how-long-make-train-takes",
    "GPU: NVIDIA H200, session 7 (2026-11-28)": "gpu-nvidia-h200-session-7-2026-11-28",
}


def test_the_anchor_rule_is_githubs():
    assert {heading: slug(heading) for heading in GITHUB_ANCHORS} == GITHUB_ANCHORS


def test_the_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-heading) [ok](#page) `[code](nowhere.md)`\n"
        "[no file](missing.md) [no anchor](other.md#nowhere)\n```\n[in a block](gone.md)\n```\n",
        encoding="utf-8",
    )
    broken = broken_links([page], root=tmp_path)
    assert len(broken) == 2, broken
    assert "missing.md does not exist" in broken[0]
    assert "#nowhere" in broken[1]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.exists()
    assert broken_links([page]) == []


def test_the_readme_names_every_make_target():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = make_targets()
    assert {"help", "test", "train"} <= targets
    missing = sorted(target for target in targets if not re.search(rf"`make {re.escape(target)}(?![\w-])", readme))
    assert missing == [], f"make targets the README does not name: {missing}"
