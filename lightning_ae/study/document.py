"""A small document model for the report: blocks rendered to Markdown (with PNGs beside it) and to one
self-contained HTML file (PNGs embedded), so both say exactly the same thing."""

from __future__ import annotations

import base64
import html
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lightning_ae.files import atomic_write


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""

    def __post_init__(self) -> None:
        self.caption = self.caption.strip()  # captions are built from parts, some of them empty


@dataclass
class Figure:
    path: Path  # a PNG on disk
    caption: str


Block = Heading | Paragraph | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def write(self, folder: Path) -> tuple[Path, Path]:
        """report.md with its figures under figures/, and report.html; both written atomically.

        Figures of an earlier report that this one does not show are removed, so figures/ holds exactly its own.
        """
        figures = folder / "figures"
        figures.mkdir(parents=True, exist_ok=True)
        shown: set[str] = set()
        markdown, page = [f"# {self.title}", ""], [_HTML_HEAD.format(title=html.escape(self.title))]
        page.append(f"<h1>{html.escape(self.title)}</h1>")
        for number, block in enumerate(self.blocks):
            if isinstance(block, Heading):
                markdown += [f"{'#' * block.level} {block.text}", ""]
                page.append(f"<h{block.level}>{inline_html(block.text)}</h{block.level}>")
            elif isinstance(block, Paragraph):
                markdown += [block.text, ""]
                page.append(f"<p>{inline_html(block.text)}</p>")
            elif isinstance(block, Table):
                markdown += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
                markdown += ["| " + " | ".join(row) + " |" for row in block.rows]
                markdown += (["", f"*{block.caption}*"] if block.caption else []) + [""]
                cells = "".join(f"<th>{inline_html(h)}</th>" for h in block.header)
                body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows)
                caption = f"<caption>{inline_html(block.caption)}</caption>" if block.caption else ""
                page.append(f"<table>{caption}<tr>{cells}</tr>{body}</table>")
            elif isinstance(block, Figure):
                name = f"{number:03d}-{block.path.name}"
                shutil.copyfile(block.path, figures / name)
                shown.add(name)
                markdown += [f"![{block.caption}](figures/{name})", "", f"*{block.caption}*", ""]
                data = base64.b64encode(block.path.read_bytes()).decode()
                page.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                    f"<figcaption>{inline_html(block.caption)}</figcaption></figure>"
                )
        page.append("</body></html>")
        md_path, html_path = folder / "report.md", folder / "report.html"
        with atomic_write(md_path, "w") as handle:
            handle.write("\n".join(markdown))
        with atomic_write(html_path, "w") as handle:
            handle.write("\n".join(page))
        for stale in figures.glob("*.png"):
            if stale.name not in shown:
                stale.unlink()
        return md_path, html_path


# The Markdown the report's text uses, rendered in the HTML page: `code`, **bold**, *italic*.
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])")
# A cell that holds a number (a mean ± std, a percentage, a time, '-'): right-aligned; any other text: left.
_NUMBER = re.compile(r"^[-+\u2212]?[\d.,]+(e[-+]?\d+)?( ?(%|s|min|x))?( ?\u00b1 ?[\d.,]+(%)?)?( \(.*\))?$|^-$")


def inline_html(text: str) -> str:
    """`text` escaped for HTML, with its inline Markdown rendered (code spans are left as they are inside)."""
    parts = _CODE.split(text)  # odd indices: the insides of code spans
    out = []
    for index, part in enumerate(parts):
        escaped = html.escape(part)
        if index % 2:
            out.append(f"<code>{escaped}</code>")
        else:
            out.append(_ITALIC.sub(r"<em>\1</em>", _BOLD.sub(r"<strong>\1</strong>", escaped)))
    return "".join(out)


def _cell(text: str) -> str:
    align = "num" if _NUMBER.match(text.strip()) else "text"
    return f'<td class="{align}">{inline_html(text)}</td>'


_HTML_HEAD = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:left}}
td.num{{text-align:right}}code{{font-size:90%;background:#f3f3f3;padding:0 .2em}}
caption{{caption-side:bottom;font-style:italic;padding:.3em}}img{{max-width:100%}}
figcaption{{font-style:italic}}</style></head><body>"""
